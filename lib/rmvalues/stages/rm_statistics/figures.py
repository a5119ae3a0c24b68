"""Figures of the statistics chapter (the paper's Fig. 1 and Fig. A1, the virtue/vice split, the nulls)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ...core.style import family_color
from ...data.prompts import FRAMINGS

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure


def _panel_grid(n_rows: int, n_cols: int, width: float = 2.2, height: float = 2.6) -> tuple[Figure, Any]:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(width * n_cols + 0.8, height * n_rows), squeeze=False, sharey="row"
    )
    return fig, axes


def _framings(df: pd.DataFrame) -> list[str]:
    return [f for f in FRAMINGS if f in set(df["framing"])]


def plot_family_panels(
    medians: pd.DataFrame,
    corpus: str,
    families: Sequence[str] = ("gemma", "llama"),
    analysis: str = "pooled",
    subcategory: str | None = None,
) -> Figure:
    """Paper Fig. 1: per (framing, category) panel, the (RM, prompt) median ranks of each family (violin),
    each RM's mean (faint dots) and the family mean +- SE (black); rank 1 (highest reward) at the top."""
    df = medians[
        (medians["corpus"] == corpus)
        & (medians["analysis"] == analysis)
        & medians["family"].isin(list(families))
    ]
    if subcategory is not None:
        df = df[df["subcategory"] == subcategory]
    if df.empty:
        raise ValueError(f"no median ranks for corpus {corpus!r}, analysis {analysis!r}")
    cats = sorted(df["category"].unique())
    frs = _framings(df)
    fig, axes = _panel_grid(len(frs), len(cats))
    rng = np.random.default_rng(0)
    for i, fr in enumerate(frs):
        for j, cat in enumerate(cats):
            ax = axes[i, j]
            panel = df[(df["framing"] == fr) & (df["category"] == cat)]
            for x, fam in enumerate(families):
                vals = panel.loc[panel["family"] == fam, "median_rank"].to_numpy(float)
                if vals.size > 1:
                    parts = ax.violinplot(vals, positions=[x], widths=0.7, showextrema=False)
                    for body in parts["bodies"]:
                        body.set_facecolor(family_color(fam))
                        body.set_alpha(0.25)
                rm_means = panel[panel["family"] == fam].groupby("rm")["median_rank"].mean()
                ax.scatter(
                    x + rng.uniform(-0.12, 0.12, rm_means.size),
                    rm_means,
                    s=14,
                    color=family_color(fam),
                    alpha=0.7,
                )
                se = vals.std(ddof=1) / np.sqrt(vals.size) if vals.size > 1 else 0.0
                ax.errorbar(x, vals.mean(), yerr=se, fmt="D", color="black", ms=4, capsize=3)
            ax.set_xticks(range(len(families)), list(families))
            ax.set_xlim(-0.6, len(families) - 0.4)
            if i == 0:
                ax.set_title(cat, fontsize=10)
            if j == 0:
                ax.set_ylabel(f"{fr} prompts\nmedian rank (1 = best)")
        axes[i, 0].invert_yaxis()
    fig.suptitle(
        f"{corpus}: median rank by base family" + (f" ({subcategory})" if subcategory else ""), fontsize=11
    )
    fig.tight_layout()
    return fig


