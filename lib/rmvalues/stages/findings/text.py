"""The findings page's prose and table, built from the chapters' findings (nothing typed by hand)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ...core.paths import GENERATED, page_name
from .params import CHAPTERS

#: Readable names of the summary table's columns.
TABLE_COLUMNS = {
    "chapter_link": "Chapter",
    "question": "Question",
    "estimate": "Estimate",
    "uncertainty": "Interval or null baseline",
    "unit": "Unit of analysis",
    "robustness": "How robust",
    "would_change": "What would change the reading",
}

TITLES = {
    "statistics": "Published RMs",
    "implicit": "Implicit rewards",
    "training": "Training ablations",
    "scoring": "Live RM scores",
    "corpora": "Word lists",
}


def page_link(chapter: str, run: str) -> str:
    """A link to the chapter page of ``run`` (a MyST ``{doc}`` role, from the book's root: the findings page of
    a named run lies one folder deeper)."""
    label = TITLES.get(chapter, chapter) + ("" if run == "default" else f" ({run})")
    return f"{{doc}}`{label} </{(GENERATED / page_name(chapter, run)).as_posix()}>`"


def uncertainty(row: pd.Series) -> str:
    """The interval and the null baseline of one finding, in one cell."""
    parts = [str(row[c]) for c in ("interval", "baseline") if isinstance(row[c], str) and row[c].strip()]
    return "; ".join(parts) or "none computed"


def paragraph(results: Any, chapter: str) -> str:
    """The answers of one chapter, as one paragraph with a link to its page."""
    run = results.params.runs().get(chapter)
    if run is None:
        return f"This page leaves out {CHAPTERS[chapter]} (its parameters name no run of that chapter)."
    rows = results.of(chapter)
    link = page_link(chapter, run)
    if rows.empty:
        return (
            f"**{TITLES[chapter]}** ({link}). This run of the chapter states no finding in the page's form."
        )
    return f"**{TITLES[chapter]}** ({link}). " + " ".join(rows["answer"].str.strip())


def summary_table(results: Any) -> pd.DataFrame:
    """One row per finding, for readers."""
    t = results.table.copy()
    t["chapter_link"] = [page_link(c, r) for c, r in zip(t["chapter"], t["run"], strict=True)]
    t["uncertainty"] = t.apply(uncertainty, axis=1)
    t["robustness"] = t["robustness"].where(t["robustness"].str.strip() != "", "not assessed")
    return t[list(TABLE_COLUMNS)].rename(columns=TABLE_COLUMNS).reset_index(drop=True)


def key_numbers(results: Any) -> dict[str, str]:
    """Texts to glue, every key always present: per chapter its paragraph (``<chapter>_answer``, Markdown),
    and per finding its estimate, interval and baseline (``<chapter>_<key>_estimate`` etc.)."""
    t = results.table
    out = {
        "n_chapters": str(t["chapter"].nunique()),
        "n_findings": str(len(t)),
        "runs": ", ".join(
            f"{c}/{r}" for c, r in t[["chapter", "run"]].drop_duplicates().itertuples(index=False)
        )
        or "none",
    }
    for chapter in CHAPTERS:
        out[f"{chapter}_answer"] = paragraph(results, chapter)
    for row in t.itertuples(index=False):
        for field in ("estimate", "interval", "baseline", "unit", "robustness"):
            out[f"{row.chapter}_{row.key}_{field}"] = getattr(row, field) or "n/a"
    return out


def markdown_keys() -> list[str]:
    """The keys of :func:`key_numbers` that hold Markdown (pasted with ``{glue:md}``)."""
    return [f"{c}_answer" for c in CHAPTERS]
