"""The depth arm's question: as more of the base adapts (k top blocks with the head; k = 0 the probe), does the
Agency - Communion difference between bases shrink, stay or grow, and does held-out accuracy rise?

Both are compared on the cells the arm shares with the probe: the same base, data, quantity and seeds (each
depth cell trains on its probe's pairs, so seeds are paired across k). Intervals are percentile bootstraps
that resample seeds (one draw of seeds used at both depths, per base) and, for accuracy, the held-out pairs
together with them. A change whose interval includes zero is *inconclusive*.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["N_DEPTH_BOOTSTRAP", "depth_accuracy", "depth_gaps", "verdict"]

#: Bootstrap resamples of the depth comparisons.
N_DEPTH_BOOTSTRAP = 2000


def verdict(low: float, high: float, below: str, above: str) -> str:
    """``below`` when the interval lies below 0, ``above`` when above, else ``inconclusive``."""
    if pd.isna(low) or pd.isna(high):
        return "not computed"
    if high < 0:
        return below
    if low > 0:
        return above
    return "inconclusive"


def _last(gaps: pd.DataFrame) -> pd.DataFrame:
    return gaps[gaps["step"] == gaps.groupby("cell")["step"].transform("max")]


def depth_gaps(
    gaps: pd.DataFrame, n_bootstrap: int = N_DEPTH_BOOTSTRAP, seed: int = 0, confidence: float = 0.95
) -> pd.DataFrame:
    """Per data, quantity, framing, depth k >= 1 and pair of bases: the between-base difference of mean
    Agency - Communion gaps at depth k and at k = 0 on the same seeds (``difference_k``, ``difference_0``),
    the change of its size ``|difference_k| - |difference_0|`` with a bootstrap interval over seeds (paired
    across depths) and the verdict (``shrinks`` / ``grows`` / ``inconclusive``)."""
    last = _last(gaps)
    rows = []
    alpha = (1 - confidence) / 2
    for (data, quantity, framing), g in last.groupby(["data", "quantity", "framing"], sort=True):
        for k in sorted(d for d in g["depth"].unique() if d > 0):
            at_k = g[g["depth"] == k]
            seeds = sorted(set(at_k["seed"]))
            sub = g[g["seed"].isin(seeds) & g["depth"].isin([0, k])]
            tab = sub.pivot_table(index=["base_model", "seed"], columns="depth", values="gap")
            bases = sorted(sub["base_model"].unique())
            rng = np.random.default_rng(seed)
            for i, a in enumerate(bases):
                for b in bases[i + 1 :]:
                    xa, xb = tab.loc[a].dropna().to_numpy(), tab.loc[b].dropna().to_numpy()
                    if len(xa) < 2 or len(xb) < 2:
                        continue
                    ia = rng.integers(0, len(xa), size=(n_bootstrap, len(xa)))
                    ib = rng.integers(0, len(xb), size=(n_bootstrap, len(xb)))
                    d_k = xa[ia, 1].mean(axis=1) - xb[ib, 1].mean(axis=1)
                    d_0 = xa[ia, 0].mean(axis=1) - xb[ib, 0].mean(axis=1)
                    change = np.abs(d_k) - np.abs(d_0)
                    diff_k = float(xa[:, 1].mean() - xb[:, 1].mean())
                    diff_0 = float(xa[:, 0].mean() - xb[:, 0].mean())
                    lo, hi = (float(np.quantile(change, q)) for q in (alpha, 1 - alpha))
                    rows.append(
                        {
                            "data": data,
                            "quantity": int(quantity),
                            "framing": framing,
                            "depth": int(k),
                            "base_a": a,
                            "base_b": b,
                            "n_seeds": min(len(xa), len(xb)),
                            "difference_0": diff_0,
                            "difference_k": diff_k,
                            "size_change": abs(diff_k) - abs(diff_0),
                            "ci_low": lo,
                            "ci_high": hi,
                            "verdict": verdict(lo, hi, "shrinks", "grows"),
                        }
                    )
    return pd.DataFrame(rows)


def depth_accuracy(
    cells: pd.DataFrame,
    eval_pairs: pd.DataFrame,
    n_bootstrap: int = N_DEPTH_BOOTSTRAP,
    seed: int = 0,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Per base, data, quantity and depth k >= 1: held-out accuracy at k and at k = 0 on the same seeds and
    its change, with a joint bootstrap over seeds and held-out pairs (the same draws at both depths) and the
    verdict (``rises`` / ``falls`` / ``inconclusive``)."""
    rows = []
    alpha = (1 - confidence) / 2
    if eval_pairs is None or eval_pairs.empty:
        return pd.DataFrame()
    flags = eval_pairs.pivot(index="cell", columns="pair_id", values="correct")
    for (base, data, quantity), g in cells.groupby(["base_model", "data", "quantity"], sort=True):
        for k in sorted(d for d in g["depth"].unique() if d > 0):
            seeds = sorted(set(g.loc[g["depth"] == k, "seed"]))
            ck = g[(g["depth"] == k) & g["seed"].isin(seeds)].sort_values("seed")["cell"]
            c0 = g[(g["depth"] == 0) & g["seed"].isin(seeds)].sort_values("seed")["cell"]
            if len(ck) != len(c0) or len(ck) < 2 or not set(ck) | set(c0) <= set(flags.index):
                continue
            yk, y0 = flags.loc[list(ck)].to_numpy(float), flags.loc[list(c0)].to_numpy(float)
            rng = np.random.default_rng(seed)
            s_idx = rng.integers(0, len(ck), size=(n_bootstrap, len(ck)))
            p_idx = rng.integers(0, yk.shape[1], size=(n_bootstrap, yk.shape[1]))
            change = np.array(
                [yk[s][:, p].mean() - y0[s][:, p].mean() for s, p in zip(s_idx, p_idx, strict=True)]
            )
            lo, hi = (float(np.quantile(change, q)) for q in (alpha, 1 - alpha))
            rows.append(
                {
                    "base_model": base,
                    "data": data,
                    "quantity": int(quantity),
                    "depth": int(k),
                    "n_seeds": len(ck),
                    "accuracy_0": float(y0.mean()),
                    "accuracy_k": float(yk.mean()),
                    "change": float(yk.mean() - y0.mean()),
                    "ci_low": lo,
                    "ci_high": hi,
                    "verdict": verdict(lo, hi, "falls", "rises"),
                }
            )
    return pd.DataFrame(rows)
