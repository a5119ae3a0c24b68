"""Chapter 3, implicit rewards: value biases in language-model log-probabilities (the paper's Sections 4-5).

A log-probability ratio between two models is itself a reward model. The chapter computes such implicit
rewards (:mod:`.metrics`: ``token_mwlr``, ``token_logratio``, ``word_mwlr``, ``word_logratio``; and the
reference-free ``word_sum``, ``word_mean``), analyses them like reward-model scores (:mod:`.rewards`: median
ranks, the paper's 3-way ANOVA with every prompt independent beside its counterpart clustered by the prompts'
adjectives, top tokens, the word-pair contrast) and validates the metrics on planted words
(:mod:`.validation`).
"""

from . import figures, graded, keys, readings, tables, text
from .params import Params
from .run import READER_TABLES, Results, run

__all__ = [
    "READER_TABLES",
    "Params",
    "Results",
    "figures",
    "graded",
    "keys",
    "readings",
    "run",
    "tables",
    "text",
]
