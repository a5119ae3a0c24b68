"""Ranks and median ranks: the paper's unit of analysis.

1. :func:`rank_scores`: per (corpus, source, model, prompt) rank the corpus words by score, rank 1 = highest
   reward, ties averaged (``rank(-score)`` in R); a word with two labels is ranked once.
2. :func:`median_ranks`: per (model, prompt, category) the median rank of the category's words.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: The ranking unit: words are ranked within each of these groups.
RANK_KEY = ["corpus", "source", "model", "prompt_id"]
#: The framings in display order (positive first). The display order only: the models' coding is explicit
#: (:func:`rmvalues.stats.treatment_levels`).
FRAMINGS: tuple[str, ...] = ("positive", "negative")
#: The columns that identify one point of the analysis (one RM under one prompt).
POINT_KEY = ["corpus", "source", "model", "rm", "family", "prompt_id", "framing"]


def rank_scores(scores: pd.DataFrame) -> pd.DataFrame:
    """Add ``rank`` (1 = highest score, ties averaged) within each (corpus, source, model, prompt).

    Words are ranked once each even if they carry two labels (they then keep one row per label, with the
    same rank). Adds ``rm``, the RM's identifier in the analysis: the model id, suffixed with
    `` [source]`` when published and live scores are analysed together.
    """
    df = scores.copy()
    multi = df.duplicated(RANK_KEY + ["word"], keep=False)
    if multi.any():
        unique = df.drop_duplicates(RANK_KEY + ["word"])[RANK_KEY + ["word", "score"]].copy()
        check = df.merge(unique, on=RANK_KEY + ["word"], suffixes=("", "_u"))
        if not np.allclose(check["score"], check["score_u"]):
            raise ValueError("scores table: one word has two different scores for the same model and prompt")
        unique["rank"] = unique.groupby(RANK_KEY, sort=False)["score"].rank(ascending=False, method="average")
        df = df.merge(unique[RANK_KEY + ["word", "rank"]], on=RANK_KEY + ["word"], how="left")
    else:
        df["rank"] = df.groupby(RANK_KEY, sort=False)["score"].rank(ascending=False, method="average")
    if df["source"].nunique() > 1:
        df["rm"] = df["model"] + " [" + df["source"] + "]"
    else:
        df["rm"] = df["model"]
    return df


def median_ranks(ranked: pd.DataFrame, split: bool = False) -> pd.DataFrame:
    """Median rank per (RM, prompt, category): the paper's unit of analysis.

    ``split=False`` pools the subcategories (the paper's MFD analysis: virtue and vice words of a
    foundation together); ``split=True`` keeps (category, subcategory) apart and drops rows without a
    subcategory. Returns ``corpus, analysis, source, model, rm, family, prompt_id, framing, category,
    subcategory, median_rank, n_words`` (``subcategory`` null when pooled).
    """
    if split:
        df = ranked[ranked["subcategory"].notna()]
        keys = [*POINT_KEY, "category", "subcategory"]
    else:
        df = ranked.drop_duplicates([*RANK_KEY, "category", "word"])
        keys = [*POINT_KEY, "category"]
    out = (
        df.groupby(keys, sort=True, observed=True)["rank"]
        .agg(median_rank="median", n_words="size")
        .reset_index()
    )
    if not split:
        out["subcategory"] = pd.Series(pd.NA, index=out.index, dtype="str")
    out.insert(1, "analysis", "split" if split else "pooled")
    cols = [
        "corpus",
        "analysis",
        "source",
        "model",
        "rm",
        "family",
        "prompt_id",
        "framing",
        "category",
        "subcategory",
        "median_rank",
        "n_words",
    ]
    return out[cols]


def all_median_ranks(ranked: pd.DataFrame) -> pd.DataFrame:
    """Pooled median ranks of every corpus, plus the split ones of corpora that have subcategories."""
    parts = [median_ranks(ranked, split=False)]
    if ranked["subcategory"].notna().any():
        parts.append(median_ranks(ranked, split=True))
    return pd.concat(parts, ignore_index=True)
