"""The findings page's figure: each chapter's estimates with their intervals, each on its own scale."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from .text import TITLES

CLEAR = "#222222"  # the interval excludes the value of "no effect"
UNCLEAR = "#9E9E9E"  # the interval includes it (or there is none)


def plottable(table: pd.DataFrame) -> pd.DataFrame:
    """The findings that have an estimate and an interval."""
    return table.dropna(subset=["value", "low", "high"]).reset_index(drop=True)


def plot_estimates(table: pd.DataFrame, width: float = 8.5) -> Figure:
    """One row per finding with an interval: the estimate (dot) and its 95% interval (line) on the finding's
    own scale, the value of no effect dashed; dark where the interval excludes it. Rows are grouped by
    chapter in the page's order."""
    rows = plottable(table)
    n = max(len(rows), 1)
    fig, axes = plt.subplots(n, 1, figsize=(width, 0.2 + 0.62 * n), squeeze=False, layout="constrained")
    if rows.empty:
        axes[0, 0].text(0.5, 0.5, "No finding of these runs has an interval.", ha="center", va="center")
        axes[0, 0].set_axis_off()
        return fig
    for ax, r in zip(axes[:, 0], rows.itertuples(index=False), strict=True):
        ref = r.reference
        clear = ref is not None and pd.notna(ref) and (r.low > ref or r.high < ref)
        color = CLEAR if clear else UNCLEAR
        ax.plot([r.low, r.high], [0, 0], color=color, lw=2.2, solid_capstyle="butt")
        ax.plot([r.value], [0], "o", color=color, ms=6)
        lo, hi = min(r.low, r.value), max(r.high, r.value)
        if ref is not None and pd.notna(ref):
            ax.axvline(ref, color="#555555", lw=0.8, ls="--")
            lo, hi = min(lo, ref), max(hi, ref)
        pad = 0.08 * (hi - lo or 1.0)
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(-0.8, 0.8)
        ax.set_yticks([0], [f"{TITLES.get(r.chapter, r.chapter)}: {r.label or r.key}"], fontsize=8.5)
        ax.tick_params(axis="x", labelsize=7.5, pad=1)
        ax.set_xlabel(r.scale, fontsize=7.5, labelpad=1)
        for side in ("top", "right", "left"):
            ax.spines[side].set_visible(False)
        ax.tick_params(axis="y", length=0)
    return fig
