"""The book's one set of formatters: how every number, interval, share and p-value is written, in tables,
in glued values and on the findings page.

One style throughout:

- numbers with a fixed number of decimals and a true minus sign (``−0.42``); ``n/a`` where there is none;
- intervals as ``[low, high]``, and with their level as ``95% CI [low, high]``;
- shares as percentages (``27%``);
- p-values as ``0.012`` / ``0.12`` / ``< 0.001`` in a table's p column, and as ``p = 0.012`` /
  ``p < 0.001`` in a sentence (:func:`p_clause`); never ``.001`` without its leading zero, never
  ``p = 0.000``; a threshold reads ``p < 0.05``. :data:`P_CLAUSE` is the pattern the book check holds every
  built page to.
"""

from __future__ import annotations

import math
import re
from typing import Any

import pandas as pd

#: What a formatter writes for a missing value.
NA = "n/a"

#: Every "p ... value" in the built book must match this (see ``rmvalues.book.check``).
P_CLAUSE = re.compile(r"p (?:= (?:0\.(?!000)\d{2,3}|1\.00)|[<≤] 0\.\d*[1-9])")
#: Any p-value-looking text in a built page (what the check compares with :data:`P_CLAUSE`).
P_ANY = re.compile(r"\bp\s*(?:=|<|>|≤|≥)?\s*[−-]?\d*\.\d+")


def missing(x: Any) -> bool:
    """``None``, NaN or pandas' NA."""
    if x is None or x is pd.NA:
        return True
    try:
        return bool(math.isnan(x))
    except TypeError:
        return False


def number(x: float | None, digits: int = 2) -> str:
    """``x`` with ``digits`` decimals and a true minus sign; ``n/a`` for a missing value."""
    if missing(x):
        return NA
    text = f"{x:.{digits}f}"
    if float(text) == 0:  # no "−0.0"
        text = text.lstrip("-")
    return text.replace("-", "\u2212")


def signed(x: float | None, digits: int = 2) -> str:
    """:func:`number` with an explicit ``+`` for positive values (a difference)."""
    text = number(x, digits)
    return text if text == NA or text.startswith("\u2212") or float(text) == 0 else "+" + text


def count(n: int | float | None) -> str:
    """A whole number with thousands separators (``1,080``)."""
    return NA if missing(n) else f"{int(n):,}"


def percent(x: float | None, digits: int = 0) -> str:
    """A share in [0, 1] as a percentage (``27%``)."""
    return NA if missing(x) else f"{x:.{digits}%}"


def interval(low: float | None, high: float | None, digits: int = 2, *, share: bool = False) -> str:
    """``[low, high]`` as :func:`number` writes them (with ``share``, two shares as :func:`percent` writes
    them: ``[60.0%, 62.4%]``); ``no interval`` when either end is missing."""
    if missing(low) or missing(high):
        return "no interval"
    write = (lambda x: percent(x, digits)) if share else (lambda x: number(x, digits))
    return f"[{write(low)}, {write(high)}]"


def ci(
    low: float | None, high: float | None, digits: int = 2, level: float = 0.95, *, share: bool = False
) -> str:
    """``95% CI [low, high]`` (``share``: of two shares, as :func:`interval`); ``no interval`` when either end is
    missing."""
    if missing(low) or missing(high):
        return "no interval"
    return f"{level:.0%} CI {interval(low, high, digits, share=share)}"


def pvalue(p: float | None) -> str:
    """A p-value as a table cell: ``< 0.001``, ``0.012`` (three decimals below 0.1), ``0.12``; ``n/a``."""
    if missing(p):
        return NA
    if p < 0.001:
        return "< 0.001"
    return f"{p:.3f}" if p < 0.1 else f"{min(p, 1.0):.2f}"


def p_clause(p: float | None) -> str:
    """A p-value in a sentence: ``p = 0.012``, ``p < 0.001``; ``p n/a`` without one."""
    text = pvalue(p)
    if text == NA:
        return "p n/a"
    return "p " + text if text.startswith("<") else "p = " + text


def bad_pvalues(text: str) -> list[str]:
    """The p-values in ``text`` not written as :func:`p_clause` writes them (empty when all are)."""
    found = []
    for m in P_ANY.finditer(text):
        start = m.start()
        if not P_CLAUSE.match(text, start):
            found.append(m.group(0))
    return found
