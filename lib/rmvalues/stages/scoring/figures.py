"""Figures of the RM-scoring chapter."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from ...core.style import family_color
from ...data.prompts import FRAMINGS

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_category_medians"]

#: The figure's width (inches): the book's text column shows it at about its natural size.
WIDTH = 7.2


def _pooled(medians: pd.DataFrame | None) -> pd.DataFrame:
    if medians is None or medians.empty:
        return pd.DataFrame(columns=["corpus", "framing", "category", "family", "median_rank"])
    return medians[medians["analysis"] == "pooled"] if "analysis" in medians.columns else medians


def _panel(ax: Axes, df: pd.DataFrame, families: list[str], categories: list[str]) -> None:
    """One panel: one point per (RM, prompt) and category, dodged and coloured by base family."""
    import seaborn as sns

    sns.stripplot(
        data=df,
        x="category",
        y="median_rank",
        hue="family",
        order=categories,
        hue_order=families,
        palette={f: family_color(f) for f in families},
        dodge=True,
        jitter=0.15,
        alpha=0.7,
        size=4,
        legend=False,
        ax=ax,
    )
    ax.set_xlabel("")
    if len(categories) > 3:
        ax.tick_params(axis="x", labelrotation=30)


def plot_category_medians(medians: pd.DataFrame, published: pd.DataFrame | None = None) -> Figure:
    """The category median ranks in ONE figure, whatever the run: a row per corpus of the live scores
    (``medians``), each followed by a row of the published scores of the paper's RMs on that corpus
    (``published``, when given), and a column per framing. One point = one RM under one prompt; colour = the
    RM's base family; rank 1 (the highest reward) at the top."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    live, pub = _pooled(medians), _pooled(published)
    rows = []  # (corpus, title, medians)
    for corpus in sorted(live["corpus"].unique()):
        rows.append((corpus, f"live, {corpus}", live[live["corpus"] == corpus]))
        if (pub["corpus"] == corpus).any():
            rows.append((corpus, f"published, {corpus}", pub[pub["corpus"] == corpus]))
    both = pd.concat([df for _, _, df in rows]) if rows else live
    framings = [f for f in FRAMINGS if f in set(both["framing"])] or list(FRAMINGS)
    families = sorted(both["family"].dropna().unique())
    fig, axes = plt.subplots(
        max(len(rows), 1),
        len(framings),
        figsize=(WIDTH, 0.8 + 2.4 * max(len(rows), 1)),
        sharey="row",
        squeeze=False,
        layout="constrained",
    )
    if not rows:
        for ax in axes.flat:
            ax.text(0.5, 0.5, "no word scores in this run", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
        return fig
    for i, ((corpus, label, df), row) in enumerate(zip(rows, axes, strict=True)):
        categories = sorted(df["category"].unique())
        for j, (ax, framing) in enumerate(zip(row, framings, strict=True)):
            _panel(ax, df[df["framing"] == framing], families, categories)
            if i == 0:
                ax.set_title(f"{framing} prompts")
            ax.set_ylabel(f"{label}\nmedian rank" if j == 0 else "")
        # one scale for the live and the published rows of a corpus; rank 1 (highest reward) at the top
        ranks = both.loc[both["corpus"] == corpus, "median_rank"]
        pad = 0.05 * max(float(ranks.max() - ranks.min()), 1.0)
        row[0].set_ylim(float(ranks.max()) + pad, float(ranks.min()) - pad)
    handles = [
        Line2D([], [], marker="o", linestyle="", color=family_color(f), label=f, markersize=6)
        for f in families
    ]
    fig.legend(handles=handles, title="base family", loc="outside lower center", ncols=max(len(families), 1))
    return fig
