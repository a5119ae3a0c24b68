"""The implicit-rewards chapter's answers for the findings page (``findings.json``): whether the two base
models' log-probabilities already differ in how prompt framing moves the Big Two categories (the primary,
single-token analysis; framing rests on the prompts' adjectives, so the interval compares the adjective means,
3 positive against 3 negative over the 54 prompts), and whether the implicit reward recovers words planted by a brief
fine-tune beyond a sham control."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ...core.display import interval, number, p_clause, pvalue
from ...core.findings import Finding
from ...stats import (
    FramingContrast,
    framing_contrast,
    framing_contrast_prompts,
    paired_gap_difference,
    prompt_gaps,
)
from .graded import winner
from .keys import base_differences

BIG2 = ("big2_nouns", "big2_expanded", "big2_dictionary")
CATEGORY, VERSUS = "Communion", "Agency"
#: The planted-word check the page reports: word-level mixture-weighted log ratio on the tuned model itself.
PLANTED = {"level": "word", "metric": "word_mwlr"}


def _ci(low: float, high: float, digits: int = 1) -> str:
    return f"95% CI {interval(low, high, digits)}" if pd.notna(low) and pd.notna(high) else ""


def verdict(c: FramingContrast) -> str:
    """The verdict a clustered framing contrast supports: ``inconclusive`` when its interval includes zero
    (or there is none), never "no difference"."""
    if pd.isna(c.ci_low) or pd.isna(c.ci_high):
        return f"inconclusive, no interval (a framing has fewer than two {c.unit}s)"
    if c.includes_zero:
        return "inconclusive, the interval includes zero"
    return "the interval excludes zero"


def clusters_text(c: FramingContrast) -> str:
    """What the contrast compares, e.g. ``the means of 3 positive and 3 negative adjectives, 54 prompts``."""
    return (
        f"the means of {c.n_positive} positive and {c.n_negative} negative {c.unit}s, {c.n_prompts} prompts"
    )


def exact_text(c: FramingContrast) -> str:
    """The exact split test over the clusters, with its smallest attainable p (``''`` without one)."""
    if pd.isna(c.p_exact):
        return ""
    return (
        f"exact test over the {c.n_splits} splits of the {c.unit}s {p_clause(c.p_exact)}, the smallest it can "
        f"give {pvalue(c.p_min)}"
    )


def _differences_text(models: pd.DataFrame, p: str, q: str) -> str:
    """Everything the two models differ in besides the family, from the models table (registry facts)."""
    if models.empty or not {p, q} <= set(models["model"]):
        return "size, tokenizer, pretraining data, training type, prompt format and quantization"
    k = base_differences(models, (p, q))
    return (
        f"size ({k['base_size']}), tokenizer (vocabularies of {k['base_vocabulary']} tokens), pretraining data "
        f"(each developer's own; releases {k['base_release']}), pretrained or instruction-tuned "
        f"({k['base_type']}), prompt format ({k['base_format']}) and GGUF quantization ({k['base_quantization']})"
    )


def _pair_finding(results: Any) -> Finding | None:
    """The first pair's difference of D(Communion), paired by prompt and clustered by adjective, with each
    model's own D (clustered too)."""
    med = results.single_medians
    if med.empty:
        return None
    corpus = next((c for c in BIG2 if c in set(med["corpus"])), None)
    if corpus is None:
        return None
    pair = med["pair"].iloc[0]
    part = med[(med["corpus"] == corpus) & (med["pair"] == pair)]
    gaps = prompt_gaps(part, CATEGORY)
    models = part[["rm", "family"]].drop_duplicates().sort_values("rm")
    if gaps.empty or len(models) != 2:
        return None
    (p, fam_p), (q, fam_q) = models.itertuples(index=False)
    own = {m: framing_contrast(gaps[gaps["rm"] == m]) for m in (p, q)}
    diff = paired_gap_difference(gaps, p, q)
    c, flat = framing_contrast(diff), framing_contrast_prompts(diff)
    n_words = int(part.groupby("category", observed=True)["n_words"].max().sum())
    n_pairs = med["pair"].nunique()
    each = "; ".join(
        f"{m} ({f} base) {number(own[m].estimate, 1)}"
        + (f" ({_ci(own[m].ci_low, own[m].ci_high)})" if _ci(own[m].ci_low, own[m].ci_high) else "")
        for m, f in ((p, fam_p), (q, fam_q))
    )
    answer = (
        f"Ranking the {n_words} {corpus} words that are one token for both models by their log-probability as "
        f"the answer, how much {CATEGORY} words gain in rank relative to {VERSUS} words from negative to positive "
        f"prompts (D, over {clusters_text(c)}) is {each}. Their difference, {q} minus {p}, is "
        f"{number(c.estimate, 1)} ranks"
        + (
            f" ({_ci(c.ci_low, c.ci_high)}, prompts paired, then averaged per {c.unit})"
            if _ci(c.ci_low, c.ci_high)
            else ""
        )
        + f": {verdict(c)}."
        + (
            f" The exact test over the {c.n_splits} splits of the {c.unit}s gives {p_clause(c.p_exact)} (the "
            f"smallest it can give: {pvalue(c.p_min)})."
            if pd.notna(c.p_exact)
            else ""
        )
        + (
            f" Counting every prompt as independent, as the paper did, the interval would be "
            f"{interval(flat.ci_low, flat.ci_high, 1)}."
            if pd.notna(flat.ci_low)
            else ""
        )
        + " One model per base family: the difference is between these two base models, which also differ in "
        + _differences_text(results.models, p, q)
        + "."
    )
    if n_pairs > 1:
        answer += f" The run compares {n_pairs} model pairs; the chapter reports every one."
    return Finding(
        key=f"{corpus}_pair",
        question=f"Do the base models' own log-probabilities differ in how framing moves {CATEGORY} against {VERSUS} words?",
        answer=answer,
        estimate=f"{number(c.estimate, 1)} ranks",
        interval=_ci(c.ci_low, c.ci_high),
        baseline="; ".join(
            x
            for x in (f"Welch {p_clause(c.p)} over {c.unit} means" if pd.notna(c.p) else "", exact_text(c))
            if x
        ),
        unit=(
            f"{c.n_units} {c.unit}s ({c.n_positive} positive, {c.n_negative} negative) over {c.n_prompts} "
            f"prompts, one pair of base models, {n_words} single-token words"
        ),
        would_change=(
            "More base models per family; more adjectives per framing (framing rests on the prompts' "
            "adjectives); words that are several tokens (the all-words analysis pools their "
            "log-probabilities and depends on the token count)."
        ),
        value=c.estimate,
        low=c.ci_low,
        high=c.ci_high,
        reference=0.0,
        scale=f"difference of D({CATEGORY}), ranks",
        label=f"{q} − {p}, D({CATEGORY}) from log-probs",
    )


