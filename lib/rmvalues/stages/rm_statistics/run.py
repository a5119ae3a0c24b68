"""Statistics of the value-bias chapter: the paper's analysis of RM scores, and what it lacks.

**The paper's analysis** (Christian et al. 2026, Fig. 1 and its R code), reproduced step by step:

1. :func:`rank_scores`: per (model, prompt) rank the corpus words by score, rank 1 = highest reward, ties
   averaged (``rank(-score)`` in R).
2. :func:`median_ranks`: per (model, prompt, category) the median rank of the category's words. These
   points, 27 prompts per framing per RM, are the unit of analysis.
3. :func:`fit_mixed_model`: ``median_rank ~ family * category * framing`` with a random intercept per RM
   (statsmodels MixedLM, REML; the paper used R's ``nlme::lme``). Reference levels as in the paper: the
   first family of the contrast (``gemma``), the alphabetically first category (``Agency``; MFD 2.0:
   ``Authority``) and the positive framing.
4. :func:`panel_tests`: per (category, framing) panel, a permutation Welch t-test of family (the paper's
   ``MKinfer::perm.t.test``, 9,999 permutations) with Bonferroni over the panels of one corpus, plus Cohen's
   d. MFD 2.0 is analysed pooled over virtue and vice (as the paper did) and split (``analysis = "split"``);
   :func:`split_vs_pooled` says where the split changes the reading.

**What the paper lacks**, each a function here: effect sizes in rank units with bootstrap confidence
intervals, both over the (RM, prompt) points and over RMs (:func:`panel_tests`); a null distribution of the
family x category gap from permuting category labels among the corpus words (:func:`null_baseline`); a
word-level model with word frequency and valence as covariates (:func:`covariate_model`); leave-one-RM-out
refits (:func:`leave_one_rm_out`); per-RM summaries (:func:`per_rm_summary`, paper Fig. A1).

**The language-model variant** used by later chapters: :func:`anova_3way` (type II ANOVA of rank on
category x framing x model) and :func:`welch_posthocs` (Welch t-tests between two models within each
category x framing cell, FDR-corrected), as in the paper's Fig. 2 script.

Sign conventions: ``difference = mean_rank_b - mean_rank_a`` where ``families = [a, b]`` (default gemma,
llama; the paper's ``Llama - Gemma``). Ranks run from 1 (highest reward) upward, so a positive difference
means family ``b`` ranks the category's words *lower* (gives them less reward) than family ``a``.
Cohen's d has the same sign as the difference.

The stage entry point is :func:`run_statistics`; :func:`check_parameters` validates its parameters.
"""

from __future__ import annotations

import math
import re
import time
import warnings
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pingouin as pg
from scipy import stats

from . import paths
from . import scores as scores_mod

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure
    from statsmodels.regression.mixed_linear_model import MixedLMResults

    from .manifest import RunRecord

#: Default parameters of the stage (the notebook's parameters cell).
DEFAULT_PARAMETERS: dict[str, Any] = {
    "scores": "published",
    "corpora": ["big2_nouns", "mfd2"],
    "prompts": [],
    "families": ["gemma", "llama"],
    "n_permutations": 9999,
    "n_bootstrap": 2000,
    "n_null": 1000,
    "seed": 0,
    "corpora_run": "default",
    "scoring_run": "default",
    "output_dir": "results/statistics/default",
    "results_root": "results",
    "run_name": "default",
}
SCORE_CHOICES = ("published", "live", "both")
#: Lower bounds of the resampling counts (below them the p-values and intervals are meaningless).
MIN_PERMUTATIONS = 9
MIN_BOOTSTRAP = 50
MIN_NULL = 10
#: Optimizers tried in turn for the mixed models (statsmodels ``MixedLM.fit(method=...)``): statsmodels'
#: default sequence first (BFGS, then L-BFGS, then CG), then derivative-free ones.
OPTIMIZERS = ("bfgs,lbfgs,cg", "powell", "nm")
#: BLAS threads used while fitting: the design matrices are small, and several BLAS threads competing for
#: two busy cores made one word-level fit take 40x longer (38 s instead of 0.9 s).
BLAS_THREADS = 1
#: The RM-level permutation test enumerates every relabelling of the RMs up to this many (else it samples).
MAX_EXACT_SPLITS = 100_000
#: Colours of the paper's figures.
FAMILY_COLORS = {"gemma": "#DB4437", "llama": "#0064E0"}
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

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# =========================================================================================================
# Parameters
# =========================================================================================================


