"""Sentences of the statistics chapter, built from the numbers of the run (so they stay true when the
parameters or the scores change). Every function returns Markdown."""

from __future__ import annotations

import re
from math import comb
from typing import Any

import numpy as np
import pandas as pd

from ...stats import top_family_terms
from .analysis import ALPHA, NO_READING, VERDICTS
from .key_numbers import key_numbers as key_numbers  # the numbers the prose cites (glued)
from .robust_numbers import verdict_phrase


def _fmt(x: float, digits: int = 1) -> str:
    if pd.isna(x):
        return "n/a"
    return f"{x:.{digits}f}".replace("-", "\u2212")


def _p(p: float) -> str:
    if pd.isna(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"


def _ci(lo: float, hi: float, digits: int = 1) -> str:
    if pd.isna(lo) or pd.isna(hi):
        return "no interval"
    return f"[{_fmt(lo, digits)}, {_fmt(hi, digits)}]"


def _label(corpus: str, analysis: str, sub: Any) -> str:
    return corpus + ("" if analysis == "pooled" or pd.isna(sub) else f" ({sub} words only)")


def _pooled(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["analysis"] == "pooled"] if "analysis" in df.columns else df


# ---------------------------------------------------------------------------------------------------------
# The paper's model and its coding
# ---------------------------------------------------------------------------------------------------------


def describe_coding(coding: pd.DataFrame, three_way: pd.DataFrame, framing_reference: str) -> str:
    """Which coding the models use (reference levels as fitted), why, and what the three-way terms would
    read under the other framing reference."""
    if coding.empty:
        return "No model was fitted."
    pooled = _pooled(coding)
    ref = {f: grp.drop_duplicates("corpus") for f, grp in pooled.groupby("factor")}
    parts = []
    if "family" in ref:
        parts.append(f"family **{ref['family']['reference'].iloc[0]}**")
    if "category" in ref:
        cats = "; ".join(f"{r.corpus}: **{r.reference}**" for r in ref["category"].itertuples())
        parts.append(f"category ({cats})")
    if "framing" in ref:
        parts.append(f"framing **{ref['framing']['reference'].iloc[0]}**")
    why = (
        'as the paper\'s script sets it (`prompt_framing` is a factor with `levels = c("positive","negative")` '
        "in `figures/generate_figure_1_and_A1.R` of the release)"
        if framing_reference == "positive"
        else "R's alphabetical default (the parameter `framing_reference` overrides the paper's script, "
        'which sets `levels = c("positive","negative")`)'
    )
    text = (
        "Treatment coding; the reference levels, read off the fitted models: "
        + ", ".join(parts)
        + ". Families and categories take R's default alphabetical order, as in the paper's `nlme::lme` call "
        f"(its `base_model` and `Category` are character columns); the framing is {why}. "
        "When every RM has the same prompts, each coefficient is a contrast of cell means: `family[T.b]` is "
        "the difference between the families in the reference cell, and a term with `framing[T.x]` is a "
        "change from the reference framing to the other."
    )
    other = "negative" if framing_reference == "positive" else "positive"
    flips = [
        f"{r.corpus} `{r.term}` = {_fmt(r.coef)} would read {_fmt(-r.coef)}"
        for r in _pooled(three_way).itertuples()
    ]
    if flips and "framing" in ref:
        text += (
            f" With **{other}** as the reference framing every family \u00d7 category \u00d7 framing term keeps "
            "its size and changes its sign: " + "; ".join(flips) + "."
        )
    return text


def describe_three_way(mixed: pd.DataFrame) -> str:
    """One bullet per analysis: the family x category x framing coefficient(s) with SE and 95% CI."""
    lines = []
    for (corpus, analysis, sub), grp in mixed.groupby(
        ["corpus", "analysis", "subcategory"], dropna=False, sort=True
    ):
        top = top_family_terms(grp)
        parts = [
            f"`{r.term}` = {_fmt(r.coef)} ranks (SE {_fmt(r.se)}, 95% CI {_fmt(r.ci_low)} to {_fmt(r.ci_high)}, "
            f"p {_p(r.p)})"
            for r in top.itertuples()
        ]
        n = (
            f" ({int(grp['n_obs'].iloc[0]):,} points, {int(grp['n_rms'].iloc[0])} RMs)"
            if "n_obs" in grp
            else ""
        )
        lines.append(f"- **{_label(corpus, analysis, sub)}**{n}: " + "; ".join(parts))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# The central interaction at the RM level
# ---------------------------------------------------------------------------------------------------------


def _model_row(models: pd.DataFrame, r: Any, prefix: str) -> pd.Series | None:
    m = models[
        (models["corpus"] == r.corpus)
        & (models["analysis"] == r.analysis)
        & (
            models["subcategory"].astype(object).fillna("")
            == ("" if pd.isna(r.subcategory) else r.subcategory)
        )
        & (models["statistic"] == r.statistic)
        & models["method"].str.startswith(prefix)
    ]
    return None if m.empty else m.iloc[0]


def _verdict_text(r: Any) -> str:
    if r.verdict == VERDICTS[2]:
        return (
            f"**cannot be tested at this n** (with {r.n_rms_a} and {r.n_rms_b} RMs the smallest attainable p "
            f"after Bonferroni over {r.n_tests} is {r.p_min_corrected:.3f})"
        )
    return f"**{r.verdict}** at \u03b1 = {ALPHA}"


def describe_rm_level(rm_level: pd.DataFrame, models: pd.DataFrame, analysis: str = "pooled") -> str:
    """One bullet per statistic: the family means of ``D``, their difference with the exact test and its
    interval, and the same contrast from the paper's model and the random-slope model."""
    df = rm_level[rm_level["analysis"] == analysis]
    if df.empty:
        return "No RM-level contrast could be formed (it needs both framings and at least two categories)."
    lines = []
    for r in df.itertuples():
        text = (
            f"- **{_label(r.corpus, r.analysis, r.subcategory)}, {r.statistic}**: mean D {_fmt(r.mean_a)} over "
            f"{r.n_rms_a} {r.family_a} RMs, {_fmt(r.mean_b)} over {r.n_rms_b} {r.family_b} RMs; "
            f"{r.family_b} \u2212 {r.family_a} = {_fmt(r.difference)} ranks, 95% CI {_ci(r.ci_low, r.ci_high)}; "
            f"exact p {_p(r.p_exact)} over all {r.n_splits} splits of the RMs (Bonferroni over {r.n_tests}: "
            f"{_p(r.p_corrected)}) \u2192 in this, the primary specification: {_verdict_text(r)} (its "
            "specification curve's label is in the robustness section)."
        )
        paper = _model_row(models, r, "random intercept")
        if paper is not None:
            text += (
                f" The paper's model, same contrast: SE {_fmt(paper['se'])}, p {_p(paper['p'])} "
                f"({int(paper['n_units']):,} (RM, prompt) points)"
            )
        slopes = _model_row(models, r, "random slopes")
        if slopes is not None:
            text += (
                f"; {slopes['method']}: SE {_fmt(slopes['se'])}, p {_p(slopes['p'])} (normal), "
                f"{_p(slopes['p_t'])} (t, {int(slopes['df'])} df)"
            )
        lines.append(text + ("." if paper is not None else ""))
    return "\n".join(lines)


def _overlap(contrasts: pd.DataFrame, r: Any) -> str:
    """How many RMs of family b have a D within the range of family a's RMs."""
    c = contrasts[
        (contrasts["corpus"] == r.corpus)
        & (contrasts["analysis"] == r.analysis)
        & (contrasts["statistic"] == r.statistic)
    ]
    a = c.loc[c["family"] == r.family_a, "D"]
    b = c.loc[c["family"] == r.family_b, "D"]
    if a.size < 2 or b.empty:
        return ""
    inside = int(((b >= a.min()) & (b <= a.max())).sum())
    return (
        f" {inside} of the {b.size} {r.family_b} RMs have a D within the range of the {a.size} {r.family_a} RMs' "
        f"({_fmt(a.min())} to {_fmt(a.max())})."
    )


def _curve_says(labels: pd.DataFrame, corpus: str, statistic: str) -> str:
    """`` its specification curve: <label> (<shares>)`` for a pooled verdict (see :mod:`.robust_numbers`)."""
    row = labels[
        (labels["corpus"] == corpus) & (labels["analysis"] == "pooled") & (labels["statistic"] == statistic)
    ]
    return f"its specification curve: {verdict_phrase(next(row.itertuples(), None))}"


def describe_conclusion(
    rm_level: pd.DataFrame, models: pd.DataFrame, contrasts: pd.DataFrame, labels: pd.DataFrame
) -> str:
    """How the paper's conclusion (the families differ in how framing moves the category gaps) reads at
    the RM level, per corpus (pooled analysis), in numbers, each verdict with its specification curve's
    label (``labels``: ``specification_labels.csv``)."""
    lines = []
    for corpus, grp in _pooled(rm_level).groupby("corpus", sort=True):
        if len(grp) == 1:
            r = grp.iloc[0]
            rt = next(grp.itertuples())
            more = r["family_a"] if r["difference"] < 0 else r["family_b"]
            paper = _model_row(models, rt, "random intercept")
            text = (
                f"- **{corpus}**: the move of {r['category']} relative to {r['versus']} from "
                f"negative to positive prompts is larger in the {more} RMs (mean D {_fmt(r['mean_a'])} for "
                f"{r['family_a']}, {_fmt(r['mean_b'])} for {r['family_b']})"
            )
            if paper is not None:
                text += f"; the paper's model gives p {_p(paper['p'])} for this contrast"
            if r["verdict"] == VERDICTS[0]:
                text += (
                    f". In the primary specification at the RM level this holds: exact p {_p(r['p_corrected'])}, "
                    f"95% CI {_ci(r['ci_low'], r['ci_high'])}"
                )
            elif r["verdict"] == VERDICTS[1]:
                text += (
                    f". In the primary specification at the RM level the {r['n_rms_a'] + r['n_rms_b']} RMs do not "
                    f"establish it: exact p {_p(r['p_corrected'])}, and the 95% CI {_ci(r['ci_low'], r['ci_high'])} "
                    "includes 0: inconclusive (the power of this design is under 'Power')"
                )
            else:
                text += ". At the RM level it " + _verdict_text(rt)
            text += "; " + _curve_says(labels, corpus, str(r["statistic"])) + "."
            lines.append(text + _overlap(contrasts, rt))
            continue
        counts = grp["verdict"].value_counts()
        paper_sig = sum(
            1
            for rt in grp.itertuples()
            if (m := _model_row(models, rt, "random intercept")) is not None and m["p"] <= ALPHA
        )
        sig = grp[grp["verdict"] == VERDICTS[0]]
        named = "; ".join(
            f"{r.statistic} {r.family_b} \u2212 {r.family_a} = {_fmt(r.difference)}, "
            + _curve_says(labels, corpus, r.statistic)
            for r in sig.itertuples()
        )
        lines.append(
            f"- **{corpus}**: of the {len(grp)} contrasts, the paper's model gives p \u2264 {ALPHA} for {paper_sig}; "
            f"in the primary specification at the RM level (Bonferroni over {int(grp['n_tests'].iloc[0])}) "
            f"{_are(counts.get(VERDICTS[0], 0))} significant{' (' + named + ')' if named else ''}, {counts.get(VERDICTS[1], 0)} inconclusive and "
            f"{counts.get(VERDICTS[2], 0)} cannot be tested at this n."
        )
    return "\n".join(lines) if lines else "No RM-level contrast could be formed."


def _are(n: int) -> str:
    return f"{n} is" if n == 1 else f"{n} are"


def describe_random_slopes(slope_fits: pd.DataFrame) -> str:
    """One bullet per analysis: each random-slope structure tried, whether it converged, what was dropped."""
    if slope_fits.empty:
        return "No random-slope model was attempted."
    lines = []
    for (corpus, analysis, sub), grp in slope_fits.groupby(
        ["corpus", "analysis", "subcategory"], dropna=False, sort=True
    ):
        parts = []
        for r in grp.itertuples():
            if r.status == "fitted":
                state = "converged" if r.converged else "did not converge"
                state += f" ({r.optimizer})"
                state += (
                    ", Hessian positive definite"
                    if r.hessian_pd
                    else ", Hessian not positive definite (SEs conditional on the variance estimates)"
                )
                if r.boundary:
                    state += ", a variance at the boundary"
                parts.append(f"{r.structure} ({int(r.n_cov_params)} covariance parameters): {state}")
            else:
                parts.append(f"{r.structure}: {r.status} ({r.note})")
        used = grp[
            (grp["status"] == "fitted") & grp.get("converged", pd.Series(False, index=grp.index)).eq(True)
        ]
        tail = (
            f" \u2192 used: {used['structure'].iloc[0]}"
            if not used.empty
            else " \u2192 no random-slope model"
        )
        lines.append(f"- **{_label(corpus, analysis, sub)}**: " + "; ".join(parts) + tail)
    return "\n".join(lines)


def describe_attainable(panels: pd.DataFrame, rm_level: pd.DataFrame) -> str:
    """The smallest p-value the RM-level exact tests can give, per family of tests after Bonferroni."""
    items = []
    for (corpus, analysis), grp in panels.groupby(["corpus", "analysis"], sort=True):
        items.append(
            (
                int(grp["n_rms_a"].iloc[0]),
                int(grp["n_rms_b"].iloc[0]),
                len(grp),
                float(grp["p_rm_min"].iloc[0]),
                f"{corpus} {analysis} panels",
            )
        )
    for (corpus, analysis, sub), grp in rm_level.groupby(
        ["corpus", "analysis", "subcategory"], dropna=False, sort=True
    ):
        items.append(
            (
                int(grp["n_rms_a"].iloc[0]),
                int(grp["n_rms_b"].iloc[0]),
                int(grp["n_tests"].iloc[0]),
                float(grp["p_min_corrected"].iloc[0]),
                f"{_label(corpus, analysis, sub)} D statistics",
            )
        )
    if not items:
        return "No RM-level test was run."
    lines = []
    for (na, nb), group in pd.DataFrame(items, columns=["a", "b", "m", "p", "what"]).groupby(["a", "b"]):
        n = comb(na + nb, na)
        head = (
            f"With {na} and {nb} RMs there are {n} splits, so an exact two-sided test cannot give p below "
            f"2/{n} = {min(1.0, 2 / n):.4f}. After Bonferroni:"
        )
        rows = [
            f"{r.what} (\u00d7{r.m}): {r.p:.4f}"
            + ("" if r.p <= ALPHA else " \u2014 cannot reach " + str(ALPHA))
            for r in group.itertuples()
        ]
        lines.append(head + " " + "; ".join(rows) + ".")
    return " ".join(lines) + (
        f" Where the smallest attainable p exceeds {ALPHA} the chapter says \u201ccannot be tested at this n\u201d, "
        "never \u201cnot significant\u201d."
    )


def describe_panels(panels: pd.DataFrame, corpus: str, analysis: str = "pooled") -> str:
    """One bullet per panel: the family difference with its interval over RMs then prompts (and over
    points), Cohen's d, the paper's point-level test and the RM-level verdict."""
    df = panels[(panels["corpus"] == corpus) & (panels["analysis"] == analysis)]
    lines = []
    for r in df.itertuples():
        where = r.category + ("" if analysis == "pooled" else f" {r.subcategory}")
        rm = (
            f"exact p (corrected) {_p(r.p_rm_corrected)} \u2192 {r.rm_verdict}"
            if r.rm_verdict != VERDICTS[2]
            else f"cannot be tested at this n (smallest attainable corrected p {r.p_rm_min:.3f})"
        )
        lines.append(
            f"- {where}, {r.framing} prompts: {r.family_b} \u2212 {r.family_a} = {_fmt(r.difference)} ranks, "
            f"95% CI over RMs and prompts {_ci(r.diff_hb_ci_low, r.diff_hb_ci_high)} (over points "
            f"{_ci(r.diff_ci_low, r.diff_ci_high)}); d = {_fmt(r.d, 2)} (points); the paper's test (points): p "
            f"(corrected) {_p(r.p_corrected)}; RM level: {rm}"
        )
    return "\n".join(lines)


def describe_bootstrap_vs_exact(panels: pd.DataFrame) -> str:
    """How often the interval over RMs then prompts excludes 0 while the exact RM-level test (uncorrected)
    does not reject: the bootstrap of four and six RMs is too narrow, so its readings are optimistic."""
    ok = panels.dropna(subset=["diff_hb_ci_low", "diff_hb_ci_high", "p_perm_rm"])
    if ok.empty:
        return "No panel has both an interval over RMs and an RM-level test (fewer than two RMs in a family)."
    excl = ok[(ok["diff_hb_ci_low"] > 0) | (ok["diff_hb_ci_high"] < 0)]
    loose = excl[excl["p_perm_rm"] > ALPHA]
    return (
        f"Of {len(ok)} panels, the 95% interval over RMs then prompts excludes 0 in {len(excl)}; in {len(loose)} of "
        f"these the exact RM-level test, even uncorrected, gives p > {ALPHA}. A bootstrap that resamples "
        f"{int(ok['n_rms_a'].min())} and {int(ok['n_rms_b'].min())} RMs draws from few distinct resamples and its "
        "percentile intervals run narrow, so a reading from it is the optimistic one; the exact tests are the "
        "RM-level verdicts."
    )


def describe_split(split: pd.DataFrame, split_points: pd.DataFrame) -> str:
    """How many panels the virtue/vice split changes the reading of, on the intervals over RMs then prompts
    (the verdicts) and, for comparison, on intervals over (RM, prompt) points."""
    if split.empty:
        return "No corpus was split."
    n = len(split)
    changed = split[split["changes_reading"]]
    unreadable = int((split.filter(like="reading_") == NO_READING).any(axis=1).sum())
    unclear = int((split["reading_pooled"] == "unclear").sum())
    text = (
        f"Read from 95% intervals that resample RMs within family and then prompts within RM, the split "
        f"changes the reading of {len(changed)} of {n} panels"
        + (
            ": " + "; ".join(f"{r.category} {r.framing} ({r.changed_in})" for r in changed.itertuples())
            if len(changed)
            else ""
        )
        + f"; {unclear} pooled panels read \u201cunclear\u201d."
    )
    if unreadable:
        text += f" {unreadable} panels cannot be read at all (fewer than two RMs in a family)."
    if not split_points.empty:
        text += (
            f" Intervals over (RM, prompt) points, which treat every point as independent, would change "
            f"{int(split_points['changes_reading'].sum())} of {n}."
        )
    return text


def describe_split_guide(split_corpora: list[str], corpora: list[str]) -> str:
    """Where the figure and the table of the virtue/vice split are, or that no corpus of the run has
    subcategories (then neither is shown)."""
    if not split_corpora:
        return f"No corpus of this run ({', '.join(corpora)}) has subcategories: nothing to split."
    return (
        f"Split: {', '.join(split_corpora)}. {{numref}}`fig-statistics-split` shows the family differences "
        "pooled and split; {numref}`tbl-statistics-split` says where the split changes a panel's reading."
    )


def describe_subcategory_mix(corpora: pd.DataFrame, corpus: str) -> str:
    """The number of virtue and vice words of each category of ``corpus`` (from the corpora run)."""
    df = corpora[(corpora["corpus"] == corpus) & corpora["subcategory"].notna()]
    if df.empty:
        return f"{corpus} has no subcategories."
    counts = df.groupby(["category", "subcategory"])["word"].nunique().unstack(fill_value=0)
    parts = [
        f"{cat}: " + ", ".join(f"{int(row[s])} {s}" for s in counts.columns) for cat, row in counts.iterrows()
    ]
    return f"Words per foundation in {corpus}: " + "; ".join(parts) + "."


# ---------------------------------------------------------------------------------------------------------
# Nulls, leave-one-out, covariates
# ---------------------------------------------------------------------------------------------------------

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


def describe_loo(loo: pd.DataFrame, skipped: list[str] | None = None) -> str:
    """One bullet per analysis and term: the range of the coefficient over left-out RMs (and which analyses
    were skipped because a family has a single RM)."""
    lines = []
    if skipped:
        lines.append("- Leave-one-RM-out needs two RMs per family: skipped for " + ", ".join(skipped) + ".")
    if loo.empty:
        return "\n".join(lines) or "- Leave-one-RM-out: nothing to refit."
    for (corpus, analysis, sub, term), grp in loo.groupby(
        ["corpus", "analysis", "subcategory", "term"], dropna=False, sort=True
    ):
        lo, hi = grp.loc[grp["coef"].idxmin()], grp.loc[grp["coef"].idxmax()]
        sign_kept = bool((np.sign(grp["coef"]) == np.sign(grp["coef_all"])).all())
        lines.append(
            f"- {_label(corpus, analysis, sub)}, `{term}`: {_fmt(grp['coef_all'].iloc[0])} with every RM; from "
            f"{_fmt(lo['coef'])} (without {lo['dropped_rm']}) to {_fmt(hi['coef'])} (without {hi['dropped_rm']}); "
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


# ---------------------------------------------------------------------------------------------------------
# Units, confounds, summary
# ---------------------------------------------------------------------------------------------------------


def units_table() -> pd.DataFrame:
    """Each inference of the chapter and the unit it treats as independent (the RM is what was sampled)."""
    rows = [
        ("mixed model (paper): random intercept per RM", "(RM, prompt) point, given its RM's intercept"),
        ("panel permutation Welch test (paper)", "(RM, prompt) point"),
        ("ANOVA and Welch post-hocs (language-model variant)", "(RM, prompt) point"),
        ("bootstrap CIs over points (diff_ci, d_ci)", "(RM, prompt) point"),
        (
            "bootstrap CIs over RMs, then prompts (diff_hb_ci; the readings)",
            "RM (prompts resampled within it)",
        ),
        ("RM-level exact split tests (panels, D statistics)", "RM"),
        ("random-slope mixed model", "RM (its own category x framing effects)"),
        ("null baseline (category labels permuted)", "word (RMs and prompts held fixed)"),
        ("word-level covariate model", "(RM, word) point, given its RM's intercept"),
    ]
    return pd.DataFrame(rows, columns=["inference", "treated as independent"])


def describe_unlabelled(unlabelled: dict[str, list[str]]) -> str:
    """The scored words without a label in their corpus (dropped from the analysis), per corpus."""
    parts = [
        f"{corpus}: {len(words)} ({', '.join(sorted(words))})"
        for corpus, words in unlabelled.items()
        if words
    ]
    if not parts:
        return "Every scored word has a label in its corpus: none was dropped."
    return (
        "Scored words without a label in their corpus, dropped as the paper's join drops them: "
        + "; ".join(parts)
        + "."
    )


def _developer(model: str) -> str:
    return model.split("/")[0] if "/" in model else "(local)"


def _size(model: str) -> str | None:
    m = re.search(r"(\d+(?:\.\d+)?)[bB](?![a-zA-Z])", model)
    return f"{m.group(1)}B" if m else None


def describe_confounds(scores: pd.DataFrame, families: list[str]) -> str:
    """What the family comparison is confounded by, from the RMs' ids: developers per family (and those in
    both), parameter sizes where the id states one; and what the ids cannot show."""
    rms = scores.drop_duplicates("model")[["model", "family"]]
    rms = rms[rms["family"].isin(families)]
    parts, devs = [], {}
    for fam in families:
        models = sorted(rms.loc[rms["family"] == fam, "model"])
        devs[fam] = sorted({_developer(m) for m in models})
        sizes = pd.Series([_size(m) for m in models]).dropna().value_counts()
        size_text = ", ".join(f"{k} \u00d7{v}" for k, v in sizes.items()) or "not stated in the ids"
        parts.append(
            f"{len(models)} {fam} RMs from {len(devs[fam])} developer(s) ({', '.join(devs[fam])}; sizes {size_text})"
        )
    shared = sorted(set(devs.get(families[0], [])) & set(devs.get(families[1], [])))
    text = "The RMs are not independent draws of their families: " + "; ".join(parts) + ". "
    text += (
        f"{len(shared)} developer(s) ({', '.join(shared)}) released RMs of both families, so developer is only "
        "partly crossed with family. "
        if shared
        else "No developer released RMs of both families, so developer and family cannot be told apart. "
    )
    text += (
        "RMs of one developer may share preference data and training recipes, and RMs of one family may share "
        "base checkpoints; the ids cannot show how much. Any family difference here is therefore a difference "
        "between these particular RMs, confounded with their developers, data, recipes and sizes, not an "
        "effect of the base model alone; the exact tests treat the RMs as exchangeable units, which such "
        "sharing makes optimistic."
    )
    return text


def describe_summary(res: Any) -> str:
    """The chapter's findings in numbers (bullets), from a :class:`~rmvalues.stages.rm_statistics.Results`."""
    lines = []
    for r in _pooled(res.three_way).itertuples():
        lines.append(
            f"- The paper's model ({r.corpus}): `{r.term}` = {_fmt(r.coef)} ranks, p {_p(r.p)}, with (RM, prompt) "
            "points as the unit."
        )
    conclusion = describe_conclusion(res.rm_level, res.models, res.contrasts, res.curve_labels)
    lines += [line for line in conclusion.split("\n") if line.startswith("- ")]
    pooled = _pooled(res.panels)
    if not pooled.empty:
        v = pooled["rm_verdict"].value_counts()
        lines.append(
            f"- Panels: the paper's point-level test gives corrected p \u2264 {ALPHA} in "
            f"{int((pooled['p_corrected'] <= ALPHA).sum())} of {len(pooled)}; at the RM level "
            f"{v.get(VERDICTS[0], 0)} are significant, {v.get(VERDICTS[1], 0)} inconclusive and "
            f"{v.get(VERDICTS[2], 0)} cannot be tested at this n."
        )
    if not res.split.empty:
        lines.append("- Virtue and vice: " + describe_split(res.split, res.split_points))
    rng = res.null_summary[
        (res.null_summary["statistic"] == "range") & (res.null_summary["null"] == "all words")
    ]
    for r in rng.itertuples():
        lines.append(
            f"- Against random word sets ({r.corpus}, {r.framing}): observed range {_fmt(r.observed)} ranks, "
            f"null 95% below {_fmt(r.null_q975)}, p {_p(r.p_perm)}."
        )
    if res.loo.empty:
        lines.append("- Leave-one-RM-out: skipped (it needs two RMs per family).")
    else:
        keys = ["corpus", "analysis", "subcategory", "term"]
        kept = res.loo.groupby(keys, dropna=False).apply(
            lambda g: bool((np.sign(g["coef"]) == np.sign(g["coef_all"])).all()), include_groups=False
        )
        lines.append(
            f"- Leave-one-RM-out: a family \u00d7 category \u00d7 framing term changes sign in some refit for "
            f"{int((~kept).sum())} of {len(kept)} terms."
        )
    return "\n".join(lines)
