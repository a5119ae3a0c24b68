"""The chapter's tables as a reader sees them: the rows that carry the reading, readable column names,
rounded numbers and p-values written ``< 0.001`` (:func:`rmvalues.core.display.reader_table`). The full
tables, at full precision, are the CSV downloads that :func:`~.run.run` writes under ``tables/``."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from math import comb

import numpy as np
import pandas as pd

from ...core.display import interval, number, pvalue, reader_table
from .analysis import ALPHA

#: Covariates of the word-level model, as the reader tables name them.
COVARIATE_NAMES = {"zipf_z": "frequency (z)", "valence_z": "valence (z)"}


def readable_term(term: str) -> str:
    """A model term as a reader reads it: ``family[T.llama]:category[T.Care]:framing[T.negative]`` ->
    ``llama × Care × negative``; ``C(category):C(framing)`` -> ``category × framing``."""
    if term == "Intercept":
        return "intercept"
    parts = []
    for part in term.split(":"):
        m = re.fullmatch(r"(?:C\()?(\w+)\)?(?:\[T\.(.+)\])?", part)
        if m is None:
            parts.append(part)
        else:
            name, level = m.groups()
            parts.append(level if level is not None else COVARIATE_NAMES.get(name, name))
    return " \u00d7 ".join(parts)


NBSP = "\u00a0"


def _unbroken(text: object) -> object:
    """``< 0.001``, ``[−7.0, −1.3]`` and ``(SE 1.5)`` kept on one line in a narrow column."""
    if not isinstance(text, str):
        return text
    text = re.sub(r"\[([^\]\s]*), ([^\]\s]*)\]", f"[\\1,{NBSP}\\2]", text)
    return re.sub(r"(<|SE) (?=[\d\u2212])", f"\\1{NBSP}", text)


def _reader(df: pd.DataFrame, columns: Mapping[str, str], **kwargs: object) -> pd.DataFrame:
    """:func:`reader_table` with intervals, p-values and SEs that do not break across lines."""
    return reader_table(df, columns, **kwargs).map(_unbroken)  # type: ignore[arg-type]


def _pooled(df: pd.DataFrame, analysis: str = "pooled") -> pd.DataFrame:
    return df[df["analysis"] == analysis] if "analysis" in df.columns else df


def _with_interval(df: pd.DataFrame, low: str, high: str, name: str = "ci", digits: int = 1) -> pd.DataFrame:
    return df.assign(
        **{
            name: [
                interval(lo, hi, digits) if pd.notna(lo) else "n/a"
                for lo, hi in zip(df[low], df[high], strict=True)
            ]
        }
    )


def _with_estimate(df: pd.DataFrame, value: str, low: str, high: str, name: str = "estimate") -> pd.DataFrame:
    """A column ``name``: the value with its interval, ``−19.8 [−41.7, 3.3]`` (``n/a`` for no interval)."""
    return df.assign(
        **{
            name: [
                f"{number(v, 1)} " + (interval(lo, hi, 1) if pd.notna(lo) else "(no interval)")
                for v, lo, hi in zip(df[value], df[low], df[high], strict=True)
            ]
        }
    )


def _analysis_label(df: pd.DataFrame) -> pd.Series:
    sub = df["subcategory"].astype(object)
    return df["corpus"] + sub.map(lambda s: "" if pd.isna(s) else f" ({s})")


def _families(df: pd.DataFrame, a: str = "family_a", b: str = "family_b") -> tuple[str, str]:
    return (str(df[a].iloc[0]), str(df[b].iloc[0])) if not df.empty else ("a", "b")


def model_terms(
    mixed: pd.DataFrame, family_only: bool = True, analysis: str | None = "pooled"
) -> pd.DataFrame:
    """The mixed models' fixed effects (by default the terms that involve the family, pooled analyses): term,
    coefficient, SE, 95% CI and p."""
    df = mixed if analysis is None else _pooled(mixed, analysis)
    if family_only:
        df = df[df["term"].str.contains("family")]
    df = _with_interval(df, "ci_low", "ci_high").assign(
        analysis_label=_analysis_label(df), term_label=df["term"].map(readable_term)
    )
    cols = {"analysis_label": "corpus", "term_label": "term", "coef": "coefficient (ranks)", "se": "SE"}
    return _reader(df, {**cols, "ci": "95% CI", "p": "p"}, digits=1, pvalues=["p"])


def panel_table(panels: pd.DataFrame, analysis: str = "pooled") -> pd.DataFrame:
    """Per panel: the family difference of mean median rank with its interval over RMs then prompts, the
    paper's point-level p and the RM-level exact p (both Bonferroni) and the RM-level verdict (Cohen's d,
    the means and every other interval are in ``panel_tests.csv``)."""
    df = _pooled(panels, analysis)
    fa, fb = _families(df)
    sub = df["subcategory"].astype(object).map(lambda s: "" if pd.isna(s) else f" {s}")
    df = _with_estimate(df, "difference", "diff_hb_ci_low", "diff_hb_ci_high").assign(
        panel=df["category"] + sub + ", " + df["framing"]
    )
    cols = {
        "corpus": "corpus",
        "panel": "panel",
        "estimate": f"{fb} \u2212 {fa}, ranks [95% CI over RMs, prompts]",
        "p_corrected": "p, points",
        "p_rm_corrected": "p, RMs (exact)",
        "rm_verdict": "RM level",
    }
    return _reader(df, cols, pvalues=["p_corrected", "p_rm_corrected"])


def rm_level_table(rm_level: pd.DataFrame, analysis: str = "pooled") -> pd.DataFrame:
    """Per D statistic: the family difference of the mean D with Lehmann's exact interval, the exact p over
    all splits, its Bonferroni correction and the verdict (the means of D and the number of splits are in
    ``rm_level_interaction.csv``)."""
    df = _pooled(rm_level, analysis)
    fa, fb = _families(df)
    df = _with_estimate(df, "difference", "ci_low", "ci_high").assign(analysis_label=_analysis_label(df))
    cols = {
        "analysis_label": "corpus",
        "statistic": "statistic",
        "estimate": f"{fb} \u2212 {fa}, ranks [exact 95% CI]",
        "p_exact": "exact p",
        "p_corrected": "p (Bonf.)",
        "verdict": "verdict (primary specification)",
    }
    return _reader(df, cols, pvalues=["p_exact", "p_corrected"])


def models_table(models: pd.DataFrame, analysis: str = "pooled") -> pd.DataFrame:
    """One row per D statistic: the shared estimate, and the SE and p of the paper's random-intercept model,
    the SE and p (t distribution) of the random-slope model, and the RM-level exact p."""
    df = _pooled(models, analysis)
    rows = []
    keys = ["corpus", "subcategory", "statistic"]
    for (corpus, sub, statistic), grp in df.groupby(keys, dropna=False, sort=False):
        by = {m.split(" (")[0].split(",")[0]: r for m, r in zip(grp["method"], grp.itertuples(), strict=True)}
        paper, slopes, exact = by.get("random intercept"), by.get("random slopes"), by.get("RM level")
        rows.append(
            {
                "contrast": f"{corpus}{'' if pd.isna(sub) else f' ({sub})'}: {statistic}",
                "estimate (ranks)": number(grp["estimate"].iloc[0], 1),
                "SE, paper": number(paper.se, 1) if paper else "n/a",
                "p, paper": pvalue(paper.p) if paper else "n/a",
                "SE, slopes": number(slopes.se, 1) if slopes else "n/a",
                "p, slopes (t)": pvalue(slopes.p_t) if slopes else "n/a",
                "p, RMs (exact)": pvalue(exact.p) if exact else "n/a",
            }
        )
    return pd.DataFrame(rows).map(_unbroken)


def null_table(null_summary: pd.DataFrame, statistic: str = "range") -> pd.DataFrame:
    """The observed statistic of family gaps against its label-permutation null, per corpus, null and
    framing."""
    df = null_summary[null_summary["statistic"] == statistic]
    cols = {
        "corpus": "corpus",
        "framing": "framing",
        "null": "labels permuted",
        "observed": "observed (ranks)",
        "null_mean": "null mean",
        "null_q975": "null 97.5%",
        "p_perm": "p",
    }
    return _reader(df, cols, digits=1, pvalues=["p_perm"])


def framing_contrast_table(null_summary: pd.DataFrame) -> pd.DataFrame:
    """Each category's change of family gap between the framings against its null."""
    df = null_summary[null_summary["statistic"] == "framing_contrast"]
    df = _with_interval(df, "null_q025", "null_q975", "null_range")
    cols = {
        "corpus": "corpus",
        "null": "labels permuted",
        "category": "category",
        "observed": "observed (ranks)",
        "null_mean": "null mean",
        "null_range": "null 95% range",
        "p_perm": "p",
    }
    return _reader(df, cols, digits=1, pvalues=["p_perm"])


