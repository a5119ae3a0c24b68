"""Specification curves: one verdict under every reasonable path of analysis choices.

A verdict of the statistics chapter (a family difference of the per-RM framing contrast ``D(k)``) rests on
choices: how a (RM, prompt, category) cell is summarised, which words and prompts enter, which test compares
the families. This module computes the verdict's estimate, interval and p for each combination and turns the
curve into a label by a rule fixed before any result is read (:func:`curve_label`).

**Cell summaries** (:data:`SUMMARIES`), per (RM, prompt) over the words of the word set, each oriented so
that higher means *more reward* (a "standing"):

* ``median rank`` (the paper's): minus the median rank of the category's words (rank 1 = highest score);
* ``mean rank``: minus their mean rank;
* ``normalised score``: their mean score after a per-(RM, prompt) min-max normalisation to [0, 1] (the
  paper's normalised-reward plots);
* ``z-score``: their mean score after per-(RM, prompt) standardisation;
* ``top-quartile share``: the share of the category's words ranked in the top quarter of the word set.

A word with two labels is ranked and normalised once per (RM, prompt) and counts in both categories.

**The per-RM statistic** (:func:`rm_statistics`): with ``m(k, f)`` the RM's mean standing of category ``k``
over the prompts of framing ``f``, ``D(k) = [m(k, +) - mean_{j != k} m(j, +)] - [m(k, -) - mean_{j != k}
m(j, -)]``: for median ranks exactly the statistics chapter's ``D(k)`` (gain in rank from negative to
positive prompts). With two categories only the second is reported (``D(first) = -D(second)``).

**Tests** (:func:`two_group_tests`, :data:`TESTS`) of the family difference ``b - a`` over RMs, every one
over all splits of the RMs into groups of the families' sizes where it is a permutation test:

* ``exact mean difference``: the split test of the difference of means; interval: Lehmann's inversion;
* ``permuted Welch t``: the same splits with Welch's t as the statistic; interval: the shifts of family b
  that this test does not reject (found by bisection);
* ``exact Mann-Whitney``: the rank-sum statistic over all splits (mid-ranks for ties); estimate and
  interval: the Hodges-Lehmann shift and the order statistics of the pairwise differences that invert the
  test;
* ``Welch t``: scipy's Welch t test and its t interval.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy import stats

#: Cell summaries, the paper's first.
SUMMARIES: tuple[str, ...] = (
    "median rank",
    "mean rank",
    "normalised score",
    "z-score",
    "top-quartile share",
)
#: The unit of each summary's ``D`` (and so of the curve's estimates).
SUMMARY_UNITS: dict[str, str] = {
    "median rank": "ranks",
    "mean rank": "ranks",
    "normalised score": "normalised score (0-1 per RM and prompt)",
    "z-score": "SD of the prompt's scores",
    "top-quartile share": "share of words in the top quarter",
}
#: Two-group tests over RMs, the chapter's primary test first.
TESTS: tuple[str, ...] = ("exact mean difference", "permuted Welch t", "exact Mann-Whitney", "Welch t")
#: The labels of :func:`curve_label`, strongest first.
LABELS: tuple[str, ...] = ("robust", "fragile", "inconclusive", "untestable")
#: Splits enumerated up to this many (beyond: a seeded random draw of this many, the observed split first).
MAX_SPLITS = 200_000


# ---------------------------------------------------------------------------------------------------------
# Cell summaries and the per-RM statistic
# ---------------------------------------------------------------------------------------------------------


def cell_standings(scores: pd.DataFrame, labels: Sequence[str] = ("category",)) -> pd.DataFrame:
    """Every summary of :data:`SUMMARIES` per (rm, family, prompt_id, framing, *labels*) cell.

    ``scores``: one row per (rm, prompt_id, word, label) with ``rm, family, prompt_id, framing, word, score``
    and the ``labels`` columns (a word with two labels has two rows, one score). The words of each
    (rm, prompt_id) are ranked (1 = highest score, ties averaged), normalised and standardised once.
    Returns the cell keys and one column per summary (higher = more reward).
    """
    unit = ["rm", "prompt_id"]
    words = scores.drop_duplicates([*unit, "word"])[[*unit, "word", "score"]].copy()
    g = words.groupby(unit, sort=False)["score"]
    words["rank"] = g.rank(ascending=False, method="average")
    n = g.transform("size")
    lo, hi = g.transform("min"), g.transform("max")
    words["norm"] = ((words["score"] - lo) / (hi - lo).where(hi > lo)).fillna(0.5)
    sd = g.transform("std").where(lambda s: s > 0)
    words["z"] = ((words["score"] - g.transform("mean")) / sd).fillna(0.0)
    words["top"] = (words["rank"] <= n / 4).astype(float)
    keyed = scores.drop_duplicates([*unit, "word", *labels])[
        ["rm", "family", "prompt_id", "framing", "word", *labels]
    ]
    df = keyed.merge(words.drop(columns="score"), on=[*unit, "word"], how="left", validate="many_to_one")
    keys = ["rm", "family", "prompt_id", "framing", *labels]
    out = (
        df.groupby(keys, sort=True, observed=True)
        .agg(
            median_rank=("rank", "median"),
            mean_rank=("rank", "mean"),
            norm=("norm", "mean"),
            z=("z", "mean"),
            top=("top", "mean"),
            n_words=("word", "size"),
        )
        .reset_index()
    )
    out["median rank"] = -out.pop("median_rank")
    out["mean rank"] = -out.pop("mean_rank")
    out["normalised score"] = out.pop("norm")
    out["z-score"] = out.pop("z")
    out["top-quartile share"] = out.pop("top")
    return out


@dataclass(frozen=True)
class CellArray:
    """Cell standings as arrays: ``values[summary]`` is (RMs, prompts, categories), NaN where a cell is
    empty; ``framing`` per prompt; ``family`` per RM."""

    rms: list[str]
    family: np.ndarray
    prompts: list[str]
    framing: np.ndarray
    categories: list[str]
    values: dict[str, np.ndarray]


def cell_array(cells: pd.DataFrame, summaries: Sequence[str] = SUMMARIES) -> CellArray:
    """:class:`CellArray` of the cells of one analysis (columns of :func:`cell_standings`, one label column
    ``category``)."""
    rms = sorted(cells["rm"].unique())
    prompts = sorted(cells["prompt_id"].unique())
    cats = sorted(cells["category"].astype(str).unique())
    fam = cells.drop_duplicates("rm").set_index("rm")["family"].reindex(rms).to_numpy(object)
    framing = cells.drop_duplicates("prompt_id").set_index("prompt_id")["framing"].reindex(prompts)
    ri = pd.Index(rms).get_indexer(cells["rm"])
    pi = pd.Index(prompts).get_indexer(cells["prompt_id"])
    ci = pd.Index(cats).get_indexer(cells["category"].astype(str))
    values = {}
    for s in summaries:
        arr = np.full((len(rms), len(prompts), len(cats)), np.nan)
        arr[ri, pi, ci] = cells[s].to_numpy(float)
        values[s] = arr
    return CellArray(rms, fam, prompts, framing.to_numpy(object), cats, values)


def rm_statistics(values: np.ndarray, framing: np.ndarray, prompt_mask: np.ndarray) -> np.ndarray:
    """``D(k)`` per RM and category (RMs, categories) from cell standings ``values`` (RMs, prompts,
    categories), over the prompts where ``prompt_mask`` is true (see the module docstring)."""
    gains = []
    for f in ("positive", "negative"):
        sel = prompt_mask & (framing == f)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an RM without cells in a framing: NaN
            m = np.nanmean(values[:, sel, :], axis=1)  # (RMs, categories)
        k = m.shape[1]
        others = (m.sum(axis=1, keepdims=True) - m) / max(k - 1, 1)
        gains.append(m - others)
    return gains[0] - gains[1]


# ---------------------------------------------------------------------------------------------------------
# Two-group tests over units
# ---------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=32)
def _splits(n: int, n_b: int, seed: int) -> np.ndarray:
    """Boolean (splits, n) matrix, True where a unit is in group b; the observed split (the last ``n_b``
    units in b) first. Every split up to :data:`MAX_SPLITS`, else a seeded random draw."""
    total = math.comb(n, n_b)
    if total <= MAX_SPLITS:
        rows = np.zeros((total, n), dtype=bool)
        observed = tuple(range(n - n_b, n))
        combos = [observed] + [c for c in itertools.combinations(range(n), n_b) if c != observed]
        for i, c in enumerate(combos):
            rows[i, list(c)] = True
        return rows
    rng = np.random.default_rng(seed)
    rows = np.zeros((MAX_SPLITS, n), dtype=bool)
    rows[0, n - n_b :] = True
    for i in range(1, MAX_SPLITS):
        rows[i, rng.choice(n, n_b, replace=False)] = True
    return rows


def _two_sided(stat: np.ndarray) -> float:
    """scipy's two-sided permutation p: ``min(1, 2 * min(P(T >= t), P(T <= t)))``, ``t = stat[0]``."""
    tol = 1e-12 * max(1.0, float(np.nanmax(np.abs(stat))))
    upper = np.mean(stat >= stat[0] - tol)
    lower = np.mean(stat <= stat[0] + tol)
    return float(min(1.0, 2 * min(upper, lower)))


