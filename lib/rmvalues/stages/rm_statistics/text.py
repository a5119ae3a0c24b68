"""Sentences of the statistics chapter, built from the numbers of the run (so they stay true when the
parameters change)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ...stats import top_family_terms


def _fmt(x: float, digits: int = 1) -> str:
    return f"{x:.{digits}f}".replace("-", "\u2212")


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"


def describe_three_way(mixed: pd.DataFrame) -> str:
    """One bullet per analysis: the family x category x framing coefficient(s) with SE and 95% CI."""
    lines = []
    for (corpus, analysis, sub), grp in mixed.groupby(
        ["corpus", "analysis", "subcategory"], dropna=False, sort=True
    ):
        top = top_family_terms(grp)
        label = f"{corpus}" + ("" if analysis == "pooled" else f" ({sub} words only)")
        parts = [
            f"`{r.term}` = {_fmt(r.coef)} ranks (SE {_fmt(r.se)}, 95% CI {_fmt(r.ci_low)} to {_fmt(r.ci_high)})"
            for r in top.itertuples()
        ]
        lines.append(f"- **{label}**: " + "; ".join(parts))
    return "\n".join(lines)


def describe_panels(panels: pd.DataFrame, corpus: str, analysis: str = "pooled") -> str:
    """One bullet per panel: the family difference in ranks and Cohen's d with CIs, point- and RM-level p."""
    df = panels[(panels["corpus"] == corpus) & (panels["analysis"] == analysis)]
    lines = []
    for r in df.itertuples():
        where = r.category + ("" if analysis == "pooled" else f" {r.subcategory}")
        lines.append(
            f"- {where}, {r.framing} prompts: {r.family_b} \u2212 {r.family_a} = {_fmt(r.difference)} ranks "
            f"[{_fmt(r.diff_ci_low)}, {_fmt(r.diff_ci_high)}], d = {_fmt(r.d, 2)} [{_fmt(r.d_ci_low, 2)}, "
            f"{_fmt(r.d_ci_high, 2)}]; permutation p (corrected) {_p(r.p_corrected)}; over RMs: difference CI "
            f"[{_fmt(r.diff_rm_ci_low)}, {_fmt(r.diff_rm_ci_high)}], exact p (corrected) {_p(r.p_rm_corrected)}"
        )
    return "\n".join(lines)


_NULL_WORDING = {
    "all words": "among all words",
    "within subcategory": "within subcategory (virtue/vice mix kept)",
}


def describe_null(null_summary: pd.DataFrame) -> str:
    """One bullet per corpus, null and framing: the observed range of family gaps against the null."""
    df = null_summary[null_summary["statistic"] == "range"]
    lines = []
    for r in df.itertuples():
        lines.append(
            f"- {r.corpus}, {r.framing} prompts, labels permuted {_NULL_WORDING.get(r.null, r.null)}: observed range "
            f"{_fmt(r.observed)} ranks; null mean {_fmt(r.null_mean)}, 95% of permutations below "
            f"{_fmt(r.null_q975)}; p {_p(r.p_perm)} ({r.n_null} permutations)"
        )
    return "\n".join(lines)


def describe_loo(loo: pd.DataFrame) -> str:
    """One bullet per analysis and term: the range of the coefficient over left-out RMs."""
    lines = []
    for (corpus, analysis, sub, term), grp in loo.groupby(
        ["corpus", "analysis", "subcategory", "term"], dropna=False, sort=True
    ):
        label = corpus + ("" if analysis == "pooled" else f" ({sub})")
        lo, hi = grp.loc[grp["coef"].idxmin()], grp.loc[grp["coef"].idxmax()]
        sign_kept = bool((np.sign(grp["coef"]) == np.sign(grp["coef_all"])).all())
        lines.append(
            f"- {label}, `{term}`: {_fmt(grp['coef_all'].iloc[0])} with every RM; from {_fmt(lo['coef'])} "
            f"(without {lo['dropped_rm']}) to {_fmt(hi['coef'])} (without {hi['dropped_rm']}); "
            + ("same sign in every refit" if sign_kept else "**the sign changes** in some refit")
        )
    return "\n".join(lines)


def describe_covariates(cov: pd.DataFrame | None, note: str) -> str:
    """The family x category x framing terms without and with the covariates (``note`` when none were
    fitted)."""
    if cov is None:
        return note
    lines = []
    terms = top_family_terms(cov[cov["term"].str.contains("category")])["term"]
    for (corpus, term), grp in cov[cov["term"].isin(terms)].groupby(["corpus", "term"]):
        g = grp.set_index("covariates")
        if {"with", "without"} - set(g.index):
            continue
        w, wo = g.loc["with"], g.loc["without"]
        lines.append(
            f"- {corpus} ({int(w['n_words'])} of {int(w['n_words_corpus'])} words have a valence norm), `{term}`: "
            f"{_fmt(wo['coef'])} (SE {_fmt(wo['se'])}) without covariates, {_fmt(w['coef'])} (SE {_fmt(w['se'])}) "
            "with them"
        )
    return "\n".join(lines)
