"""Sentences of the training chapter, built from the numbers of the run."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = [
    "describe_accuracy",
    "describe_comparison",
    "describe_data",
    "describe_gaps",
    "describe_paper",
    "describe_time",
]


def _f(x: float, digits: int = 1) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def describe_data(data: pd.DataFrame, cells: pd.DataFrame, quantities: Sequence[int]) -> str:
    """One paragraph per source: how many pairs were examined, eligible, dropped (why), held out, trained."""
    out = []
    q = ", ".join(str(x) for x in quantities)
    for row in data.to_dict("records"):
        drops = {k[len("dropped: ") :]: v for k, v in row.items() if k.startswith("dropped: ") and v}
        why = "; ".join(f"{v} {k}" for k, v in sorted(drops.items(), key=lambda kv: -kv[1])) or "none"
        out.append(
            f"Source `{row['source']}`: {row['n_rows']:,} pairs; {row['n_examined']:,} were visited in the fixed "
            f"data order (data seed {row['data_seed']}) until {row['n_eligible']:,} eligible pairs were found "
            f"(dropped on the way: {why}). The first {row['n_eval']} are held out; cells train on the first "
            f"{q} of the remaining {row['n_train_pool']} pairs, the same pairs for every base model."
        )
    trained = cells[["quantity", "n_train_used"]].drop_duplicates()
    if (trained["quantity"] == trained["n_train_used"]).all():
        out.append("TRL kept every selected pair in every cell (none exceeded max_length).")
    else:
        out.append(f"TRL dropped pairs in some cells: {trained.to_dict('records')}.")
    return "\n\n".join(out)


def describe_accuracy(cells: pd.DataFrame) -> str:
    """Held-out accuracy before and after training, per base model and quantity (mean over seeds)."""
    parts = []
    for (base, q), g in cells.groupby(["base_model", "quantity"], sort=True):
        m0, m1 = g["eval_accuracy_start"].mean(), g["eval_accuracy_end"].mean()
        parts.append(
            f"{base} with {q} pairs: {_f(100 * m0, 0)} % at step 0, {_f(100 * m1, 0)} % after training "
            f"(seeds: {', '.join(_f(100 * x, 0) for x in g['eval_accuracy_end'])} %)"
        )
    return "Held-out preference accuracy (chance = 50 %): " + "; ".join(parts) + "."


def describe_gaps(gaps: pd.DataFrame, framing: str = "positive") -> str:
    """The Agency - Communion gap at the first and last checkpoint per base model and quantity."""
    from ...stats import mean_ci

    g = gaps[gaps["framing"] == framing]
    parts = []
    for (base, q), h in g.groupby(["base_model", "quantity"], sort=True):
        first = h[h["step"] == h.groupby("cell")["step"].transform("min")]["gap"]
        last = h[h["step"] == h.groupby("cell")["step"].transform("max")]["gap"]
        m, _, lo, hi, n = mean_ci(last)
        lean = "Communion" if m > 0 else "Agency"
        spread = f"95 % CI over {n} seeds {_f(lo)} to {_f(hi)}" if n > 1 else "one seed: no interval"
        parts.append(
            f"{base}, {q} pairs: {_f(first.mean())} at step 0 -> {_f(m)} after training ({spread}; leaning {lean})"
        )
    return (
        f"Agency minus Communion median rank under {framing} prompts (positive: Communion words get more "
        "reward): " + "; ".join(parts) + "."
    )


def describe_comparison(comparison: pd.DataFrame | None) -> str:
    """The difference between base models at the last checkpoint, per quantity and framing."""
    if comparison is None or comparison.empty:
        return "Only one base model: no comparison between base models."
    c = comparison[comparison["checkpoint"] == "last"]
    parts = []
    for r in c.to_dict("records"):
        p = r.get("p_perm", np.nan)
        parts.append(
            f"{r['framing']} prompts, {r['quantity']} pairs: {r['base_a']} - {r['base_b']} = {_f(r['difference'])} "
            f"rank units (Welch 95 % CI {_f(r.get('ci_low', np.nan))} to {_f(r.get('ci_high', np.nan))}, "
            f"permutation p = {_f(p, 2)}, d = {_f(r.get('d', np.nan), 2)})"
        )
    return "Gap difference between base models after training: " + "; ".join(parts) + "."


def describe_paper(pvo: pd.DataFrame | None) -> str:
    """The paper's runs: which category each base family favoured at its last checkpoint."""
    if pvo is None or pvo.empty:
        return ""
    paper = pvo[pvo["study"] == "paper"]
    parts = []
    for base, g in paper.groupby("base", sort=True):
        fav = g["favoured_at_end"].value_counts()
        parts.append(f"{base}: {', '.join(f'{k} in {v} of {len(g)}' for k, v in fav.items())} training sets")
    return "The paper's released runs, last checkpoint, positive prompt: " + "; ".join(parts) + "."


def describe_time(seconds: float, cells: pd.DataFrame) -> str:
    """The chapter's wall-clock time and how many cells were trained in this run."""
    trained = int((cells["status"] == "trained now").sum())
    return f"training chapter: {seconds:.0f} s in total; {len(cells)} cells, {trained} trained in this run"
