"""What a chapter shows a reader: formatted tables with captions and a CSV download, collapsed diagnostics,
numbers glued for the prose, p-values and intervals written the same way everywhere (by
:mod:`rmvalues.core.formats`, re-exported here).

The book renders Markdown outputs as MyST (``nb_render_markdown_format: myst`` in ``_config.yml``), so the
objects built here can carry numbered table captions (``{table}`` directive, referable with ``{numref}``),
``{download}`` links and collapsed ``dropdown`` sections. Numbers that prose cites are glued with
:func:`glue` (myst-nb's ``glue``) and pasted with ``{glue:text}`` roles: no number is typed by hand.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from . import paths
from .formats import NA, ci, count, interval, number, p_clause, percent, pvalue, signed

__all__ = [
    "NA",
    "ci",
    "collapsed",
    "count",
    "glue",
    "interval",
    "number",
    "p_clause",
    "percent",
    "pvalue",
    "reader_table",
    "signed",
    "table",
    "warning",
]

#: At most this many rows of a table stand in the reading flow; longer tables are cut (the full table is a
#: download) or shown collapsed.
MAX_ROWS = 15


def reader_table(
    df: pd.DataFrame,
    columns: Mapping[str, str] | None = None,
    digits: int | Mapping[str, int] = 2,
    pvalues: Sequence[str] = (),
) -> pd.DataFrame:
    """A table for readers: selected columns with readable names (``columns``: source name -> shown name),
    numbers rounded (``digits`` per column or for all), p-values as :func:`pvalue` writes them."""
    cols = dict(columns) if columns is not None else {c: c.replace("_", " ") for c in df.columns}
    out = df[list(cols)].copy()
    for col in out.columns:
        if col in pvalues:
            out[col] = out[col].map(pvalue)
        elif pd.api.types.is_float_dtype(out[col]):
            d = digits.get(col, 2) if isinstance(digits, Mapping) else digits
            out[col] = out[col].map(lambda x, d=d: number(x, d))
    return out.rename(columns=cols).reset_index(drop=True)


def _from_book_root(target: Path) -> str:
    """``target`` as Sphinx reads a path from the book's root (``/results/...``; a file outside the project
    as ``/../...``, which Sphinx normalises against the root too), so a link holds whatever folder the page
    lies in (a named run's page lies one folder deeper than its chapter's)."""
    return "/" + os.path.relpath(target, paths.project_root()).replace(os.sep, "/")


def _download(csv: str | os.PathLike[str] | None) -> str:
    if csv is None:
        return ""
    path = paths.resolve(csv)
    return f"\n\n{{download}}`Download the full table (CSV, {path.name}) <{_from_book_root(path)}>`"


#: A MyST role with its content, e.g. ``{doc}`Word lists <corpora>```.
_ROLE = re.compile(r"(\{[a-z][a-z:-]*\}`[^`]*`)")


def _cell(value: Any) -> Any:
    """A text cell as Markdown shows it literally: one line, pipes escaped (they would end the cell) and
    ``<`` as an entity (``<pad>`` would otherwise be read as an HTML tag and vanish)."""
    if not isinstance(value, str):
        return value
    parts = _ROLE.split(value.replace("\n", " ").replace("|", "\\|"))
    # a MyST role ({doc}`label <target>`) keeps its ``<``; text outside roles gets the entity
    return "".join(p if _ROLE.fullmatch(p) else p.replace("<", "&lt;") for p in parts)


def _markdown(df: pd.DataFrame) -> str:
    out = df.map(_cell)
    out.columns = [_cell(str(c)) for c in out.columns]
    return out.to_markdown(index=False, disable_numparse=True)


def table(
    df: pd.DataFrame | None,
    caption: str,
    name: str,
    csv: str | os.PathLike[str] | None = None,
    max_rows: int = MAX_ROWS,
    empty: str = "Nothing to show in this run.",
) -> Any:
    """A numbered table with a caption (``{numref}`name``` refers to it), at most ``max_rows`` rows in the
    reading flow (a note says how many more the CSV holds), and a download link to ``csv``. An empty (or
    missing) table is shown as one cell saying ``empty``: the number and the references stay on every fork."""
    from IPython.display import Markdown

    if df is None or df.empty or len(df.columns) == 0:  # still numbered, so the prose's references resolve
        df, csv = pd.DataFrame({"": [empty]}), None
    shown = df.head(max_rows)
    more = len(df) - len(shown)
    note = (
        f"\n\nThe first {len(shown)} of {len(df)} rows; the download holds all of them." if more > 0 else ""
    )
    body = f":::{{table}} {caption}\n:name: {name}\n:align: left\n\n{_markdown(shown)}\n:::"
    return Markdown(body + note + _download(csv))


def collapsed(title: str, df: pd.DataFrame | None = None, text: str = "", csv: str | None = None) -> Any:
    """A collapsed section (diagnostics: timings, collisions, per-cell logs): closed until the reader opens it."""
    from IPython.display import Markdown

    inner = text + ("\n\n" + _markdown(df) if df is not None and not df.empty else "") + _download(csv)
    return Markdown(f"::::{{dropdown}} {title}\n{inner.strip()}\n::::")


def warning(title: str, df: pd.DataFrame) -> Any:
    """A warning admonition headed ``title`` that lists the rows of ``df`` (what the reader must know before
    trusting the page, e.g. inputs the repository does not hold)."""
    from IPython.display import Markdown

    return Markdown(f":::{{warning}} {title}\n{_markdown(df)}\n:::")


def glue(values: Mapping[str, Any], markdown: Sequence[str] = ()) -> None:
    """Glue every value (a number or a short text) for ``{glue:text}`` roles in the page's prose, without
    displaying it; the keys in ``markdown`` hold MyST Markdown, pasted with ``{glue:md}`` (a sentence with
    roles and links, a paragraph)."""
    from IPython.display import Markdown
    from myst_nb import glue as myst_glue

    for key, value in values.items():
        myst_glue(key, Markdown(value) if key in markdown else value, display=False)
