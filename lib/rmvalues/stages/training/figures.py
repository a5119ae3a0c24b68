"""Figures of the training chapter (base models coloured by family, :mod:`rmvalues.core.style`)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ...core.style import FAMILY_COLORS, family_color, label_colors, note_figure
from .paper import PAPER_TRAINING_FILES, PAPER_TRAINING_LABELS

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = [
    "base_colors",
    "plot_depth",
    "plot_final_gaps",
    "plot_heldout_accuracy",
    "plot_paper_trajectories",
    "plot_training_curves",
    "plot_trajectories",
    "plot_word_movers",
]


#: Widest figure (inches) that stays readable at the book page's width.
MAX_WIDTH = 9.0


def base_colors(frame: pd.DataFrame) -> dict[str, str]:
    """Colour of each ``base_model`` of ``frame``: its family's colour when every base has its own known
    family (``family`` column), else fixed colours per base model name."""
    bases = sorted(frame["base_model"].unique())
    if "family" in frame.columns:
        fam = frame.drop_duplicates("base_model").set_index("base_model")["family"].astype(str)
        families = [fam[b] for b in bases]
        known = all(f.lower() in FAMILY_COLORS for f in families)
        if known and len(set(families)) == len(families):
            return {b: family_color(fam[b]) for b in bases}
    return label_colors(bases)


def plot_training_curves(history: pd.DataFrame, cells: pd.DataFrame) -> Figure:
    """Loss, accuracy and margin over steps (rows) per quantity (columns): training batches (thin lines,
    mean over seeds) and held-out pairs (markers, mean over seeds), one colour per base model."""
    import matplotlib.pyplot as plt

    h = history.merge(cells[["cell", "base_model", "family", "quantity", "seed"]], on="cell")
    quantities = sorted(h["quantity"].unique())
    metrics = ["loss", "accuracy", "margin"]
    colors = base_colors(cells)
    fig, axes = plt.subplots(
        len(metrics),
        len(quantities),
        figsize=(min(MAX_WIDTH, 2.7 * len(quantities) + 1.2), 6.4),
        sharex="col",
        squeeze=False,
    )
    for j, q in enumerate(quantities):
        for i, metric in enumerate(metrics):
            ax = axes[i][j]
            for base, g in h[h["quantity"] == q].groupby("base_model"):
                tr = g[g["split"] == "train"].groupby("step")[metric].mean()
                ev = g[g["split"] == "eval"].groupby("step")[metric].mean()
                ax.plot(tr.index, tr.to_numpy(), color=colors[base], lw=0.8, alpha=0.6)
                ax.plot(ev.index, ev.to_numpy(), color=colors[base], marker="o", ms=4, lw=1.5, label=base)
            if metric == "accuracy":
                ax.axhline(0.5, color="grey", lw=0.6, ls=":")
            if metric == "loss":
                ax.axhline(math.log(2), color="grey", lw=0.6, ls=":")
            ax.set_ylabel(metric if j == 0 else "")
            if i == 0:
                ax.set_title(f"{q} training pairs")
            if i == len(metrics) - 1:
                ax.set_xlabel("optimizer step")
    axes[0][-1].legend(fontsize=7, title="held-out (markers)", title_fontsize=7)
    fig.tight_layout()
    return fig


def plot_heldout_accuracy(cells: pd.DataFrame, accuracy: pd.DataFrame) -> Figure:
    """Held-out preference accuracy against the number of training pairs (log scale), per base model: one dot
    per seed, the mean with its t interval across seeds (thick bar) and the bootstrap interval over held-out
    pairs (thin bar); chance at 50 %."""
    import matplotlib.pyplot as plt

    colors = base_colors(cells)
    bases = sorted(cells["base_model"].unique())
    fig, ax = plt.subplots(figsize=(6.2, 3.6))
    for k, base in enumerate(bases):
        shift = 1 + 0.06 * (k - (len(bases) - 1) / 2)
        c = cells[cells["base_model"] == base]
        ax.scatter(c["quantity"] * shift, c["eval_accuracy_end"], color=colors[base], s=14, alpha=0.55)
        a = accuracy[accuracy["base_model"] == base].sort_values("quantity")
        x = a["quantity"].to_numpy(float) * shift
        ax.plot(x, a["accuracy"], color=colors[base], marker="o", lw=1.5, label=base)
        ax.vlines(x, a["seed_ci_low"], a["seed_ci_high"], color=colors[base], lw=3, alpha=0.8)
        if a["pair_ci_low"].notna().any():
            ax.vlines(x * 1.015, a["pair_ci_low"], a["pair_ci_high"], color=colors[base], lw=1, alpha=0.8)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_xscale("log")
    qs = sorted(cells["quantity"].unique())
    ax.set_xticks(qs, [str(q) for q in qs])
    ax.minorticks_off()
    ax.set_xlabel("training pairs")
    ax.set_ylabel("held-out accuracy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_final_gaps(final: pd.DataFrame, gaps: pd.DataFrame) -> Figure:
    """The Agency - Communion gap at the last checkpoint against the number of training pairs, per base model
    and framing: one dot per seed, the mean with its t interval, and the central 95 % of randomly drawn heads'
    gaps (shaded)."""
    import matplotlib.pyplot as plt

    if final is None or final.empty or gaps is None or gaps.empty:
        return note_figure("no Agency - Communion gap in this run (the corpus lacks one of the categories)")
    framings = [f for f in ("positive", "negative") if f in set(final["framing"])]
    colors = base_colors(final)
    bases = sorted(final["base_model"].unique())
    last = gaps[gaps["step"] == gaps.groupby("cell")["step"].transform("max")]
    fig, axes = plt.subplots(
        1, len(framings), figsize=(min(MAX_WIDTH, 4.4 * len(framings)), 3.4), squeeze=False, sharey=True
    )
    for ax, fr in zip(axes[0], framings, strict=True):
        for k, base in enumerate(bases):
            shift = 1 + 0.06 * (k - (len(bases) - 1) / 2)
            f = final[(final["framing"] == fr) & (final["base_model"] == base)].sort_values("quantity")
            x = f["quantity"].to_numpy(float) * shift
            if "null_low" in f.columns and f["null_low"].notna().any():
                ax.fill_between(x, f["null_low"], f["null_high"], color=colors[base], alpha=0.12, lw=0)
            d = last[(last["framing"] == fr) & (last["base_model"] == base)]
            ax.scatter(d["quantity"] * shift, d["gap"], color=colors[base], s=14, alpha=0.55)
            ax.plot(x, f["gap"], color=colors[base], marker="o", lw=1.5, label=base)
            ax.vlines(x, f["ci_low"], f["ci_high"], color=colors[base], lw=3, alpha=0.8)
        ax.axhline(0, color="grey", lw=0.6, ls=":")
        ax.set_xscale("log")
        qs = sorted(final["quantity"].unique())
        ax.set_xticks(qs, [str(q) for q in qs])
        ax.minorticks_off()
        ax.set_xlabel("training pairs")
        ax.set_title(f"{fr} prompts", fontsize=9)
    axes[0][0].set_ylabel("Agency - Communion median rank\n(> 0: Communion favoured)")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def _depth_panel(ax, frame: pd.DataFrame, value: str, colors: dict[str, str]) -> None:
    """One panel of :func:`plot_depth`: per base model, one dot per seed at each depth k and the mean over
    seeds with its t interval (thick bar), the means joined across k."""
    from ...stats import mean_ci

    bases = sorted(frame["base_model"].unique())
    for j, base in enumerate(bases):
        shift = 0.08 * (j - (len(bases) - 1) / 2)
        d = frame[frame["base_model"] == base]
        ax.scatter(d["depth"] + shift, d[value], color=colors[base], s=14, alpha=0.55)
        stats = pd.DataFrame(
            [(k, *mean_ci(g[value])[:4]) for k, g in d.groupby("depth")],
            columns=["depth", "mean", "sd", "low", "high"],
        )
        k, mean, low, high = (stats[c].to_numpy(float) for c in ("depth", "mean", "low", "high"))
        ax.plot(k + shift, mean, color=colors[base], marker="o", lw=1.5, label=base)
        ax.vlines(k + shift, low, high, color=colors[base], lw=3, alpha=0.8)
    ks = sorted(frame["depth"].unique())
    ax.set_xticks(ks, [str(int(k)) for k in ks])
    ax.set_xlabel("top blocks adapted (k)")


def plot_depth(gaps: pd.DataFrame | None, cells: pd.DataFrame) -> Figure:
    """The depth arm at its largest quantity: the Agency - Communion gap at the last checkpoint (one panel per
    framing) and held-out accuracy against the number of adapted top blocks k (k = 0: the probe), per base
    model, on the seeds the arm shares with the probe: one dot per seed, the mean with its t interval."""
    import matplotlib.pyplot as plt

    deep = cells[cells["depth"] > 0]
    if deep.empty:
        return note_figure("no depth arm in this run (the grid's settings list no depths)")
    quantity = int(deep["quantity"].max())
    seeds = set(deep.loc[deep["quantity"] == quantity, "seed"])
    keep = cells[(cells["quantity"] == quantity) & cells["seed"].isin(seeds)]
    colors = base_colors(cells)
    panels: list[tuple[str, pd.DataFrame, str, str]] = []
    if gaps is not None and not gaps.empty:
        last = gaps[gaps["step"] == gaps.groupby("cell")["step"].transform("max")]
        last = last[last["cell"].isin(keep["cell"])]
        ylabel = "Agency - Communion median rank\n(> 0: Communion favoured)"
        panels += [
            (f"{fr} prompts", last[last["framing"] == fr], "gap", ylabel)
            for fr in ("positive", "negative")
            if fr in set(last["framing"])
        ]
    panels.append(("held-out accuracy", keep, "eval_accuracy_end", "held-out accuracy"))
    fig, axes = plt.subplots(1, len(panels), figsize=(min(MAX_WIDTH, 3.1 * len(panels)), 3.4), squeeze=False)
    for ax, (title, frame, value, ylabel) in zip(axes[0], panels, strict=True):
        _depth_panel(ax, frame, value, colors)
        ax.axhline(0.5 if value == "eval_accuracy_end" else 0.0, color="grey", lw=0.6, ls=":")
        ax.set_title(f"{title}, {quantity} pairs", fontsize=9)
        ax.set_ylabel(ylabel, fontsize=8)
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_trajectories(summary: pd.DataFrame) -> Figure:
    """Mean median rank of each category over training steps (lower = more reward), per base model, with the
    t confidence band across seeds, from the first checkpoint after step 0; columns: quantities, rows:
    framings (paper Fig. 4, with seeds)."""
    import matplotlib.pyplot as plt

    if summary is None or summary.empty:
        return note_figure("no scored checkpoint in this run")
    quantities = sorted(summary["quantity"].unique())
    framings = [f for f in ("positive", "negative") if f in set(summary["framing"])]
    colors = base_colors(summary)
    styles = {
        c: s for c, s in zip(sorted(summary["category"].unique()), ["-", "--", ":", "-."] * 4, strict=False)
    }
    fig, axes = plt.subplots(
        len(framings),
        len(quantities),
        figsize=(min(MAX_WIDTH, 2.6 * len(quantities) + 1.2), 2.7 * len(framings) + 0.9),
        squeeze=False,
        sharey="row",
    )
    for i, fr in enumerate(framings):
        for j, q in enumerate(quantities):
            ax = axes[i][j]
            sub = summary[(summary["framing"] == fr) & (summary["quantity"] == q)]
            for (base, cat), g in sub.groupby(["base_model", "category"]):
                g = g.sort_values("step")
                ax.plot(
                    g["step"], g["mean"], color=colors[base], ls=styles[cat], lw=1.6, label=f"{base} · {cat}"
                )
                if g["ci_low"].notna().any():
                    ax.fill_between(
                        g["step"], g["ci_low"], g["ci_high"], color=colors[base], alpha=0.12, lw=0
                    )
            if j == 0:
                ax.invert_yaxis()
                ax.set_ylabel("median rank (1 = most reward)")
            ax.set_title(f"{fr} prompts · {q} pairs", fontsize=8)
            ax.set_xlabel("optimizer step")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(2, len(labels)), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig


def plot_word_movers(movers: pd.DataFrame, data: str | None = None, quantity: int | None = None) -> Figure:
    """Top risers and fallers per base model (paper Fig. 5): mean rank change over seeds, coloured by category."""
    import matplotlib.pyplot as plt

    m = movers
    if data is not None:
        m = m[m["data"] == data]
    if quantity is not None:
        m = m[m["quantity"] == quantity]
    bases = sorted(m["base_model"].unique())
    if not bases:
        return note_figure("no cell has two scored checkpoints")
    cat_colors = label_colors(list(m["category"].unique()))
    fig, axes = plt.subplots(
        1,
        len(bases),
        figsize=(min(MAX_WIDTH, 4.4 * len(bases)), 0.24 * m.groupby("base_model").size().max() + 1.2),
        squeeze=False,
    )
    for ax, base in zip(axes[0], bases, strict=True):
        g = m[m["base_model"] == base].sort_values("change")
        y = np.arange(len(g))
        ax.barh(
            y,
            g["change"],
            color=[cat_colors[c] for c in g["category"]],
            xerr=g["change_sd"].fillna(0),
            ecolor="grey",
            error_kw={"lw": 0.6},
        )
        ax.set_yticks(y, g["word"], fontsize=7)
        ax.axvline(0, color="black", lw=0.6)
        ax.invert_yaxis()
        ax.set_title(base, fontsize=9)
        ax.set_xlabel("rank change, last - first checkpoint\n(negative: rose)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in cat_colors.values()]
    fig.legend(handles, list(cat_colors), loc="lower center", ncol=len(cat_colors), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def plot_paper_trajectories(gaps: pd.DataFrame) -> Figure:
    """The paper's released training runs: Agency - Communion gap of the median ranks per checkpoint."""
    import matplotlib.pyplot as plt

    if gaps is None or gaps.empty:
        return note_figure("the paper's released training results are not available")
    g = gaps[gaps["dataset"] != "grm_80k"]
    datasets = [d for d in PAPER_TRAINING_FILES if d in set(g["dataset"])]
    ncols = min(3, len(datasets))
    nrows = math.ceil(len(datasets) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(MAX_WIDTH, 2.6 * nrows + 0.6), squeeze=False, sharey=True)
    flat = [ax for row in axes for ax in row]
    for ax in flat[len(datasets) :]:
        ax.axis("off")
    for ax, ds in zip(flat, datasets, strict=False):
        sub = g[g["dataset"] == ds]
        for (base, _model_id), h in sub.groupby(["base_model", "model_id"]):
            h = h.sort_values("checkpoint")
            ax.plot(h["checkpoint"], h["gap"], marker="o", ms=3, color=family_color(base), label=base)
        ax.axhline(0, color="grey", lw=0.6, ls=":")
        ax.set_title(PAPER_TRAINING_LABELS.get(ds, ds), fontsize=9)
        ax.set_xlabel("training step")
    for row in axes:
        row[0].set_ylabel("Agency - Communion\n(median rank; > 0: Communion)", fontsize=8)
    handles, labels = [], []
    for ax in flat:
        h, lab = ax.get_legend_handles_labels()
        handles, labels = handles + h, labels + lab
    uniq = dict(zip(labels, handles, strict=False))
    fig.legend(uniq.values(), uniq.keys(), loc="lower center", ncol=len(uniq), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig
