"""Per-RM framing contrasts ``D(k)``: the statistic the statistics chapter tests between families and the
audit chapter places a new RM with, computed by one function for both.

Per RM, with ``m(k, f)`` the RM's mean over prompts of the median rank of category ``k`` under framing ``f``::

    D(k) = [mean_{j != k} m(j, positive) - m(k, positive)] - [mean_{j != k} m(j, negative) - m(k, negative)]

how much category ``k`` gains in rank (moves towards rank 1), relative to the other categories, from negative
to positive prompts. With two categories (the Big Two) only the second is reported (``D(Agency) =
-D(Communion)``); with more (MFD 2.0) every category gets its ``D`` against the mean of the others.

:func:`analyses` yields the analyses of a median-rank table (pooled per corpus, split per subcategory);
:func:`rm_contrasts` computes ``D(k)`` from median ranks; :func:`rm_values` runs the whole path from a long
scores table (:func:`rmvalues.stats.rank_scores`, :func:`rmvalues.stats.all_median_ranks`, then
:func:`rm_contrasts`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pandas as pd

from .ranks import all_median_ranks, rank_scores

__all__ = ["INTERACTION_COLUMNS", "analyses", "rm_contrasts", "rm_values", "statistic_name"]

#: Columns of :func:`rm_contrasts` (one row per RM and statistic).
INTERACTION_COLUMNS = [
    "corpus",
    "analysis",
    "subcategory",
    "statistic",
    "category",
    "versus",
    "rm",
    "family",
    "D",
    "n_prompts_positive",
    "n_prompts_negative",
]


def analyses(medians: pd.DataFrame) -> Iterator[tuple[tuple[str, str, str | None], pd.DataFrame]]:
    """Yield ``((corpus, analysis, subcategory), rows)``: pooled per corpus, split per subcategory."""
    for (corpus, analysis), grp in medians.groupby(["corpus", "analysis"], sort=True):
        if analysis == "pooled":
            yield (corpus, analysis, None), grp
        else:
            for sub, sgrp in grp.groupby("subcategory", sort=True):
                yield (corpus, analysis, sub), sgrp


def statistic_name(category: str) -> str:
    """The name of ``D(k)`` in the tables: ``D(<category>)``."""
    return f"D({category})"


def rm_contrasts(medians: pd.DataFrame, families: Sequence[str] | None = None) -> pd.DataFrame:
    """``D(k)`` per RM (see the module docstring) for every analysis of ``medians`` (pooled; split per
    subcategory) with both framings and at least two categories: :data:`INTERACTION_COLUMNS`. With two
    categories only the second (the model's non-reference category) is reported. ``families``: only the RMs
    of these base families (None: every RM)."""
    rows = []
    if families is not None:
        medians = medians[medians["family"].isin(list(families))]
    for key, grp in analyses(medians):
        if set(grp["framing"]) != {"positive", "negative"} or grp["category"].nunique() < 2:
            continue
        cell = grp.groupby(["rm", "family", "framing", "category"], observed=True)["median_rank"].mean()
        m = cell.unstack(["framing", "category"])
        n = grp.groupby(["rm", "framing"], observed=True)["prompt_id"].nunique().unstack("framing")
        cats = sorted(grp["category"].unique())
        for k in cats[1:] if len(cats) == 2 else cats:
            others = [c for c in cats if c != k]
            gain = {
                fr: m.loc[:, [(fr, c) for c in others]].mean(axis=1) - m[(fr, k)]
                for fr in ("positive", "negative")
            }
            d = gain["positive"] - gain["negative"]
            for (rm, fam), value in d.items():
                rows.append(
                    {
                        "corpus": key[0],
                        "analysis": key[1],
                        "subcategory": key[2],
                        "statistic": statistic_name(k),
                        "category": k,
                        "versus": ", ".join(others),
                        "rm": rm,
                        "family": fam,
                        "D": float(value),
                        "n_prompts_positive": int(n.loc[rm, "positive"]),
                        "n_prompts_negative": int(n.loc[rm, "negative"]),
                    }
                )
    return pd.DataFrame(rows, columns=INTERACTION_COLUMNS)


def rm_values(scores: pd.DataFrame, families: Sequence[str] | None = None) -> pd.DataFrame:
    """``D(k)`` per RM from a long scores table (:data:`rmvalues.data.scores.SCORE_COLUMNS`): words ranked
    per (corpus, source, model, prompt), median ranks per category (pooled, and split by subcategory where a
    corpus has them), then :func:`rm_contrasts`."""
    return rm_contrasts(all_median_ranks(rank_scores(scores)), families)
