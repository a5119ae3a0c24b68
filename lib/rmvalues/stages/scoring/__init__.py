"""Chapter 2, RM scoring: live rewards of registered reward models for the corpus words (also a command
line: ``python -m rmvalues.stages.scoring``, see :mod:`.cli`)."""

from . import figures, tables, text
from .params import Params
from .run import Results, Shard, run

__all__ = ["Params", "Results", "Shard", "figures", "run", "tables", "text"]