def anova_table(anova: pd.DataFrame, analysis: str | None = "pooled") -> pd.DataFrame:
    """The type II ANOVA terms: F, degrees of freedom and p (the residual rows are in ``anova_lm.csv``)."""
    df = anova if analysis is None else _pooled(anova, analysis)
    df = df[df["term"] != "Residual"]
    df = df.assign(analysis_label=_analysis_label(df), term_label=df["term"].map(readable_term))
    cols = {"analysis_label": "corpus", "term_label": "term", "df": "df", "F": "F", "p": "p"}
    return _reader(df, cols, digits={"df": 0, "F": 1}, pvalues=["p"])


def posthoc_table(posthocs: pd.DataFrame) -> pd.DataFrame:
    """The Welch post-hocs per category x framing cell (FDR-corrected)."""
    df = posthocs.assign(analysis_label=_analysis_label(posthocs))
    fa, fb = _families(df, "level_a", "level_b")
    cols = {
        "analysis_label": "corpus",
        "category": "category",
        "framing": "framing",
        "difference": f"{fb} \u2212 {fa}",
        "t": "t",
        "d": "d",
        "p_corrected": "p (FDR)",
    }
    return _reader(df, cols, digits={"difference": 1, "t": 1, "d": 2}, pvalues=["p_corrected"])


