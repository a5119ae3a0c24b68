"""Chapter 4, training ablations: reward models from two base models on identical data."""

from . import figures, glue, readings, tables, text
from .params import Params
from .run import READER_TABLES, Results, run

__all__ = ["READER_TABLES", "Params", "Results", "figures", "glue", "readings", "run", "tables", "text"]