def check_parameters(params: Mapping[str, Any]) -> None:
    """Validate the stage's parameters before any work; raise ``ValueError`` naming the valid choices."""
    unknown = sorted(set(params) - set(DEFAULT_PARAMETERS))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown}; the statistics stage takes: {', '.join(DEFAULT_PARAMETERS)}"
        )
    p = {**DEFAULT_PARAMETERS, **params}
    errors: list[str] = []

    if p["scores"] not in SCORE_CHOICES:
        errors.append(
            f"scores={p['scores']!r}: choose one of {', '.join(SCORE_CHOICES)} ('published' = the paper's "
            f"released scores of ten RMs; 'live' = the scoring stage's output; 'both')"
        )
    published = list(scores_mod.published_corpora())
    corpora = p["corpora"]
    if not _is_str_list(corpora) or not corpora:
        errors.append(f"corpora={corpora!r}: give a non-empty list of corpus names, e.g. {published}")
    else:
        if len(set(corpora)) != len(corpora):
            errors.append(f"corpora={corpora!r}: a corpus is listed twice")
        if p["scores"] in ("published", "both"):
            bad = [c for c in corpora if c not in published]
            if bad:
                errors.append(f"corpora: no published scores for {bad}; published corpora: {published}")
    prompts = p["prompts"]
    if not _is_str_list(prompts):
        errors.append(f"prompts={prompts!r}: give a list of prompt ids (empty list = all 54)")
    else:
        valid = scores_mod.prompt_ids()
        bad = [x for x in prompts if x not in valid]
        if bad:
            errors.append(
                f"prompts: unknown id(s) {bad}; valid ids are <adjective>_<frame>_<style> with adjective in "
                f"{scores_mod.POSITIVE_ADJECTIVES + scores_mod.NEGATIVE_ADJECTIVES}, frame in "
                f"{scores_mod.FRAMES}, style in {scores_mod.STYLES} (e.g. 'greatest_ever_one'); [] = all 54"
            )
    families = p["families"]
    known = scores_mod.published_families()
    if not _is_str_list(families) or len(families) != 2 or len(set(families)) != 2:
        errors.append(f"families={families!r}: give exactly two different base-model families, e.g. {known}")
    elif p["scores"] == "published":
        bad = [f for f in families if f not in known]
        if bad:
            errors.append(f"families: {bad} not among the published RMs' families {known}")
    for key, low in (
        ("n_permutations", MIN_PERMUTATIONS),
        ("n_bootstrap", MIN_BOOTSTRAP),
        ("n_null", MIN_NULL),
    ):
        if not _is_int(p[key]) or p[key] < low:
            errors.append(f"{key}={p[key]!r}: give an integer >= {low}")
    if not _is_int(p["seed"]) or p["seed"] < 0:
        errors.append(f"seed={p['seed']!r}: give a non-negative integer")
    for key in ("corpora_run", "scoring_run", "run_name"):
        if not isinstance(p[key], str) or not _NAME.match(p[key]):
            errors.append(f"{key}={p[key]!r}: give a run name of letters, digits, '_', '-', '.'")
    for key in ("output_dir", "results_root"):
        if not isinstance(p[key], str) or not p[key].strip():
            errors.append(
                f"{key}={p[key]!r}: give a folder path (relative paths are taken from the project root)"
            )
    if errors:
        raise ValueError("invalid statistics parameters:\n  - " + "\n  - ".join(errors))


def _is_int(x: Any) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


def _is_str_list(x: Any) -> bool:
    return isinstance(x, list | tuple) and all(isinstance(v, str) for v in x)


