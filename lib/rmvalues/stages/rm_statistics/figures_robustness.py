"""Figures of the chapter's robustness sections: the specification curve of the central verdict, the curves of
every other verdict, and the power of the RM-level design. Each function returns one figure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ...stats.specification import SUMMARIES, TESTS
from .figures import LABEL, MAX_WIDTH, TICK, TITLE
from .specification import WORD_SETS

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

#: Colours of significant (corrected p < alpha) and other specifications.
SIGNIFICANT, OTHER = "#b2182b", "#7f7f7f"


def _verdict(
    curve: pd.DataFrame, corpus: str, analysis: str, subcategory: str | None, statistic: str
) -> pd.DataFrame:
    sub = curve["subcategory"].isna() if subcategory is None else curve["subcategory"] == subcategory
    return curve[
        (curve["corpus"] == corpus)
        & (curve["analysis"] == analysis)
        & sub
        & (curve["statistic"] == statistic)
    ]


def plot_specification_curve(
    curve: pd.DataFrame,
    corpus: str,
    analysis: str,
    subcategory: str | None,
    statistic: str,
    alpha: float = 0.05,
) -> Figure:
    """The standard specification-curve figure of one verdict: above, every specification's standardised
    estimate (family difference over the pooled within-family SD of the per-RM values) with its interval,
    sorted, red where the corrected p is below ``alpha``; below, the choices of each specification."""
    import matplotlib.pyplot as plt

    df = _verdict(curve, corpus, analysis, subcategory, statistic)
    df = df[np.isfinite(df["std_estimate"])].sort_values("std_estimate").reset_index(drop=True)
    choices = {
        "test": list(TESTS),
        "prompt set": list(dict.fromkeys(df["prompt_set"])),
        "word set": list(WORD_SETS),
        "summary": list(SUMMARIES),
    }
    column = {"test": "test", "prompt set": "prompt_set", "word set": "word_set", "summary": "summary"}
    n_rows = sum(len(v) for v in choices.values())
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(MAX_WIDTH, 2.6 + 0.13 * n_rows), sharex=True, layout="constrained",
        height_ratios=[2.6, 0.13 * n_rows],
    )  # fmt: skip
    x = np.arange(len(df))
    sig = (df["p_corrected"] < alpha).to_numpy()
    colors = np.where(sig, SIGNIFICANT, OTHER)
    top.vlines(x, df["std_ci_low"], df["std_ci_high"], colors=colors, alpha=0.25, linewidth=0.8)
    top.scatter(x, df["std_estimate"], c=colors, s=4, zorder=3)
    prim = df.index[df["primary"]]
    if len(prim):
        top.scatter(prim, df.loc[prim, "std_estimate"], marker="D", s=30, facecolors="none", edgecolors="black",
                    zorder=4, label="primary specification")  # fmt: skip
        top.legend(fontsize=TICK, loc="upper left", frameon=False)
    top.axhline(0, color="black", linewidth=0.6)
    top.set_ylabel(f"{df['family_b'].iloc[0]} − {df['family_a'].iloc[0]}\n(SD units)", fontsize=LABEL)
    top.tick_params(labelsize=TICK)
    where = f"{corpus}" + (f", {subcategory} words" if subcategory else "")
    top.set_title(f"{statistic}, {where}: {len(df)} specifications", fontsize=TITLE)
    labels, y = [], 0
    for kind, values in choices.items():
        for v in values:
            hit = (df[column[kind]] == v).to_numpy()
            bottom.scatter(x[hit], np.full(hit.sum(), y), c=colors[hit], s=1.5, marker="s", linewidths=0)
            labels.append(f"{kind}: {v}")
            y += 1
        bottom.axhline(y - 0.5, color="#dddddd", linewidth=0.5)
    bottom.set_yticks(range(len(labels)), labels, fontsize=TICK - 1.5)
    bottom.set_ylim(len(labels) - 0.5, -0.5)
    bottom.set_xlabel("specifications, sorted by estimate", fontsize=LABEL)
    bottom.tick_params(axis="x", labelsize=TICK)
    return fig


def plot_curve_overview(
    curve: pd.DataFrame, labels: pd.DataFrame, corpus: str, alpha: float = 0.05
) -> Figure:
    """Every verdict of one corpus as a small sorted curve (standardised estimates, red where significant),
    titled with its label and its shares of same-sign and significant specifications."""
    import matplotlib.pyplot as plt

    lab = labels[labels["corpus"] == corpus].reset_index(drop=True)
    n = len(lab)
    cols = min(5, max(n, 1))
    rows = int(np.ceil(n / cols)) if n else 1
    fig, axes = plt.subplots(rows, cols, figsize=(MAX_WIDTH, 1.8 * rows + 0.3), squeeze=False, sharey=True,
                             layout="constrained")  # fmt: skip
    for ax, r in zip(axes.ravel(), lab.itertuples(), strict=False):
        sub = None if pd.isna(r.subcategory) else r.subcategory
        df = _verdict(curve, corpus, r.analysis, sub, r.statistic)
        df = df[np.isfinite(df["std_estimate"])].sort_values("std_estimate")
        x = np.arange(len(df))
        sig = (df["p_corrected"] < alpha).to_numpy()
        ax.fill_between(x, df["std_ci_low"], df["std_ci_high"], color="#cccccc", linewidth=0)
        ax.scatter(x, df["std_estimate"], c=np.where(sig, SIGNIFICANT, OTHER), s=1.5)
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_xticks([])
        where = "pooled" if sub is None else sub
        ax.set_title(
            f"{r.statistic}, {where}\n{r.label}\n{r.share_same_sign:.0%} same sign, {r.share_significant:.0%} sig.",
            fontsize=TICK - 1,
        )
        ax.tick_params(labelsize=TICK - 1)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    fig.supylabel("difference (SD units)", fontsize=LABEL)
    return fig


def central_power(power: pd.DataFrame, needed: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows of ``power.csv`` and ``power_needed.csv`` of the verdict simulated at several sizes (the
    central verdict, :mod:`.design`)."""
    keys = ["corpus", "analysis", "subcategory", "statistic"]
    sizes = power.groupby(keys, dropna=False)["n_a"].transform("nunique")
    rows = power[sizes > 1]
    if rows.empty:
        return rows, needed.iloc[0:0]
    first = rows.iloc[0]
    match = (needed["corpus"] == first["corpus"]) & (needed["statistic"] == first["statistic"])
    return rows, needed[match & (needed["analysis"] == first["analysis"])]


