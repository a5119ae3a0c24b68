"""The audit's figure: per statistic, the reference RMs as dots by family with each family's range, the
audited RMs highlighted with their intervals. One figure for every statistic (one panel each)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ...core.style import family_color

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["AUDITED_COLOR", "plot_placement"]

#: The colour of the audited RMs (no family's colour).
AUDITED_COLOR = "#111111"
#: The widest figure the book's page shows at its own size (inches).
MAX_WIDTH = 7.2


def _title(row: pd.Series) -> str:
    where = f"{row['corpus']}" + (f", {row['subcategory']}" if isinstance(row["subcategory"], str) else "")
    return f"{row['statistic']} ({where})"


def plot_placement(reference: pd.DataFrame, placed: pd.DataFrame) -> Figure:
    """One panel per statistic: a row per reference family (its RMs as dots, its range as a band, its mean as
    a tick) and a row per audited RM (its value and the 95% interval of its own resampling).

    ``reference``: :func:`rmvalues.stats.rm_contrasts` rows of the published RMs; ``placed``:
    :func:`.placement.placement` rows (one per audited RM, statistic and family)."""
    import matplotlib.pyplot as plt

    keys = ["corpus", "analysis", "subcategory", "statistic"]
    stats_ = placed.drop_duplicates(keys)[keys].reset_index(drop=True)
    families = sorted(reference["family"].unique())
    rms = list(dict.fromkeys(placed["rm"]))
    ncols = 1 if len(stats_) == 1 else 2
    nrows = int(np.ceil(len(stats_) / ncols))
    height = 0.42 * (len(families) + len(rms)) + 0.9
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(MAX_WIDTH, height * nrows), squeeze=False, layout="constrained"
    )
    for ax in axes.flat[len(stats_) :]:
        ax.axis("off")
    for ax, (_, st) in zip(axes.flat, stats_.iterrows(), strict=False):
        ref = reference
        here = placed
        for k in keys:
            ref = ref[ref[k].astype(object).fillna("") == (st[k] if isinstance(st[k], str) else "")]
            here = here[here[k].astype(object).fillna("") == (st[k] if isinstance(st[k], str) else "")]
        labels = []
        for i, fam in enumerate(families):
            v = ref.loc[ref["family"] == fam, "D"].to_numpy(float)
            y = -i
            ax.fill_betweenx(
                [y - 0.25, y + 0.25], v.min(), v.max(), color=family_color(fam), alpha=0.15, lw=0
            )
            ax.scatter(v, np.full(v.size, y), color=family_color(fam), s=22, zorder=3)
            ax.plot([v.mean()] * 2, [y - 0.3, y + 0.3], color=family_color(fam), lw=1.2)
            labels.append(f"{fam} ({v.size} RMs)")
        for j, rm in enumerate(rms):
            row = here[here["rm"] == rm].iloc[0]
            y = -(len(families) + j)
            err = [[row["D"] - row["D_low"]], [row["D_high"] - row["D"]]]
            ax.errorbar([row["D"]], [y], xerr=err, fmt="D", color=AUDITED_COLOR, ms=6, capsize=3, zorder=4)
            labels.append(f"audited: {rm}")
        ax.axvline(0, color="#999999", lw=0.6, ls=":")
        ax.set_yticks(-np.arange(len(labels)), labels, fontsize=8)
        ax.set_ylim(-len(labels) + 0.4, 0.6)
        ax.set_title(_title(st), fontsize=9)
        ax.set_xlabel("D: rank gain of the category from negative to positive prompts", fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
    return fig
