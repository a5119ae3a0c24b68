"""The scoring chapter's answers for the findings page (``findings.json``): how prompt framing moves the
Big Two categories' ranks in each live reward model, over the prompts (the run scores one RM per base model,
so it says nothing about base families by itself). Framing rests on the prompts' adjectives (3 positive, 3
negative), so each contrast averages the prompts of an adjective first and compares the adjective means
(:func:`rmvalues.stats.framing_contrast`); the paper's prompt-level interval is given beside it."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ...core.findings import Finding
from ...core.formats import ci, interval, number, p_clause, pvalue
from ...stats import (
    FramingContrast,
    framing_contrast,
    framing_contrast_prompts,
    framing_contrasts,
    paired_gap_difference,
    prompt_gaps,
)

#: The Big Two corpora, in the order the findings prefer them; the category whose rank is followed.
BIG2 = ("big2_nouns", "big2_expanded", "big2_dictionary")
CATEGORY, VERSUS = "Communion", "Agency"
#: Beyond this many RMs, per-RM findings would crowd the page: the statistics chapter compares them.
MAX_RMS = 3


def _ci(c: Any) -> str:
    return ci(c.ci_low, c.ci_high, 1) if pd.notna(c.ci_low) else ""


def _direction(x: float) -> str:
    return "gain" if x >= 0 else "lose"


def verdict(c: FramingContrast) -> str:
    """What the clustered interval supports: ``inconclusive`` when it includes zero or there is none (never
    "no difference")."""
    if pd.isna(c.ci_low) or pd.isna(c.ci_high):
        return f"inconclusive, no interval (a framing has fewer than two {c.unit}s)"
    return "inconclusive, the interval includes zero" if c.includes_zero else "the interval excludes zero"


def _over(c: FramingContrast) -> str:
    """The units of the interval, e.g. ``over the means of 3 positive and 3 negative adjectives, 6 prompts``."""
    return f"over the means of {c.n_positive} positive and {c.n_negative} negative {c.unit}s, {c.n_prompts} prompts"


def _exact(c: FramingContrast) -> str:
    """The exact split test over the clusters as a sentence, with its smallest attainable p (``''`` without
    one)."""
    if pd.isna(c.p_exact):
        return ""
    return (
        f" The exact test over the {c.n_splits} splits of the {c.unit}s gives {p_clause(c.p_exact)} (the "
        f"smallest it can give: {pvalue(c.p_min)})."
    )


def _paper(values: pd.DataFrame) -> str:
    """The paper's interval, every prompt independent (``''`` without one)."""
    flat = framing_contrast_prompts(values)
    if pd.isna(flat.ci_low):
        return ""
    return f" Counting every prompt as independent, as the paper did, the interval would be {interval(flat.ci_low, flat.ci_high, 1)}."


def _baseline(c: FramingContrast) -> str:
    bits = [f"Welch {p_clause(c.p)} over {c.unit} means" if pd.notna(c.p) else ""]
    bits.append(
        f"exact {p_clause(c.p_exact)} (smallest possible {pvalue(c.p_min)})" if pd.notna(c.p_exact) else ""
    )
    return "; ".join(b for b in bits if b)


def _rm_finding(corpus: str, rm: str, family: str, gaps: pd.DataFrame) -> Finding:
    own = gaps[gaps["rm"] == rm]
    c = framing_contrast(own)
    return Finding(
        key=f"{corpus}_{_slug(rm)}",
        question=f"Does prompt framing move {CATEGORY} against {VERSUS} words in {rm}?",
        answer=(
            f"In {rm} ({family} base), on {corpus}, {CATEGORY} words {_direction(c.estimate)} "
            f"{number(abs(c.estimate), 1)} ranks relative to {VERSUS} words from negative to positive prompts "
            f"(D = {number(c.estimate, 1)}"
            + (f", {_ci(c)}" if _ci(c) else "")
            + f", {_over(c)}): {verdict(c)}."
            + _exact(c)
            + _paper(own)
        ),
        estimate=f"D = {number(c.estimate, 1)} ranks",
        interval=_ci(c),
        baseline=_baseline(c),
        unit=(
            f"{c.n_units} {c.unit}s ({c.n_positive} positive, {c.n_negative} negative) over {c.n_prompts} "
            "prompts, one RM"
        ),
        would_change=(
            "Other prompts, above all more adjectives per framing (framing rests on them); it is one reward "
            "model, so it says nothing about its base family."
        ),
        value=c.estimate,
        low=c.ci_low,
        high=c.ci_high,
        reference=0.0,
        scale=f"D({CATEGORY}), ranks",
        label=f"{rm}: D({CATEGORY})",
    )


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name).strip("_")