# =========================================================================================================
# Ranks and median ranks
# =========================================================================================================

_RANK_KEY = ["corpus", "source", "model", "prompt_id"]


_POINT_KEY = ["corpus", "source", "model", "rm", "family", "prompt_id", "framing"]


# =========================================================================================================
# Two-group statistics
# =========================================================================================================


# =========================================================================================================
# Panel tests (paper Fig. 1 stars) with effect sizes
# =========================================================================================================


def _check_families(df: pd.DataFrame, families: Sequence[str]) -> tuple[str, str]:
    if len(families) != 2 or families[0] == families[1]:
        raise ValueError(f"families={list(families)!r}: give two different families")
    present = sorted(df["family"].dropna().unique())
    missing = [f for f in families if f not in present]
    if missing:
        raise ValueError(f"family {missing} has no scores; families present: {present}")
    return families[0], families[1]


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
    fam_a, fam_b = _check_families(medians, families)
    df = medians[medians["family"].isin([fam_a, fam_b])]
    keys = ["corpus", "analysis", "category", "subcategory", "framing"]
    rows: list[dict[str, Any]] = []
    for key, panel in df.groupby(keys, sort=True, dropna=False, observed=True):
        a = panel.loc[panel["family"] == fam_a, "median_rank"].to_numpy(float)
        b = panel.loc[panel["family"] == fam_b, "median_rank"].to_numpy(float)
        rm_means = panel.groupby(["family", "rm"], observed=True)["median_rank"].mean()
        ra = rm_means.loc[fam_a].to_numpy(float)
        rb = rm_means.loc[fam_b].to_numpy(float)
        pseed = _panel_seed(seed, *key)
        t, p = permutation_welch(b, a, n_permutations, pseed)
        row = dict(zip(keys, key, strict=True))
        row.update(
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
        row["diff_ci_low"], row["diff_ci_high"] = bootstrap_ci(
            b, a, "difference", n_bootstrap, pseed[1] % 2**31
        )
        row["d_ci_low"], row["d_ci_high"] = bootstrap_ci(b, a, "cohen", n_bootstrap, pseed[1] % 2**31)
        if ra.size >= 2 and rb.size >= 2:
            n_splits = math.comb(ra.size + rb.size, ra.size)
            n_rm_perm = n_splits if n_splits <= MAX_EXACT_SPLITS else n_permutations
            _, row["p_perm_rm"] = permutation_welch(rb, ra, n_rm_perm, pseed)
            row["diff_rm_ci_low"], row["diff_rm_ci_high"] = bootstrap_ci(
                rb, ra, "difference", n_bootstrap, pseed[1] % 2**31, method="percentile"
            )
        else:
            row["p_perm_rm"] = row["diff_rm_ci_low"] = row["diff_rm_ci_high"] = np.nan
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


# =========================================================================================================
# Mixed model
# =========================================================================================================


def mixed_models(
    medians: pd.DataFrame, families: Sequence[str] = ("gemma", "llama")
) -> tuple[pd.DataFrame, dict]:
    """The mixed model of every (corpus, analysis, subcategory) of ``medians``: pooled per corpus, and per
    subcategory for the split analysis. Returns the stacked table (:data:`MIXED_COLUMNS` + fit info) and
    ``{(corpus, analysis, subcategory): MixedFit}``."""
    tables, fits = [], {}
    for key, grp in _analyses(medians):
        fit = fit_mixed_model(grp, families)
        fits[key] = fit
        t = fit.table.copy()
        t.insert(0, "corpus", key[0])
        t.insert(1, "analysis", key[1])
        t.insert(2, "subcategory", key[2])
        t["formula"] = fit.formula
        t["n_obs"] = fit.n_obs
        t["n_rms"] = fit.n_groups
        t["converged"] = fit.converged
        t["optimizer"] = fit.optimizer
        tables.append(t)
    return pd.concat(tables, ignore_index=True), fits


def _analyses(medians: pd.DataFrame):
    """Yield ``((corpus, analysis, subcategory), rows)``: pooled per corpus, split per subcategory."""
    for (corpus, analysis), grp in medians.groupby(["corpus", "analysis"], sort=True):
        if analysis == "pooled":
            yield (corpus, analysis, None), grp
        else:
            for sub, sgrp in grp.groupby("subcategory", sort=True):
                yield (corpus, analysis, sub), sgrp


def leave_one_rm_out(medians: pd.DataFrame, families: Sequence[str] = ("gemma", "llama")) -> pd.DataFrame:
    """Refit the mixed model without each RM in turn; one row per left-out RM and top family term.

    Columns: ``corpus, analysis, subcategory, dropped_rm, dropped_family, term, coef, se, z, p, ci_low,
    ci_high, coef_all`` (``coef_all`` = the coefficient with every RM), ``change`` (coef - coef_all).
    Expects the rows of one or more (corpus, analysis, subcategory) analyses.
    """
    rows = []
    for key, grp in _analyses(medians):
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


# =========================================================================================================
# Null baseline: permute category labels among the corpus words
# =========================================================================================================


# =========================================================================================================
# Word-level covariate model (frequency and valence)
# =========================================================================================================


def word_mean_ranks(ranked: pd.DataFrame, families: Sequence[str] = ("gemma", "llama")) -> pd.DataFrame:
    """Each word's mean rank over the prompts of one framing, per RM (categories pooled)."""
    df = ranked[ranked["family"].isin(list(families))].drop_duplicates([*_RANK_KEY, "category", "word"])
    return (
        df.groupby(["corpus", "rm", "family", "framing", "category", "word"], observed=True)["rank"]
        .mean()
        .rename("mean_rank")
        .reset_index()
    )


def load_covariates(corpora_run: str = "default", results_root: str | Path | None = None) -> pd.DataFrame:
    """``corpus, word, zipf_frequency, valence`` from the corpora stage (``corpora.parquet``), one row per
    word. Raises ``FileNotFoundError`` saying to run the corpora stage first when it is absent."""
    root = paths.resolve(results_root) if results_root is not None else paths.results_root()
    path = root / "corpora" / corpora_run / "corpora.parquet"
    if not path.is_file():
        raise FileNotFoundError(
            f"no corpora stage output at {path}: run the corpora stage (run {corpora_run!r}) first"
        )
    df = pd.read_parquet(path)
    missing = [c for c in ("corpus", "word", "zipf_frequency", "valence") if c not in df.columns]
    if missing:
        raise ValueError(f"{path} lacks column(s) {missing}")
    return (
        df[["corpus", "word", "zipf_frequency", "valence"]]
        .drop_duplicates(["corpus", "word"])
        .reset_index(drop=True)
    )


COVARIATE_FORMULA = "mean_rank ~ family * category * framing + family * framing * (zipf_z + valence_z)"


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
        d = d.rename(columns={"mean_rank": "mean_rank"})
        base = default_formula(_design(d, families), "mean_rank")
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


# =========================================================================================================
# Language-model variant: 3-way ANOVA with Welch post-hocs
# =========================================================================================================


# =========================================================================================================
# Overviews
# =========================================================================================================


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


# =========================================================================================================
# Per-RM summaries (paper Fig. A1)
# =========================================================================================================


def per_rm_summary(medians: pd.DataFrame) -> pd.DataFrame:
    """Per RM and panel: mean median rank over prompts, its SD and SE, and the number of prompts."""
    keys = ["corpus", "analysis", "family", "rm", "category", "subcategory", "framing"]
    g = medians.groupby(keys, dropna=False, observed=True)["median_rank"]
    out = g.agg(mean="mean", sd="std", n="size").reset_index()
    out["se"] = out["sd"] / np.sqrt(out["n"])
    return out


# =========================================================================================================
# The stage
# =========================================================================================================


@dataclass
class StatisticsResults:
    """Every table the stage produces (see :func:`run_statistics`)."""

    parameters: dict[str, Any]
    scores: pd.DataFrame
    medians: pd.DataFrame
    mixed: pd.DataFrame
    panels: pd.DataFrame
    split: pd.DataFrame
    null_summary: pd.DataFrame
    null_draws: pd.DataFrame
    loo: pd.DataFrame
    per_rm: pd.DataFrame
    anova: pd.DataFrame
    posthocs: pd.DataFrame
    covariates: pd.DataFrame | None
    covariate_note: str
    timings: dict[str, float] = field(default_factory=dict)


def run_statistics(params: Mapping[str, Any], record: RunRecord | None = None) -> StatisticsResults:
    """Run the whole chapter's analysis with ``params`` (see :data:`DEFAULT_PARAMETERS`).

    Writes through ``record`` (if given): ``median_ranks.parquet``, ``mixed_model.csv``,
    ``panel_tests.csv``, ``split_vs_pooled.csv``, ``null_baseline.csv``, ``null_distribution.parquet``,
    ``loo_family_effect.csv``, ``per_rm.csv``, ``anova_lm.csv``, ``anova_posthocs.csv``,
    ``covariate_model.csv`` (when the corpora stage output exists), and records inputs and seeds.
    BLAS runs single-threaded meanwhile (:data:`BLAS_THREADS`).
    """
    from threadpoolctl import threadpool_limits

    check_parameters(dict(params))
    with threadpool_limits(BLAS_THREADS, user_api="blas"):
        return _run_statistics({**DEFAULT_PARAMETERS, **params}, record)


def _run_statistics(p: dict[str, Any], record: RunRecord | None) -> StatisticsResults:
    families = list(p["families"])
    seed = int(p["seed"])
    timings: dict[str, float] = {}

    def step(name: str):
        return _Timer(name, timings, record)

    with step("load_scores"):
        sc = scores_mod.load_scores(
            p["scores"], p["corpora"], p["prompts"] or None, p["scoring_run"], p["results_root"]
        )
        _check_families(sc, families)
    with step("ranks"):
        ranked = rank_scores(sc)
        medians = all_median_ranks(ranked)
    with step("mixed_model"):
        mixed, _ = mixed_models(medians, families)
    with step("panel_tests"):
        panels = panel_tests(medians, families, p["n_permutations"], p["n_bootstrap"], seed)
        split = split_vs_pooled(panels)
    with step("null_baseline"):
        null_summary, null_draws = null_baseline(ranked, families, p["n_null"], seed)
    with step("leave_one_rm_out"):
        loo = leave_one_rm_out(medians, families)
    with step("anova"):
        anova_rows, posthoc_rows = [], []
        for key, grp in _analyses(medians):
            grp = grp[grp["family"].isin(families)]
            factors = [f for f in ("category", "framing", "family") if grp[f].nunique() > 1]
            a = anova_3way(grp, factors=factors)
            ph = welch_posthocs(grp, group="family", levels=families)
            for t in (a, ph):
                t.insert(0, "corpus", key[0])
                t.insert(1, "analysis", key[1])
                t.insert(2, "subcategory", key[2])
            anova_rows.append(a)
            posthoc_rows.append(ph)
        anova = pd.concat(anova_rows, ignore_index=True)
        posthocs = pd.concat(posthoc_rows, ignore_index=True)
    covariates = None
    with step("covariate_model"):
        try:
            cov = load_covariates(p["corpora_run"], p["results_root"])
        except FileNotFoundError as exc:
            note = f"covariate model skipped: {exc}"
        else:
            normed = cov.dropna(subset=["zipf_frequency", "valence"])
            have = [c for c in p["corpora"] if c in set(normed["corpus"])]
            lacking = [c for c in p["corpora"] if c not in have]
            covariates = covariate_model(ranked[ranked["corpus"].isin(have)], cov, families) if have else None
            note = f"covariate model fitted for {', '.join(have)}" if have else "covariate model skipped"
            if lacking:
                note += (
                    f"; the corpora stage's run {p['corpora_run']!r} has no normed words for {', '.join(lacking)} "
                    f"(run that stage with these corpora to include them)"
                )
    per_rm = per_rm_summary(medians)

    result = StatisticsResults(
        dict(p),
        sc,
        medians,
        mixed,
        panels,
        split,
        null_summary,
        null_draws,
        loo,
        per_rm,
        anova,
        posthocs,
        covariates,
        note,
        timings,
    )
    if record is not None:
        _record(record, result)
    return result


class _Timer:
    def __init__(self, name: str, timings: dict[str, float], record: RunRecord | None) -> None:
        self.name, self.timings, self.record = name, timings, record

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: Any) -> None:
        dt = time.perf_counter() - self.t0
        self.timings[self.name] = round(dt, 3)
        if self.record is not None:
            self.record.timings[self.name] = round(self.record.timings.get(self.name, 0.0) + dt, 3)


