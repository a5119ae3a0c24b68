"""Inference at the level of the sampled units when there are few of them (e.g. 4 vs 6 reward models).

* :func:`split_test`: the exact permutation test of a difference of means over every split of the pooled
  units into two groups of the observed sizes (C(10, 4) = 210 for 4 vs 6), two-sided as scipy's
  ``permutation_test`` (twice the smaller tail); :func:`smallest_p` is the smallest p-value such a test can
  give after a Bonferroni correction, :func:`can_reach` whether that can fall to ``alpha`` at all.
* :func:`split_interval`: the confidence interval of the difference that inverts that test (all shifts
  ``delta`` of the second group that the test does not reject), exact under the shift model.
* :func:`stratified_split_test`: the same test with the group labels permuted only within strata (e.g. the
  lineage an RM descends from), its statistic the weighted mean of the within-stratum differences.
* :func:`cluster_bootstrap_ci`: a percentile bootstrap that resamples units within each group, then the
  observations within each drawn unit (a hierarchical bootstrap).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Up to this many splits are enumerated; beyond, :func:`split_test` draws this many at random.
MAX_SPLITS = 1_000_000


@dataclass(frozen=True)
class SplitTest:
    """An exact (or, beyond :data:`MAX_SPLITS`, sampled) permutation test over splits of the units."""

    difference: float  # mean(y) - mean(x)
    p: float  # two-sided: min(1, 2 * smaller tail), the observed split included
    n_splits: int  # C(n_x + n_y, n_x): the number of distinct splits
    p_min: float  # the smallest two-sided p any data could give (2 / n_splits, at most 1)
    exact: bool  # every split enumerated


def n_splits(n_x: int, n_y: int) -> int:
    """The number of ways to split ``n_x + n_y`` units into groups of ``n_x`` and ``n_y``."""
    return math.comb(n_x + n_y, n_x)


def smallest_p(n_x: int, n_y: int, n_tests: int = 1) -> float:
    """The smallest two-sided p-value an exact split test of ``n_x`` vs ``n_y`` units can give, times
    ``n_tests`` (Bonferroni), at most 1. With 4 vs 6 units: 2/210 = 0.0095 for one test."""
    if n_x < 1 or n_y < 1:
        return 1.0
    return float(min(1.0, 2.0 / n_splits(n_x, n_y) * n_tests))


def can_reach(p_min: float, alpha: float = 0.05) -> bool:
    """Whether a test whose smallest attainable (corrected) p-value is ``p_min`` can reach ``alpha``; when
    it cannot, "not significant" says nothing: the data could not have been significant."""
    return bool(p_min <= alpha)


def _split_matrix(n: int, n_x: int, max_splits: int, seed: int) -> tuple[np.ndarray, bool]:
    """Boolean (splits, n) matrix: True where a unit is in the first group; the observed split first."""
    total = math.comb(n, n_x)
    if total <= max_splits:
        rows = np.zeros((total, n), dtype=bool)
        for i, combo in enumerate(itertools.combinations(range(n), n_x)):
            rows[i, list(combo)] = True
        return rows, True
    rng = np.random.default_rng(seed)
    rows = np.zeros((max_splits, n), dtype=bool)
    rows[0, :n_x] = True
    for i in range(1, max_splits):
        rows[i, rng.choice(n, n_x, replace=False)] = True
    return rows, False


def _split_statistics(
    x: np.ndarray, y: np.ndarray, max_splits: int, seed: int
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Per split: mean of the second group minus mean of the first, and the share of ``y`` units in the
    second group minus that in the first (the slope of the statistic in a shift of ``y``)."""
    z = np.concatenate([x, y])
    is_y = np.r_[np.zeros(x.size), np.ones(y.size)]
    first, exact = _split_matrix(z.size, x.size, max_splits, seed)
    second = ~first
    stat = (second @ z) / y.size - (first @ z) / x.size
    slope = (second @ is_y) / y.size - (first @ is_y) / x.size
    return stat, slope, exact


def split_test(
    x: Sequence[float], y: Sequence[float], max_splits: int = MAX_SPLITS, seed: int = 0
) -> SplitTest:
    """Exact permutation test of ``mean(y) - mean(x)`` over every split of the pooled units into groups of
    ``len(x)`` and ``len(y)``.

    The two-sided p is scipy's convention, ``min(1, 2 * min(P(T >= t), P(T <= t)))`` with the observed split
    counted, so with 4 vs 6 units it is a multiple of 1/210 and at least 2/210. Beyond ``max_splits``
    splits, ``max_splits`` random ones are drawn (``exact = False``).
    """
    xa, ya = np.asarray(x, float), np.asarray(y, float)
    total = n_splits(xa.size, ya.size)
    diff = float(ya.mean() - xa.mean()) if xa.size and ya.size else float("nan")
    if xa.size < 1 or ya.size < 1:
        return SplitTest(diff, float("nan"), total, 1.0, True)
    stat, _, exact = _split_statistics(xa, ya, max_splits, seed)
    tol = 1e-12 * max(1.0, float(np.abs(stat).max()))
    upper = np.mean(stat >= diff - tol)
    lower = np.mean(stat <= diff + tol)
    p = float(min(1.0, 2 * min(upper, lower)))
    return SplitTest(diff, p, total, smallest_p(xa.size, ya.size), exact)