def _pair_finding(corpus: str, rms: pd.DataFrame, gaps: pd.DataFrame) -> Finding:
    (rm_a, fam_a), (rm_b, fam_b) = rms.itertuples(index=False)
    diff = paired_gap_difference(gaps, rm_a, rm_b)
    c = framing_contrast(diff)
    return Finding(
        key=f"{corpus}_pair",
        question=f"Do the two live RMs ({fam_a} and {fam_b} base) differ in that framing effect?",
        answer=(
            f"{rm_b} minus {rm_a}: the difference of their D is {number(c.estimate, 1)} ranks ("
            + (f"{_ci(c)}, " if _ci(c) else "")
            + f"prompts paired, then {_over(c)}): {verdict(c)}."
            + _exact(c)
            + _paper(diff)
            + " With one reward model per base model, base model, size, tokenizer and training run differ at "
            "once; the difference is between these two models."
        ),
        estimate=f"{number(c.estimate, 1)} ranks",
        interval=_ci(c),
        baseline=_baseline(c),
        unit=f"{c.n_units} {c.unit}s over {c.n_prompts} prompts, two RMs (one per base model)",
        would_change=(
            "More RMs per base model (the training chapter's seeds and the statistics chapter's published RMs); "
            "base model is confounded with size and tokenizer here."
        ),
        value=c.estimate,
        low=c.ci_low,
        high=c.ci_high,
        reference=0.0,
        scale=f"difference of D({CATEGORY}), ranks",
        label=f"{fam_b} − {fam_a} live RM, D({CATEGORY})",
    )


def contrast_table(medians: pd.DataFrame) -> pd.DataFrame:
    """Per corpus and category ``k``: each live RM's framing contrast ``D(k)`` and, for two RMs of different
    families, their difference (paired by prompt), clustered by adjective with the paper's prompt-level
    interval beside it (:func:`rmvalues.stats.framing_contrasts`; ``corpus, category`` first)."""
    if medians.empty:
        return pd.DataFrame()
    parts = []
    for corpus, med in medians.groupby("corpus", sort=True, observed=True):
        rms = med[["rm", "family"]].drop_duplicates().sort_values("rm")
        two = len(rms) == 2 and rms["family"].nunique() == 2
        pairs = [(str(rms["rm"].iloc[0]), str(rms["rm"].iloc[1]))] if two else []
        for category in sorted(med["category"].unique()):
            gaps = prompt_gaps(med, category)
            if gaps.empty:
                continue
            table = framing_contrasts(gaps, pairs)
            table.insert(0, "category", category)
            table.insert(0, "corpus", corpus)
            parts.append(table)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def findings(results: Any) -> list[Finding]:
    """Per live RM (up to :data:`MAX_RMS`) its framing contrast on the first Big Two corpus scored, and for
    two RMs of different families their difference (paired by prompt)."""
    medians = results.medians
    if medians.empty:
        return []
    corpus = next((c for c in BIG2 if c in set(medians["corpus"])), None)
    if corpus is None:
        return []
    med = medians[medians["corpus"] == corpus]
    gaps = prompt_gaps(med, CATEGORY)
    rms = med[["rm", "family"]].drop_duplicates().sort_values("rm").reset_index(drop=True)
    if gaps.empty or len(rms) > MAX_RMS:
        return []
    out = [_rm_finding(corpus, r.rm, r.family, gaps) for r in rms.itertuples()]
    if len(rms) == 2 and rms["family"].nunique() == 2:
        out.append(_pair_finding(corpus, rms, gaps))
    return out