def _record(record: RunRecord, res: StatisticsResults) -> None:
    p, sc, medians, mixed, panels = res.parameters, res.scores, res.medians, res.mixed, res.panels
    split, null_summary, null_draws, loo = res.split, res.null_summary, res.null_draws, res.loo
    per_rm, anova, posthocs, covariates, note = (
        res.per_rm,
        res.anova,
        res.posthocs,
        res.covariates,
        res.covariate_note,
    )
    from . import corpora as corpora_mod
    from .data import sha256_file

    if p["scores"] in ("published", "both"):
        for name, sha in scores_mod.published_inputs(p["corpora"]).items():
            record.add_input(name, sha)
    if p["scores"] in ("live", "both"):
        path = scores_mod.live_scores_path(p["scoring_run"], p["results_root"])
        record.add_input(f"scoring/{p['scoring_run']}/scores.parquet", sha256_file(path))
    registered = [c for c in p["corpora"] if c in corpora_mod.list_corpora()]
    for name, sha in corpora_mod.input_checksums(registered).items():
        record.add_input(name, sha)
    cov_path = paths.resolve(p["results_root"]) / "corpora" / p["corpora_run"] / "corpora.parquet"
    if cov_path.is_file():
        record.add_input(f"corpora/{p['corpora_run']}/corpora.parquet", sha256_file(cov_path))
    record.seeds.update(
        {
            "seed": int(p["seed"]),
            "panel_tests": "numpy default_rng([seed, crc32(corpus|analysis|category|subcategory|framing)])",
            "null_baseline": "numpy default_rng(seed)",
        }
    )
    record.extra.update(
        {
            "covariate_model": note,
            "unlabelled_words": sc.attrs.get("unlabelled_words", {}),
            "rms": sorted(sc["model"].unique()),
            "n_scores": len(sc),
        }
    )
    record.write_parquet(medians, "median_ranks.parquet")
    record.write_csv(mixed, "mixed_model.csv")
    record.write_csv(panels, "panel_tests.csv")
    record.write_csv(split, "split_vs_pooled.csv")
    record.write_csv(null_summary, "null_baseline.csv")
    record.write_parquet(null_draws, "null_distribution.parquet")
    record.write_csv(loo, "loo_family_effect.csv")
    record.write_csv(per_rm, "per_rm.csv")
    record.write_csv(anova, "anova_lm.csv")
    record.write_csv(posthocs, "anova_posthocs.csv")
    if covariates is not None:
        record.write_csv(covariates, "covariate_model.csv")


