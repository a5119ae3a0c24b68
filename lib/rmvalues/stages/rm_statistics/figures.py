"""Figures of the statistics chapter (the paper's Fig. 1 and Fig. A1, the RM-level contrasts, the nulls, the
virtue/vice split). Each function returns ONE figure for every corpus it is given: a corpus is a subfigure
(a row), so a chapter cell shows one numbered figure whatever the parameters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ...core.style import family_color
from ...data.prompts import FRAMINGS

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure, SubFigure

#: The widest figure the book's page shows at its own size (inches, at 100 dpi: the page's text column).
MAX_WIDTH = 7.2
#: Font sizes (points) of tick labels, axis labels, panel titles and corpus titles.
TICK, LABEL, TITLE, CORPUS = 8, 9, 9.5, 10.5


def _corpora(corpora: str | Sequence[str]) -> list[str]:
    return [corpora] if isinstance(corpora, str) else list(corpora)


def _framings(df: pd.DataFrame) -> list[str]:
    return [f for f in FRAMINGS if f in set(df["framing"])]


def _stacked(heights: Sequence[float], width: float) -> tuple[Figure, list[SubFigure]]:
    """A figure of one subfigure per entry of ``heights`` (inches), stacked, ``width`` inches wide."""
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(min(width, MAX_WIDTH), sum(heights)), layout="constrained")
    subs = fig.subfigures(len(heights), 1, height_ratios=list(heights), squeeze=False)[:, 0]
    return fig, list(subs)


def _hide_unused(axes: Any, used: int) -> None:
    for ax in axes.ravel()[used:]:
        ax.set_visible(False)


def _short_rm(rm: str) -> str:
    """An RM's id without its developer and the ``-rewardmodel-ft`` suffix (tick labels)."""
    return rm.split("/")[-1].replace("-rewardmodel-ft", "")


# ---------------------------------------------------------------------------------------------------------
# Paper Fig. 1: median ranks by base family
# ---------------------------------------------------------------------------------------------------------


def _family_rows(
    medians: pd.DataFrame, corpus: str, families: Sequence[str], analysis: str, subcategory: str | None
) -> pd.DataFrame:
    df = medians[
        (medians["corpus"] == corpus)
        & (medians["analysis"] == analysis)
        & medians["family"].isin(list(families))
    ]
    return df if subcategory is None else df[df["subcategory"] == subcategory]


def _draw_family_panels(sf: SubFigure, df: pd.DataFrame, families: Sequence[str], n_cols: int) -> None:
    cats = sorted(df["category"].unique())
    frs = _framings(df)
    axes = sf.subplots(len(frs), n_cols, squeeze=False, sharey="row")
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
                    s=12,
                    color=family_color(fam),
                    alpha=0.7,
                )
                if vals.size:
                    se = vals.std(ddof=1) / np.sqrt(vals.size) if vals.size > 1 else 0.0
                    ax.errorbar(x, vals.mean(), yerr=se, fmt="D", color="black", ms=3.5, capsize=3)
            ax.set_xticks(range(len(families)), list(families), fontsize=LABEL)
            ax.set_xlim(-0.6, len(families) - 0.4)
            ax.tick_params(axis="y", labelsize=TICK)
            if i == 0:
                ax.set_title(cat, fontsize=TITLE)
            if j == 0:
                ax.set_ylabel(f"{fr} prompts\nmedian rank", fontsize=LABEL)
        axes[i, 0].invert_yaxis()
        _hide_unused(axes[i], len(cats))


def plot_family_panels(
    medians: pd.DataFrame,
    corpora: str | Sequence[str],
    families: Sequence[str] = ("gemma", "llama"),
    analysis: str = "pooled",
    subcategory: str | None = None,
) -> Figure:
    """Paper Fig. 1 for every corpus of ``corpora`` (one row of panels each): per (framing, category) panel,
    the (RM, prompt) median ranks of each family (violin), each RM's mean (coloured dots) and the family mean
    +- SE over points (black); rank 1 (highest reward) at the top."""
    parts = [(c, _family_rows(medians, c, families, analysis, subcategory)) for c in _corpora(corpora)]
    parts = [(c, df) for c, df in parts if not df.empty]
    if not parts:
        raise ValueError(f"no median ranks for corpora {_corpora(corpora)!r}, analysis {analysis!r}")
    n_cols = max(df["category"].nunique() for _, df in parts)
    heights = [1.8 * len(_framings(df)) + 0.4 for _, df in parts]
    fig, subs = _stacked(heights, 1.45 * n_cols + 0.9)
    for sf, (corpus, df) in zip(subs, parts, strict=True):
        _draw_family_panels(sf, df, families, n_cols)
        sf.suptitle(corpus + (f" ({subcategory})" if subcategory else ""), fontsize=CORPUS, fontweight="bold")
    fig.legend(handles=_family_key(), loc="outside upper center", fontsize=LABEL, ncols=3, frameon=False)
    return fig