def _planted_finding(results: Any) -> Finding | None:
    """How well the implicit reward separates planted words from the other candidates, beyond a sham plant."""
    v = results.validation
    if v.empty:
        return None
    rows = v[(v["level"] == PLANTED["level"]) & (v["metric"] == PLANTED["metric"])]
    tuned = results.params.planted_model
    own = rows[rows["reference"] == tuned]  # against the untuned model itself, not the cross-family model
    rows = own if not own.empty else rows
    if rows.empty:
        return None
    r = rows.iloc[0]
    ok = "passes" if bool(r["passes"]) else "does not pass"
    return Finding(
        key="planted",
        question="Does the implicit reward find words that a brief fine-tune made more likely?",
        answer=(
            f"After fine-tuning {tuned} to favour {int(r['n_planted'])} planted words, the word-level "
            f"implicit reward (mixture-weighted log ratio against {r['reference']}) ranks them above the other "
            f"{int(r['n_candidates']) - int(r['n_planted'])} candidates with AUC {number(r['auc_planted'], 3)}, "
            f"against {number(r['auc_sham'], 3)} for a sham fine-tune on other words (difference "
            f"{number(r['diff_sham'], 3)}, {_ci(r['ci_low_sham'], r['ci_high_sham'], 3)} from a bootstrap "
            f"that resamples the {int(r['n_prompts'])} evaluation prompts and the planted words together); the "
            f"check {ok} its criterion."
        ),
        estimate=f"AUC {number(r['auc_planted'], 3)} (sham {number(r['auc_sham'], 3)})",
        interval=f"difference to sham: {_ci(r['ci_low_sham'], r['ci_high_sham'], 3)}",
        baseline=f"sham fine-tune AUC {number(r['auc_sham'], 3)}; untuned {number(r['auc_untuned'], 3)}",
        unit=f"{int(r['n_planted'])} planted words among {int(r['n_candidates'])} candidates, {int(r['n_prompts'])} prompts",
        would_change=(
            "A longer or weaker fine-tune, other planted words; it validates the metric on a known plant, not the "
            "value biases themselves."
        ),
        value=float(r["diff_sham"]),
        low=float(r["ci_low_sham"]),
        high=float(r["ci_high_sham"]),
        reference=0.0,
        scale="AUC difference, planted vs sham",
        label="planted words: AUC above sham",
    )


