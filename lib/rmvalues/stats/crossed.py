"""Crossed inference over reward models and words: both were sampled, so both vary in a replication.

The statistic is the family difference (``b - a``) of the mean per-RM ``D(k)``: per RM, with ``m(k, f)``
the RM's mean over the prompts of framing ``f`` of the median rank of category ``k``'s words under that
prompt (rank 1 = highest score within the (RM, prompt) over the corpus words)::

    D(k) = [mean_{j != k} m(j, positive) - m(k, positive)] - [mean_{j != k} m(j, negative) - m(k, negative)]

(the statistic of the RM-level tests in the ``rm_statistics`` stage). :func:`crossed_bootstrap` gives its
percentile interval under a bootstrap that resamples RMs with replacement within each family, words with
replacement within each category, or both (the crossed bootstrap of a design with two random factors).

**The ranks stay as scored.** Words are ranked once, on every corpus word, and a resampled word keeps its
rank: the interval generalises over *which words represent a category* (another draw of words from the same
population), with each word's standing measured against the corpus as it was scored. It does not re-rank a
resampled corpus (that would also move the other categories' ranks, a different and less interpretable
replication).

**Words with two categories.** :func:`rank_array` keeps one rank column per word; category membership is a
list of (rank column, category) pairs, so a word of two categories is a member of both (as in
:func:`rmvalues.stats.median_ranks`, which counts it in each of its categories) and is resampled
independently within each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: The ways :func:`crossed_bootstrap` can resample.
RESAMPLE_UNITS = ("rms", "words")
#: The columns :func:`rank_array` reads.
RANKED_COLUMNS = ["rm", "family", "prompt_id", "framing", "word", "category", "rank"]
#: Elements of the largest intermediate array (draws x RM-prompt cells x words of a category) built at once.
_CHUNK_ELEMENTS = 2_000_000


@dataclass(frozen=True)
class RankArrays:
    """A long ranked table as arrays for :func:`crossed_bootstrap`."""

    ranks: np.ndarray  # (n_rms, n_prompts, n_words): the rank of each word, one column per distinct word
    rms: np.ndarray  # (n_rms,) RM ids, sorted
    rm_family: np.ndarray  # (n_rms,)
    prompts: np.ndarray  # (n_prompts,) prompt ids, sorted
    prompt_framing: np.ndarray  # (n_prompts,)
    words: np.ndarray  # (n_words,) sorted
    word_index: np.ndarray  # (n_members,) the rank column of each (word, category) membership
    word_category: np.ndarray  # (n_members,) its category


@dataclass(frozen=True)
class CrossedResult:
    """The family difference of mean ``D(k)`` with its bootstrap interval."""

    estimate: float  # mean over family b's RMs of D(k) minus that over family a's
    ci_low: float
    ci_high: float
    draws: np.ndarray  # (n_bootstrap,) the statistic in every bootstrap draw
    resample: tuple[str, ...]  # what was resampled: "rms", "words" or both
    confidence: float


def _unique_per(df: pd.DataFrame, key: str, value: str) -> pd.Series:
    """``value`` per ``key`` (sorted), which must be unique."""
    per = df.groupby(key, sort=True, observed=True)[value].unique()
    bad = per[per.map(len) > 1]
    if not bad.empty:
        raise ValueError(f"{value} is not unique per {key}: {bad.index[0]!r} has {list(bad.iloc[0])}")
    return per.map(lambda v: v[0])


def rank_array(ranked: pd.DataFrame) -> RankArrays:
    """The ranks of a long table (:data:`RANKED_COLUMNS`; one row per (rm, prompt, word, category), e.g.
    one corpus of :func:`rmvalues.stats.rank_scores`) as a (RM, prompt, word) array, RMs, prompts and words
    sorted, and the category memberships as (rank column, category) pairs.

    A word with two categories keeps one rank column (its two rows must agree on the rank) and two
    memberships. Rows without a category are left out; every RM must rank every remaining word under every
    prompt. Labels are read as strings.
    """
    missing = [c for c in RANKED_COLUMNS if c not in ranked.columns]
    if missing:
        raise ValueError(f"ranked table lacks {missing}")
    if "corpus" in ranked.columns and ranked["corpus"].nunique() > 1:
        raise ValueError("ranked table holds several corpora: pass one")
    labels = {c: str for c in RANKED_COLUMNS if c != "rank"}  # plain strings, whatever the dtypes
    df = ranked.loc[ranked["category"].notna(), RANKED_COLUMNS].astype(labels)
    family = _unique_per(df, "rm", "family")
    framing = _unique_per(df, "prompt_id", "framing")
    cells = df.groupby(["rm", "prompt_id", "word"], sort=False)["rank"].agg(["min", "max"])
    if not np.allclose(cells["min"], cells["max"]):
        raise ValueError("one word has two ranks for the same RM and prompt")
    rms, prompts = family.index.to_numpy(), framing.index.to_numpy()
    words = np.sort(df["word"].unique())
    ranks = np.full((rms.size, prompts.size, words.size), np.nan)
    idx = cells.index
    ranks[
        np.searchsorted(rms, idx.get_level_values("rm")),
        np.searchsorted(prompts, idx.get_level_values("prompt_id")),
        np.searchsorted(words, idx.get_level_values("word")),
    ] = cells["min"].to_numpy(float)
    if np.isnan(ranks).any():
        raise ValueError("incomplete ranks: every RM must rank every word under every prompt")
    members = df[["word", "category"]].drop_duplicates().sort_values(["category", "word"])
    return RankArrays(
        ranks=ranks,
        rms=rms,
        rm_family=family.to_numpy(),
        prompts=prompts,
        prompt_framing=framing.to_numpy(),
        words=words,
        word_index=np.searchsorted(words, members["word"].to_numpy()),
        word_category=members["category"].to_numpy(),
    )


def _framing_means(medians: np.ndarray, positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """(..., RMs, prompts) medians -> (..., RMs, 2): their mean over positive, then negative prompts."""
    return np.stack([medians[..., positive].mean(axis=-1), medians[..., negative].mean(axis=-1)], axis=-1)


def _per_rm_d(m: np.ndarray, k: int) -> np.ndarray:
    """(..., RMs, categories, 2 framings) mean median ranks -> (..., RMs) ``D(k)``."""
    others = np.delete(m, k, axis=-2).mean(axis=-2)  # (..., RMs, 2)
    gain = others - m[..., k, :]
    return gain[..., 0] - gain[..., 1]


def _resampled_medians(cell_ranks: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per draw and cell: the median of a cell's ranks with each word taken ``counts`` times.

    ``cell_ranks`` is (cells, n) and ``counts`` (draws, n), each row summing to ``n``; returns (draws,
    cells). Each cell's ranks are sorted once; a draw's median is the mean of its ``(n + 1) // 2``-th and
    ``n // 2 + 1``-th smallest drawn ranks, found in the cumulative counts in that order. The counts of a
    chunk of draws are cumulated as one flat array (row ``i`` then starts at ``i * n``, as every row sums to
    ``n``), so one binary search per cell and position finds them: a gather and a cumulative sum per
    element, about half the time of a selection (``np.partition``) over the gathered ranks.
    """
    n_cells, n = cell_ranks.shape
    order = np.argsort(cell_ranks, axis=1, kind="stable")
    ordered = np.take_along_axis(cell_ranks, order, axis=1)
    small = counts.astype(np.int16 if n < 2**15 else np.int32)
    out = np.empty((counts.shape[0], n_cells))
    step = max(1, _CHUNK_ELEMENTS // order.size)
    for s in range(0, counts.shape[0], step):
        gathered = small[s : s + step, order]  # (draws, cells, n)
        rows = gathered.shape[0] * n_cells
        cum = np.cumsum(gathered.ravel(), dtype=np.int32 if rows * n < 2**31 else np.int64)
        start = np.arange(rows) * n
        low = np.searchsorted(cum, start + (n + 1) // 2) - start
        high = np.searchsorted(cum, start + n // 2 + 1) - start
        cell = np.tile(np.arange(n_cells), gathered.shape[0])
        out[s : s + step] = ((ordered[cell, low] + ordered[cell, high]) / 2).reshape(-1, n_cells)
    return out


def _members(
    word_category: Sequence[str] | np.ndarray, word_index: Sequence[int] | np.ndarray | None, n_words: int
) -> tuple[list[str], list[np.ndarray]]:
    """The categories (sorted) and each one's rank columns."""
    labels = np.asarray(word_category)
    cols = np.arange(n_words) if word_index is None else np.asarray(word_index, dtype=np.intp)
    if labels.shape != cols.shape:
        raise ValueError(
            "word_category needs one label per rank column (or per word_index entry): "
            f"{labels.shape} vs {cols.shape}"
        )
    cats = sorted(pd.unique(labels).tolist())
    return cats, [cols[labels == c] for c in cats]


def _rm_weights(
    groups: Sequence[np.ndarray], n_rms: int, n_bootstrap: int, rng: np.random.Generator, resample: bool
) -> np.ndarray:
    """(draws, RMs) weights whose product with per-RM ``D`` is the family difference (b minus a), RMs drawn
    with replacement within each family (``resample``) or each taken once."""
    weights = np.zeros((n_bootstrap, n_rms))
    for sign, group in zip((-1.0, 1.0), groups, strict=True):
        if resample:
            picks = group[rng.integers(0, group.size, size=(n_bootstrap, group.size))]
            np.add.at(weights, (np.arange(n_bootstrap)[:, None], picks), sign / group.size)
        else:
            weights[:, group] = sign / group.size
    return weights


def crossed_bootstrap_many(
    ranks: np.ndarray,
    word_category: Sequence[str] | np.ndarray,
    rm_family: Sequence[str] | np.ndarray,
    prompt_framing: Sequence[str] | np.ndarray,
    categories: Sequence[str],
    families: Sequence[str],
    n_bootstrap: int = 1000,
    seed: int | Sequence[int] = 0,
    resample: Sequence[str] = ("rms", "words"),
    word_index: Sequence[int] | np.ndarray | None = None,
    confidence: float = 0.95,
) -> dict[str, CrossedResult]:
    """:func:`crossed_bootstrap` of several categories from the same draws (each draw's medians are computed
    once for every category): ``{category: CrossedResult}``.

    ``ranks`` is (RMs, prompts, words) (:func:`rank_array`), ranked once on every word; ``word_category``
    labels the rank columns, or, with ``word_index``, the memberships ``(word_index[i], word_category[i])``
    (a word in two categories); ``rm_family`` and ``prompt_framing`` (``positive``/``negative``) label the
    RMs and prompts; RMs of other families are left out. Each draw resamples RMs with replacement within
    each family (``"rms"`` in ``resample``) and words with replacement within each category (``"words"``),
    keeping their ranks; recomputes every (RM, prompt, category) median rank, the per-RM ``D`` and the
    family difference. ``("rms",)`` is the RM-only interval, ``("words",)`` the word-only one, both the
    crossed one.
    """
    unknown = set(resample) - set(RESAMPLE_UNITS)
    if unknown:
        raise ValueError(f"resample takes {RESAMPLE_UNITS}, not {sorted(unknown)}")
    values = np.asarray(ranks, float)
    if values.ndim != 3 or np.isnan(values).any():
        raise ValueError("ranks must be a complete (RMs, prompts, words) array")
    fam, framing = np.asarray(rm_family), np.asarray(prompt_framing)
    keep = np.isin(fam, list(families[:2]))
    values, fam = values[keep], fam[keep]
    groups = [np.flatnonzero(fam == f) for f in families[:2]]
    positive, negative = framing == "positive", framing == "negative"
    if min(g.size for g in groups) < 1 or not positive.any() or not negative.any():
        raise ValueError("need RMs of both families and prompts of both framings")
    cats, members = _members(word_category, word_index, values.shape[2])
    bad = [c for c in categories if c not in cats]
    if bad or len(cats) < 2:
        raise ValueError(f"categories {bad} must be among at least two categories: {cats}")
    rng = np.random.default_rng(seed)
    n_rms, n_prompts = values.shape[:2]
    observed = np.stack(
        [_framing_means(np.median(values[:, :, cols], axis=2), positive, negative) for cols in members],
        axis=1,
    )  # (RMs, categories, 2)
    mean_weights = _rm_weights(groups, n_rms, 1, rng, False)[0]
    weights = _rm_weights(groups, n_rms, n_bootstrap, rng, "rms" in resample)
    if "words" in resample:
        m = np.empty((n_bootstrap, n_rms, len(cats), 2))
        for c, cols in enumerate(members):
            counts = rng.multinomial(cols.size, np.full(cols.size, 1.0 / cols.size), size=n_bootstrap)
            counts = counts.astype(np.int32)
            cells = values[:, :, cols].reshape(n_rms * n_prompts, cols.size)
            medians = _resampled_medians(cells, counts).reshape(n_bootstrap, n_rms, n_prompts)
            m[:, :, c, :] = _framing_means(medians, positive, negative)
    out = {}
    tail = (1 - confidence) / 2 * 100
    for category in categories:
        k = cats.index(category)
        d_observed = _per_rm_d(observed, k)
        d = _per_rm_d(m, k) if "words" in resample else np.broadcast_to(d_observed, (n_bootstrap, n_rms))
        draws = np.einsum("br,br->b", weights, d)
        lo, hi = np.percentile(draws, [tail, 100 - tail])
        estimate = float(mean_weights @ d_observed)
        out[category] = CrossedResult(
            estimate, float(lo), float(hi), draws, tuple(resample), float(confidence)
        )
    return out


def crossed_bootstrap(
    ranks: np.ndarray,
    word_category: Sequence[str] | np.ndarray,
    rm_family: Sequence[str] | np.ndarray,
    prompt_framing: Sequence[str] | np.ndarray,
    category: str,
    families: Sequence[str],
    n_bootstrap: int = 1000,
    seed: int | Sequence[int] = 0,
    resample: Sequence[str] = ("rms", "words"),
    word_index: Sequence[int] | np.ndarray | None = None,
    confidence: float = 0.95,
) -> CrossedResult:
    """Percentile bootstrap interval of the family difference (``families[1]`` minus ``families[0]``) of
    the mean per-RM ``D(category)`` (module docstring).

    ``ranks`` is (RMs, prompts, words) (:func:`rank_array`), ranked once on every word; ``word_category``
    labels the rank columns, or, with ``word_index``, the memberships ``(word_index[i], word_category[i])``
    (a word in two categories); ``rm_family`` and ``prompt_framing`` (``positive``/``negative``) label the
    RMs and prompts; RMs of other families are left out. Each draw resamples RMs with replacement within
    each family (``"rms"`` in ``resample``) and words with replacement within each category (``"words"``),
    keeping their ranks; recomputes every (RM, prompt, category) median rank, the per-RM ``D`` and the
    family difference. ``("rms",)`` is the RM-only interval, ``("words",)`` the word-only one, both the
    crossed one.
    """
    return crossed_bootstrap_many(
        ranks, word_category, rm_family, prompt_framing, [category], families, n_bootstrap, seed, resample,
        word_index, confidence,
    )[category]  # fmt: skip
