"""Sentences of the implicit-rewards chapter, built from the numbers of the run."""

from __future__ import annotations

import pandas as pd

__all__ = ["describe_anova", "describe_contrasts", "describe_recovery", "summary"]


def describe_recovery(recovery: pd.DataFrame) -> str:
    """One sentence per level naming the metric that recovers the planted words best."""
    if recovery.empty:
        return "The planted-word validation was skipped (planted_model = '')."
    out = []
    for level, grp in recovery.groupby("level", sort=False):
        best = grp.sort_values(["r_precision", "auc"], ascending=False).iloc[0]
        worst = grp.sort_values(["r_precision", "auc"]).iloc[0]
        out.append(
            f"At the {level} level, **{best['metric']}** recovers the planted words best (R-precision "
            f"{best['r_precision']:.2f}, AUC {best['auc']:.3f}, planted words' median rank "
            f"{best['median_rank_planted']:.0f} of {best['n_candidates']}); **{worst['metric']}** does worst "
            f"(R-precision {worst['r_precision']:.2f}, AUC {worst['auc']:.3f})."
        )
    return " ".join(out)


def describe_contrasts(contrasts: pd.DataFrame) -> str:
    """Where word a beats word b (positive mean MWLR difference), per pair, over the variants."""
    if contrasts.empty:
        return "No model pair: no contrast."
    df = contrasts[contrasts["framing"] == "all"]
    out = []
    for pair, grp in df.groupby("pair", sort=False):
        wins = int((grp["difference"] > 0).sum())
        a, b = grp["text_a"].iloc[0].strip().lower(), grp["text_b"].iloc[0].strip().lower()
        out.append(f"{pair}: *{a}* gets the higher MWLR than *{b}* in {wins} of {len(grp)} variants")
    return "; ".join(out) + "."


def describe_anova(anova: pd.DataFrame) -> str:
    """The model terms of the ANOVA in words."""
    if anova.empty:
        return "The ANOVA needs at least two models."
    out = []
    for corpus, grp in anova.groupby("corpus", sort=False):
        row = grp[grp["term"] == "C(category):C(framing):C(model)"]
        row2 = grp[grp["term"] == "C(category):C(model)"]
        bits = []
        for name, r in (("category x model", row2), ("category x framing x model", row)):
            if len(r):
                bits.append(f"{name} F = {r['F'].iloc[0]:.2f}, p = {r['p'].iloc[0]:.3g}")
        out.append(f"{corpus}: " + "; ".join(bits))
    return ". ".join(out) + "."


def summary(anova: pd.DataFrame, contrasts: pd.DataFrame, recovery: pd.DataFrame) -> str:
    """Markdown bullets of the chapter's findings: the ANOVA's model terms, the word-pair contrast and the
    metric that recovers the planted words (:func:`describe_anova`, :func:`describe_contrasts`,
    :func:`describe_recovery`)."""
    return "\n".join(
        [
            f"- **Models and categories** (ANOVA of the log-prob ranks): {describe_anova(anova)}",
            f"- **Word-pair contrast**: {describe_contrasts(contrasts)}",
            f"- **Planted words**: {describe_recovery(recovery)}",
        ]
    )
