"""Ranks, median ranks and the per-pair ANOVA of the implicit-rewards chapter (the paper's Fig. 2).

* :func:`scores_table`, :func:`metric_median_ranks`: each model (or implicit RM) ranks the corpus words under each
  prompt (rank 1 = highest score) and the median rank of each category is taken (:mod:`rmvalues.stats`).
* :func:`pair_anova`: for one pair of models, per corpus, the three-way ANOVA
  ``median_rank ~ category * framing * model`` (:func:`rmvalues.stats.anova_3way`) and Welch t-tests of the
  two models within each category x framing cell, Benjamini-Hochberg corrected over the cells
  (:func:`rmvalues.stats.welch_posthocs`), as the paper did for each of its pairs: every prompt counts as an
  independent observation.
* :func:`pair_anova_clustered`: its counterpart with the prompts clustered by adjective (framing rests on
  3 positive against 3 negative adjectives): median ranks averaged per (adjective, category, model), each
  term tested against its interaction with the adjectives (:func:`rmvalues.stats.anova_3way_clustered`).
* :func:`pair_framing_contrasts`: per category, each model's framing contrast ``D`` and the pair's
  difference (paired by prompt), clustered by adjective, with the prompt-level interval beside it
  (:func:`rmvalues.stats.framing_contrasts`).
* :func:`token_adjusted`, :func:`token_counts`: the secondary, all-words analysis ranks words whose
  log-probabilities are sums over different numbers of tokens; :func:`token_adjusted` removes the linear
  effect of the token count within each (corpus, model, prompt) before ranking, :func:`token_counts`
  describes how token counts differ by model and category.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ...data.prompts import framing_of
from ...stats import (
    RANK_KEY,
    all_median_ranks,
    anova_3way,
    anova_3way_clustered,
    framing_contrasts,
    prompt_gaps,
    rank_scores,
    welch_posthocs,
)

__all__ = [
    "metric_median_ranks",
    "pair_anova",
    "pair_anova_clustered",
    "pair_framing_contrasts",
    "scores_table",
    "token_adjusted",
    "token_counts",
]


def scores_table(
    values: pd.DataFrame,
    labels: pd.DataFrame,
    score: str,
    model_col: str = "model",
    family: Mapping[str, str] | None = None,
    extra: Sequence[str] = (),
) -> pd.DataFrame:
    """A long scores table (statistics' columns) from per-(scorer, prompt, word) values: each scorer (a
    model or an implicit RM) is a ``model``; ``score`` names the column used as the score, ``extra`` more
    columns kept (e.g. ``n_tokens``). ``labels``: ``corpus, word, category, subcategory``."""
    df = values[[model_col, "prompt_id", "word", score, *extra]].rename(
        columns={model_col: "model", score: "score"}
    )
    df = df.merge(labels[["corpus", "word", "category", "subcategory"]], on="word", how="inner")
    fam = dict(family or {})
    df["family"] = df["model"].map(lambda m: fam.get(m, "pair"))
    df["source"] = "live"
    df["framing"] = df["prompt_id"].map(framing_of)
    return df


def metric_median_ranks(scores: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Ranks per (corpus, scorer, prompt) and the median rank per category (pooled, and split where the
    corpus has subcategories) via :mod:`rmvalues.stats`; adds the ``metric`` column."""
    ranked = rank_scores(scores)
    out = all_median_ranks(ranked)
    out.insert(0, "metric", metric)
    return out


def token_adjusted(scores: pd.DataFrame, column: str = "n_tokens") -> pd.DataFrame:
    """``scores`` with ``score`` replaced by its residual from the least-squares line ``score ~ n_tokens``
    fitted within each (corpus, source, model, prompt), over the distinct words (a word labelled twice counts
    once): a word's log-prob relative to words of the same length under the same model and prompt. Where
    every word has the same token count the residual is the deviation from the mean."""
    uniq = scores.drop_duplicates([*RANK_KEY, "word"])[[*RANK_KEY, "word", "score", column]]
    parts = []
    for _, grp in uniq.groupby(RANK_KEY, sort=False):
        x, y = grp[column].to_numpy(float), grp["score"].to_numpy(float)
        if np.ptp(x) > 0:
            slope, intercept = np.polyfit(x, y, 1)
            resid = y - (intercept + slope * x)
        else:
            resid = y - y.mean()
        parts.append(grp[[*RANK_KEY, "word"]].assign(adjusted=resid))
    adj = pd.concat(parts, ignore_index=True)
    out = scores.merge(adj, on=[*RANK_KEY, "word"], how="left", validate="many_to_one")
    return out.assign(score=out.pop("adjusted"))


