"""Power of the RM-level design: how often the family difference of a per-RM statistic is detected.

The design compares per-RM values (one number per reward model, e.g. ``D(k)``) between two families of few
RMs (4 vs 6). Here those values are simulated: ``normal(0, sd_a)`` for family a and ``normal(effect, sd_b)``
for family b, with separate family SDs (the observed ones differ threefold), and each simulated data set is
tested with

* ``test="exact"``: the two-sided permutation test of ``mean(b) - mean(a)`` that
  :func:`rmvalues.stats.split_test` applies to the observed RMs. When the pooled RMs split in at most
  :data:`MAX_EXACT_SPLITS` ways (C(10, 4) = 210) every split is enumerated and the p-value is exactly
  split_test's (``min(1, 2 * smaller tail)``, the observed split counted); beyond, ``n_permutations``
  random splits are drawn per data set and the same rule gives
  ``p = min(1, 2 * min(1 + #{T >= t}, 1 + #{T <= t}) / (1 + n_permutations))``.
* ``test="welch"``: Welch's t test (scipy).

The permutation test is exact (its size at most ``alpha``) when the families' values are exchangeable; with
unequal SDs and unequal family sizes, its rejection rate at ``effect = 0`` can differ from that size (the
Behrens-Fisher problem), which :func:`simulate_power` with ``effect=0`` measures.

:func:`simulate_power` gives one power with its Monte Carlo standard error, :func:`power_table` a grid of
family sizes and effect fractions, :func:`rms_needed` the smallest equal family size that reaches a target
power, :func:`welch_power` the non-central t approximation of Welch's power and :func:`split_test_size` the
exact size of the split test (its rejection rate when the RMs are exchangeable).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from .units import n_splits

#: Up to this many splits the permutation test enumerates them all (every simulated data set shares them).
MAX_EXACT_SPLITS = 5000
#: The tests :func:`simulate_power` knows.
POWER_TESTS = ("exact", "welch")
#: Columns of :func:`power_table`.
POWER_COLUMNS = ["effect_fraction", "effect", "n_a", "n_b", "test", "power", "mc_se", "n_sims"]
#: Elements of the largest intermediate array (simulations x splits [x RMs]) built at once.
_CHUNK_ELEMENTS = 4_000_000


@dataclass(frozen=True)
class PowerResult:
    """The simulated power of one design and test."""

    power: float  # share of simulated data sets with p <= alpha
    mc_se: float  # Monte Carlo standard error of ``power``: sqrt(power (1 - power) / n_sims)
    n_sims: int
    effect: float  # true mean(b) - mean(a)
    sd_a: float
    sd_b: float
    n_a: int
    n_b: int
    test: str
    alpha: float
    n_splits: int  # splits per data set: all C(n_a + n_b, n_a), or 1 + n_permutations; 0 for Welch
    exact: bool  # every split enumerated (always False for Welch)


def split_test_size(n_a: int, n_b: int, alpha: float = 0.05) -> float:
    """The exact size of the two-sided split test (every split enumerated) for exchangeable continuous data.

    With ``N = C(n_a + n_b, n_a)`` splits whose statistics are distinct, the number ``k`` of splits at least
    as large as the observed one is uniform on ``1..N`` under exchangeability; the test rejects when
    ``min(1, 2 min(k, N + 1 - k) / N) <= alpha``. Enumerating ``k`` gives the size: 10/210 for 4 vs 6 at
    alpha 0.05 (at most alpha, as for any such test).
    """
    total = n_splits(n_a, n_b)
    k = np.arange(1, total + 1)
    p = np.minimum(1.0, 2.0 * np.minimum(k, total + 1 - k) / total)
    return float(np.mean(p <= alpha))


def _all_splits(n: int, n_a: int) -> np.ndarray:
    """Float (splits, n) indicator of the first group for every split; the observed one (first ``n_a``)
    first, as :func:`itertools.combinations` yields it."""
    combos = np.array(list(itertools.combinations(range(n), n_a)), dtype=np.intp)
    out = np.zeros((combos.shape[0], n))
    np.put_along_axis(out, combos, 1.0, axis=1)
    return out


def _two_sided(stat: np.ndarray, obs: np.ndarray, counted: int) -> np.ndarray:
    """``min(1, 2 * smaller tail)`` per row of ``stat`` (splits along axis 1), split_test's tolerance;
    ``counted`` = 1 adds the observed split to both tails (random splits), 0 when it is a row of ``stat``."""
    tol = 1e-12 * np.maximum(1.0, np.abs(stat).max(axis=1, keepdims=True))
    upper = counted + np.sum(stat >= obs - tol, axis=1)
    lower = counted + np.sum(stat <= obs + tol, axis=1)
    return np.minimum(1.0, 2.0 * np.minimum(upper, lower) / (stat.shape[1] + counted))


def split_pvalues(
    a: np.ndarray,
    b: np.ndarray,
    n_permutations: int = 999,
    seed: int | Sequence[int] | np.random.Generator = 0,
    max_exact: int = MAX_EXACT_SPLITS,
) -> tuple[np.ndarray, bool]:
    """Two-sided permutation p-values of ``mean(b) - mean(a)`` for many data sets at once.

    ``a`` is (data sets, n_a) and ``b`` (data sets, n_b). With at most ``max_exact`` splits every split is
    enumerated once (an index matrix shared by all data sets) and each p equals
    :func:`rmvalues.stats.split_test`'s; beyond, ``n_permutations`` random splits are drawn independently
    for every data set (the observed split counted in both tails). Returns ``(p, exact)``.
    """
    a, b = np.atleast_2d(np.asarray(a, float)), np.atleast_2d(np.asarray(b, float))
    n_a, n_b = a.shape[1], b.shape[1]
    z = np.concatenate([a, b], axis=1)
    n = n_a + n_b
    total = z.sum(axis=1)
    p = np.empty(z.shape[0])
    if n_splits(n_a, n_b) <= max_exact:
        first = _all_splits(n, n_a)
        step = max(1, _CHUNK_ELEMENTS // first.shape[0])
        for s in range(0, z.shape[0], step):
            s1 = z[s : s + step] @ first.T
            stat = (total[s : s + step, None] - s1) / n_b - s1 / n_a
            p[s : s + step] = _two_sided(stat, stat[:, :1], counted=0)
        return p, True
    rng = np.random.default_rng(seed)
    obs = (b.mean(axis=1) - a.mean(axis=1))[:, None]
    step = max(1, _CHUNK_ELEMENTS // (n_permutations * n))
    for s in range(0, z.shape[0], step):
        zc = z[s : s + step]
        keys = rng.random((zc.shape[0], n_permutations, n))
        # the n_a units with the smallest keys form the first group: a uniformly random split
        cut = np.partition(keys, n_a - 1, axis=2)[:, :, n_a - 1 : n_a]
        s1 = np.matmul((keys <= cut).astype(float), zc[:, :, None])[:, :, 0]
        stat = (total[s : s + step, None] - s1) / n_b - s1 / n_a
        p[s : s + step] = _two_sided(stat, obs[s : s + step], counted=1)
    return p, False


def simulate_power(
    effect: float,
    sd_a: float,
    sd_b: float,
    n_a: int,
    n_b: int,
    test: str = "exact",
    alpha: float = 0.05,
    n_sims: int = 2000,
    seed: int | Sequence[int] = 0,
    n_permutations: int = 999,
) -> PowerResult:
    """Simulated power of ``test`` (see the module docstring) to detect ``mean(b) - mean(a) = effect`` with
    per-RM values ``normal(0, sd_a)`` (``n_a`` RMs) and ``normal(effect, sd_b)`` (``n_b`` RMs), rejecting
    at ``p <= alpha``; all ``n_sims`` data sets are drawn and tested at once."""
    if test not in POWER_TESTS:
        raise ValueError(f"test must be one of {POWER_TESTS}, not {test!r}")
    if n_a < 1 or n_b < 1 or (test == "welch" and min(n_a, n_b) < 2):
        raise ValueError(f"too few RMs for the {test} test: {n_a} vs {n_b}")
    rng = np.random.default_rng(seed)
    a = rng.normal(0.0, sd_a, size=(n_sims, n_a))
    b = rng.normal(effect, sd_b, size=(n_sims, n_b))
    if test == "welch":
        p = stats.ttest_ind(b, a, axis=1, equal_var=False).pvalue
        used, exact = 0, False
    else:
        p, exact = split_pvalues(a, b, n_permutations, rng)
        used = n_splits(n_a, n_b) if exact else n_permutations + 1
    power = float(np.mean(p <= alpha))
    return PowerResult(
        power=power,
        mc_se=math.sqrt(power * (1 - power) / n_sims),
        n_sims=int(n_sims),
        effect=float(effect),
        sd_a=float(sd_a),
        sd_b=float(sd_b),
        n_a=int(n_a),
        n_b=int(n_b),
        test=test,
        alpha=float(alpha),
        n_splits=int(used),
        exact=bool(exact),
    )


def power_table(
    effect: float,
    sd_a: float,
    sd_b: float,
    sizes: Sequence[tuple[int, int]],
    fractions: Sequence[float] = (1.0, 0.5),
    tests: Sequence[str] = ("exact",),
    alpha: float = 0.05,
    n_sims: int = 2000,
    seed: int | Sequence[int] = 0,
    n_permutations: int = 999,
) -> pd.DataFrame:
    """Simulated power for every effect fraction (of ``effect``, e.g. the observed difference and half of
    it), family size pair ``(n_a, n_b)`` of ``sizes`` (e.g. the observed (4, 6), then (8, 8), (12, 12),
    (20, 20)) and test: :data:`POWER_COLUMNS`. Every row uses ``seed`` (common random numbers: rows differ
    by their design, not by simulation noise)."""
    rows = []
    for fraction in fractions:
        for n_a, n_b in sizes:
            for test in tests:
                r = simulate_power(
                    effect * fraction, sd_a, sd_b, n_a, n_b, test, alpha, n_sims, seed, n_permutations
                )
                rows.append(
                    {
                        "effect_fraction": float(fraction),
                        "effect": r.effect,
                        "n_a": r.n_a,
                        "n_b": r.n_b,
                        "test": r.test,
                        "power": r.power,
                        "mc_se": r.mc_se,
                        "n_sims": r.n_sims,
                    }
                )
    return pd.DataFrame(rows, columns=POWER_COLUMNS)


def welch_power(
    effect: float,
    sd_a: float,
    sd_b: float,
    n_a: int | np.ndarray,
    n_b: int | np.ndarray,
    alpha: float = 0.05,
) -> float | np.ndarray:
    """The non-central t approximation of the two-sided Welch test's power (vectorised over sizes).

    The statistic is taken as non-central t with non-centrality ``effect / sqrt(sd_a^2/n_a + sd_b^2/n_b)``
    and the Welch-Satterthwaite degrees of freedom at the true SDs; power is the chance of exceeding the
    two-sided critical value of the central t with those degrees of freedom.
    """
    na, nb = np.asarray(n_a, float), np.asarray(n_b, float)
    va, vb = sd_a**2 / na, sd_b**2 / nb
    se = np.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    crit = stats.t.ppf(1 - alpha / 2, df)
    ncp = effect / se
    power = stats.nct.sf(crit, df, ncp) + stats.nct.cdf(-crit, df, ncp)
    return float(power) if np.ndim(power) == 0 else power


def rms_needed(
    effect: float,
    sd_a: float,
    sd_b: float,
    target: float = 0.8,
    alpha: float = 0.05,
    method: str = "approx",
    min_n: int = 3,
    max_n: int = 60,
    n_sims: int = 2000,
    seed: int | Sequence[int] = 0,
    n_permutations: int = 999,
) -> int | None:
    """The smallest number of RMs per family (equal sizes, from ``min_n`` to ``max_n``) at which the power
    to detect ``effect`` reaches ``target``; ``None`` when ``max_n`` does not reach it.

    ``method="approx"`` (default, instant): Welch's power by the non-central t approximation
    (:func:`welch_power`) at every size, the first size that reaches the target. ``"welch"`` or ``"exact"``:
    the simulated power (:func:`simulate_power` with that test, the same ``seed`` at every size, so the
    sizes share their random numbers), searched by bisection, which assumes power grows with the size.
    """
    if min_n < 2 or max_n < min_n:
        raise ValueError(f"need 2 <= min_n <= max_n, got {min_n}, {max_n}")
    if method == "approx":
        sizes = np.arange(min_n, max_n + 1)
        reached = np.flatnonzero(np.asarray(welch_power(effect, sd_a, sd_b, sizes, sizes, alpha)) >= target)
        return int(sizes[reached[0]]) if reached.size else None
    if method not in POWER_TESTS:
        raise ValueError(f"method must be 'approx' or one of {POWER_TESTS}, not {method!r}")

    def power(n: int) -> float:
        return simulate_power(effect, sd_a, sd_b, n, n, method, alpha, n_sims, seed, n_permutations).power

    if power(max_n) < target:
        return None
    if power(min_n) >= target:
        return min_n
    lo, hi = min_n, max_n  # power(lo) < target <= power(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if power(mid) >= target else (mid, hi)
    return hi