# =========================================================================================================
# Figures
# =========================================================================================================


def _color(family: str) -> str:
    return FAMILY_COLORS.get(family, "#555555")


def _panel_grid(n_rows: int, n_cols: int, width: float = 2.2, height: float = 2.6):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(width * n_cols + 0.8, height * n_rows), squeeze=False, sharey="row"
    )
    return fig, axes


def plot_family_panels(
    medians: pd.DataFrame,
    corpus: str,
    families: Sequence[str] = ("gemma", "llama"),
    analysis: str = "pooled",
    subcategory: str | None = None,
) -> Figure:
    """Paper Fig. 1: per (framing, category) panel, the (RM, prompt) median ranks of each family (violin),
    each RM's mean (faint dots) and the family mean +- SE (black); rank 1 (highest reward) at the top."""
    df = medians[
        (medians["corpus"] == corpus)
        & (medians["analysis"] == analysis)
        & medians["family"].isin(list(families))
    ]
    if subcategory is not None:
        df = df[df["subcategory"] == subcategory]
    if df.empty:
        raise ValueError(f"no median ranks for corpus {corpus!r}, analysis {analysis!r}")
    cats = sorted(df["category"].unique())
    frs = [f for f in scores_mod.FRAMINGS if f in set(df["framing"])]
    fig, axes = _panel_grid(len(frs), len(cats))
    rng = np.random.default_rng(0)
    for i, fr in enumerate(frs):
        for j, cat in enumerate(cats):
            ax = axes[i, j]
            panel = df[(df["framing"] == fr) & (df["category"] == cat)]
            for x, fam in enumerate(families):
                vals = panel.loc[panel["family"] == fam, "median_rank"].to_numpy(float)
                if vals.size > 1:
                    parts = ax.violinplot(vals, positions=[x], widths=0.7, showextrema=False)
                    for body in parts["bodies"]:
                        body.set_facecolor(_color(fam))
                        body.set_alpha(0.25)
                rm_means = panel[panel["family"] == fam].groupby("rm")["median_rank"].mean()
                ax.scatter(
                    x + rng.uniform(-0.12, 0.12, rm_means.size), rm_means, s=14, color=_color(fam), alpha=0.7
                )
                se = vals.std(ddof=1) / np.sqrt(vals.size) if vals.size > 1 else 0.0
                ax.errorbar(x, vals.mean(), yerr=se, fmt="D", color="black", ms=4, capsize=3)
            ax.set_xticks(range(len(families)), list(families))
            ax.set_xlim(-0.6, len(families) - 0.4)
            if i == 0:
                ax.set_title(cat, fontsize=10)
            if j == 0:
                ax.set_ylabel(f"{fr} prompts\nmedian rank (1 = best)")
        axes[i, 0].invert_yaxis()
    fig.suptitle(
        f"{corpus}: median rank by base family" + (f" ({subcategory})" if subcategory else ""), fontsize=11
    )
    fig.tight_layout()
    return fig


