"""Figures of the implicit-rewards chapter (matplotlib). Each function returns one open figure: a figure cell of
the notebook draws it with ``plt.show()`` (one numbered figure per cell); :func:`plot_median_ranks` returns a
closed one, to ``display``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ...core.style import note_figure

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["plot_contrasts", "plot_detection", "plot_median_ranks", "plot_median_ranks_grid", "plot_recovery"]


def plot_median_ranks(
    medians: pd.DataFrame, corpus: str, metric: str = "word_sum", pair: str | None = None
) -> Figure:
    """Mean (± SE over prompts) of each category's median rank per model and framing (paper Fig. 2);
    ``pair`` selects one pair's word set (the single-token analysis)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    df = medians[
        (medians["corpus"] == corpus) & (medians["metric"] == metric) & (medians["analysis"] == "pooled")
    ]
    if pair is not None:
        df = df[df["pair"] == pair]
    g = sns.catplot(
        data=df,
        x="category",
        y="median_rank",
        hue="model",
        col="framing",
        col_order=[f for f in ("positive", "negative") if f in set(df["framing"])],
        kind="point",
        errorbar="se",
        dodge=0.3 if df["model"].nunique() > 1 else False,
        height=3.2,
        aspect=1.3 if df["category"].nunique() <= 2 else 1.9,
    )
    g.set_axis_labels("", "median rank (1 = most probable)")
    for ax in g.axes.flat:
        ax.invert_yaxis()
        ax.tick_params(axis="x", rotation=30 if df["category"].nunique() > 2 else 0)
    g.figure.suptitle(f"{corpus}: {metric}" + (f" ({pair})" if pair else ""), y=1.03)
    plt.close(g.figure)
    return g.figure


def _model_palette(df: pd.DataFrame) -> dict[str, str]:
    """One colour per model: its base family's (the book's palette), or distinct colours when two models
    share a family or a panel shows pair metrics (``model`` = the pair)."""
    from ...core.style import family_color, label_colors

    fams = df.drop_duplicates("model").set_index("model")["family"] if "family" in df else pd.Series()
    colors = {m: family_color(fams.get(m, "")) for m in df["model"].unique()}
    if len(set(colors.values())) < len(colors):
        return label_colors(set(colors))
    return colors


