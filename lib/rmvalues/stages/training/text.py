"""The values the training chapter's prose cites, as short texts to glue: the numbers
(:mod:`.glued_numbers`, :mod:`.glue`) and the data-chosen phrases (:mod:`.readings`). The sentences
themselves are the notebook's Markdown."""

from __future__ import annotations

from .glued_numbers import key_numbers

__all__ = ["key_numbers"]