def plot_per_rm(per_rm: pd.DataFrame, corpus: str, analysis: str = "pooled") -> Figure:
    """Paper Fig. A1: each RM's mean median rank +- SE over prompts, per (framing, category) panel."""
    df = per_rm[(per_rm["corpus"] == corpus) & (per_rm["analysis"] == analysis)]
    cats = sorted(df["category"].unique())
    frs = [f for f in scores_mod.FRAMINGS if f in set(df["framing"])]
    order = df.drop_duplicates("rm").sort_values(["family", "rm"])[["rm", "family"]]
    labels = [r.split("/")[-1] for r in order["rm"]]
    fig, axes = _panel_grid(len(frs), len(cats), width=2.6, height=3.0)
    for i, fr in enumerate(frs):
        for j, cat in enumerate(cats):
            ax = axes[i, j]
            panel = df[(df["framing"] == fr) & (df["category"] == cat)].set_index("rm")
            for x, (rm, fam) in enumerate(zip(order["rm"], order["family"], strict=True)):
                if rm in panel.index:
                    ax.errorbar(
                        x,
                        panel.loc[rm, "mean"],
                        yerr=panel.loc[rm, "se"],
                        fmt="o",
                        color=_color(fam),
                        ms=4,
                        capsize=2,
                    )
            ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
            if i == 0:
                ax.set_title(cat, fontsize=10)
            if j == 0:
                ax.set_ylabel(f"{fr} prompts\nmean median rank")
        axes[i, 0].invert_yaxis()
    fig.suptitle(f"{corpus}: each reward model (mean +- SE over prompts)", fontsize=11)
    fig.tight_layout()
    return fig


