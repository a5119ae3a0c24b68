"""Figures of the RM-scoring chapter."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from ...core.style import family_color
from ...data.prompts import FRAMINGS

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["plot_category_medians"]


def plot_category_medians(
    medians: pd.DataFrame, corpus: str | None = None, title: str | None = None
) -> Figure:
    """Median rank of each category, by model (colour = family) and framing (one panel per framing)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    df = medians if corpus is None else medians[medians["corpus"] == corpus]
    framings = [f for f in FRAMINGS if f in set(df["framing"])]
    fig, axes = plt.subplots(1, len(framings), figsize=(5.2 * len(framings), 3.6), sharey=True, squeeze=False)
    palette = {m: family_color(f) for m, f in df[["rm", "family"]].drop_duplicates().values}
    for ax, framing in zip(axes[0], framings, strict=True):
        sns.stripplot(
            data=df[df["framing"] == framing],
            x="category",
            y="median_rank",
            hue="rm",
            palette=palette,
            dodge=True,
            alpha=0.6,
            size=3,
            ax=ax,
            legend=ax is axes[0][-1],
        )
        ax.set_title(f"{framing} prompts")
        ax.set_xlabel("")
        ax.set_ylabel("median rank (1 = highest reward)")
    if axes[0][-1].get_legend() is not None:
        sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1.0, 1.0), title="RM (colour = family)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
