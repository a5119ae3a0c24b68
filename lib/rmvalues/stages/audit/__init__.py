"""The audit: one or more reward models placed among the ten published reward models (per-RM statistics
computed as the statistics chapter computes them, percentiles and distances per base family with the audited
RM's own resampling interval, a leave-one-RM-out check, tokenization and how each RM was scored)."""

from . import figures, glued_numbers, placement, tables, text
from .params import Params
from .run import READER_TABLES, Results, run

__all__ = [
    "READER_TABLES",
    "Params",
    "Results",
    "figures",
    "glued_numbers",
    "placement",
    "run",
    "tables",
    "text",
]