def covariate_table(cov: pd.DataFrame) -> pd.DataFrame:
    """The family x framing terms of the word-level model, without and with frequency and valence."""
    df = cov[cov["term"].str.contains("family") & cov["term"].str.contains("framing")]
    wide = df.pivot_table(index=["corpus", "term"], columns="covariates", values=["coef", "se"], sort=False)
    rows = []
    for (corpus, term), r in wide.iterrows():
        row = {"corpus": corpus, "term": readable_term(term)}
        for version in ("without", "with"):
            c, s = r.get(("coef", version)), r.get(("se", version))
            row[f"{version} covariates"] = (
                "\u2014" if c is None or pd.isna(c) else f"{number(c, 1)} (SE {number(s, 1)})"
            )
        rows.append(row)
    return pd.DataFrame(rows).map(_unbroken)


def split_table(split: pd.DataFrame, corpus: str | None = None) -> pd.DataFrame:
    """Per corpus (every split corpus, or ``corpus``), foundation and framing: the family difference (ranks)
    and its reading pooled and for each subcategory, and whether the split changes the reading."""
    df = split if corpus is None else split[split["corpus"] == corpus]
    versions = ["pooled"] + [
        c.removeprefix("reading_") for c in df.columns if c.startswith("reading_") and c != "reading_pooled"
    ]
    shown = df.assign(panel=df["category"] + ", " + df["framing"])
    cols = {"corpus": "corpus", "panel": "panel"}
    for v in versions:
        shown[v] = [
            f"{number(d, 1)} ({r})"
            for d, r in zip(shown[f"difference_{v}"], shown[f"reading_{v}"], strict=True)
        ]
        cols[v] = v
    shown["changes"] = shown["changes_reading"].map({True: "yes", False: "no"})
    return _reader(shown, {**cols, "changes": "split changes the reading"})


