"""The scoring chapter's answers for the findings page (``findings.json``): how prompt framing moves the
Big Two categories' ranks in each live reward model, with prompts as the unit (the run scores one RM per base
model, so it says nothing about base families by itself)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ...core.display import interval, number, pvalue
from ...core.findings import Finding
from ...stats import framing_contrast, paired_gap_difference, prompt_gaps

#: The Big Two corpora, in the order the findings prefer them; the category whose rank is followed.
BIG2 = ("big2_nouns", "big2_expanded", "big2_dictionary")
CATEGORY, VERSUS = "Communion", "Agency"
#: Beyond this many RMs, per-RM findings would crowd the page: the statistics chapter compares them.
MAX_RMS = 3


def _ci(c: Any) -> str:
    return f"95% CI {interval(c.ci_low, c.ci_high, 1)}" if pd.notna(c.ci_low) else ""


def _direction(x: float) -> str:
    return "gain" if x >= 0 else "lose"


def _rm_finding(corpus: str, rm: str, family: str, gaps: pd.DataFrame) -> Finding:
    c = framing_contrast(gaps[gaps["rm"] == rm])
    n = c.n_positive + c.n_negative
    return Finding(
        key=f"{corpus}_{_slug(rm)}",
        question=f"Does prompt framing move {CATEGORY} against {VERSUS} words in {rm}?",
        answer=(
            f"In {rm} ({family} base), {CATEGORY} words {_direction(c.estimate)} {number(abs(c.estimate), 1)} ranks "
            f"relative to {VERSUS} words from negative to positive prompts (D = {number(c.estimate, 1)}"
            + (f", {_ci(c)}" if _ci(c) else ", no interval: a framing has fewer than two prompts")
            + f", over {n} prompts of {corpus})."
        ),
        estimate=f"D = {number(c.estimate, 1)} ranks",
        interval=_ci(c),
        baseline=f"Welch p {pvalue(c.p)}" if pd.notna(c.p) else "",
        unit=f"{n} prompts ({c.n_positive} positive, {c.n_negative} negative), one RM",
        would_change="Other prompts; it is one reward model, so it says nothing about its base family.",
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
    c = framing_contrast(paired_gap_difference(gaps, rm_a, rm_b))
    return Finding(
        key=f"{corpus}_pair",
        question=f"Do the two live RMs ({fam_a} and {fam_b} base) differ in that framing effect?",
        answer=(
            f"{rm_b} minus {rm_a}: the difference of their D is {number(c.estimate, 1)} ranks"
            + (
                f" ({_ci(c)}, prompts paired)"
                if _ci(c)
                else " (no interval: a framing has fewer than two prompts)"
            )
            + ". With one reward model per base model, base model, size, tokenizer and training run differ at "
            "once; the difference is between these two models."
        ),
        estimate=f"{number(c.estimate, 1)} ranks",
        interval=_ci(c),
        baseline=f"Welch p {pvalue(c.p)}" if pd.notna(c.p) else "",
        unit=f"{c.n_positive + c.n_negative} prompts, two RMs (one per base model)",
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