def split_interval(
    x: Sequence[float], y: Sequence[float], alpha: float = 0.05, max_splits: int = MAX_SPLITS, seed: int = 0
) -> tuple[float, float]:
    """The ``1 - alpha`` confidence interval of ``mean(y) - mean(x)`` that inverts :func:`split_test`.

    It holds every shift ``delta`` for which the test of ``x`` against ``y - delta`` gives ``p > alpha``.
    Each split's statistic is linear in ``delta``, so the bounds are order statistics of the shifts at which
    a split becomes as extreme as the observed one (Lehmann's permutation interval); exact, if anything
    conservative, when the groups differ by a shift. ``(nan, nan)`` when no shift can be rejected (too few
    splits: then the interval is the whole line).
    """
    xa, ya = np.asarray(x, float), np.asarray(y, float)
    if xa.size < 1 or ya.size < 1:
        return (float("nan"), float("nan"))
    stat, slope, _ = _split_statistics(xa, ya, max_splits, seed)
    diff = stat[0]
    others = slope < 1 - 1e-12  # every split but the observed one (whose slope is exactly 1)
    # T_s(delta) >= T_obs(delta)  <=>  delta >= (diff - stat_s) / (1 - slope_s) =: t_s
    t = np.sort((diff - stat[others]) / (1 - slope[others]))
    total = stat.size
    # P_ge(delta) = (1 + #{t_s <= delta}) / total must exceed alpha / 2 (likewise P_le on the other side)
    need = math.floor(alpha / 2 * total - 1) + 1  # smallest count c with (1 + c) / total > alpha / 2
    need = max(need, 0)
    if need == 0 or need > t.size:
        return (float("nan"), float("nan"))
    return (float(t[need - 1]), float(t[t.size - need]))


