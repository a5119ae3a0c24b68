"""The values the implicit chapter's prose cites, as short texts to glue: the numbers (:mod:`.glued_numbers`) and
the data-chosen phrases and lists (:mod:`.readings`). The sentences themselves are the notebook's Markdown."""

from __future__ import annotations

from .glued_numbers import MARKDOWN_KEYS, key_numbers
from .readings import anova_verdict

__all__ = ["MARKDOWN_KEYS", "anova_verdict", "key_numbers"]