def overview_table(overview: pd.DataFrame) -> pd.DataFrame:
    """Per RM: family, source, corpora, prompts, words and scores (source and corpora only where they differ
    between the RMs)."""
    shown = [c for c in ("source", "corpora") if overview[c].nunique() > 1]
    cols = {c: c for c in ("family", "model", *shown, "prompts", "words", "scores")}
    out = _reader(overview, cols)
    for col in ("words", "scores"):
        out[col] = overview[col].map(lambda n: f"{n:,}").to_numpy()
    return out


def per_rm_table(per_rm: pd.DataFrame, corpus: str, analysis: str = "pooled") -> pd.DataFrame:
    """Each RM's mean median rank (SE over prompts) per category of ``corpus``, one row per RM and framing."""
    per_rm = per_rm[(per_rm["corpus"] == corpus) & (per_rm["analysis"] == analysis)]
    df = per_rm.assign(
        cell=[f"{number(m, 1)} ({number(s, 1)})" for m, s in zip(per_rm["mean"], per_rm["se"], strict=True)],
        where=per_rm["category"]
        + per_rm["subcategory"].astype(object).map(lambda s: "" if pd.isna(s) else f" {s}"),
    )
    return (
        df.pivot_table(
            index=["family", "rm", "framing"],
            columns="where",
            values="cell",
            aggfunc="first",
            sort=False,
        )
        .reset_index()
        .fillna("")
    )


def loo_table(loo: pd.DataFrame) -> pd.DataFrame:
    """Each leave-one-RM-out refit: the top family terms with and without the dropped RM."""
    df = loo.assign(analysis_label=_analysis_label(loo), term_label=loo["term"].map(readable_term))
    cols = {
        "analysis_label": "corpus",
        "dropped_rm": "RM left out",
        "term_label": "term",
        "coef_all": "every RM",
        "coef": "without it",
        "change": "change",
    }
    return _reader(df, cols, digits=1)


#: The fit columns a random-slope attempt reports when it was tried (absent when every attempt was skipped).
SLOPE_FIT_COLUMNS = ("n_cov_params", "converged", "hessian_pd", "optimizer")


def slope_fits_table(slope_fits: pd.DataFrame) -> pd.DataFrame:
    """Each random-slope structure tried: status, convergence, optimizer and note."""
    # a run whose fits were all skipped (one RM per family) has no convergence columns: shown empty
    df = slope_fits.assign(analysis_label=_analysis_label(slope_fits)).reindex(
        columns=[*slope_fits.columns, "analysis_label", *SLOPE_FIT_COLUMNS], fill_value=None
    )
    df = df.loc[:, ~df.columns.duplicated()]
    cols = {
        "analysis_label": "corpus",
        "structure": "structure",
        "n_cov_params": "covariance parameters",
        "status": "status",
        "converged": "converged",
        "hessian_pd": "Hessian pos. def.",
        "optimizer": "optimizer",
        "note": "note",
    }
    out = _reader(df, cols, digits={"n_cov_params": 0})
    return out.fillna("")


def coding_table(coding: pd.DataFrame) -> pd.DataFrame:
    """The models' coding: the reference level and the levels of each factor, per analysis."""
    df = coding.assign(analysis_label=_analysis_label(coding))
    return _reader(
        df, {"analysis_label": "corpus", "factor": "factor", "reference": "reference", "levels": "levels"}
    )


def timings_table(timings: Mapping[str, float]) -> pd.DataFrame:
    """Seconds per step of the run."""
    return pd.DataFrame({"step": list(timings), "seconds": [f"{s:.1f}" for s in timings.values()]})


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