def plot_median_ranks_grid(medians: pd.DataFrame, metric: str, pair: str | None = None) -> Figure:
    """ONE figure of the category median ranks of ``metric`` (mean ± SE over prompts) per model: a row per
    corpus (and per pair, for the single-token analysis, whose word set is the pair's), a column per framing.
    ``pair`` keeps one pair's rows. Empty ``medians`` give an empty figure with a note."""
    import seaborn as sns

    if medians.empty:
        return note_figure(f"No median ranks of {metric} in this run.")
    df = medians[(medians["metric"] == metric) & (medians["analysis"] == "pooled")].copy()
    if pair is not None and "pair" in df:
        df = df[df["pair"] == pair]
    if df.empty:
        return note_figure(f"No median ranks of {metric} in this run.")
    many_pairs = "pair" in df and df["pair"].nunique() > 1
    df["panel"] = (df["pair"] + " | " + df["corpus"]) if many_pairs else df["corpus"]
    n_cat = df.groupby("panel")["category"].nunique().max()
    g = sns.catplot(
        data=df,
        x="category",
        y="median_rank",
        hue="model",
        palette=_model_palette(df),
        row="panel",
        col="framing",
        col_order=[f for f in ("positive", "negative") if f in set(df["framing"])],
        kind="point",
        errorbar="se",
        dodge=0.3 if df["model"].nunique() > 1 else False,
        sharex=False,
        sharey=False,
        height=2.8,
        aspect=1.2 if n_cat <= 2 else 1.45,
    )
    g.set_axis_labels("", "median rank (1 = most probable)")
    g.set_titles("{row_name}, {col_name} prompts")
    for ax in g.axes.flat:
        ax.invert_yaxis()
        ax.tick_params(axis="x", rotation=30 if n_cat > 2 else 0)
    sns.move_legend(g, "upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, title=None, frameon=False)
    g.figure.tight_layout()
    return g.figure


def plot_contrasts(contrasts: pd.DataFrame) -> Figure:
    """Lollipop of the word-pair contrast (MWLR of word a minus word b) per pair and variant (Fig. 3)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter

    if contrasts.empty:
        return note_figure("No model pair: no word contrast in this run.")
    df = contrasts[contrasts["framing"] == "all"].copy()
    df["label"] = df["case"] + ", " + df["space"]
    if df["pair"].nunique() > 1:
        df["label"] = df["pair"] + " | " + df["label"]

    a, b = df["text_a"].iloc[0].strip().lower(), df["text_b"].iloc[0].strip().lower()
    df = df.iloc[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(df) + 1.5))
    y = np.arange(len(df))
    ax.hlines(y, 0, df["difference"], color="0.6")
    ax.scatter(df["difference"], y, color=np.where(df["difference"] > 0, "#0064E0", "#DB4437"), zorder=3)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(y, df["label"])
    ax.xaxis.set_major_formatter(FormatStrFormatter("%.1e"))
    ax.tick_params(axis="x", rotation=30)
    ax.set_xlabel(f"MWLR({a}) - MWLR({b}), mean over prompts")
    fig.tight_layout()
    return fig


def plot_recovery(recovery: pd.DataFrame) -> Figure:
    """AUC of the planted words per panel (level, reference, metric) in the three conditions: the tuned
    model and its two controls (0.5 = chance)."""
    import matplotlib.pyplot as plt

    if recovery.empty:
        return note_figure("The planted-word validation was skipped in this run (planted_model = '').")
    df = recovery[recovery["target"] == "planted words"].copy()
    df["label"] = df["level"] + ": " + df["metric"]
    wide = df.pivot_table(index="label", columns="condition", values="auc", sort=False)
    conds = [c for c in ("planted", "sham", "untuned") if c in wide]
    colors = {"planted": "#0064E0", "sham": "#DB4437", "untuned": "#888888"}
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(wide) + 1.2))
    y = np.arange(len(wide))
    h = 0.8 / max(len(conds), 1)
    for k, c in enumerate(conds):
        ax.barh(y + k * h - 0.4 + h / 2, wide[c], height=h, color=colors[c], label=c)
    ax.axvline(0.5, color="k", lw=0.8, ls=":")
    ax.set_yticks(y, wide.index)
    ax.set_xlim(0, 1)
    ax.set_xlabel("AUC of the planted words")
    ax.invert_yaxis()
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(conds), fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def plot_detection(graded: pd.DataFrame) -> Figure:
    """The graded validation: per level (row) and metric (column), the planted words' AUC against the plant's
    strength (log scale) under the plant and the sham plant of the same strength, each with its 95%
    paired-bootstrap band, and under the untuned model (0.5 = chance)."""
    import matplotlib.pyplot as plt

    if graded.empty:
        return note_figure(
            "The graded validation was skipped in this run (planted_strengths = [] or no plant)."
        )
    levels = list(dict.fromkeys(graded["level"]))
    per = {lv: list(dict.fromkeys(graded.loc[graded["level"] == lv, "metric"])) for lv in levels}
    ncol = max(len(m) for m in per.values())
    fig, axes = plt.subplots(
        len(levels), ncol, figsize=(2.6 * ncol, 2.5 * len(levels)), squeeze=False, sharex=True, sharey=True
    )
    colors = {"planted": "#0064E0", "sham": "#DB4437", "untuned": "#888888"}
    for i, lv in enumerate(levels):
        for j in range(ncol):
            ax = axes[i, j]
            if j >= len(per[lv]):
                ax.set_axis_off()
                continue
            d = graded[(graded["level"] == lv) & (graded["metric"] == per[lv][j])].sort_values("strength")
            x = d["strength"].to_numpy(float)
            for cond, ls in (("planted", "-"), ("sham", "--")):
                ax.plot(x, d[f"auc_{cond}"], ls, marker="o", ms=3, color=colors[cond], label=cond)
                ax.fill_between(
                    x, d[f"ci_low_{cond}"], d[f"ci_high_{cond}"], color=colors[cond], alpha=0.2, lw=0
                )
            ax.plot(x, d["auc_untuned"], ":", color=colors["untuned"], label="untuned")
            hit = d[d["detected"]]
            ax.plot(hit["strength"], hit["auc_planted"], "*", ms=9, color=colors["planted"], label="detected")
            ax.axhline(0.5, color="k", lw=0.5, ls=":")
            ax.set_xscale("log")
            ax.set_ylim(0, 1.02)
            ax.set_title(f"{lv}: {per[lv][j]}", fontsize=9)
            if j == 0:
                ax.set_ylabel("AUC of the planted words")
            if i == len(levels) - 1:
                ax.set_xlabel("learning rate of the plant")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(
        handles, labels, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=4, fontsize=8, frameon=False
    )
    fig.tight_layout()
    return fig