def _family_key() -> list[Any]:
    import matplotlib.lines as mlines
    import matplotlib.patches as mpatches

    return [
        mpatches.Patch(color="grey", alpha=0.3, label="(RM, prompt) points"),
        mlines.Line2D([], [], color="grey", marker="o", ls="", ms=4, label="one RM's mean"),
        mlines.Line2D([], [], color="black", marker="D", ls="-", ms=3.5, label="family mean \u00b1 SE"),
    ]


# ---------------------------------------------------------------------------------------------------------
# Paper Fig. A1: each reward model
# ---------------------------------------------------------------------------------------------------------


#: Panels per row of the per-RM and RM-contrast figures (more categories wrap to a further row).
WRAP = 3


def _draw_per_rm(sf: SubFigure, df: pd.DataFrame) -> None:
    cats = sorted(df["category"].unique())
    frs = _framings(df)
    order = df.drop_duplicates("rm").sort_values(["family", "rm"])[["rm", "family"]]
    n_rows = -(-len(cats) // WRAP)
    axes = sf.subplots(n_rows, min(WRAP, len(cats)), squeeze=False, sharey=True)
    offsets = {fr: (k - (len(frs) - 1) / 2) * 0.22 for k, fr in enumerate(frs)}
    for j, cat in enumerate(cats):
        ax = axes.ravel()[j]
        for k, fr in enumerate(frs):
            panel = df[(df["framing"] == fr) & (df["category"] == cat)].set_index("rm")
            for y, (rm, fam) in enumerate(zip(order["rm"], order["family"], strict=True)):
                if rm not in panel.index:
                    continue
                ax.errorbar(
                    panel.loc[rm, "mean"],
                    y + offsets[fr],
                    xerr=panel.loc[rm, "se"],
                    fmt="os"[k % 2],
                    color=family_color(fam),
                    mfc=family_color(fam) if k == 0 else "white",
                    ms=4,
                    capsize=1.5,
                    lw=0.8,
                )
        ax.set_title(cat, fontsize=TITLE)
        ax.tick_params(axis="x", labelsize=TICK)
        ax.set_xlabel("mean median rank", fontsize=LABEL)
        ax.grid(axis="y", color="#eeeeee", lw=0.6)
    for row in axes:
        row[0].set_yticks(range(len(order)), [_short_rm(r) for r in order["rm"]], fontsize=TICK)
        for tick, fam in zip(row[0].get_yticklabels(), order["family"], strict=True):
            tick.set_color(family_color(fam))
    axes[0, 0].invert_yaxis()
    _hide_unused(axes, len(cats))


def plot_per_rm(per_rm: pd.DataFrame, corpora: str | Sequence[str], analysis: str = "pooled") -> Figure:
    """Paper Fig. A1 for every corpus of ``corpora`` (one block of panels each, one panel per category,
    :data:`WRAP` per row): each RM's mean median rank +- SE over prompts, RMs as rows coloured by family,
    positive prompts as filled circles and negative prompts as open squares."""
    import matplotlib.lines as mlines

    parts = [
        (c, per_rm[(per_rm["corpus"] == c) & (per_rm["analysis"] == analysis)]) for c in _corpora(corpora)
    ]
    parts = [(c, df) for c, df in parts if not df.empty]
    if not parts:
        raise ValueError(f"no per-RM summaries for corpora {_corpora(corpora)!r}, analysis {analysis!r}")
    heights = [
        (0.2 * df["rm"].nunique() + 0.9) * -(-df["category"].nunique() // WRAP) + 0.3 for _, df in parts
    ]
    fig, subs = _stacked(heights, MAX_WIDTH)
    for sf, (corpus, df) in zip(subs, parts, strict=True):
        _draw_per_rm(sf, df)
        sf.suptitle(corpus, fontsize=CORPUS, fontweight="bold")
    frs = _framings(parts[0][1])
    handles = [
        mlines.Line2D(
            [],
            [],
            color="grey",
            marker="os"[k % 2],
            mfc="grey" if k == 0 else "white",
            ls="",
            label=f"{fr} prompts",
        )
        for k, fr in enumerate(frs)
    ]
    fig.legend(handles=handles, loc="outside upper center", fontsize=LABEL, ncols=len(handles), frameon=False)
    return fig


# ---------------------------------------------------------------------------------------------------------
# The virtue/vice split
# ---------------------------------------------------------------------------------------------------------

#: Markers and colours of the pooled and subcategory versions in :func:`plot_split`.
SPLIT_MARKERS = {"pooled": "D", "virtue": "o", "vice": "s"}
SPLIT_COLORS = {"pooled": "black", "virtue": "#2a9d8f", "vice": "#e76f51"}


def _draw_split(sf: SubFigure, df: pd.DataFrame, low: str, high: str) -> None:
    versions = ["pooled", *sorted(df.loc[df["analysis"] == "split", "subcategory"].unique(), reverse=True)]
    cats = sorted(df["category"].unique())
    frs = _framings(df)
    axes = sf.subplots(1, len(frs), sharex=True, squeeze=False)[0]
    fa, fb = df["family_a"].iloc[0], df["family_b"].iloc[0]
    for ax, fr in zip(axes, frs, strict=True):
        for c, cat in enumerate(cats):
            for v, ver in enumerate(versions):
                row = df[(df["framing"] == fr) & (df["category"] == cat) & (df["version"] == ver)]
                if row.empty:
                    continue
                r = row.iloc[0]
                err = [[r["difference"] - r[low]], [r[high] - r["difference"]]]
                ax.errorbar(
                    r["difference"],
                    c + (v - (len(versions) - 1) / 2) * 0.22,
                    xerr=None if pd.isna(r[low]) else err,
                    fmt=SPLIT_MARKERS.get(ver, "o"),
                    color=SPLIT_COLORS.get(ver, "grey"),
                    ms=4,
                    capsize=2,
                    label=ver if c == 0 else None,
                )
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_yticks(range(len(cats)), cats, fontsize=LABEL)
        ax.invert_yaxis()
        ax.set_title(f"{fr} prompts", fontsize=TITLE)
        ax.tick_params(axis="x", labelsize=TICK)
        ax.set_xlabel(
            f"{fb} \u2212 {fa} mean median rank\n(> 0: {fa} ranks the words higher)", fontsize=LABEL
        )
    axes[-1].legend(fontsize=TICK, loc="best")


def plot_split(
    panels: pd.DataFrame,
    corpora: str | Sequence[str] = "mfd2",
    low: str = "diff_hb_ci_low",
    high: str = "diff_hb_ci_high",
) -> Figure:
    """The family difference (b - a, rank units) per category and framing, pooled over the subcategories
    (virtue and vice) and each apart, with the 95% bootstrap CI in ``low``/``high`` (default: RMs resampled
    within family, then prompts within RM; a point without a bar has no such interval); one row per corpus
    of ``corpora`` with a split analysis."""
    parts = []
    for corpus in _corpora(corpora):
        df = panels[panels["corpus"] == corpus]
        if (df["analysis"] == "split").any():
            parts.append((corpus, df.assign(version=df["subcategory"].fillna("pooled").astype(object))))
    if not parts:
        raise ValueError(f"no split analysis for corpora {_corpora(corpora)!r}")
    heights = [0.17 * df["category"].nunique() * 3 + 1.6 for _, df in parts]
    fig, subs = _stacked(heights, MAX_WIDTH)
    for sf, (corpus, df) in zip(subs, parts, strict=True):
        _draw_split(sf, df, low, high)
        sf.suptitle(corpus, fontsize=CORPUS, fontweight="bold")
    return fig


# ---------------------------------------------------------------------------------------------------------
# The central interaction per RM
# ---------------------------------------------------------------------------------------------------------


def _contrast_keys(df: pd.DataFrame) -> list[tuple[str, str]]:
    return list(
        df[["version", "statistic"]]
        .drop_duplicates()
        .sort_values(["version", "statistic"])
        .itertuples(index=False, name=None)
    )


def _draw_contrast(ax: Any, cell: pd.DataFrame, test: pd.DataFrame, title: str, rng: Any) -> None:
    families = [cell["family"].iloc[0]] if cell["family"].nunique() == 1 else None
    if not test.empty:
        families = [test["family_a"].iloc[0], test["family_b"].iloc[0]]
    families = families or sorted(cell["family"].unique())
    for x, fam in enumerate(families):
        vals = cell.loc[cell["family"] == fam, "D"].to_numpy(float)
        ax.scatter(x + rng.uniform(-0.1, 0.1, vals.size), vals, s=14, color=family_color(fam), alpha=0.8)
        if vals.size:
            ax.scatter([x], [vals.mean()], marker="D", color="black", s=20, zorder=3)
    ax.axhline(0, color="grey", lw=0.7)
    ax.set_xticks(range(len(families)), families, fontsize=LABEL)
    ax.set_xlim(-0.6, len(families) - 0.4)
    ax.tick_params(axis="y", labelsize=TICK)
    if not test.empty:
        r = test.iloc[0]
        title += f"\ndiff {r['difference']:.1f}, exact p {r['p_exact']:.3f}"
    ax.set_title(title, fontsize=LABEL)


def plot_rm_contrasts(
    contrasts: pd.DataFrame, rm_level: pd.DataFrame, corpora: str | Sequence[str], analysis: str = "pooled"
) -> Figure:
    """Each RM's ``D`` (how much a category gains in rank, relative to the others, from negative to positive
    prompts) by family, one panel per corpus and statistic (and subcategory), :data:`WRAP` panels per row;
    the family means as black diamonds, and in each title the difference with its exact p over all splits
    of the RMs."""
    import matplotlib.pyplot as plt

    tests = rm_level[rm_level["analysis"] == analysis]
    tests = tests.assign(version=tests["subcategory"].astype(object).fillna("").astype(str))
    cells = []
    for corpus in _corpora(corpora):
        df = contrasts[(contrasts["corpus"] == corpus) & (contrasts["analysis"] == analysis)]
        df = df.assign(version=df["subcategory"].astype(object).fillna("").astype(str))
        for version, statistic in _contrast_keys(df) if not df.empty else []:
            cell = df[(df["version"] == version) & (df["statistic"] == statistic)]
            test = tests[
                (tests["corpus"] == corpus)
                & (tests["version"] == version)
                & (tests["statistic"] == statistic)
            ]
            cells.append((f"{corpus}: {statistic}" + (f" ({version})" if version else ""), cell, test))
    if not cells:
        raise ValueError(f"no RM-level contrasts for corpora {_corpora(corpora)!r}, analysis {analysis!r}")
    n_cols, n_rows = min(WRAP, len(cells)), -(-len(cells) // WRAP)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(MAX_WIDTH, 2.5 * n_rows), squeeze=False, layout="constrained"
    )
    rng = np.random.default_rng(0)
    for ax, (title, cell, test) in zip(axes.ravel(), cells, strict=False):
        _draw_contrast(ax, cell, test, title, rng)
    for row in axes:
        row[0].set_ylabel("D per RM (ranks)", fontsize=LABEL)
    _hide_unused(axes, len(cells))
    return fig


# ---------------------------------------------------------------------------------------------------------
# The null baseline
# ---------------------------------------------------------------------------------------------------------

#: Colours of the two nulls in :func:`plot_null`.
NULL_COLORS = {"all words": "#999999", "within subcategory": "#7fb3d5"}


def plot_null(null_draws: pd.DataFrame, null_summary: pd.DataFrame, statistic: str = "range") -> Figure:
    """The null distributions of a gap statistic (histograms; grey: labels permuted among all words, blue:
    within subcategory) with the observed value (red line): one row per corpus, one panel per framing."""
    import matplotlib.pyplot as plt

    d = null_draws[null_draws["statistic"] == statistic]
    s = null_summary[null_summary["statistic"] == statistic]
    corpora = list(dict.fromkeys(s["corpus"]))
    frs = _framings(s)
    if not corpora:
        raise ValueError(f"no null baseline of statistic {statistic!r}")
    fig, axes = plt.subplots(
        len(corpora),
        len(frs),
        figsize=(min(4.1 * len(frs) + 0.6, MAX_WIDTH), 2.4 * len(corpora) + 0.3),
        squeeze=False,
        layout="constrained",
    )
    for i, corpus in enumerate(corpora):
        for j, framing in enumerate(frs):
            ax = axes[i, j]
            cell = (d["corpus"] == corpus) & (d["framing"] == framing)
            for null_name, vals in d[cell].groupby("null", sort=True)["value"]:
                ax.hist(
                    vals,
                    bins=40,
                    color=NULL_COLORS.get(null_name, "#bbbbbb"),
                    alpha=0.75,
                    label=f"null: {null_name}",
                )
            srow = s[(s["corpus"] == corpus) & (s["framing"] == framing)]
            if not srow.empty:
                ax.axvline(srow["observed"].iloc[0], color="#c0392b", lw=2, label="observed")
            ax.set_title(f"{corpus}, {framing} prompts", fontsize=TITLE)
            ax.tick_params(labelsize=TICK)
            ax.set_xlabel(f"{statistic} of family gaps (ranks)", fontsize=LABEL)
            if j == 0:
                ax.set_ylabel("permutations", fontsize=LABEL)
            ax.legend(fontsize=TICK - 1)
    return fig