def _unit_matrix(units: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Units padded into a (units, max observations) matrix (NaN padding) and each unit's count."""
    counts = np.array([len(u) for u in units], dtype=int)
    out = np.full((len(units), int(counts.max())), np.nan)
    for i, u in enumerate(units):
        out[i, : counts[i]] = np.asarray(u, float)
    return out, counts


def _resampled_means(
    units: Sequence[Sequence[float]], n_bootstrap: int, rng: np.random.Generator, within: bool
) -> np.ndarray:
    """Per resample: the mean over units drawn with replacement of each drawn unit's mean (of its
    observations drawn with replacement when ``within``)."""
    values, counts = _unit_matrix(units)
    n_units = counts.size
    pick = rng.integers(0, n_units, size=(n_bootstrap, n_units))
    if not within:
        unit_means = np.nanmean(values, axis=1)
        return unit_means[pick].mean(axis=1)
    n = counts[pick]  # (B, units)
    width = values.shape[1]
    obs = np.floor(rng.random((n_bootstrap, n_units, width)) * n[..., None]).astype(int)
    drawn = values[pick[..., None], obs]
    keep = np.arange(width)[None, None, :] < n[..., None]
    unit_means = np.where(keep, drawn, 0.0).sum(axis=2) / n
    return unit_means.mean(axis=1)


def cluster_bootstrap_ci(
    units_x: Sequence[Sequence[float]],
    units_y: Sequence[Sequence[float]],
    n_bootstrap: int = 2000,
    seed: int | Sequence[int] = 0,
    confidence: float = 0.95,
    within: bool = True,
    min_units: int = 2,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean_units(y) - mean_units(x)`` (each unit weighs the same).

    Each resample draws units with replacement within each group, then (``within=True``) the observations
    of every drawn unit with replacement: the hierarchical bootstrap for observations nested in units
    (e.g. prompts within reward models). ``(nan, nan)`` when a group has fewer than ``min_units`` units:
    the variation between units, which such an interval must carry, cannot be estimated.
    """
    if len(units_x) < min_units or len(units_y) < min_units:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    mx = _resampled_means(units_x, n_bootstrap, rng, within)
    my = _resampled_means(units_y, n_bootstrap, rng, within)
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(my - mx, [tail, 100 - tail])
    return (float(lo), float(hi))


# -- the split test within strata ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StratifiedSplitTest:
    """An exact (or, beyond :data:`MAX_SPLITS`, sampled) permutation test of a group difference whose labels
    are permuted only within strata (:func:`stratified_split_test`)."""

    difference: float  # mean(b) - mean(a) over all units, strata ignored
    stratified_difference: float  # the test's statistic: weighted mean of within-stratum differences
    p: float  # two-sided: min(1, 2 * smaller tail), the observed relabelling included
    n_relabellings: int  # prod over strata of C(n_s, n_b,s): every within-stratum relabelling
    p_min: float  # the smallest two-sided p any data could give (2 / n_relabellings, at most 1)
    exact: bool  # every relabelling enumerated
    n_strata: int  # strata holding at least one unit
    n_informative: int  # strata holding both groups (the others carry no information on the difference)
    n_a: int
    n_b: int


def _stratum_blocks(
    values: np.ndarray, is_b: np.ndarray, strata: np.ndarray
) -> tuple[list[np.ndarray], list[int], int]:
    """The informative strata (both groups present), each as its values with the ``b`` units first, with its
    number of ``b`` units; and the number of strata holding any unit."""
    blocks, ks = [], []
    labels = list(dict.fromkeys(strata.tolist()))
    for label in labels:
        mask = strata == label
        k = int(is_b[mask].sum())
        if 0 < k < int(mask.sum()):
            v, b = values[mask], is_b[mask]
            blocks.append(np.concatenate([v[b], v[~b]]))
            ks.append(k)
    return blocks, ks, len(labels)


def _block_differences(block: np.ndarray, k: int, rows: np.ndarray) -> np.ndarray:
    """Per relabelling of one stratum (``rows``: True where a unit is labelled ``b``): mean(b) - mean(a)."""
    n = block.size
    return (rows @ block) / k - ((~rows) @ block) / (n - k)


def stratified_split_test(
    values: Sequence[float],
    groups: Sequence[object],
    strata: Sequence[object],
    group_b: object,
    max_splits: int = MAX_SPLITS,
    seed: int = 0,
) -> StratifiedSplitTest:
    """Exact permutation test of a difference between group ``b`` (units whose label is ``group_b``) and the
    other group ``a``, the labels permuted only within each stratum.

    The statistic is the stratified difference: over the strata holding both groups, the mean of
    ``mean_b,s - mean_a,s`` weighted by the stratum's harmonic-mean group size
    ``2 / (1 / n_a,s + 1 / n_b,s)`` (the weights of a difference of means with equal variances, as in a
    Mantel-Haenszel estimate). The null distribution is that statistic over every relabelling that keeps each
    stratum's group counts (their number is the product of the strata's ``C(n_s, n_b,s)``); beyond
    ``max_splits`` relabellings, ``max_splits`` random ones are drawn, the observed one first
    (``exact = False``). Two-sided as :func:`split_test`: ``min(1, 2 * min(P(T >= t), P(T <= t)))`` with the
    observed relabelling counted. A stratum holding only one group has a single relabelling and carries no
    information on the difference: it is counted in ``n_strata`` but not in ``n_informative``; with no
    informative stratum the statistic and ``p`` are NaN. ``difference`` is the plain ``mean(b) - mean(a)``.
    """
    v = np.asarray(values, float)
    g = np.asarray(list(groups), dtype=object)
    s = np.asarray(list(strata), dtype=object)
    if not (v.size == g.size == s.size):
        raise ValueError(
            f"stratified_split_test: values ({v.size}), groups ({g.size}) and strata ({s.size}) differ in "
            "length; give one group label and one stratum per value"
        )
    labels = sorted({str(x) for x in g.tolist()})
    if len(labels) > 2:
        raise ValueError(f"stratified_split_test: groups hold {labels}; give exactly two groups")
    is_b = g == group_b
    n_b, n_a = int(is_b.sum()), int((~is_b).sum())
    diff = float(v[is_b].mean() - v[~is_b].mean()) if n_a and n_b else float("nan")
    blocks, ks, n_strata = _stratum_blocks(v, is_b, s)
    total = math.prod(math.comb(b.size, k) for b, k in zip(blocks, ks, strict=True))
    if not blocks:
        nan = float("nan")
        return StratifiedSplitTest(diff, nan, nan, 1, 1.0, True, n_strata, 0, n_a, n_b)
    weights = np.array([2.0 / (1.0 / k + 1.0 / (b.size - k)) for b, k in zip(blocks, ks, strict=True)])
    exact = total <= max_splits
    rng = np.random.default_rng(seed)
    stat = np.zeros(1)
    for i, (block, k, w) in enumerate(zip(blocks, ks, weights, strict=True)):
        rows, _ = _split_matrix(block.size, k, max_splits, seed + i)
        d = w * _block_differences(block, k, rows)
        if exact:  # every combination of the strata's relabellings, the observed one (all first rows) first
            stat = np.add.outer(stat, d).ravel()
        else:  # one random relabelling of each stratum per draw; the first draw is the observed one
            pick = rng.integers(0, d.size, size=max_splits)
            pick[0] = 0
            stat = stat + d[pick]
    stat = stat / weights.sum()
    observed = float(stat[0])
    tol = 1e-12 * max(1.0, float(np.abs(stat).max()))
    upper = np.mean(stat >= observed - tol)
    lower = np.mean(stat <= observed + tol)
    p = float(min(1.0, 2 * min(upper, lower)))
    p_min = float(min(1.0, 2.0 / total))
    return StratifiedSplitTest(diff, observed, p, total, p_min, exact, n_strata, len(blocks), n_a, n_b)
