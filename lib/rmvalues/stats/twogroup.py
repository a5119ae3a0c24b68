"""Two independent groups: Welch's t, permutation tests, Cohen's d, bootstrap intervals, corrections, t
intervals of a mean (scipy and pingouin underneath)."""

from __future__ import annotations

import math
import warnings
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pingouin as pg
from scipy import stats


def welch_t(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Welch's t statistic of ``x`` vs ``y`` along ``axis`` (vectorized, for permutation tests)."""
    return stats.ttest_ind(x, y, equal_var=False, axis=axis).statistic


def permutation_welch(
    x: Sequence[float], y: Sequence[float], n_permutations: int = 9999, seed: int | Sequence[int] = 0
) -> tuple[float, float]:
    """Two-sided permutation test of Welch's t between independent samples: ``(t, p)``.

    ``scipy.stats.permutation_test`` with ``permutation_type="independent"``: when the number of distinct
    relabellings is at most ``n_permutations`` it enumerates them all (an exact test), else it draws
    ``n_permutations`` of them (p includes the observed labelling, so p >= 1/(n+1)).
    """
    with warnings.catch_warnings():
        # relabellings that put identical values in one group (few RMs) trip scipy's precision warning
        warnings.simplefilter("ignore", category=RuntimeWarning)
        res = permutation_test(x, y, n_permutations, seed)
    return float(res.statistic), float(res.pvalue)


def permutation_test(x: Sequence[float], y: Sequence[float], n_permutations: int, seed: Any) -> Any:
    return stats.permutation_test(
        (np.asarray(x, float), np.asarray(y, float)),
        welch_t,
        permutation_type="independent",
        vectorized=True,
        n_resamples=int(n_permutations),
        alternative="two-sided",
        rng=np.random.default_rng(seed),
    )


def cohens_d(x: Sequence[float], y: Sequence[float]) -> float:
    """Cohen's d of ``x`` vs ``y`` (pooled SD; ``pingouin.compute_effsize``)."""
    return float(pg.compute_effsize(np.asarray(x, float), np.asarray(y, float), eftype="cohen"))


def mean_difference(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def cohen_d_vectorized(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Cohen's d with the pooled SD, vectorized along ``axis`` (equals ``pingouin.compute_effsize``; lets
    the bootstrap evaluate all resamples at once)."""
    nx, ny = x.shape[axis], y.shape[axis]
    pooled = ((nx - 1) * np.var(x, axis=axis, ddof=1) + (ny - 1) * np.var(y, axis=axis, ddof=1)) / (
        nx + ny - 2
    )
    return (np.mean(x, axis=axis) - np.mean(y, axis=axis)) / np.sqrt(pooled)


def bootstrap_ci(
    x: Sequence[float],
    y: Sequence[float],
    statistic: str = "difference",
    n_bootstrap: int = 2000,
    seed: int = 0,
    method: str = "bca",
) -> tuple[float, float]:
    """95% bootstrap CI (``pingouin.compute_bootci``, samples resampled independently) of the mean
    difference ``x - y`` (``statistic="difference"``) or of Cohen's d (``"cohen"``)."""
    funcs = {"difference": mean_difference, "cohen": cohen_d_vectorized}
    if statistic not in funcs:
        raise ValueError(f"statistic={statistic!r}; valid: {', '.join(funcs)}")
    func = funcs[statistic]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)  # pingouin passes random_state
        warnings.simplefilter("ignore", category=RuntimeWarning)  # resamples of identical values: d = inf/nan
        ci = pg.compute_bootci(
            np.asarray(x, float),
            np.asarray(y, float),
            func=func,
            n_boot=int(n_bootstrap),
            seed=int(seed),
            method=method,
            decimals=10,
        )
    return float(ci[0]), float(ci[1])


def correct_pvalues(pvals: Sequence[float], method: str = "bonf") -> np.ndarray:
    """Multiple-comparison correction (``pingouin.multicomp``: ``bonf``, ``holm``, ``fdr_bh``, ...)."""
    _, corrected = pg.multicomp(np.asarray(pvals, float), method=method)
    return np.asarray(corrected, float)


def stable_seed(seed: int, *key: Any) -> list[int]:
    """Stable per-panel seed: the stage seed and a CRC of the panel's key (adding panels changes nothing)."""
    return [int(seed), zlib.crc32("|".join(str(k) for k in key).encode())]


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float, float, int]:
    """``(mean, sd, ci_low, ci_high, n)`` with a t interval (NaN bounds for fewer than two values; NaN
    values are dropped)."""
    x = np.asarray([v for v in values if not pd.isna(v)], dtype=float)
    n = len(x)
    if n == 0:
        return (np.nan, np.nan, np.nan, np.nan, 0)
    mean = float(x.mean())
    if n < 2:
        return (mean, np.nan, np.nan, np.nan, n)
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return (mean, sd, mean - half, mean + half, n)


def cohen_d_interval(d: float, n_a: int, n_b: int, confidence: float = 0.95) -> tuple[float, float]:
    """Normal-approximation interval of Cohen's d of two independent groups (Hedges & Olkin's standard error,
    ``sqrt((n_a + n_b) / (n_a n_b) + d^2 / (2 (n_a + n_b)))``); NaN bounds when a group has no member."""
    if n_a < 1 or n_b < 1 or not math.isfinite(d):
        return (math.nan, math.nan)
    se = math.sqrt((n_a + n_b) / (n_a * n_b) + d * d / (2 * (n_a + n_b)))
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    return (d - z * se, d + z * se)


def proportion_difference(
    k_a: int, n_a: int, k_b: int, n_b: int, confidence: float = 0.95
) -> tuple[float, float, float]:
    """``(p_a - p_b, low, high)``: the difference of two independent proportions with Newcombe's hybrid score
    interval (``statsmodels``' ``confint_proportions_2indep``)."""
    from statsmodels.stats.proportion import confint_proportions_2indep

    low, high = confint_proportions_2indep(k_a, n_a, k_b, n_b, method="newcomb", alpha=1 - confidence)
    return (k_a / n_a - k_b / n_b, float(low), float(high))


def check_families(df: pd.DataFrame, families: Sequence[str]) -> tuple[str, str]:
    """The two families ``(a, b)`` of a contrast, checked: two different ones, both present in ``df``."""
    if len(families) != 2 or families[0] == families[1]:
        raise ValueError(f"families={list(families)!r}: give two different families")
    present = sorted(df["family"].dropna().unique())
    missing = [f for f in families if f not in present]
    if missing:
        raise ValueError(f"family {missing} has no scores; families present: {present}")
    return families[0], families[1]
