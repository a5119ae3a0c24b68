"""The chapter's analyses of RM scores: the paper's, and what it lacks.

**The paper's analysis** (Christian et al. 2026, Fig. 1 and its R code), reproduced step by step with the
statistics layer (:mod:`rmvalues.stats`):

1. :func:`rmvalues.stats.rank_scores`: per (model, prompt) rank the corpus words by score, rank 1 = highest
   reward, ties averaged (``rank(-score)`` in R).
2. :func:`rmvalues.stats.all_median_ranks`: per (model, prompt, category) the median rank of the category's
   words. These points, 27 prompts per framing per RM, are the unit of analysis.
3. :func:`mixed_models`: ``median_rank ~ family * category * framing`` with a random intercept per RM
   (:func:`rmvalues.stats.fit_mixed_model`: statsmodels MixedLM, REML; the paper used R's ``nlme::lme``).
   Reference levels as in the paper: the first family of the contrast (``gemma``), the alphabetically first
   category (``Agency``; MFD 2.0: ``Authority``) and the positive framing.
4. :func:`panel_tests`: per (category, framing) panel, a permutation Welch t-test of family (the paper's
   ``MKinfer::perm.t.test``, 9,999 permutations) with Bonferroni over the panels of one corpus, plus Cohen's
   d. MFD 2.0 is analysed pooled over virtue and vice (as the paper did) and split (``analysis = "split"``);
   :func:`split_vs_pooled` says where the split changes the reading.

**What the paper lacks**: effect sizes in rank units with bootstrap confidence intervals, both over the
(RM, prompt) points and over RMs (:func:`panel_tests`); a null distribution of the family x category gap from
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
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ...stats import (
    RANK_KEY,
    anova_3way,
    bootstrap_ci,
    check_families,
    cohens_d,
    correct_pvalues,
    default_formula,
    design,
    fit_mixed_model,
    permutation_welch,
    stable_seed,
    top_family_terms,
    welch_posthocs,
)

#: The RM-level permutation test enumerates every relabelling of the RMs up to this many (else it samples).
MAX_EXACT_SPLITS = 100_000
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

    Point level (the paper's test): the (RM, prompt) median ranks of the two families; permutation Welch
    test (``p_perm``), ``correction`` over the panels of one (corpus, analysis) (``p_corrected``); mean
    difference and Cohen's d with BCa bootstrap CIs. RM level (what 10 RMs can support): the RMs' mean
    median ranks; the exact permutation test over all relabellings of RMs (``p_perm_rm``; up to
    :data:`MAX_EXACT_SPLITS` relabellings, else ``n_permutations`` random ones; with 4 vs 6 RMs there are 210
    and the smallest two-sided p is 2/210) and a percentile bootstrap CI of the difference over RMs.
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
    return out[PANEL_COLUMNS]


def _panel_row(
    panel: pd.DataFrame, fam_a: str, fam_b: str, n_permutations: int, n_bootstrap: int, pseed: list[int]
) -> dict[str, Any]:
    """The point-level and RM-level numbers of one panel (see :func:`panel_tests`)."""
    a = panel.loc[panel["family"] == fam_a, "median_rank"].to_numpy(float)
    b = panel.loc[panel["family"] == fam_b, "median_rank"].to_numpy(float)
    rm_means = panel.groupby(["family", "rm"], observed=True)["median_rank"].mean()
    ra = rm_means.loc[fam_a].to_numpy(float)
    rb = rm_means.loc[fam_b].to_numpy(float)
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


def reading(row: Mapping[str, Any], low: str = "diff_ci_low", high: str = "diff_ci_high") -> str:
    """How a panel reads: which family ranks the words better (lower rank), or ``unclear`` when the CI of
    the difference (``b - a``) includes 0."""
    if row[low] > 0:
        return f"{row['family_a']} ranks higher"
    if row[high] < 0:
        return f"{row['family_b']} ranks higher"
    return "unclear"


def split_vs_pooled(panels: pd.DataFrame) -> pd.DataFrame:
    """Per (corpus, category, framing) with subcategories: the pooled reading against each subcategory's.

    The *reading* of a panel (:func:`reading`) is which family ranks the category's words higher, from the
    bootstrap CI of the difference over (RM, prompt) points, or ``unclear``. ``changes_reading`` is true
    when a subcategory reads differently from the pooled panel.
    """
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
            "reading_pooled": reading(prow),
        }
        changed = []
        for _, srow in grp.iterrows():
            sub = srow["subcategory"]
            row[f"difference_{sub}"] = srow["difference"]
            row[f"d_{sub}"] = srow["d"]
            row[f"reading_{sub}"] = reading(srow)
            if reading(srow) != row["reading_pooled"]:
                changed.append(sub)
        row["changes_reading"] = bool(changed)
        row["changed_in"] = ", ".join(changed)
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------------
# Mixed models, per analysis, and leave-one-RM-out
# ---------------------------------------------------------------------------------------------------------


def analyses(medians: pd.DataFrame) -> Iterator[tuple[tuple[str, str, str | None], pd.DataFrame]]:
    """Yield ``((corpus, analysis, subcategory), rows)``: pooled per corpus, split per subcategory."""
    for (corpus, analysis), grp in medians.groupby(["corpus", "analysis"], sort=True):
        if analysis == "pooled":
            yield (corpus, analysis, None), grp
        else:
            for sub, sgrp in grp.groupby("subcategory", sort=True):
                yield (corpus, analysis, sub), sgrp


def _keyed(table: pd.DataFrame, key: tuple[str, str, str | None]) -> pd.DataFrame:
    """``table`` with the analysis key ``corpus, analysis, subcategory`` as its first columns (in place)."""
    table.insert(0, "corpus", key[0])
    table.insert(1, "analysis", key[1])
    table.insert(2, "subcategory", key[2])
    return table


def mixed_models(
    medians: pd.DataFrame, families: Sequence[str] = ("gemma", "llama")
) -> tuple[pd.DataFrame, dict]:
    """The mixed model of every (corpus, analysis, subcategory) of ``medians``: pooled per corpus, and per
    subcategory for the split analysis. Returns the stacked table (:data:`MIXED_COLUMNS` + fit info) and
    ``{(corpus, analysis, subcategory): MixedFit}``."""
    tables, fits = [], {}
    for key, grp in analyses(medians):
        fit = fit_mixed_model(grp, families)
        fits[key] = fit
        t = _keyed(fit.table.copy(), key)
        t["formula"] = fit.formula
        t["n_obs"] = fit.n_obs
        t["n_rms"] = fit.n_groups
        t["converged"] = fit.converged
        t["optimizer"] = fit.optimizer
        tables.append(t)
    return pd.concat(tables, ignore_index=True), fits


def leave_one_rm_out(medians: pd.DataFrame, families: Sequence[str] = ("gemma", "llama")) -> pd.DataFrame:
    """Refit the mixed model without each RM in turn; one row per left-out RM and top family term.

    Columns: ``corpus, analysis, subcategory, dropped_rm, dropped_family, term, coef, se, z, p, ci_low,
    ci_high, coef_all`` (``coef_all`` = the coefficient with every RM), ``change`` (coef - coef_all).
    Expects the rows of one or more (corpus, analysis, subcategory) analyses.
    """
    rows = []
    for key, grp in analyses(medians):
        grp = grp[grp["family"].isin(list(families))]
        full = top_family_terms(fit_mixed_model(grp, families).table).set_index("term")["coef"]
        rm_family = grp.drop_duplicates("rm").set_index("rm")["family"]
        for rm, fam in rm_family.sort_index().items():
            rest = grp[grp["rm"] != rm]
            if rest.loc[rest["family"] == fam, "rm"].nunique() == 0:
                continue  # dropping the only RM of a family leaves nothing to contrast
            t = top_family_terms(fit_mixed_model(rest, families).table)
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
    out = pd.DataFrame(rows)
    if not out.empty:
        out["change"] = out["coef"] - out["coef_all"]
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
        base = default_formula(design(d, families), "mean_rank")
        for spec, formula in (
            ("without", base),
            ("with", base + " + family * framing * (zipf_z + valence_z)"),
        ):
            fit = fit_mixed_model(d, families, formula=formula)
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
