"""Chapter 4, training ablations: reward models from two base models on identical data."""

from . import figures, tables, text
from .params import Params
from .run import Results, run

__all__ = ["Params", "Results", "figures", "run", "tables", "text"]