def plot_per_rm(per_rm: pd.DataFrame, corpus: str, analysis: str = "pooled") -> Figure:
    """Paper Fig. A1: each RM's mean median rank +- SE over prompts, per (framing, category) panel."""
    df = per_rm[(per_rm["corpus"] == corpus) & (per_rm["analysis"] == analysis)]
    cats = sorted(df["category"].unique())
    frs = _framings(df)
    order = df.drop_duplicates("rm").sort_values(["family", "rm"])[["rm", "family"]]
    labels = [r.split("/")[-1] for r in order["rm"]]
    fig, axes = _panel_grid(len(frs), len(cats), width=2.6, height=3.0)
    for i, fr in enumerate(frs):
        for j, cat in enumerate(cats):
            ax = axes[i, j]
            panel = df[(df["framing"] == fr) & (df["category"] == cat)].set_index("rm")
            for x, (rm, fam) in enumerate(zip(order["rm"], order["family"], strict=True)):
                if rm in panel.index:
                    ax.errorbar(
                        x,
                        panel.loc[rm, "mean"],
                        yerr=panel.loc[rm, "se"],
                        fmt="o",
                        color=family_color(fam),
                        ms=4,
                        capsize=2,
                    )
            ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
            if i == 0:
                ax.set_title(cat, fontsize=10)
            if j == 0:
                ax.set_ylabel(f"{fr} prompts\nmean median rank")
        axes[i, 0].invert_yaxis()
    fig.suptitle(f"{corpus}: each reward model (mean +- SE over prompts)", fontsize=11)
    fig.tight_layout()
    return fig


#: Markers and colours of the pooled and subcategory versions in :func:`plot_split`.
SPLIT_MARKERS = {"pooled": "D", "virtue": "o", "vice": "s"}
SPLIT_COLORS = {"pooled": "black", "virtue": "#2a9d8f", "vice": "#e76f51"}


def plot_split(
    panels: pd.DataFrame, corpus: str = "mfd2", low: str = "diff_hb_ci_low", high: str = "diff_hb_ci_high"
) -> Figure:
    """The family difference (b - a, rank units) per foundation and framing, pooled over virtue and vice and
    each apart, with the 95% bootstrap CI in ``low``/``high`` (default: RMs resampled within family, then
    prompts within RM; a point without a bar has no such interval)."""
    import matplotlib.pyplot as plt

    df = panels[panels["corpus"] == corpus].copy()
    if df.empty or not (df["analysis"] == "split").any():
        raise ValueError(f"no split analysis for corpus {corpus!r}")
    df["version"] = df["subcategory"].fillna("pooled").astype(object)
    versions = ["pooled", *sorted(df.loc[df["analysis"] == "split", "subcategory"].unique(), reverse=True)]
    cats = sorted(df["category"].unique())
    frs = _framings(df)
    fig, axes = plt.subplots(
        1,
        len(frs),
        figsize=(4.2 * len(frs), 0.55 * len(cats) * len(versions) / 2 + 1.5),
        sharex=True,
        squeeze=False,
    )
    for j, fr in enumerate(frs):
        ax = axes[0, j]
        for c, cat in enumerate(cats):
            for v, ver in enumerate(versions):
                row = df[(df["framing"] == fr) & (df["category"] == cat) & (df["version"] == ver)]
                if row.empty:
                    continue
                r = row.iloc[0]
                y = c + (v - (len(versions) - 1) / 2) * 0.22
                err = [[r["difference"] - r[low]], [r[high] - r["difference"]]]
                ax.errorbar(
                    r["difference"],
                    y,
                    xerr=None if pd.isna(r[low]) else err,
                    fmt=SPLIT_MARKERS.get(ver, "o"),
                    color=SPLIT_COLORS.get(ver, "grey"),
                    ms=4,
                    capsize=2,
                    label=ver if c == 0 else None,
                )
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_yticks(range(len(cats)), cats)
        ax.invert_yaxis()
        ax.set_title(f"{fr} prompts", fontsize=10)
        fa, fb = df["family_a"].iloc[0], df["family_b"].iloc[0]
        ax.set_xlabel(f"{fb} - {fa} mean median rank\n(> 0: {fa} ranks the words higher)")
    axes[0, -1].legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def plot_rm_contrasts(
    contrasts: pd.DataFrame, rm_level: pd.DataFrame, corpus: str, analysis: str = "pooled"
) -> Figure:
    """Each RM's ``D`` (how much a category gains in rank, relative to the others, from negative to positive
    prompts) by family, one panel per statistic (and subcategory); the family means as black diamonds,
    and in the title the difference with its exact p over all splits of the RMs."""
    import matplotlib.pyplot as plt

    df = contrasts[(contrasts["corpus"] == corpus) & (contrasts["analysis"] == analysis)]
    if df.empty:
        raise ValueError(f"no RM-level contrasts for corpus {corpus!r}, analysis {analysis!r}")
    df = df.assign(version=df["subcategory"].astype(object).fillna("").astype(str))
    keys = list(
        df[["version", "statistic"]]
        .drop_duplicates()
        .sort_values(["version", "statistic"])
        .itertuples(index=False, name=None)
    )
    fig, axes = plt.subplots(1, len(keys), figsize=(2.1 * len(keys) + 0.8, 3.0), squeeze=False, sharey=True)
    rng = np.random.default_rng(0)
    for ax, (version, statistic) in zip(axes[0], keys, strict=True):
        cell = df[(df["version"] == version) & (df["statistic"] == statistic)]
        families = [cell["family"].iloc[0]] if cell["family"].nunique() == 1 else None
        test = rm_level[
            (rm_level["corpus"] == corpus)
            & (rm_level["analysis"] == analysis)
            & (rm_level["subcategory"].astype(object).fillna("").astype(str) == version)
            & (rm_level["statistic"] == statistic)
        ]
        if not test.empty:
            families = [test["family_a"].iloc[0], test["family_b"].iloc[0]]
        families = families or sorted(cell["family"].unique())
        for x, fam in enumerate(families):
            vals = cell.loc[cell["family"] == fam, "D"].to_numpy(float)
            ax.scatter(x + rng.uniform(-0.1, 0.1, vals.size), vals, s=16, color=family_color(fam), alpha=0.8)
            if vals.size:
                ax.scatter([x], [vals.mean()], marker="D", color="black", s=22, zorder=3)
        ax.axhline(0, color="grey", lw=0.7)
        ax.set_xticks(range(len(families)), families)
        ax.set_xlim(-0.6, len(families) - 0.4)
        title = statistic + (f" ({version})" if version else "")
        if not test.empty:
            r = test.iloc[0]
            title += f"\ndiff {r['difference']:.1f}, exact p {r['p_exact']:.3f}"
        ax.set_title(title, fontsize=8)
    axes[0, 0].set_ylabel("D per RM (ranks)")
    fig.suptitle(f"{corpus}: the central interaction per reward model", fontsize=10)
    fig.tight_layout()
    return fig


