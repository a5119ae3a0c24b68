"""The training chapter's reader tables: intervals written as one ``[low, high]`` column each, so that a table
fits the book page's width (:mod:`rmvalues.core.display` writes the numbers)."""

from __future__ import annotations

import pandas as pd

from ...core.display import interval, number, pvalue

__all__ = [
    "accuracy_table",
    "comparison_table",
    "depth_accuracy_table",
    "depth_gap_table",
    "gap_table",
    "reference_table",
]


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
            "over seeds and pairs": _intervals(a, "joint_ci_low", "joint_ci_high", 3),
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
        out["random means"] = _intervals(f, "null_low", "null_high", 1)
        out["heads per mean"] = [str(int(x)) if pd.notna(x) else "n/a" for x in f["null_unit"]]
        out["random means as far"] = [number(x, 2) for x in f["null_share_beyond"]]
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


def reference_table(accuracy: pd.DataFrame) -> pd.DataFrame:
    """Each probe beside its L2 logistic reference per base model and quantity: mean held-out accuracy of
    both, the largest difference over seeds, whether every seed is within the tolerance, and the largest
    final gradient norm of the penalised objective."""
    a = accuracy[accuracy["reference_accuracy"].notna()]
    return pd.DataFrame(
        {
            "base model": a["base_model"],
            "pairs": a["quantity"],
            "probe": [number(x, 3) for x in a["accuracy"]],
            "reference": [number(x, 3) for x in a["reference_accuracy"]],
            "largest difference": [number(x, 3) for x in a["reference_difference_max"]],
            "within 1 point": ["yes" if x else "no" for x in a["within_reference"]],
            "largest gradient norm": [f"{x:.1e}" for x in a["grad_norm_max"]],
        }
    ).reset_index(drop=True)


def depth_gap_table(dg: pd.DataFrame) -> pd.DataFrame:
    """The between-base difference of the gap at k = 0 and at depth k on the same seeds, the change of its
    size with its bootstrap interval, and the verdict."""
    return pd.DataFrame(
        {
            "pairs": dg["quantity"],
            "framing": dg["framing"],
            "k": dg["depth"],
            "seeds": dg["n_seeds"],
            "difference, k = 0": [number(x, 1) for x in dg["difference_0"]],
            "difference, k": [number(x, 1) for x in dg["difference_k"]],
            "size change": [number(x, 1) for x in dg["size_change"]],
            "95% CI": _intervals(dg, "ci_low", "ci_high", 1),
            "verdict": dg["verdict"],
        }
    ).reset_index(drop=True)


def depth_accuracy_table(da: pd.DataFrame) -> pd.DataFrame:
    """Held-out accuracy at k = 0 and depth k on the same seeds, its change with the joint interval, verdict."""
    return pd.DataFrame(
        {
            "base model": da["base_model"],
            "pairs": da["quantity"],
            "k": da["depth"],
            "seeds": da["n_seeds"],
            "accuracy, k = 0": [number(x, 3) for x in da["accuracy_0"]],
            "accuracy, k": [number(x, 3) for x in da["accuracy_k"]],
            "change": [number(x, 3) for x in da["change"]],
            "95% CI": _intervals(da, "ci_low", "ci_high", 3),
            "verdict": da["verdict"],
        }
    ).reset_index(drop=True)
