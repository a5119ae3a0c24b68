"""Held-out preference accuracy with intervals: per cell (Wilson), and per base model and quantity across seeds
(t interval over seeds; bootstrap over held-out pairs), with the verdict whether a quantity *learns*.

Two sources of uncertainty, two intervals: the seeds (each draws its own training subset and head) vary the
trained RM, the held-out pairs are a sample of the data. ``seed_ci`` is the t interval of the mean accuracy
over seeds (the held-out set fixed); ``pair_ci`` resamples the held-out pairs (2,000 percentile bootstrap
resamples of the per-pair share of seeds that rank it correctly; the seeds fixed). A quantity *learns* when
both lower bounds are above chance (0.5).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = [
    "CHANCE",
    "N_BOOTSTRAP",
    "REFERENCE_TOLERANCE",
    "accuracy_differences",
    "accuracy_summary",
    "joint_bootstrap",
    "joint_bootstrap_ci",
    "pair_bootstrap_ci",
    "wilson_ci",
]

#: Largest allowed difference (share of held-out pairs) between a probe's accuracy and its logistic reference.
REFERENCE_TOLERANCE = 0.01

#: Accuracy of a head that cannot tell chosen from rejected.
CHANCE = 0.5


#: Bootstrap resamples of the held-out pairs for the pair-level accuracy interval.
N_BOOTSTRAP = 2000


def wilson_ci(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of ``correct / n`` (``statsmodels.stats.proportion.proportion_confint``); NaN for
    ``n == 0``."""
    from statsmodels.stats.proportion import proportion_confint

    if n <= 0:
        return (np.nan, np.nan)
    lo, hi = proportion_confint(int(correct), int(n), alpha=1 - confidence, method="wilson")
    return float(lo), float(hi)


