"""The training chapter's answers for the findings page (``findings.json``): whether reward models trained on
the same preference pairs from two different base models end up with different Agency-versus-Communion gaps,
with the trained reward model (one per seed) as the unit, at the largest quantity of training pairs of the
grid, where the random-head null of the same cells lies (at the same unit), what the reward models are (the
method caveat) and everything else that differs between the bases (from the model registry); and, with a depth
arm, whether adapting the top blocks changes the difference between bases."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from ...core.display import interval, number, p_clause
from ...core.findings import Finding


def _ci(low: float, high: float, digits: int = 1) -> str:
    return f"95% CI {interval(low, high, digits)}" if pd.notna(low) and pd.notna(high) else ""


def _null_range(final: pd.DataFrame, data: str, method: str, quantity: int, framing: str) -> str:
    """Each base's random-head 95% range of the mean gap over as many random heads as seeds, in the same
    cells, and the share of random means at least as extreme as the trained mean (``''`` without a null)."""
    if final.empty or "null_low" not in final.columns:
        return ""
    sel = final[
        (final["data"] == data)
        & (final["method"] == method)
        & (final["quantity"] == quantity)
        & (final["framing"] == framing)
    ]
    parts = [
        f"{r.base_model} {interval(r.null_low, r.null_high, 1)} (share at least as extreme "
        f"{number(r.null_share_beyond, 2)})"
        for r in sel.itertuples(index=False)
        if pd.notna(r.null_low)
    ]
    unit = int(sel["null_unit"].max()) if parts else 0
    return f"random-head 95% range of means of {unit} random heads: " + "; ".join(parts) if parts else ""


def differences(bases: pd.DataFrame) -> list[str]:
    """Everything that differs between the base models besides the training, from the model registry and
    the model files (``bases``: :func:`rmvalues.stages.training.run.base_table`): size, tokenizer, pretraining
    data, pretrained vs instruction-tuned, prompt format and the quantization of the weight file."""
    if bases is None or len(bases) < 2:
        return []
    rows = bases.to_dict("records")

    def vs(key: str, fmt: str = "{}") -> str:
        return " vs ".join(fmt.format(r[key]) for r in rows)

    formats = [
        f"{r['base_model']}: "
        + (
            "its own chat template"
            if r["chat_template"] == "tokenizer"
            else f"a chat template supplied by the project ({r['chat_template']})"
        )
        + (", on a pretrained model never tuned on a chat format" if r["type"] == "pretrained" else "")
        for r in rows
    ]
    return [
        f"size ({vs('size')})",
        f"tokenizer ({vs('tokenizer_vocab', '{:,} tokens')})",
        f"pretraining data (different corpora; model cards {vs('hub_id')})",
        f"training type ({vs('type')})",
        "prompt format (" + "; ".join(formats) + ")",
        f"quantization of the GGUF weight file ({vs('quantization')})",
        f"architecture ({vs('layers', '{} layers')}, hidden size {vs('hidden_size')})",
    ]


def method_caveat(method: str, depth: int = 0) -> str:
    """What the compared reward models are: linear heads on a frozen base, the top ``depth`` blocks adapted
    with the head, or fine-tuned models (LoRA / full)."""
    if method == "head" and depth == 0:
        return (
            "the reward models are linear heads on a frozen base (probes of its last-token features), not "
            "fine-tuned models"
        )
    if method == "head":
        return (
            f"the reward models adapt only the top {depth} transformer block{'s' if depth > 1 else ''} of the "
            "base with a linear head; everything below is frozen"
        )
    return f"the reward models are fine-tuned with {method}"


def _join(parts: Sequence[str]) -> str:
    return ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else "".join(parts)


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
    null = _null_range(res.final, data, row["method"], quantity, framing)
    diffs = differences(res.bases)
    answer = (
        f"Trained on the same {quantity} {data} preference pairs, reward models on {a} have a mean gap "
        f"(median rank of Agency words minus that of Communion words; positive: Communion words get more "
        f"reward) of {number(row['gap_a'], 1)} ranks on {framing} prompts, those on {b} "
        f"{number(row['gap_b'], 1)}: a difference of {number(row['difference'], 1)} ranks"
        + (f" ({ci}; {test})" if ci else "")
        + f", with one trained reward model per seed as the unit ({int(row['n_a'])} and {int(row['n_b'])}). "
        + (f"The bases differ in more than pretraining: {_join(diffs)}. " if diffs else "")
        + "Method: "
        + method_caveat(res.spec.settings.method)
        + "."
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
    comp = comp[comp["method"] == res.spec.settings.method]  # the probes (k = 0); the depth arm below
    if comp.empty:
        return []
    data = sorted(comp["data"].unique())[0]
    sel = comp[comp["data"] == data]
    sel = sel[sel["quantity"] == sel["quantity"].max()]
    first = sel[["base_a", "base_b"]].drop_duplicates().iloc[0]
    sel = sel[(sel["base_a"] == first["base_a"]) & (sel["base_b"] == first["base_b"])]
    out = [_comparison_finding(res, r) for _, r in sel.sort_values("framing").iterrows()]
    return out + _depth_findings(res)


def _depth_findings(res: Any) -> list[Finding]:
    """One finding per framing and depth at the arm's largest quantity: does the between-base difference
    shrink, stay or grow when the top k blocks adapt (size change with its bootstrap interval)?"""
    dg = res.depth_gaps
    if dg is None or dg.empty:
        return []
    sel = dg[dg["quantity"] == dg["quantity"].max()]
    out = []
    for r in sel.sort_values(["framing", "depth"]).itertuples(index=False):
        ci = _ci(r.ci_low, r.ci_high)
        out.append(
            Finding(
                key=f"depth_{r.data}_{r.quantity}_{r.framing}_k{r.depth}",
                question=(
                    f"When the top {r.depth} block(s) of the base adapt with the head, does the difference "
                    f"between bases in Agency versus Communion shrink, stay or grow ({r.framing} prompts)?"
                ),
                answer=(
                    f"On the same {r.quantity} {r.data} pairs and {r.n_seeds} seeds, the difference between "
                    f"{r.base_a} and {r.base_b} in the Agency − Communion gap is {number(r.difference_0, 1)} "
                    f"ranks with nothing of the base adapted and {number(r.difference_k, 1)} with the top "
                    f"{r.depth} block(s) adapted: its size changes by {number(r.size_change, 1)} ranks ({ci}), "
                    f"verdict: {r.verdict}. Method: {method_caveat(res.spec.settings.method, r.depth)}; the "
                    "paper's LoRA adapts every block."
                ),
                estimate=f"{number(r.size_change, 1)} ranks",
                interval=ci,
                baseline="no change in size (0)",
                unit=f"{r.n_seeds} seeds per base, the same pairs at both depths (bootstrap over seeds)",
                would_change="More seeds; deeper adaptation (LoRA through the network); other data.",
                value=float(r.size_change),
                low=float(r.ci_low),
                high=float(r.ci_high),
                reference=0.0,
                scale="change of |between-base difference| (ranks)",
                label=f"{r.base_a} − {r.base_b}, top {r.depth} vs probe ({r.framing})",
            )
        )
    return out