def _welch_per_split(z: np.ndarray, in_b: np.ndarray) -> np.ndarray:
    """Welch's t (b minus a) per split (columns) for each row of values ``z`` (rows, units)."""
    z = np.atleast_2d(z)
    nb = in_b.sum(axis=1)
    na = z.shape[1] - nb
    sb, qb = z @ in_b.T, (z * z) @ in_b.T
    sa = z.sum(axis=1, keepdims=True) - sb
    qa = (z * z).sum(axis=1, keepdims=True) - qb
    mb, ma = sb / nb, sa / na
    vb = (qb - nb * mb * mb) / (nb - 1)
    va = (qa - na * ma * ma) / (na - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (mb - ma) / np.sqrt(np.maximum(vb, 0) / nb + np.maximum(va, 0) / na)


def _two_sided_rows(stat: np.ndarray) -> np.ndarray:
    """:func:`_two_sided` of each row (the observed split in column 0)."""
    tol = 1e-12 * np.maximum(1.0, np.nanmax(np.abs(stat), axis=1, keepdims=True))
    upper = np.mean(stat >= stat[:, :1] - tol, axis=1)
    lower = np.mean(stat <= stat[:, :1] + tol, axis=1)
    return np.minimum(1.0, 2 * np.minimum(upper, lower))


def _welch_inversion(a: np.ndarray, b: np.ndarray, alpha: float, splits: np.ndarray) -> tuple[float, float]:
    """The shifts ``delta`` of ``b`` that the permuted Welch test does not reject: on each side of the
    estimate, the first grid point rejected, refined on finer grids (to 1e-6 of the data's range); NaN
    when even a shift of 64 ranges is not rejected."""
    est = float(b.mean() - a.mean())
    spread = float(np.ptp(np.r_[a, b])) or 1.0
    is_b = np.r_[np.zeros(a.size), np.ones(b.size)]
    z = np.r_[a, b]

    def accepted(deltas: np.ndarray) -> np.ndarray:
        return _two_sided_rows(_welch_per_split(z[None, :] - deltas[:, None] * is_b[None, :], splits)) > alpha

    bounds = []
    for direction in (-1.0, 1.0):
        inside, outside = est, est + direction * 64 * spread
        if accepted(np.array([outside]))[0]:
            bounds.append(float("nan"))
            continue
        while abs(outside - inside) > 1e-6 * spread:
            grid = np.linspace(inside, outside, 33)
            ok = accepted(grid)
            first_out = int(np.argmin(ok)) if not ok.all() else 32
            inside, outside = grid[max(first_out - 1, 0)], grid[first_out]
        bounds.append(float((inside + outside) / 2))
    return bounds[0], bounds[1]


def _lehmann(a: np.ndarray, b: np.ndarray, alpha: float, splits: np.ndarray) -> tuple[float, float]:
    """Lehmann's interval inverting the split test of the difference of means (every shift of ``b`` not
    rejected at ``alpha``); NaN when no shift can be rejected."""
    z = np.r_[a, b]
    is_b = np.r_[np.zeros(a.size), np.ones(b.size)]
    stat = (splits @ z) / b.size - (~splits @ z) / a.size
    slope = (splits @ is_b) / b.size - (~splits @ is_b) / a.size
    others = slope < 1 - 1e-12
    t = np.sort((stat[0] - stat[others]) / (1 - slope[others]))
    need = max(math.floor(alpha / 2 * stat.size - 1) + 1, 0)
    if need == 0 or need > t.size:
        return (float("nan"), float("nan"))
    return (float(t[need - 1]), float(t[t.size - need]))


def _mann_whitney(a: np.ndarray, b: np.ndarray, alpha: float, splits: np.ndarray) -> dict[str, float]:
    """The exact rank-sum test over the splits (mid-ranks for ties), the Hodges-Lehmann shift (median of
    the pairwise differences ``b_i - a_j``) and its exact interval ``[d_(c+1), d_(mn-c)]``, where ``c`` is the
    largest ``U`` the test rejects in its lower tail (null distribution of ``U`` without ties)."""
    u = splits @ stats.rankdata(np.r_[a, b])  # rank sum of group b per split (U plus a constant)
    diffs = np.sort((b[:, None] - a[None, :]).ravel())
    u0 = splits @ np.arange(1.0, a.size + b.size + 1) - b.size * (b.size + 1) / 2
    values = np.unique(u0)
    lower = np.array([np.mean(u0 <= v) for v in values])
    rejected = values[2 * lower <= alpha + 1e-12]
    if rejected.size == 0:
        lo = hi = float("nan")  # no U is extreme enough: the interval is the whole line
    else:
        c = int(rejected.max())
        lo, hi = float(diffs[c]), float(diffs[diffs.size - c - 1])
    return {"estimate": float(np.median(diffs)), "ci_low": lo, "ci_high": hi, "p": _two_sided(u)}


def two_group_tests(
    a: Sequence[float],
    b: Sequence[float],
    tests: Sequence[str] = TESTS,
    alpha: float = 0.05,
    seed: int = 0,
) -> list[dict[str, float | str]]:
    """Each test of :data:`TESTS` of the family difference ``b - a``: ``test, estimate, ci_low, ci_high,
    p, p_min`` (``p_min``: the smallest p the permutation tests can give, ``2 / n_splits``)."""
    unknown = [t for t in tests if t not in TESTS]
    if unknown:
        raise ValueError(f"tests {unknown} unknown; valid: {list(TESTS)}")
    xa, xb = np.asarray(a, float), np.asarray(b, float)
    nan = float("nan")
    if xa.size < 2 or xb.size < 2:
        return [
            {"test": t, "estimate": nan, "ci_low": nan, "ci_high": nan, "p": nan, "p_min": 1.0} for t in tests
        ]
    splits = _splits(xa.size + xb.size, xb.size, seed)
    p_min = min(1.0, 2.0 / splits.shape[0])
    z = np.r_[xa, xb]
    est = float(xb.mean() - xa.mean())
    rows: list[dict[str, float | str]] = []
    for test in tests:
        if test == "exact mean difference":
            stat = (splits @ z) / xb.size - (~splits @ z) / xa.size
            lo, hi = _lehmann(xa, xb, alpha, splits)
            row = {"estimate": est, "ci_low": lo, "ci_high": hi, "p": _two_sided(stat)}
        elif test == "permuted Welch t":
            lo, hi = _welch_inversion(xa, xb, alpha, splits)
            row = {
                "estimate": est,
                "ci_low": lo,
                "ci_high": hi,
                "p": _two_sided(_welch_per_split(z, splits)[0]),
            }
        elif test == "exact Mann-Whitney":
            row = _mann_whitney(xa, xb, alpha, splits)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                res = stats.ttest_ind(xb, xa, equal_var=False)
                ci = res.confidence_interval(1 - alpha)
            row = {
                "estimate": est,
                "ci_low": float(ci.low),
                "ci_high": float(ci.high),
                "p": float(res.pvalue),
            }
        rows.append({"test": test, **row, "p_min": p_min if test != "Welch t" else 0.0})
    return rows


# ---------------------------------------------------------------------------------------------------------
# From a curve to a label
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CurveRule:
    """The rule that turns a specification curve into a label, fixed before any result is read.

    A specification *agrees* when its estimate has the sign of the primary specification's estimate, and is
    *significant* when its (corrected) p is below ``alpha``. ``robust``: at least ``sign_share`` agree and at
    least ``robust_share`` are significant; ``fragile``: at least ``sign_share`` agree and at least
    ``fragile_share`` (but fewer than ``robust_share``) are significant; ``inconclusive``: otherwise (both
    signs occur beyond ``1 - sign_share``, or hardly any specification is significant).
    """

    sign_share: float = 0.95
    robust_share: float = 0.5
    fragile_share: float = 0.1
    alpha: float = 0.05

    def __post_init__(self) -> None:
        if not 0 < self.fragile_share <= self.robust_share <= 1 or not 0.5 < self.sign_share <= 1:
            raise ValueError(
                f"curve rule: need 0 < fragile_share ({self.fragile_share}) <= robust_share ({self.robust_share})"
                f" <= 1 and 0.5 < sign_share ({self.sign_share}) <= 1"
            )

    def describe(self) -> str:
        return (
            f"robust: at least {self.sign_share:.0%} of the specifications share the primary estimate's sign and "
            f"at least {self.robust_share:.0%} have p < {self.alpha} (Bonferroni-corrected where several "
            f"contrasts share a corpus); fragile: that sign holds and {self.fragile_share:.0%} to "
            f"{self.robust_share:.0%} are significant; inconclusive: otherwise"
        )


def curve_label(
    estimates: Sequence[float], pvalues: Sequence[float], primary_sign: float, rule: CurveRule
) -> dict[str, float | str | int]:
    """``label`` (one of :data:`LABELS`; ``untestable`` when no specification has an estimate),
    ``share_same_sign``, ``share_significant``, ``n_specifications`` and ``n_missing`` (specifications whose
    estimate is NaN: left out) of one verdict's curve."""
    est = np.asarray(estimates, float)
    p = np.asarray(pvalues, float)
    ok = np.isfinite(est)
    n = int(ok.sum())
    out: dict[str, float | str | int] = {"n_specifications": n, "n_missing": int((~ok).sum())}
    if n == 0:  # no specification could be tested (e.g. one RM per family)
        return {"label": LABELS[3], "share_same_sign": np.nan, "share_significant": np.nan, **out}
    if not np.isfinite(primary_sign) or primary_sign == 0:
        return {"label": LABELS[2], "share_same_sign": np.nan, "share_significant": np.nan, **out}
    same = float(np.mean(np.sign(est[ok]) == np.sign(primary_sign)))
    sig = float(np.mean(np.nan_to_num(p[ok], nan=1.0) < rule.alpha))
    if same >= rule.sign_share and sig >= rule.robust_share:
        label = LABELS[0]
    elif same >= rule.sign_share and sig >= rule.fragile_share:
        label = LABELS[1]
    else:
        label = LABELS[2]
    return {"label": label, "share_same_sign": same, "share_significant": sig, **out}


def standardised(estimate: float, a: Sequence[float], b: Sequence[float]) -> float:
    """``estimate`` over the pooled within-family SD of the per-RM values (makes summaries comparable)."""
    xa, xb = np.asarray(a, float), np.asarray(b, float)
    if xa.size < 2 or xb.size < 2:
        return float("nan")
    pooled = ((xa.size - 1) * xa.var(ddof=1) + (xb.size - 1) * xb.var(ddof=1)) / (xa.size + xb.size - 2)
    return float(estimate / math.sqrt(pooled)) if pooled > 0 else float("nan")


def choice_grid(choices: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """Every combination of the named choices, one row each, in the order given (the first of each choice
    is the primary specification)."""
    names = list(choices)
    return pd.DataFrame(list(itertools.product(*(choices[n] for n in names))), columns=names)