#: Colours of the two nulls in :func:`plot_null`.
NULL_COLORS = {"all words": "#999999", "within subcategory": "#7fb3d5"}


def plot_null(null_draws: pd.DataFrame, null_summary: pd.DataFrame, statistic: str = "range") -> Figure:
    """The null distributions of a gap statistic (histograms; grey: labels permuted among all words, blue:
    within subcategory) with the observed value (red line), one panel per corpus and framing."""
    import matplotlib.pyplot as plt

    d = null_draws[null_draws["statistic"] == statistic]
    s = null_summary[null_summary["statistic"] == statistic]
    keys = list(s[["corpus", "framing", "category"]].drop_duplicates().itertuples(index=False, name=None))
    fig, axes = plt.subplots(1, len(keys), figsize=(3.1 * len(keys), 2.7), squeeze=False)
    for ax, (corpus, framing, category) in zip(axes[0], keys, strict=True):
        cell = (d["corpus"] == corpus) & (d["framing"] == framing) & (d["category"] == category)
        for null_name, vals in d[cell].groupby("null", sort=True)["value"]:
            ax.hist(
                vals,
                bins=40,
                color=NULL_COLORS.get(null_name, "#bbbbbb"),
                alpha=0.75,
                label=f"null: {null_name}",
            )
        srow = s[(s["corpus"] == corpus) & (s["framing"] == framing) & (s["category"] == category)]
        ax.axvline(srow["observed"].iloc[0], color="#c0392b", lw=2, label="observed")
        ax.set_title(f"{corpus}, {framing} prompts", fontsize=9)
        ax.set_xlabel(f"{statistic} of family gaps (ranks)")
    axes[0, 0].set_ylabel("permutations")
    axes[0, -1].legend(fontsize=7)
    fig.tight_layout()
    return fig