def attainable_table(panels: pd.DataFrame, rm_level: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """Per family of RM-level exact tests: the RMs per family, the splits of the RMs, the smallest p one
    test can give (two over the splits), the number of tests Bonferroni corrects over, the smallest
    attainable corrected p and whether it can reach ``alpha``."""
    items = []
    for (corpus, analysis), grp in panels.groupby(["corpus", "analysis"], sort=True):
        items.append((f"{corpus} {analysis} panels", grp["n_rms_a"].iloc[0], grp["n_rms_b"].iloc[0],
                      len(grp), grp["p_rm_min"].iloc[0]))  # fmt: skip
    for (corpus, analysis, sub), grp in rm_level.groupby(
        ["corpus", "analysis", "subcategory"], dropna=False, sort=True
    ):
        what = corpus + ("" if analysis == "pooled" or pd.isna(sub) else f" ({sub} words only)")
        items.append((f"{what} D statistics", grp["n_rms_a"].iloc[0], grp["n_rms_b"].iloc[0],
                      grp["n_tests"].iloc[0], grp["p_min_corrected"].iloc[0]))  # fmt: skip
    rows = []
    for what, na, nb, m, p in items:
        splits = comb(int(na) + int(nb), int(na))
        rows.append(
            {
                "tests": what,
                "RMs per family": f"{int(na)} and {int(nb)}",
                "splits": f"{splits:,}",
                "smallest p of one test": number(min(1.0, 2 / splits), 4),
                "tests corrected over": int(m),
                "smallest corrected p": number(float(p), 4),
                f"can reach {alpha:g}": "yes" if float(p) <= alpha else "no",
            }
        )
    return pd.DataFrame(rows)


def subcategory_mix_table(corpora: pd.DataFrame, split_corpora: Sequence[str]) -> pd.DataFrame:
    """Words per category and subcategory (virtue, vice) of each split corpus, from the corpora run."""
    df = corpora[corpora["corpus"].isin(list(split_corpora)) & corpora["subcategory"].notna()]
    if df.empty:
        return pd.DataFrame()
    counts = df.groupby(["corpus", "category", "subcategory"])["word"].nunique().unstack(fill_value=0)
    return counts.reset_index().rename_axis(columns=None)


def loo_range_table(loo: pd.DataFrame) -> pd.DataFrame:
    """Per analysis and family term: the coefficient with every RM, its smallest and largest value over the
    leave-one-RM-out refits (with the RM left out) and whether the sign held in every refit."""
    rows = []
    for (corpus, analysis, sub, term), grp in loo.groupby(
        ["corpus", "analysis", "subcategory", "term"], dropna=False, sort=True
    ):
        lo, hi = grp.loc[grp["coef"].idxmin()], grp.loc[grp["coef"].idxmax()]
        rows.append(
            {
                "analysis": corpus + ("" if analysis == "pooled" or pd.isna(sub) else f" ({sub} words only)"),
                "term": readable_term(term),
                "every RM": number(grp["coef_all"].iloc[0], 1),
                "lowest": f"{number(lo['coef'], 1)} (without {lo['dropped_rm']})",
                "highest": f"{number(hi['coef'], 1)} (without {hi['dropped_rm']})",
                "same sign in every refit": (
                    "yes" if bool((np.sign(grp["coef"]) == np.sign(grp["coef_all"])).all()) else "no"
                ),
            }
        )
    return pd.DataFrame(rows)


def slope_summary_table(slope_fits: pd.DataFrame) -> pd.DataFrame:
    """Per analysis: the random-slope structures tried, in order, with what became of each, and the one
    used (the first that was fitted and converged)."""
    rows = []
    for (corpus, analysis, sub), grp in slope_fits.groupby(
        ["corpus", "analysis", "subcategory"], dropna=False, sort=True
    ):
        tried = []
        for r in grp.itertuples():
            if r.status != "fitted":
                tried.append(f"{r.structure}: {r.status} ({r.note})")
                continue
            state = ("converged" if r.converged else "did not converge") + f" ({r.optimizer})"
            state += "" if r.hessian_pd else ", Hessian not positive definite"
            state += ", a variance at the boundary" if r.boundary else ""
            tried.append(f"{r.structure} ({int(r.n_cov_params)} covariance parameters): {state}")
        used = grp[grp["status"] == "fitted"]
        used = used[used["converged"].eq(True)] if "converged" in used.columns else used.iloc[0:0]
        rows.append(
            {
                "analysis": corpus + ("" if analysis == "pooled" or pd.isna(sub) else f" ({sub} words only)"),
                "structures tried": "; ".join(tried),
                "used": used["structure"].iloc[0] if not used.empty else "none",
            }
        )
    return pd.DataFrame(rows)