def token_counts(words: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Token counts of the corpus words as each model scores them (one prompt: the count is the same under
    every prompt of a format): ``model, corpus, category, n_words, mean_tokens, share_single_token``."""
    first = words.drop_duplicates(["model", "word"])[["model", "word", "n_tokens"]]
    df = first.merge(labels[["corpus", "word", "category"]].drop_duplicates(), on="word", how="inner")
    return (
        df.groupby(["model", "corpus", "category"], sort=True)
        .agg(
            n_words=("word", "size"),
            mean_tokens=("n_tokens", "mean"),
            share_single_token=("n_tokens", lambda s: float((s == 1).mean())),
        )
        .reset_index()
    )


def pair_anova(medians: pd.DataFrame, p: str, q: str, pair: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The paper's two-model analysis of one pair, per corpus and metric: the ANOVA ``median_rank ~ category *
    framing * model`` (type II; ``term, sum_sq, df, F, p``) and the Welch post-hocs of ``q`` against ``p``
    within each category x framing cell, Benjamini-Hochberg over the cells. ``medians``: pooled median ranks
    of the two models (the caller selects the word set). Both tables carry ``pair, corpus, metric``."""
    med = medians[(medians["analysis"] == "pooled") & medians["model"].isin([p, q])]
    anovas, posthocs = [], []
    for (corpus, metric), grp in med.groupby(["corpus", "metric"], sort=False):
        if grp["model"].nunique() < 2 or grp["category"].nunique() < 2:
            continue
        factors = [f for f in ("category", "framing", "model") if grp[f].nunique() > 1]
        a = anova_3way(grp, factors=factors)
        a.insert(0, "n_points", len(grp))
        ph = welch_posthocs(grp, group="model", levels=[p, q], correction="fdr_bh")
        for t in (a, ph):
            t.insert(0, "metric", metric)
            t.insert(0, "corpus", corpus)
            t.insert(0, "pair", pair)
        anovas.append(a)
        posthocs.append(ph)
    return (
        pd.concat(anovas, ignore_index=True) if anovas else pd.DataFrame(),
        pd.concat(posthocs, ignore_index=True) if posthocs else pd.DataFrame(),
    )


def _pair_groups(medians: pd.DataFrame, p: str, q: str) -> list[tuple[tuple[str, str], pd.DataFrame]]:
    """The pooled median ranks of the two models per (corpus, metric), where both models and at least two
    categories are present."""
    med = medians[(medians["analysis"] == "pooled") & medians["model"].isin([p, q])]
    return [
        (key, grp)
        for key, grp in med.groupby(["corpus", "metric"], sort=False)
        if grp["model"].nunique() == 2 and grp["category"].nunique() > 1
    ]


def _keyed(table: pd.DataFrame, pair: str, corpus: str, metric: str) -> pd.DataFrame:
    out = table.copy()
    for col, value in (("metric", metric), ("corpus", corpus), ("pair", pair)):
        out.insert(0, col, value)
    return out


def pair_anova_clustered(medians: pd.DataFrame, p: str, q: str, pair: str) -> pd.DataFrame:
    """The clustered counterpart of :func:`pair_anova`'s ANOVA, per corpus and metric: median ranks averaged
    per (adjective, category, model), each term of ``category * framing * model`` tested against its
    interaction with the adjectives within framing, terms with framing also by the exact permutation test
    over the splits of the adjectives (columns of :data:`rmvalues.stats.CLUSTERED_COLUMNS` after ``pair,
    corpus, metric``, and ``n_points``, ``n_prompts``)."""
    parts = []
    for (corpus, metric), grp in _pair_groups(medians, p, q):
        factors = [f for f in ("category", "framing", "model") if grp[f].nunique() > 1]
        a = anova_3way_clustered(grp, factors=factors)
        a.insert(0, "n_prompts", grp["prompt_id"].nunique())
        a.insert(0, "n_points", len(grp))
        parts.append(_keyed(a, pair, corpus, metric))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def pair_framing_contrasts(medians: pd.DataFrame, p: str, q: str, pair: str) -> pd.DataFrame:
    """Per corpus, metric and category ``k``: the framing contrast ``D(k)`` of each model and of ``q`` minus
    ``p`` (paired by prompt), clustered by adjective with the prompt-level interval beside it (columns of
    :data:`rmvalues.stats.CONTRAST_COLUMNS` after ``pair, corpus, metric, category``; ``rm`` names the model
    or ``"q − p"``)."""
    parts = []
    for (corpus, metric), grp in _pair_groups(medians, p, q):
        for category in sorted(grp["category"].unique()):
            gaps = prompt_gaps(grp, category)
            if gaps.empty:
                continue
            table = framing_contrasts(gaps, [(p, q)])
            table.insert(0, "category", category)
            parts.append(_keyed(table, pair, corpus, metric))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
