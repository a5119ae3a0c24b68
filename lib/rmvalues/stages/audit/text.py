"""The values the audit page's prose cites, as short texts to glue (:mod:`.glued_numbers`: numbers and the
data-chosen phrases). The sentences themselves are the notebook's Markdown."""

from __future__ import annotations

from .glued_numbers import key_numbers

__all__ = ["key_numbers", "markdown_keys"]


def markdown_keys() -> list[str]:
    """The glued keys that hold MyST Markdown (pasted with ``{glue:md}``): none, every value is plain text."""
    return []