def pair_bootstrap_ci(
    correct: np.ndarray, n_bootstrap: int = N_BOOTSTRAP, seed: int = 0, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean accuracy over seeds, resampling held-out pairs.

    ``correct``: ``(n_seeds, n_pairs)`` booleans (pair j ranked correctly by seed i's RM), the same pairs
    for every seed. Each resample draws ``n_pairs`` pairs with replacement and averages over seeds and pairs.
    """
    c = np.asarray(correct, dtype=float)
    if c.ndim != 2 or c.shape[1] == 0:
        return (np.nan, np.nan)
    per_pair = c.mean(axis=0)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(per_pair), size=(n_bootstrap, len(per_pair)))
    means = per_pair[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def joint_bootstrap(
    correct: np.ndarray, n_bootstrap: int = N_BOOTSTRAP, seed: int = 0, pairs: np.ndarray | None = None
) -> np.ndarray:
    """Bootstrap means of accuracy resampling seeds and held-out pairs together: each resample draws
    ``n_seeds`` rows (trained RMs) and ``n_pairs`` columns (held-out pairs) with replacement and averages
    the sub-table. ``correct``: ``(n_seeds, n_pairs)``; ``pairs``: the column draws to use (``(n_bootstrap,
    n_pairs)``, shared with another table for a paired difference), drawn here when None."""
    c = np.asarray(correct, dtype=float)
    rng = np.random.default_rng(seed)
    if pairs is None:
        pairs = rng.integers(0, c.shape[1], size=(n_bootstrap, c.shape[1]))
    seeds = rng.integers(0, c.shape[0], size=(len(pairs), c.shape[0]))
    # mean over the drawn sub-table = mean over drawn rows of each row's mean over the drawn columns
    out = np.empty(len(pairs))
    for b in range(len(pairs)):
        out[b] = c[seeds[b]][:, pairs[b]].mean()
    return out


def joint_bootstrap_ci(
    correct: np.ndarray, n_bootstrap: int = N_BOOTSTRAP, seed: int = 0, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of :func:`joint_bootstrap` (NaN without two seeds and one pair)."""
    c = np.asarray(correct, dtype=float)
    if c.ndim != 2 or c.shape[1] == 0 or c.shape[0] < 2:
        return (np.nan, np.nan)
    means = joint_bootstrap(c, n_bootstrap, seed)
    alpha = (1 - confidence) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def _wide(eval_pairs: pd.DataFrame | None, cells: pd.Series) -> np.ndarray | None:
    """``(n_cells, n_pairs)`` correct flags of ``cells`` (None unless every cell has every pair)."""
    if eval_pairs is None or eval_pairs.empty:
        return None
    sub = eval_pairs[eval_pairs["cell"].isin(cells)]
    if sub["cell"].nunique() != len(cells):
        return None
    wide = sub.pivot(index="cell", columns="pair_id", values="correct")
    return None if wide.isna().any().any() else wide.to_numpy(bool)


def accuracy_differences(
    cells: pd.DataFrame,
    eval_pairs: pd.DataFrame | None,
    n_bootstrap: int = N_BOOTSTRAP,
    seed: int = 0,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Held-out accuracy of every two base models at matched data, method and quantity: the difference of
    mean accuracies with a joint bootstrap interval (each base's seeds resampled on their own, the held-out
    pairs resampled once for both: the same pairs judge both bases)."""
    keys = ["data", "method", "quantity"]
    rows = []
    for key, g in cells.groupby(keys, sort=True, observed=True):
        bases = sorted(g["base_model"].unique())
        for i, a in enumerate(bases):
            for b in bases[i + 1 :]:
                ca = _wide(eval_pairs, g.loc[g["base_model"] == a, "cell"])
                cb = _wide(eval_pairs, g.loc[g["base_model"] == b, "cell"])
                row = {**dict(zip(keys, key, strict=True)), "base_a": a, "base_b": b}
                row["accuracy_a"] = float(g.loc[g["base_model"] == a, "eval_accuracy_end"].mean())
                row["accuracy_b"] = float(g.loc[g["base_model"] == b, "eval_accuracy_end"].mean())
                row["difference"] = row["accuracy_a"] - row["accuracy_b"]
                lo = hi = np.nan
                if (
                    ca is not None
                    and cb is not None
                    and ca.shape[1] == cb.shape[1]
                    and min(len(ca), len(cb)) > 1
                ):
                    rng = np.random.default_rng(seed)
                    pairs = rng.integers(0, ca.shape[1], size=(n_bootstrap, ca.shape[1]))
                    diff = joint_bootstrap(ca, seed=seed + 1, pairs=pairs) - joint_bootstrap(
                        cb, seed=seed + 2, pairs=pairs
                    )
                    alpha = (1 - confidence) / 2
                    lo, hi = float(np.quantile(diff, alpha)), float(np.quantile(diff, 1 - alpha))
                row.update(ci_low=lo, ci_high=hi, n_a=int((g["base_model"] == a).sum()))
                row["n_b"] = int((g["base_model"] == b).sum())
                rows.append(row)
    return pd.DataFrame(rows)


def add_cell_intervals(cells: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """``cells`` with ``eval_correct`` (pairs ranked correctly at the last checkpoint) and the Wilson interval
    of ``eval_accuracy_end`` over the ``n_eval_used`` held-out pairs (``eval_ci_low``, ``eval_ci_high``)."""
    out = cells.copy()
    n = out["n_eval_used"].astype(int)
    k = (out["eval_accuracy_end"] * n).round()
    out["eval_correct"] = k.astype("Int64")
    ci = [
        wilson_ci(int(kk), int(nn), confidence) if nn > 0 else (np.nan, np.nan)
        for kk, nn in zip(k, n, strict=True)
    ]
    out["eval_ci_low"] = [c[0] for c in ci]
    out["eval_ci_high"] = [c[1] for c in ci]
    return out


def accuracy_summary(
    cells: pd.DataFrame,
    eval_pairs: pd.DataFrame | None,
    confidence: float = 0.95,
    n_bootstrap: int = N_BOOTSTRAP,
    seed: int = 0,
) -> pd.DataFrame:
    """Held-out accuracy per base model, data and quantity across seeds.

    ``cells``: one row per cell (``eval_accuracy_end``, ``eval_accuracy_start``, ``train_accuracy_end``);
    ``eval_pairs``: ``cell, pair_id, correct`` per held-out pair (head-only cells; None or empty: no
    pair-level interval). Columns: ``n_seeds, n_eval, accuracy`` (mean over seeds), ``sd``, ``seed_ci_low``,
    ``seed_ci_high`` (t over seeds), ``pair_ci_low``, ``pair_ci_high`` (bootstrap over pairs), ``joint_ci_low``,
    ``joint_ci_high`` (bootstrap over seeds and pairs together, :func:`joint_bootstrap_ci`), the logistic
    reference (``reference_accuracy``, ``reference_difference_max``, ``within_reference``, ``grad_norm_max``),
    ``untrained_accuracy`` (mean over seeds of the randomly drawn head at step 0), ``train_accuracy`` (share
    of its own training pairs the final head ranks correctly, ``train_accuracy_final``; the last logged
    training batch where that is missing; mean over seeds), ``learns`` (both lower bounds above
    :data:`CHANCE`; the lower bounds of all three intervals).
    """
    from ...stats import mean_ci

    keys = ["base_model", "family", "data", "method", "quantity"]
    rows = []
    for key, g in cells.groupby(keys, sort=True, observed=True):
        mean, sd, lo, hi, n = mean_ci(g["eval_accuracy_end"], confidence)
        row = {**dict(zip(keys, key, strict=True)), "n_seeds": n, "n_eval": int(g["n_eval_used"].max())}
        row.update(accuracy=mean, sd=sd, seed_ci_low=lo, seed_ci_high=hi)
        p_lo = p_hi = j_lo = j_hi = np.nan
        wide = _wide(eval_pairs, g["cell"])
        if wide is not None:
            p_lo, p_hi = pair_bootstrap_ci(wide, n_bootstrap, seed, confidence)
            j_lo, j_hi = joint_bootstrap_ci(wide, n_bootstrap, seed, confidence)
        row.update(pair_ci_low=p_lo, pair_ci_high=p_hi, joint_ci_low=j_lo, joint_ci_high=j_hi)
        row["untrained_accuracy"] = float(g["eval_accuracy_start"].mean())
        train = g["train_accuracy_final"] if "train_accuracy_final" in g else pd.Series(dtype=float)
        row["train_accuracy"] = float(
            train.mean() if train.notna().all() and len(train) else g["train_accuracy_end"].mean()
        )
        row.update(_reference_columns(g))
        bounds = [b for b in (lo, p_lo, j_lo) if not pd.isna(b)]
        row["learns"] = bool(bounds) and min(bounds) > CHANCE
        rows.append(row)
    return pd.DataFrame(rows)


def _reference_columns(g: pd.DataFrame) -> dict[str, object]:
    """The probes' logistic references across seeds: mean reference accuracy, the largest |probe -
    reference| accuracy difference, whether every seed is within :data:`REFERENCE_TOLERANCE`, and the largest
    final gradient norm (NaN / None where the cells have no reference, e.g. depth cells)."""
    if "reference_eval_accuracy" not in g or g["reference_eval_accuracy"].isna().all():
        return {
            "reference_accuracy": np.nan,
            "reference_difference_max": np.nan,
            "within_reference": None,
            "grad_norm_max": np.nan,
        }
    diff = (g["eval_accuracy_end"] - g["reference_eval_accuracy"]).abs()
    return {
        "reference_accuracy": float(g["reference_eval_accuracy"].mean()),
        "reference_difference_max": float(diff.max()),
        "within_reference": bool((diff <= REFERENCE_TOLERANCE + 1e-12).all()),
        "grad_norm_max": float(g["grad_norm_end"].max()),
    }
