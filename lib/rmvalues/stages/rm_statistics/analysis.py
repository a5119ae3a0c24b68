"""The chapter's analyses of RM scores: the paper's, and what it lacks.

**The paper's analysis** (Christian et al. 2026, Fig. 1 and its R code), reproduced step by step with the
statistics layer (:mod:`rmvalues.stats`):

1. :func:`rmvalues.stats.rank_scores`: per (model, prompt) rank the corpus words by score, rank 1 = highest
   reward, ties averaged (``rank(-score)`` in R).
2. :func:`rmvalues.stats.all_median_ranks`: per (model, prompt, category) the median rank of the category's
   words. These points, 27 prompts per framing per RM, are the unit of analysis.
3. :func:`mixed_models`: ``median_rank ~ family * category * framing`` with a random intercept per RM
   (:func:`rmvalues.stats.fit_mixed_model`: statsmodels MixedLM, REML; the paper used R's ``nlme::lme``).
   Coding (:func:`coding_levels`): treatment contrasts with the paper's reference levels, read off its script
   (``figures/generate_figure_1_and_A1.R`` of the release): ``base_model`` and ``Category`` are character
   columns, so R orders them alphabetically (``gemma``; ``Agency``, MFD 2.0: ``Authority``), and
   ``prompt_framing`` is a factor with ``levels = c("positive","negative")``, so positive is the reference.
   The reference family never depends on the order of ``families``.
4. :func:`panel_tests`: per (category, framing) panel, a permutation Welch t-test of family (the paper's
   ``MKinfer::perm.t.test``, 9,999 permutations) with Bonferroni over the panels of one corpus, plus Cohen's
   d. MFD 2.0 is analysed pooled over virtue and vice (as the paper did) and split (``analysis = "split"``);
   :func:`split_vs_pooled` says where the split changes the reading.

**What the paper lacks**: effect sizes in rank units with bootstrap confidence intervals, over the
(RM, prompt) points and, for every verdict, over RMs within family and then prompts within RM
(:func:`panel_tests`); RM-level inference for the central interaction (:mod:`.rm_level`); a null distribution of the family x category gap from
permuting category labels among the corpus words (:func:`rmvalues.stats.null_baseline`); a word-level model
with word frequency and valence as covariates (:func:`covariate_model`); leave-one-RM-out refits
(:func:`leave_one_rm_out`); per-RM summaries (:func:`per_rm_summary`, paper Fig. A1); and the
language-model variant of the paper's Fig. 2 script applied to the families (:func:`anova_tables`).

Sign conventions: ``difference = mean_rank_b - mean_rank_a`` where ``families = [a, b]`` (default gemma,
llama; the paper's ``Llama - Gemma``). Ranks run from 1 (highest reward) upward, so a positive difference
means family ``b`` ranks the category's words *lower* (gives them less reward) than family ``a``. Cohen's d
has the same sign as the difference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ...stats import (
    RANK_KEY,
    anova_3way,
    bootstrap_ci,
    can_reach,
    check_families,
    cluster_bootstrap_ci,
    cohens_d,
    correct_pvalues,
    default_formula,
    design,
    fit_mixed_model,
    permutation_welch,
    smallest_p,
    stable_seed,
    top_family_terms,
    treatment_levels,
    welch_posthocs,
)
from ...stats.contrasts import analyses

#: The RM-level permutation test enumerates every relabelling of the RMs up to this many (else it samples).
MAX_EXACT_SPLITS = 100_000
#: The significance level of every verdict of the chapter.
ALPHA = 0.05
#: The verdicts of a test: significant, inconclusive (p above :data:`ALPHA`: the interval includes zero, which
#: is no evidence of no difference), or a test that could not have been significant whatever the data (its
#: smallest attainable corrected p-value exceeds :data:`ALPHA`).
VERDICTS = ("significant", "inconclusive", "cannot be tested at this n")
#: The reading of a panel whose interval over RMs cannot be formed (fewer than two RMs in a family).
NO_READING = "cannot be tested at this n"
#: Columns of ``mixed_model.csv``.
MIXED_COLUMNS = ["corpus", "analysis", "subcategory", "term", "coef", "se", "z", "p", "ci_low", "ci_high"]
#: Columns of ``panel_tests.csv``.
PANEL_COLUMNS = [
    "corpus",
    "analysis",
    "category",
    "subcategory",
    "framing",
    "family_a",
    "family_b",
    "n_a",
    "n_b",
    "mean_rank_a",
    "mean_rank_b",
    "difference",
    "diff_ci_low",
    "diff_ci_high",
    "d",
    "d_ci_low",
    "d_ci_high",
    "t_welch",
    "p_perm",
    "p_corrected",
    "n_rms_a",
    "n_rms_b",
    "diff_rm_ci_low",
    "diff_rm_ci_high",
    "p_perm_rm",
    "p_rm_corrected",
    "diff_hb_ci_low",
    "diff_hb_ci_high",
    "p_rm_min",
    "rm_verdict",
]
#: Columns of the corpora table the covariate model reads (one row per corpus and word).
COVARIATE_COLUMNS = ["corpus", "word", "zipf_frequency", "valence"]
COVARIATE_FORMULA = "mean_rank ~ family * category * framing + family * framing * (zipf_z + valence_z)"


# ---------------------------------------------------------------------------------------------------------
# Panel tests (paper Fig. 1 stars) with effect sizes
# ---------------------------------------------------------------------------------------------------------


def panel_tests(
    medians: pd.DataFrame,
    families: Sequence[str] = ("gemma", "llama"),
    n_permutations: int = 9999,
    n_bootstrap: int = 2000,
    seed: int = 0,
    correction: str = "bonf",
) -> pd.DataFrame:
    """Family contrast in each (corpus, analysis, category, subcategory, framing) panel.

    Point level (the paper's test, every (RM, prompt) point independent): the median ranks of the two
    families; permutation Welch test (``p_perm``), ``correction`` over the panels of one (corpus, analysis)
    (``p_corrected``); mean difference and Cohen's d with BCa bootstrap CIs over points.

    RM level (what 10 RMs can support): the RMs' mean median ranks; the exact permutation test over all
    relabellings of RMs (``p_perm_rm``; up to :data:`MAX_EXACT_SPLITS` relabellings, else ``n_permutations``
    random ones), corrected like the point-level test (``p_rm_corrected``); ``p_rm_min`` the smallest
    corrected p such a test can give (with 4 vs 6 RMs and 4 panels: 4 x 2/210) and ``rm_verdict`` one of
    :data:`VERDICTS` (``cannot be tested at this n`` when ``p_rm_min > ALPHA``); a percentile bootstrap CI over
    RM means (``diff_rm_ci_*``) and the hierarchical one that supports the readings (``diff_hb_ci_*``: RMs
    resampled within family, then prompts within RM; NaN with fewer than two RMs in a family).
    Columns: :data:`PANEL_COLUMNS`.
    """
    fam_a, fam_b = check_families(medians, families)
    df = medians[medians["family"].isin([fam_a, fam_b])]
    keys = ["corpus", "analysis", "category", "subcategory", "framing"]
    rows: list[dict[str, Any]] = []
    for key, panel in df.groupby(keys, sort=True, dropna=False, observed=True):
        row = dict(zip(keys, key, strict=True))
        row.update(_panel_row(panel, fam_a, fam_b, n_permutations, n_bootstrap, stable_seed(seed, *key)))
        rows.append(row)
    out = pd.DataFrame(rows)
    if out.empty:
        return pd.DataFrame(columns=PANEL_COLUMNS)
    out["p_corrected"] = np.nan
    out["p_rm_corrected"] = np.nan
    for _, idx in out.groupby(["corpus", "analysis"]).groups.items():
        out.loc[idx, "p_corrected"] = correct_pvalues(out.loc[idx, "p_perm"], correction)
        ok = out.loc[idx, "p_perm_rm"].notna()
        if ok.any():
            sub = out.loc[idx][ok].index
            out.loc[sub, "p_rm_corrected"] = correct_pvalues(out.loc[sub, "p_perm_rm"], correction)
        out.loc[idx, "p_rm_min"] = [
            smallest_p(int(a), int(b), len(idx)) if correction == "bonf" else smallest_p(int(a), int(b))
            for a, b in zip(out.loc[idx, "n_rms_a"], out.loc[idx, "n_rms_b"], strict=True)
        ]
    out["rm_verdict"] = [
        verdict(p, pmin) for p, pmin in zip(out["p_rm_corrected"], out["p_rm_min"], strict=True)
    ]
    return out[PANEL_COLUMNS]


def verdict(p: float, p_min: float, alpha: float = ALPHA) -> str:
    """One of :data:`VERDICTS` for a (corrected) p-value whose smallest attainable value is ``p_min``."""
    if not can_reach(p_min, alpha) or pd.isna(p):
        return VERDICTS[2]
    return VERDICTS[0] if p <= alpha else VERDICTS[1]


def _panel_row(
    panel: pd.DataFrame, fam_a: str, fam_b: str, n_permutations: int, n_bootstrap: int, pseed: list[int]
) -> dict[str, Any]:
    """The point-level and RM-level numbers of one panel (see :func:`panel_tests`)."""
    a = panel.loc[panel["family"] == fam_a, "median_rank"].to_numpy(float)
    b = panel.loc[panel["family"] == fam_b, "median_rank"].to_numpy(float)
    per_rm = {
        fam: [
            g.to_numpy(float)
            for _, g in panel[panel["family"] == fam].groupby("rm", sort=True)["median_rank"]
        ]
        for fam in (fam_a, fam_b)
    }
    ra = np.array([u.mean() for u in per_rm[fam_a]])
    rb = np.array([u.mean() for u in per_rm[fam_b]])
    t, p = permutation_welch(b, a, n_permutations, pseed)
    row: dict[str, Any] = dict(
        family_a=fam_a,
        family_b=fam_b,
        n_a=a.size,
        n_b=b.size,
        mean_rank_a=a.mean(),
        mean_rank_b=b.mean(),
        difference=b.mean() - a.mean(),
        d=cohens_d(b, a),
        t_welch=t,
        p_perm=p,
        n_rms_a=ra.size,
        n_rms_b=rb.size,
    )
    boot_seed = pseed[1] % 2**31
    row["diff_ci_low"], row["diff_ci_high"] = bootstrap_ci(b, a, "difference", n_bootstrap, boot_seed)
    row["d_ci_low"], row["d_ci_high"] = bootstrap_ci(b, a, "cohen", n_bootstrap, boot_seed)
    row["diff_hb_ci_low"], row["diff_hb_ci_high"] = cluster_bootstrap_ci(
        per_rm[fam_a], per_rm[fam_b], n_bootstrap, pseed
    )
    if ra.size >= 2 and rb.size >= 2:
        n_splits = math.comb(ra.size + rb.size, ra.size)
        n_rm_perm = n_splits if n_splits <= MAX_EXACT_SPLITS else n_permutations
        _, row["p_perm_rm"] = permutation_welch(rb, ra, n_rm_perm, pseed)
        row["diff_rm_ci_low"], row["diff_rm_ci_high"] = bootstrap_ci(
            rb, ra, "difference", n_bootstrap, boot_seed, method="percentile"
        )
    else:
        row["p_perm_rm"] = row["diff_rm_ci_low"] = row["diff_rm_ci_high"] = np.nan
    return row


#: The interval columns of a reading: over RMs then prompts (the default), or over (RM, prompt) points.
READING_BASES = {
    "RMs within family, then prompts within RM": ("diff_hb_ci_low", "diff_hb_ci_high"),
    "(RM, prompt) points": ("diff_ci_low", "diff_ci_high"),
}


def reading(row: Mapping[str, Any], low: str = "diff_hb_ci_low", high: str = "diff_hb_ci_high") -> str:
    """How a panel reads: which family ranks the words better (lower rank), ``unclear`` when the 95% CI of
    the difference (``b - a``) includes 0, or :data:`NO_READING` when the interval cannot be formed. By
    default the interval that resamples RMs within family, then prompts within RM."""
    if pd.isna(row[low]) or pd.isna(row[high]):
        return NO_READING
    if row[low] > 0:
        return f"{row['family_a']} ranks higher"
    if row[high] < 0:
        return f"{row['family_b']} ranks higher"
    return "unclear"


def split_vs_pooled(
    panels: pd.DataFrame, basis: str = "RMs within family, then prompts within RM"
) -> pd.DataFrame:
    """Per (corpus, category, framing) with subcategories: the pooled reading against each subcategory's.

    The *reading* of a panel (:func:`reading`) is which family ranks the category's words higher, from the
    95% bootstrap CI of the difference named by ``basis`` (:data:`READING_BASES`; by default RMs resampled
    within family, then prompts within RM), or ``unclear``. ``changes_reading`` is true when a subcategory
    reads differently from the pooled panel; a panel that cannot be read (too few RMs) changes nothing.
    """
    low, high = READING_BASES[basis]
    pooled = panels[panels["analysis"] == "pooled"]
    split = panels[panels["analysis"] == "split"]
    rows = []
    for (corpus, category, framing), grp in split.groupby(["corpus", "category", "framing"], sort=True):
        pool = pooled[
            (pooled["corpus"] == corpus) & (pooled["category"] == category) & (pooled["framing"] == framing)
        ]
        if pool.empty:
            continue
        prow = pool.iloc[0]
        row = {
            "corpus": corpus,
            "category": category,
            "framing": framing,
            "difference_pooled": prow["difference"],
            "d_pooled": prow["d"],
            "reading_pooled": reading(prow, low, high),
        }
        changed = []
        for _, srow in grp.iterrows():
            sub = srow["subcategory"]
            row[f"difference_{sub}"] = srow["difference"]
            row[f"d_{sub}"] = srow["d"]
            row[f"reading_{sub}"] = reading(srow, low, high)
            if NO_READING not in (row[f"reading_{sub}"], row["reading_pooled"]) and (
                row[f"reading_{sub}"] != row["reading_pooled"]
            ):
                changed.append(sub)
        row["changes_reading"] = bool(changed)
        row["changed_in"] = ", ".join(changed)
        row["basis"] = basis
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------------
# Mixed models, per analysis, and leave-one-RM-out
# ---------------------------------------------------------------------------------------------------------


def _keyed(table: pd.DataFrame, key: tuple[str, str, str | None]) -> pd.DataFrame:
    """``table`` with the analysis key ``corpus, analysis, subcategory`` as its first columns (in place)."""
    table.insert(0, "corpus", key[0])
    table.insert(1, "analysis", key[1])
    table.insert(2, "subcategory", key[2])
    return table


#: The paper's reference framing: its script makes ``prompt_framing`` a factor with
#: ``levels = c("positive","negative")`` (R's alphabetical default would make it negative).
PAPER_FRAMING_REFERENCE = "positive"


def coding_levels(
    medians: pd.DataFrame, framing_reference: str = PAPER_FRAMING_REFERENCE
) -> dict[str, list[str]]:
    """The model coding (treatment contrasts; the first level of each factor is its reference): families
    and categories in R's alphabetical order, ``framing_reference`` the reference framing. Built from the
    data, so the chapter can state the reference levels it actually used."""
    return treatment_levels(medians, first={"framing": framing_reference})


def coding_table(fits: Mapping[tuple[str, str, str | None], Any]) -> pd.DataFrame:
    """One row per analysis and factor of the fitted models: ``corpus, analysis, subcategory, factor,
    reference, levels`` (``model_coding.csv``)."""
    rows = [
        {
            "corpus": k[0],
            "analysis": k[1],
            "subcategory": k[2],
            "factor": f,
            "reference": lv[0],
            "levels": ", ".join(lv),
        }
        for k, fit in fits.items()
        for f, lv in fit.levels.items()
    ]
    return pd.DataFrame(rows, columns=["corpus", "analysis", "subcategory", "factor", "reference", "levels"])


def mixed_models(
    medians: pd.DataFrame,
    families: Sequence[str] = ("gemma", "llama"),
    levels: Mapping[str, Sequence[str]] | None = None,
) -> tuple[pd.DataFrame, dict]:
    """The mixed model of every (corpus, analysis, subcategory) of ``medians``: pooled per corpus, and per
    subcategory for the split analysis, coded by ``levels`` (default :func:`coding_levels`). Returns the
    stacked table (:data:`MIXED_COLUMNS` + fit info) and ``{(corpus, analysis, subcategory): MixedFit}``."""
    levels = levels if levels is not None else coding_levels(medians)
    tables, fits = [], {}
    for key, grp in analyses(medians):
        fit = fit_mixed_model(grp, families, levels=levels)
        fits[key] = fit
        t = _keyed(fit.table.copy(), key)
        t["formula"] = fit.formula
        t["n_obs"] = fit.n_obs
        t["n_rms"] = fit.n_groups
        t["converged"] = fit.converged
        t["optimizer"] = fit.optimizer
        t["hessian_pd"] = fit.hessian_pd
        t["boundary"] = fit.boundary
        tables.append(t)
    return pd.concat(tables, ignore_index=True), fits


#: Columns of ``loo_family_effect.csv``.
LOO_COLUMNS = [
    "corpus",
    "analysis",
    "subcategory",
    "dropped_rm",
    "dropped_family",
    "term",
    "coef",
    "se",
    "z",
    "p",
    "ci_low",
    "ci_high",
    "coef_all",
    "change",
]


def leave_one_rm_out(
    medians: pd.DataFrame,
    families: Sequence[str] = ("gemma", "llama"),
    levels: Mapping[str, Sequence[str]] | None = None,
) -> pd.DataFrame:
    """Refit the mixed model without each RM in turn; one row per left-out RM and top family term.

    Columns :data:`LOO_COLUMNS` (``coef_all`` = the coefficient with every RM, ``change`` = coef - coef_all).
    Expects the rows of one or more (corpus, analysis, subcategory) analyses. An RM is left out only when
    its family has another RM (dropping the only RM of a family leaves nothing to contrast), so with one RM
    per family the table is empty (:func:`loo_skipped`).
    """
    levels = levels if levels is not None else coding_levels(medians)
    rows = []
    for key, grp in analyses(medians):
        grp = grp[grp["family"].isin(list(families))]
        rm_family = grp.drop_duplicates("rm").set_index("rm")["family"].sort_index()
        size = rm_family.map(rm_family.value_counts())
        droppable = rm_family[size >= 2]
        if droppable.empty:
            continue
        full = top_family_terms(fit_mixed_model(grp, families, levels=levels).table).set_index("term")["coef"]
        for rm, fam in droppable.items():
            rest = grp[grp["rm"] != rm]
            t = top_family_terms(fit_mixed_model(rest, families, levels=levels).table)
            for _, r in t.iterrows():
                rows.append(
                    {
                        "corpus": key[0],
                        "analysis": key[1],
                        "subcategory": key[2],
                        "dropped_rm": rm,
                        "dropped_family": fam,
                        **r.to_dict(),
                        "coef_all": full.get(r["term"], np.nan),
                    }
                )
    out = pd.DataFrame(rows, columns=[c for c in LOO_COLUMNS if c != "change"])
    out["change"] = out["coef"] - out["coef_all"]
    return out[LOO_COLUMNS]


def loo_skipped(medians: pd.DataFrame, families: Sequence[str]) -> list[str]:
    """The analyses (``corpus`` or ``corpus (subcategory)``) where no RM can be left out (one RM per
    family): what :func:`leave_one_rm_out` skips."""
    out = []
    for key, grp in analyses(medians):
        counts = grp[grp["family"].isin(list(families))].groupby("family", observed=True)["rm"].nunique()
        if counts.empty or counts.max() < 2:
            out.append(key[0] + ("" if key[2] is None else f" ({key[2]})"))
    return out


# ---------------------------------------------------------------------------------------------------------
# Word-level covariate model (frequency and valence)
# ---------------------------------------------------------------------------------------------------------


def word_mean_ranks(ranked: pd.DataFrame, families: Sequence[str] = ("gemma", "llama")) -> pd.DataFrame:
    """Each word's mean rank over the prompts of one framing, per RM (categories pooled)."""
    df = ranked[ranked["family"].isin(list(families))].drop_duplicates([*RANK_KEY, "category", "word"])
    return (
        df.groupby(["corpus", "rm", "family", "framing", "category", "word"], observed=True)["rank"]
        .mean()
        .rename("mean_rank")
        .reset_index()
    )


def covariates_of(corpora_table: pd.DataFrame) -> pd.DataFrame:
    """``corpus, word, zipf_frequency, valence`` of a corpora table (the corpora stage's
    ``corpora.parquet``), one row per word; ``ValueError`` when the table lacks a column."""
    missing = [c for c in COVARIATE_COLUMNS if c not in corpora_table.columns]
    if missing:
        raise ValueError(f"the corpora table lacks column(s) {missing}")
    return corpora_table[COVARIATE_COLUMNS].drop_duplicates(["corpus", "word"]).reset_index(drop=True)


def normed_corpora(covariates: pd.DataFrame, corpora: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(have, lacking)``: the corpora of ``corpora`` with at least one word that has both a frequency and a
    valence in ``covariates``, and those without one."""
    normed = set(covariates.dropna(subset=["zipf_frequency", "valence"])["corpus"])
    have = [c for c in corpora if c in normed]
    return have, [c for c in corpora if c not in normed]


def covariate_model(
    ranked: pd.DataFrame,
    covariates: pd.DataFrame,
    families: Sequence[str] = ("gemma", "llama"),
    levels: Mapping[str, Sequence[str]] | None = None,
) -> pd.DataFrame:
    """Does the family x category x framing effect survive word frequency and valence?

    Word level: each word's mean rank over the prompts of a framing, per RM (:func:`word_mean_ranks`),
    joined with its Zipf frequency and valence (z-scored within the corpus over the words used; words
    without a valence norm are left out, as are multi-word entries' missing values). Two mixed models
    with a random intercept per RM on the same rows: ``without`` covariates (the paper's fixed effects)
    and ``with`` them, :data:`COVARIATE_FORMULA`, where frequency and valence may act differently per
    family and framing. Compare the family x category x framing terms between the two. The SEs of
    between-word terms ignore the clustering of ranks within words (no crossed word effect), so read
    the coefficients, not their p-values.
    """
    wm = word_mean_ranks(ranked, families)
    levels = levels if levels is not None else coding_levels(wm)
    out = []
    for corpus, grp in wm.groupby("corpus", sort=True):
        cov = covariates[covariates["corpus"] == corpus].drop(columns="corpus")
        d = grp.merge(cov, on="word", how="inner").dropna(subset=["zipf_frequency", "valence"])
        if d.empty:
            raise ValueError(f"{corpus}: no word has both a frequency and a valence in the corpora output")
        words = d.drop_duplicates("word")
        for col, z in (("zipf_frequency", "zipf_z"), ("valence", "valence_z")):
            mu, sd = words[col].mean(), words[col].std(ddof=1)
            d[z] = (d[col] - mu) / sd
        base = default_formula(design(d, families, levels), "mean_rank")
        for spec, formula in (
            ("without", base),
            ("with", base + " + family * framing * (zipf_z + valence_z)"),
        ):
            fit = fit_mixed_model(d, families, formula=formula, levels=levels)
            t = fit.table.copy()
            t.insert(0, "corpus", corpus)
            t.insert(1, "covariates", spec)
            t["n_words"] = d["word"].nunique()
            t["n_words_corpus"] = grp["word"].nunique()
            t["n_obs"] = fit.n_obs
            t["converged"] = fit.converged
            t["optimizer"] = fit.optimizer
            out.append(t)
    return pd.concat(out, ignore_index=True)


# ---------------------------------------------------------------------------------------------------------
# Language-model variant applied to the families: 3-way ANOVA with Welch post-hocs
# ---------------------------------------------------------------------------------------------------------


def anova_tables(medians: pd.DataFrame, families: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per analysis (:func:`analyses`): the type II ANOVA of median rank on category x framing x family
    (factors with one level left out) and the Welch post-hocs of family within each category x framing cell.
    Returns ``(anova, posthocs)`` (``anova_lm.csv``, ``anova_posthocs.csv``)."""
    anova_rows, posthoc_rows = [], []
    for key, grp in analyses(medians):
        grp = grp[grp["family"].isin(list(families))]
        factors = [f for f in ("category", "framing", "family") if grp[f].nunique() > 1]
        anova_rows.append(_keyed(anova_3way(grp, factors=factors), key))
        posthoc_rows.append(_keyed(welch_posthocs(grp, group="family", levels=list(families)), key))
    return pd.concat(anova_rows, ignore_index=True), pd.concat(posthoc_rows, ignore_index=True)


# ---------------------------------------------------------------------------------------------------------
# Overviews and per-RM summaries (paper Fig. A1)
# ---------------------------------------------------------------------------------------------------------


def score_overview(scores: pd.DataFrame) -> pd.DataFrame:
    """Per RM (and source): family, corpora, number of prompts, words and scores."""
    return (
        scores.groupby(["family", "model", "source"], observed=True)
        .agg(
            corpora=("corpus", lambda c: ", ".join(sorted(c.unique()))),
            prompts=("prompt_id", "nunique"),
            words=("word", "nunique"),
            scores=("score", "size"),
        )
        .reset_index()
    )


def three_way_table(mixed: pd.DataFrame) -> pd.DataFrame:
    """The family x category x framing rows of ``mixed_model.csv`` (one per analysis and term)."""
    keys = ["corpus", "analysis", "subcategory"]
    parts = [top_family_terms(grp) for _, grp in mixed.groupby(keys, dropna=False, sort=True)]
    return pd.concat(parts)[[*keys, "term", "coef", "se", "z", "p", "ci_low", "ci_high"]].reset_index(
        drop=True
    )


def per_rm_summary(medians: pd.DataFrame) -> pd.DataFrame:
    """Per RM and panel: mean median rank over prompts, its SD and SE, and the number of prompts."""
    keys = ["corpus", "analysis", "family", "rm", "category", "subcategory", "framing"]
    g = medians.groupby(keys, dropna=False, observed=True)["median_rank"]
    out = g.agg(mean="mean", sd="std", n="size").reset_index()
    out["se"] = out["sd"] / np.sqrt(out["n"])
    return out
