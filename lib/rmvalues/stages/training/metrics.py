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

__all__ = ["CHANCE", "N_BOOTSTRAP", "accuracy_summary", "pair_bootstrap_ci", "wilson_ci"]

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
    ``seed_ci_high`` (t over seeds), ``pair_ci_low``, ``pair_ci_high`` (bootstrap over pairs),
    ``untrained_accuracy`` (mean over seeds of the randomly drawn head at step 0), ``train_accuracy`` (share
    of its own training pairs the final head ranks correctly, ``train_accuracy_final``; the last logged
    training batch where that is missing; mean over seeds), ``learns`` (both lower bounds above
    :data:`CHANCE`).
    """
    from ...stats import mean_ci

    keys = ["base_model", "family", "data", "method", "quantity"]
    rows = []
    for key, g in cells.groupby(keys, sort=True, observed=True):
        mean, sd, lo, hi, n = mean_ci(g["eval_accuracy_end"], confidence)
        row = {**dict(zip(keys, key, strict=True)), "n_seeds": n, "n_eval": int(g["n_eval_used"].max())}
        row.update(accuracy=mean, sd=sd, seed_ci_low=lo, seed_ci_high=hi)
        p_lo = p_hi = np.nan
        if eval_pairs is not None and not eval_pairs.empty:
            sub = eval_pairs[eval_pairs["cell"].isin(g["cell"])]
            if sub["cell"].nunique() == len(g):
                wide = sub.pivot(index="cell", columns="pair_id", values="correct")
                if not wide.isna().any().any():
                    p_lo, p_hi = pair_bootstrap_ci(wide.to_numpy(bool), n_bootstrap, seed, confidence)
        row.update(pair_ci_low=p_lo, pair_ci_high=p_hi)
        row["untrained_accuracy"] = float(g["eval_accuracy_start"].mean())
        train = g["train_accuracy_final"] if "train_accuracy_final" in g else pd.Series(dtype=float)
        row["train_accuracy"] = float(
            train.mean() if train.notna().all() and len(train) else g["train_accuracy_end"].mean()
        )
        bounds = [b for b in (lo, p_lo) if not pd.isna(b)]
        row["learns"] = bool(bounds) and min(bounds) > CHANCE
        rows.append(row)
    return pd.DataFrame(rows)
