"""Chapter 1, corpora: the word lists validated, annotated with their confounds, and tokenized."""

from . import figures, text
from .params import Params
from .run import Results, run

__all__ = ["Params", "Results", "figures", "run", "text"]
