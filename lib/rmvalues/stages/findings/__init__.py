"""The findings page: the audit's answers, gathered from the chapters' runs (it opens the book).

Each chapter's run writes ``findings.json`` (:mod:`rmvalues.core.findings`); this stage reads them from the
runs it names (declared hand-offs, verified against their manifests) and writes the summary table the page
shows. It computes nothing new: every number on the page is a chapter's number, glued from its run.
"""

from . import figures, text
from .params import CHAPTERS, Params
from .run import Results, run

__all__ = ["CHAPTERS", "Params", "Results", "figures", "run", "text"]
