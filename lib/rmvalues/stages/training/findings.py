"""The training chapter's answers for the findings page (``findings.json``): whether reward models trained on
the same preference pairs from two different base models end up with different Agency-versus-Communion gaps,
with the trained reward model (one per seed) as the unit, at the largest quantity of training pairs of the
grid, and where the random-head null of the same cells lies."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ...core.display import interval, number, p_clause
from ...core.findings import Finding


def _ci(low: float, high: float, digits: int = 1) -> str:
    return f"95% CI {interval(low, high, digits)}" if pd.notna(low) and pd.notna(high) else ""


def _null_range(final: pd.DataFrame, data: str, quantity: int, framing: str) -> str:
    """Each base's random-head 95% range of the gap in the same cells (``''`` without a null)."""
    if final.empty or "null_low" not in final.columns:
        return ""
    sel = final[(final["data"] == data) & (final["quantity"] == quantity) & (final["framing"] == framing)]
    parts = [
        f"{r.base_model} {interval(r.null_low, r.null_high, 1)}"
        for r in sel.itertuples(index=False)
        if pd.notna(r.null_low)
    ]
    return "random-head 95% range: " + "; ".join(parts) if parts else ""


def _comparison_finding(res: Any, row: pd.Series) -> Finding:
    a, b, framing = row["base_a"], row["base_b"], row["framing"]
    quantity, data = int(row["quantity"]), row["data"]
    ci = _ci(row.get("ci_low"), row.get("ci_high"))
    p, p_min = row.get("p_perm"), row.get("p_min")
    test = (
        f"permutation Welch {p_clause(p)}, where {int(row['n_a'])} against {int(row['n_b'])} seeds allow "
        f"{p_clause(p_min)} at the smallest"
        if pd.notna(p)
        else ""
    )
    null = _null_range(res.final, data, quantity, framing)
    answer = (
        f"Trained on the same {quantity} {data} preference pairs, reward models on {a} have a mean gap "
        f"(median rank of Agency words minus that of Communion words; positive: Communion words get more "
        f"reward) of {number(row['gap_a'], 1)} ranks on {framing} prompts, those on {b} "
        f"{number(row['gap_b'], 1)}: a difference of {number(row['difference'], 1)} ranks"
        + (f" ({ci}; {test})" if ci else "")
        + f", with one trained reward model per seed as the unit ({int(row['n_a'])} and {int(row['n_b'])}). "
        "The two bases also differ in size, tokenizer and pretraining data"
        + (
            "; the reward models are linear heads on a frozen base (probes of its features), not fine-tuned "
            "models."
            if getattr(getattr(res, "spec", None), "method", "") == "head"
            else "."
        )
    )
    return Finding(
        key=f"bases_{data}_{quantity}_{framing}",
        question=(
            f"Do reward models trained on identical preference data from different base models differ in "
            f"Agency versus Communion ({framing} prompts)?"
        ),
        answer=answer,
        estimate=f"{number(row['difference'], 1)} ranks",
        interval=ci,
        baseline="; ".join(x for x in (test, null) if x),
        unit=f"{int(row['n_a'])} + {int(row['n_b'])} trained reward models (seeds), {quantity} pairs each",
        would_change=(
            "More seeds or base models per family; full fine-tuning instead of a head on a frozen base; other "
            "preference data."
        ),
        value=float(row["difference"]),
        low=float(row["ci_low"]) if pd.notna(row.get("ci_low")) else float("nan"),
        high=float(row["ci_high"]) if pd.notna(row.get("ci_high")) else float("nan"),
        reference=0.0,
        scale="difference of the Agency − Communion gap, ranks",
        label=f"{a} − {b}, trained RMs ({framing})",
    )


def findings(res: Any) -> list[Finding]:
    """One finding per framing: the first two base models compared at the grid's largest quantity of the first
    preference source (none with a single base model or without a gap)."""
    comp = res.comparison
    if comp is None or comp.empty:
        return []
    data = sorted(comp["data"].unique())[0]
    sel = comp[comp["data"] == data]
    sel = sel[sel["quantity"] == sel["quantity"].max()]
    first = sel[["base_a", "base_b"]].drop_duplicates().iloc[0]
    sel = sel[(sel["base_a"] == first["base_a"]) & (sel["base_b"] == first["base_b"])]
    return [_comparison_finding(res, r) for _, r in sel.sort_values("framing").iterrows()]