def plot_power(power: pd.DataFrame, needed: pd.DataFrame, tests: Sequence[str] | None = None) -> Figure:
    """Simulated power of the RM-level design against the number of RMs per family (observed sizes marked),
    one line per effect size (the observed effect and fractions of it) and test; the 80% line dashed."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(MAX_WIDTH * 0.75, 3.0), layout="constrained")
    tests = list(tests or dict.fromkeys(power["test"]))
    styles = ["-", "--", ":", "-."]
    for (frac, test), grp in power[power["test"].isin(tests)].groupby(["effect_fraction", "test"], sort=True):
        g = grp.assign(n=(grp["n_a"] + grp["n_b"]) / 2).sort_values("n")
        ax.errorbar(g["n"], g["power"], yerr=1.96 * g["mc_se"], marker="o", markersize=3,
                    linestyle=styles[tests.index(test) % len(styles)], capsize=2,
                    label=f"{frac:.0%} of observed effect, {test}")  # fmt: skip
    ax.axhline(0.8, color="black", linewidth=0.6, linestyle="--")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("reward models per family (mean of the two families)", fontsize=LABEL)
    ax.set_ylabel("power at α = 0.05", fontsize=LABEL)
    ax.tick_params(labelsize=TICK)
    ax.legend(fontsize=TICK - 1, frameon=False, loc="lower right")
    if not needed.empty:
        ax.set_title(
            "; ".join(
                f"{r.effect_fraction:.0%} of the effect: {int(r.n_per_family) if pd.notna(r.n_per_family) else 'more than 200'} per family for 80%"
                for r in needed.itertuples()
            ),
            fontsize=TICK,
        )
    return fig