def _top_two(differences: pd.DataFrame, level: str, strength: float) -> pd.Series | None:
    """At one level and strength, the comparison of the two metrics with the largest excess AUCs (``None``
    without two metrics), oriented so that ``a`` is the larger."""
    d = differences[(differences["level"] == level) & (differences["strength"] == strength)]
    if d.empty:
        return None
    excess = {
        **dict(zip(d["metric_a"], d["excess_a"], strict=True)),
        **dict(zip(d["metric_b"], d["excess_b"], strict=True)),
    }
    a, b = sorted(excess, key=lambda m: -excess[m])[:2]
    hit = d[(d["metric_a"] == a) & (d["metric_b"] == b)]
    if len(hit):
        return hit.iloc[0]
    r = d[(d["metric_a"] == b) & (d["metric_b"] == a)].iloc[0].copy()
    r["metric_a"], r["metric_b"], r["excess_a"], r["excess_b"] = a, b, r["excess_b"], r["excess_a"]
    r["difference"], r["ci_low"], r["ci_high"] = -r["difference"], -r["ci_high"], -r["ci_low"]
    return r


def _graded_finding(results: Any) -> Finding | None:
    """Which word-level metric detects the weaker plant: at the strength of the verdict, the two leading
    metrics' AUCs above the sham and their paired difference."""
    g, d = results.graded, results.graded_differences
    if g.empty or d.empty or "word" not in set(d["level"]):
        return None
    v = winner(d, "word")
    strengths = sorted(g["strength"].unique())
    at = v.strength if v.conclusive else v.first_separating
    at = at if pd.notna(at) else strengths[len(strengths) // 2]
    r = _top_two(d, "word", at)
    if r is None:
        return None
    rows = g[(g["level"] == "word") & (g["strength"] == at)]
    n_prompts, n_planted = int(rows["n_prompts"].iloc[0]), int(rows["n_planted"].iloc[0])
    verdict_text = (
        f"{v.metric} separates weaker plants from the sham than every other word-level metric"
        if v.conclusive
        else "inconclusive: no strength separates one word-level metric from all the others"
    )
    return Finding(
        key="planted_graded",
        question="Which implicit-reward metric detects the weaker planted preference?",
        answer=(
            f"Planting the same words at {len(strengths)} strengths (learning rates {strengths[0]:g} to "
            f"{strengths[-1]:g}, with a sham plant of each strength and the untuned model as controls): "
            f"{verdict_text}. At learning rate {at:g}, {r['metric_a']} ranks the planted words above the other "
            f"candidates with an AUC {number(r['excess_a'], 3)} above the sham's, {r['metric_b']} "
            f"{number(r['excess_b'], 3)}; the difference is {number(r['difference'], 3)} "
            f"({_ci(r['ci_low'], r['ci_high'], 3)}, a bootstrap over the {n_prompts} evaluation prompts and the "
            f"{n_planted} planted words, the same draws for both metrics)."
        ),
        estimate=f"AUC above sham: {r['metric_a']} {number(r['excess_a'], 3)}, {r['metric_b']} {number(r['excess_b'], 3)}",
        interval=f"difference: {_ci(r['ci_low'], r['ci_high'], 3)}",
        baseline="the sham plant of the same strength; the untuned model",
        unit=f"{n_planted} planted words, {n_prompts} evaluation prompts, one tuned model",
        would_change=(
            "Another optimizer, more steps or other planted words move every curve; the ranking of the metrics "
            "on a 135M model need not transfer to the paper's models."
        ),
        value=float(r["difference"]),
        low=float(r["ci_low"]),
        high=float(r["ci_high"]),
        reference=0.0,
        scale="difference of AUCs above the sham",
        label=f"{r['metric_a']} − {r['metric_b']} at lr {at:g}",
    )


def findings(results: Any) -> list[Finding]:
    """The chapter's findings: the first model pair's framing contrast on single-token Big Two words, the
    planted-word validation of the implicit reward and its graded form (each when the run has it)."""
    found = (_pair_finding(results), _planted_finding(results), _graded_finding(results))
    return [f for f in found if f is not None]
