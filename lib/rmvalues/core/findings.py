"""Findings: each chapter's answers in one form, the hand-off from the chapters to the book's findings page.

Every chapter's run writes ``findings.json`` (a list of :class:`Finding`): the question it answers, the
answer as a sentence built from the run's numbers, the headline estimate, its interval or null baseline, the
unit of analysis, and what would change the reading. The findings stage reads these files from the runs it
summarizes (declared hand-offs, checked against their manifests) and glues them into the page that opens the
book. A chapter states only what its run computed: the sentences are written by the chapter's code from its
own numbers, never typed into the findings page.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

FILE = "findings.json"


@dataclass(frozen=True)
class Finding:
    """One answer of one chapter (every text is Markdown, written from the run's numbers)."""

    key: str  # short identifier, unique within the chapter (letters, digits, '_')
    question: str  # what the chapter asks, in a reader's words
    answer: str  # one or two sentences that answer it, with the numbers
    estimate: str  # the headline number, formatted with its scale (e.g. "d = −0.01")
    interval: str = ""  # its interval (e.g. "95% CI [−0.26, 0.24]"); "" when none is computed
    baseline: str = ""  # what the estimate is compared with: a null baseline, a p-value, chance
    unit: str = ""  # the unit of analysis and its count (e.g. "10 RMs", "263 words")
    would_change: str = ""  # what would change the reading: confounds, design limits, missing controls
    robustness: str = ""  # how far the verdict moves under other reasonable analyses (e.g. its specification
    # curve's label), adjustments for confounds, and the power of the design; "" when not assessed
    value: float | None = None  # the estimate as a number (None when it is not a number)
    low: float | None = None  # the interval's bounds as numbers (None when no interval is computed)
    high: float | None = None
    reference: float | None = None  # the value of "no effect" on the estimate's scale (e.g. 0), if any
    scale: str = ""  # the estimate's scale, for a figure's axis (e.g. "Cohen's d")
    label: str = ""  # a short name of what is estimated, for a figure (e.g. "Agency − Communion, frequency")

    def __post_init__(self) -> None:
        if not self.key or not self.key.replace("_", "").isalnum():
            raise ValueError(f"finding key {self.key!r}: use letters, digits and '_'")
        for name in ("question", "answer", "estimate"):
            if not getattr(self, name).strip():
                raise ValueError(f"finding {self.key!r}: {name} is empty")
        for name in ("value", "low", "high", "reference"):
            x = getattr(self, name)
            if x is not None:
                x = float(x)
                object.__setattr__(self, name, x if math.isfinite(x) else None)
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"finding {self.key!r}: interval [{self.low}, {self.high}] is reversed")

    @property
    def plottable(self) -> bool:
        """Whether the finding has an estimate with an interval (it can be drawn on its scale)."""
        return None not in (self.value, self.low, self.high)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


FIELDS = tuple(f.name for f in fields(Finding))


def findings_json(findings: Sequence[Finding]) -> bytes:
    """The bytes of ``findings.json`` (keys unique, in the chapter's order)."""
    keys = [f.key for f in findings]
    if len(set(keys)) != len(keys):
        raise ValueError(f"finding keys repeat: {keys}")
    return (json.dumps([f.as_dict() for f in findings], indent=2, ensure_ascii=False) + "\n").encode()


def write_findings(record: Any, findings: Sequence[Finding]) -> Path:
    """Write ``findings.json`` through a run's :class:`~rmvalues.core.manifest.RunRecord` (listed among its
    outputs with its checksum)."""
    return record.write_bytes(findings_json(findings), FILE)


def read_findings(path: str | Path) -> list[Finding]:
    """The findings of one run (a clear error when the file is not a list of findings)."""
    try:
        rows = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read findings ({exc})") from None
    if not isinstance(rows, list):
        raise ValueError(f"{path}: findings must be a list, got {type(rows).__name__}")
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or set(row) - set(FIELDS):
            raise ValueError(f"{path}: finding {i} is not an object with fields {', '.join(FIELDS)}")
        try:
            out.append(Finding(**row))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: finding {i}: {exc}") from None
    return out
