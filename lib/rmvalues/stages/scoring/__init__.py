"""Chapter 2, RM scoring: live rewards of registered reward models for the corpus words (also a command
line: ``python -m rmvalues.stages.scoring``, see :mod:`.cli`)."""

from . import figures, tables, text
from .params import Params
from .run import READER_TABLES, Results, Shard, run

__all__ = ["READER_TABLES", "Params", "Results", "Shard", "figures", "run", "tables", "text"]
