"""Figures of the corpora chapter."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure


def plot_token_counts(tokens: pd.DataFrame, variant: str = "space") -> Figure:
    """Bar chart: share of words by token count (capped at 5+), one panel per model, bars per corpus."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    col = f"n_tokens_{variant}"
    d = tokens.assign(tokens=tokens[col].clip(upper=5).map(lambda n: "5+" if n >= 5 else str(n)))
    share = (
        d.groupby(["model", "corpus"])["tokens"].value_counts(normalize=True).rename("share").reset_index()
    )
    models = sorted(share["model"].unique())
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 3.6), sharey=True, squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        sns.barplot(
            data=share[share["model"] == model],
            x="tokens",
            y="share",
            hue="corpus",
            order=["1", "2", "3", "4", "5+"],
            ax=ax,
        )
        ax.set_title(f"{model} ({'leading space' if variant == 'space' else 'bare word'})")
        ax.set_xlabel("tokens per word")
        ax.set_ylabel("share of words")
        if ax is not axes[0][-1]:
            ax.get_legend().remove()
    fig.tight_layout()
    return fig


def plot_norms_by_category(
    corpora: pd.DataFrame, variables: Sequence[str] = ("zipf_frequency", "valence")
) -> Figure:
    """Box plots of each variable by category, one row per variable and one column per corpus; subcategories
    (virtue/vice) as hue where a corpus has them."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    labels = {"zipf_frequency": "Zipf frequency (wordfreq)", "valence": "valence (Warriner)"}
    names = list(dict.fromkeys(corpora["corpus"]))
    fig, axes = plt.subplots(
        len(variables), len(names), figsize=(3.6 * len(names), 3.2 * len(variables)), squeeze=False
    )
    for j, name in enumerate(names):
        part = corpora[corpora["corpus"] == name]
        subs = list(pd.unique(part["subcategory"].dropna()))
        hue_order = sorted(subs, key=lambda v: (v != "virtue", v))
        for i, var in enumerate(variables):
            ax = axes[i][j]
            sns.boxplot(
                data=part,
                x="category",
                y=var,
                order=sorted(part["category"].unique()),
                hue="subcategory" if subs else None,
                hue_order=hue_order or None,
                ax=ax,
                fliersize=1.5,
            )
            ax.set_title(name if i == 0 else "")
            ax.set_xlabel("")
            ax.set_ylabel(labels.get(var, var) if j == 0 else "")
            ax.tick_params(axis="x", labelrotation=30)
            if ax.get_legend() is not None:
                if i == 0:
                    ax.legend(title=None, fontsize=8, loc="lower left")
                else:
                    ax.get_legend().remove()
    fig.tight_layout()
    return fig
