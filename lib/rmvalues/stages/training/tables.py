"""The training chapter's reader tables: intervals written as one ``[low, high]`` column each, so that a table
fits the book page's width (:mod:`rmvalues.core.display` writes the numbers)."""

from __future__ import annotations

import pandas as pd

from ...core.display import interval, number, pvalue

__all__ = ["accuracy_table", "comparison_table", "gap_table"]


def _intervals(df: pd.DataFrame, low: str, high: str, digits: int) -> list[str]:
    return [
        interval(lo, hi, digits) if pd.notna(lo) and pd.notna(hi) else "n/a"
        for lo, hi in zip(df[low], df[high], strict=True)
    ]


def accuracy_table(accuracy: pd.DataFrame) -> pd.DataFrame:
    """Held-out accuracy per base model and quantity: mean over seeds, t interval over seeds, bootstrap
    interval over held-out pairs, untrained heads, training accuracy, the learning verdict."""
    a = accuracy
    return pd.DataFrame(
        {
            "base model": a["base_model"],
            "pairs": a["quantity"],
            "seeds": a["n_seeds"],
            "held-out accuracy": [number(x, 3) for x in a["accuracy"]],
            "over seeds": _intervals(a, "seed_ci_low", "seed_ci_high", 3),
            "over pairs": _intervals(a, "pair_ci_low", "pair_ci_high", 3),
            "untrained": [number(x, 3) for x in a["untrained_accuracy"]],
            "training": [number(x, 3) for x in a["train_accuracy"]],
            "learns": ["yes" if x else "no" for x in a["learns"]],
        }
    ).reset_index(drop=True)


def gap_table(final: pd.DataFrame) -> pd.DataFrame:
    """The gap at the last checkpoint per base model, quantity and framing: mean over seeds with its t interval,
    and (with a null) the central 95% of random heads' gaps and the share of them at least as far from 0."""
    f = final
    out = {
        "base model": f["base_model"],
        "pairs": f["quantity"],
        "framing": f["framing"],
        "gap": [number(x, 1) for x in f["gap"]],
        "95% CI": _intervals(f, "ci_low", "ci_high", 1),
    }
    if "null_low" in f.columns:
        out["random heads"] = _intervals(f, "null_low", "null_high", 1)
        out["random heads as far"] = [number(x, 2) for x in f["null_share_beyond"]]
    return pd.DataFrame(out).reset_index(drop=True)


def comparison_table(comparison: pd.DataFrame) -> pd.DataFrame:
    """Base models at matched quantities (last checkpoint): the two mean gaps, their difference with Welch's
    interval, the exact permutation p and Cohen's d. With one pair of base models the ``A vs B`` column is
    left out (name them in the caption)."""
    c = comparison
    out = {
        "pairs": c["quantity"],
        "framing": c["framing"],
        "A vs B": [f"{a} vs {b}" for a, b in zip(c["base_a"], c["base_b"], strict=True)],
        "gap A": [number(x, 1) for x in c["gap_a"]],
        "gap B": [number(x, 1) for x in c["gap_b"]],
        "A minus B": [number(x, 1) for x in c["difference"]],
    }
    if "ci_low" in c.columns:
        out["Welch 95% CI"] = _intervals(c, "ci_low", "ci_high", 1)
        out["permutation p"] = [pvalue(p) for p in c["p_perm"]]
        out["Cohen's d"] = [number(x, 2) for x in c["d"]]
    table = pd.DataFrame(out).reset_index(drop=True)
    one_pair = len(c[["base_a", "base_b"]].drop_duplicates()) == 1
    return table.drop(columns="A vs B") if one_pair else table