def plot_split(panels: pd.DataFrame, corpus: str = "mfd2") -> Figure:
    """The family difference (b - a, rank units, 95% bootstrap CI) per foundation and framing: pooled over
    virtue and vice, and each apart."""
    import matplotlib.pyplot as plt

    df = panels[panels["corpus"] == corpus].copy()
    if df.empty or not (df["analysis"] == "split").any():
        raise ValueError(f"no split analysis for corpus {corpus!r}")
    df["version"] = df["subcategory"].fillna("pooled").astype(object)
    versions = ["pooled", *sorted(df.loc[df["analysis"] == "split", "subcategory"].unique(), reverse=True)]
    cats = sorted(df["category"].unique())
    frs = [f for f in scores_mod.FRAMINGS if f in set(df["framing"])]
    fig, axes = plt.subplots(
        1,
        len(frs),
        figsize=(4.2 * len(frs), 0.55 * len(cats) * len(versions) / 2 + 1.5),
        sharex=True,
        squeeze=False,
    )
    marker = {"pooled": "D", "virtue": "o", "vice": "s"}
    colors = {"pooled": "black", "virtue": "#2a9d8f", "vice": "#e76f51"}
    for j, fr in enumerate(frs):
        ax = axes[0, j]
        for c, cat in enumerate(cats):
            for v, ver in enumerate(versions):
                row = df[(df["framing"] == fr) & (df["category"] == cat) & (df["version"] == ver)]
                if row.empty:
                    continue
                r = row.iloc[0]
                y = c + (v - (len(versions) - 1) / 2) * 0.22
                ax.errorbar(
                    r["difference"],
                    y,
                    xerr=[[r["difference"] - r["diff_ci_low"]], [r["diff_ci_high"] - r["difference"]]],
                    fmt=marker.get(ver, "o"),
                    color=colors.get(ver, "grey"),
                    ms=4,
                    capsize=2,
                    label=ver if c == 0 else None,
                )
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_yticks(range(len(cats)), cats)
        ax.invert_yaxis()
        ax.set_title(f"{fr} prompts", fontsize=10)
        fa, fb = df["family_a"].iloc[0], df["family_b"].iloc[0]
        ax.set_xlabel(f"{fb} - {fa} mean median rank\n(> 0: {fa} ranks the words higher)")
    axes[0, -1].legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def plot_null(null_draws: pd.DataFrame, null_summary: pd.DataFrame, statistic: str = "range") -> Figure:
    """The null distributions of a gap statistic (histograms; grey: labels permuted among all words, blue:
    within subcategory) with the observed value (red line), one panel per corpus and framing."""
    import matplotlib.pyplot as plt

    d = null_draws[null_draws["statistic"] == statistic]
    s = null_summary[null_summary["statistic"] == statistic]
    keys = s[["corpus", "framing", "category"]].drop_duplicates().itertuples(index=False, name=None)
    keys = list(keys)
    fig, axes = plt.subplots(1, len(keys), figsize=(3.1 * len(keys), 2.7), squeeze=False)
    colors = {"all words": "#999999", "within subcategory": "#7fb3d5"}
    for ax, (corpus, framing, category) in zip(axes[0], keys, strict=True):
        cell = (d["corpus"] == corpus) & (d["framing"] == framing) & (d["category"] == category)
        for null_name, vals in d[cell].groupby("null", sort=True)["value"]:
            ax.hist(
                vals, bins=40, color=colors.get(null_name, "#bbbbbb"), alpha=0.75, label=f"null: {null_name}"
            )
        srow = s[(s["corpus"] == corpus) & (s["framing"] == framing) & (s["category"] == category)]
        ax.axvline(srow["observed"].iloc[0], color="#c0392b", lw=2, label="observed")
        ax.set_title(f"{corpus}, {framing} prompts", fontsize=9)
        ax.set_xlabel(f"{statistic} of family gaps (ranks)")
    axes[0, 0].set_ylabel("permutations")
    axes[0, -1].legend(fontsize=7)
    fig.tight_layout()
    return fig


# =========================================================================================================
# Sentences for the chapter (computed from the numbers, so they stay true when parameters change)
# =========================================================================================================


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
    """The family x category x framing terms without and with the covariates."""
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
