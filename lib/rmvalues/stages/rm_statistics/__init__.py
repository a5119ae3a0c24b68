"""Chapter 5, statistics: value biases of ten published reward models (the paper's analysis of RM scores,
and what it lacks). The package is ``rm_statistics`` because a module named ``statistics`` would shadow the
standard library; the stage, its results folder and its page are ``statistics``."""

from . import (
    analysis,
    design,
    figures,
    figures_robustness,
    findings,
    glued_numbers,
    lineage,
    readings,
    rm_level,
    robust_numbers,
    robust_tables,
    specification,
    tables,
    text,
)
from .params import Params
from .run import READER_TABLES, Results, run

__all__ = [
    "READER_TABLES",
    "Params",
    "Results",
    "analysis",
    "design",
    "figures",
    "figures_robustness",
    "findings",
    "glued_numbers",
    "lineage",
    "readings",
    "rm_level",
    "robust_numbers",
    "robust_tables",
    "run",
    "specification",
    "tables",
    "text",
]
