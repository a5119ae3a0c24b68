"""Lineage of the reward models: does the family difference hold within the recipe an RM descends from?

The ten published RMs are not ten independent draws of "a gemma RM" and "a llama RM". Six descend from
Skywork's reward-model recipe (Skywork-Reward-Gemma-2-27B and its v0.2, and QRM-Gemma-2-27B on a Skywork Gemma
RM: three gemma; Skywork-Reward-Llama-3.1-8B-v0.2, and QRM-Llama3.1-8B and URM-LLaMa-3.1-8B on a Skywork Llama
RM: three llama), three are Ray2333's GRM models (one gemma, two llama) and one is RLHFlow's ArmoRM (llama).
The lineage of each is data with its sources (``config/published_rms.yaml``;
:func:`rmvalues.data.scores.published_rm_table`). A family difference of the per-RM contrast ``D``
(:mod:`.rm_level`) over all RMs mixes the family with the lineage mix of each family; compared within
lineages, the family difference is the one left when the recipe is held fixed.

**RM labels** (:func:`model_of_rm`). In the contrasts table ``rm`` is the hub id of the model when one source of
scores is analysed, and ``"<model> [published]"`` / ``"<model> [live]"`` when published and live scores are
analysed together (:func:`rmvalues.stats.rank_scores`). The source suffix is removed and the model id looked
up in the lineage table; a live-scored copy of a published RM is the same checkpoint and gets its lineage. An
RM the table does not hold (an RM trained by this project) or whose lineage is null gets the lineage
``"unknown: <rm>"``: a stratum of its own, counted (``n_unknown_lineage``), which informs neither the
stratified test nor the family coefficient of the model.

* :func:`lineage_table`: the lineage of each RM of a published-RM table (:data:`LINEAGE_COLUMNS`).
* :func:`within_lineage_table`: per statistic and lineage, the RMs of each family, their mean ``D`` and the
  difference ``b - a`` (NaN where a lineage lacks a family): the within-developer comparison.
* :func:`lineage_adjusted`: per statistic, the unadjusted difference, the exact permutation test within
  lineages (:func:`rmvalues.stats.stratified_split_test`), an OLS ``D ~ family + lineage`` and whether the
  family difference survives the adjustment (:data:`SURVIVAL`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats as sps

from ...data.scores import SOURCES
from ...stats import stratified_split_test
from .analysis import ALPHA

__all__ = [
    "ADJUSTED_COLUMNS",
    "LINEAGE_COLUMNS",
    "SURVIVAL",
    "UNKNOWN_LINEAGE",
    "WITHIN_COLUMNS",
    "lineage_adjusted",
    "lineage_of_rms",
    "lineage_table",
    "model_of_rm",
    "within_lineage_table",
]

#: Columns of :func:`lineage_table` (one row per RM).
LINEAGE_COLUMNS = ["rm", "family", "developer", "lineage", "base_model", "preference_data"]
#: The lineage of an RM without lineage data is this prefix followed by its label (a stratum of its own).
UNKNOWN_LINEAGE = "unknown: "
#: The statistic's key in the contrasts table (:data:`rmvalues.stages.rm_statistics.rm_level.INTERACTION_COLUMNS`).
KEYS = ["corpus", "analysis", "subcategory", "statistic"]
#: Columns of :func:`within_lineage_table` (one row per statistic and lineage).
WITHIN_COLUMNS = [
    *KEYS,
    "lineage",
    "family_a",
    "family_b",
    "n_rms_a",
    "n_rms_b",
    "mean_a",
    "mean_b",
    "difference",
    "rms",
]
#: Columns of :func:`lineage_adjusted` (one row per statistic).
ADJUSTED_COLUMNS = [
    *KEYS,
    "family_a",
    "family_b",
    "n_rms_a",
    "n_rms_b",
    "n_lineages",
    "n_informative_lineages",
    "n_unknown_lineage",
    "difference",
    "stratified_difference",
    "p_stratified",
    "n_relabellings",
    "p_min_stratified",
    "exact",
    "n_tests",
    "p_stratified_corrected",
    "p_min_corrected",
    "ols_coef",
    "ols_se",
    "ols_df",
    "ols_t",
    "ols_p",
    "ols_ci_low",
    "ols_ci_high",
    "lineage_f_p",
    "ols_note",
    "survives_lineage",
]
#: The values of ``survives_lineage`` (see :func:`lineage_adjusted`).
SURVIVAL = (
    "same sign, significant",
    "same sign, not significant",
    "same sign, cannot reach alpha",
    "sign flips",
    "cannot be tested",
)

_SOURCE_SUFFIX = re.compile(r"^(?P<model>.*) \[(?P<source>" + "|".join(map(re.escape, SOURCES)) + r")\]$")


def model_of_rm(rm: str) -> str:
    """The hub id of the model behind an RM label of the contrasts table: ``rm`` itself, or without its
    `` [published]`` / `` [live]`` suffix when published and live scores were analysed together."""
    match = _SOURCE_SUFFIX.match(rm)
    return match.group("model") if match else rm


def lineage_table(rm_table: pd.DataFrame) -> pd.DataFrame:
    """One row per RM of a published-RM table (:func:`rmvalues.data.scores.published_rm_table`):
    :data:`LINEAGE_COLUMNS`, with ``rm`` the hub id (``model``)."""
    missing = [c for c in ("model", *LINEAGE_COLUMNS[1:]) if c not in rm_table.columns]
    if missing:
        raise ValueError(
            f"the RM table lacks column(s) {', '.join(missing)}; pass rmvalues.data.scores.published_rm_table()"
        )
    out = rm_table.rename(columns={"model": "rm"})[LINEAGE_COLUMNS]
    if out["rm"].duplicated().any():
        raise ValueError(f"the RM table lists {sorted(set(out.loc[out['rm'].duplicated(), 'rm']))} twice")
    return out.reset_index(drop=True)


def lineage_of_rms(rms: Iterable[str], lineages: pd.DataFrame) -> pd.DataFrame:
    """:data:`LINEAGE_COLUMNS` plus ``model`` and ``known`` for each RM label of ``rms`` (contrasts' ``rm``),
    looked up by :func:`model_of_rm` in ``lineages`` (:func:`lineage_table`); an RM the table lacks, or whose
    lineage is null, gets ``"unknown: <rm>"`` and ``known = False``."""
    missing = [c for c in LINEAGE_COLUMNS if c not in lineages.columns]
    if missing:
        raise ValueError(
            f"the lineage table lacks column(s) {', '.join(missing)}; build it with lineage_table()"
        )
    by_rm = lineages.set_index("rm")
    rows = []
    for rm in dict.fromkeys(rms):
        model = rm if rm in by_rm.index else model_of_rm(rm)
        known = model in by_rm.index and pd.notna(by_rm.loc[model, "lineage"])
        row = by_rm.loc[model].to_dict() if model in by_rm.index else dict.fromkeys(LINEAGE_COLUMNS[1:])
        row["lineage"] = row["lineage"] if known else f"{UNKNOWN_LINEAGE}{rm}"
        rows.append({"rm": rm, **row, "model": model, "known": bool(known)})
    return pd.DataFrame(rows, columns=[*LINEAGE_COLUMNS, "model", "known"])


def _with_lineage(contrasts: pd.DataFrame, lineages: pd.DataFrame, families: Sequence[str]) -> pd.DataFrame:
    """The contrasts of the two families with each RM's ``lineage`` and ``known``; an RM whose family in the
    lineage table differs from its family in the contrasts is an error."""
    need = [*KEYS, "rm", "family", "D"]
    missing = [c for c in need if c not in contrasts.columns]
    if missing:
        raise ValueError(
            f"the contrasts table lacks column(s) {', '.join(missing)}; pass rm_level.rm_contrasts' output"
        )
    if len(families) != 2 or families[0] == families[1]:
        raise ValueError(f"families={list(families)!r}: give two different families [a, b]")
    df = contrasts[contrasts["family"].isin(list(families))].copy()
    info = lineage_of_rms(df["rm"], lineages)
    clash = info[info["known"]].merge(df[["rm", "family"]].drop_duplicates(), on="rm", suffixes=("", "_c"))
    clash = clash[clash["family"] != clash["family_c"]]
    if not clash.empty:
        bad = [
            f"{r.rm} ({r.family_c} in the contrasts, {r.family} in the lineage table)"
            for r in clash.itertuples()
        ]
        raise ValueError(
            f"family mismatch for {', '.join(bad)}; fix config/published_rms.yaml or the registry"
        )
    return df.merge(info[["rm", "lineage", "known"]], on="rm", how="left")


def _groups(df: pd.DataFrame, keys: list[str]) -> Iterable[tuple[tuple[Any, ...], pd.DataFrame]]:
    """``df`` grouped by ``keys`` (missing subcategories kept as their own group), sorted."""
    for key, grp in df.groupby(keys, sort=True, dropna=False):
        yield (key if isinstance(key, tuple) else (key,)), grp


def within_lineage_table(
    contrasts: pd.DataFrame, lineages: pd.DataFrame, families: Sequence[str]
) -> pd.DataFrame:
    """Per statistic (``corpus, analysis, subcategory, statistic``) and lineage: the number of RMs of each
    family, their mean ``D`` and the difference ``mean_b - mean_a`` (NaN when the lineage lacks a family):
    :data:`WITHIN_COLUMNS` (``rms``: the lineage's RMs, comma-separated)."""
    fam_a, fam_b = families[0], families[1]
    df = _with_lineage(contrasts, lineages, families)
    rows = []
    for key, grp in _groups(df, [*KEYS, "lineage"]):
        a = grp.loc[grp["family"] == fam_a, "D"].to_numpy(float)
        b = grp.loc[grp["family"] == fam_b, "D"].to_numpy(float)
        mean_a = float(a.mean()) if a.size else np.nan
        mean_b = float(b.mean()) if b.size else np.nan
        rows.append(
            {
                **dict(zip([*KEYS, "lineage"], key, strict=True)),
                "family_a": fam_a,
                "family_b": fam_b,
                "n_rms_a": int(a.size),
                "n_rms_b": int(b.size),
                "mean_a": mean_a,
                "mean_b": mean_b,
                "difference": mean_b - mean_a,
                "rms": ", ".join(sorted(grp["rm"])),
            }
        )
    return pd.DataFrame(rows, columns=WITHIN_COLUMNS)


def _ols_nan(note: str, f_p: float = np.nan) -> dict[str, Any]:
    keys = ("ols_coef", "ols_se", "ols_df", "ols_t", "ols_p", "ols_ci_low", "ols_ci_high")
    return {**dict.fromkeys(keys, np.nan), "lineage_f_p": f_p, "ols_note": note}


def _ols_family(grp: pd.DataFrame, families: Sequence[str], alpha: float) -> dict[str, Any]:
    """OLS ``D ~ C(family) + C(lineage)`` (treatment coding: family ``a`` and the first lineage in sorted
    order are the references): the family-``b`` coefficient with its SE, t on the residual df, p and
    ``1 - alpha`` interval, and the F-test p of the lineage terms (against ``D ~ C(family)``)."""
    y = grp["D"].to_numpy(float)
    fam = (grp["family"] == families[1]).to_numpy(float)
    lineage_dummies = pd.get_dummies(grp["lineage"], drop_first=True, dtype=float)
    x = np.column_stack([np.ones(y.size), fam, lineage_dummies.to_numpy()])
    df_resid = y.size - x.shape[1]
    if np.linalg.matrix_rank(x) < x.shape[1]:
        return _ols_nan(
            "singular design: family is not separable from lineage (no lineage holds both families)"
        )
    if df_resid < 1:
        return _ols_nan(f"residual df = {df_resid} < 1: as many coefficients as RMs")
    fit = sm.OLS(y, x).fit()
    low, high = fit.conf_int(alpha)[1]
    q = lineage_dummies.shape[1]
    f_p, f_note = np.nan, "one lineage: no lineage F-test"
    if q:
        rss_full = float(fit.ssr)
        rss_reduced = float(sm.OLS(y, x[:, :2]).fit().ssr)
        if rss_full <= 1e-12 * max(1.0, rss_reduced):
            f_note = "the model fits exactly: no lineage F-test"
        else:
            f_stat = ((rss_reduced - rss_full) / q) / (rss_full / df_resid)
            f_p, f_note = float(sps.f.sf(f_stat, q, df_resid)), f"lineage F on ({q}, {df_resid}) df"
    return {
        "ols_coef": float(fit.params[1]),
        "ols_se": float(fit.bse[1]),
        "ols_df": int(df_resid),
        "ols_t": float(fit.tvalues[1]),
        "ols_p": float(fit.pvalues[1]),
        "ols_ci_low": float(low),
        "ols_ci_high": float(high),
        "lineage_f_p": f_p,
        "ols_note": f"t on {df_resid} residual df; {f_note}",
    }


def _survival(row: dict[str, Any], alpha: float) -> str:
    """One of :data:`SURVIVAL` (the rule is in :func:`lineage_adjusted`)."""
    if row["n_informative_lineages"] < 1 or not row["ols_df"] >= 1:
        return SURVIVAL[4]
    if np.sign(row["stratified_difference"]) != np.sign(row["difference"]):
        return SURVIVAL[3]
    if row["p_min_corrected"] > alpha:
        return SURVIVAL[2]
    return SURVIVAL[0] if row["p_stratified_corrected"] <= alpha else SURVIVAL[1]


def lineage_adjusted(
    contrasts: pd.DataFrame, lineages: pd.DataFrame, families: Sequence[str], alpha: float = ALPHA
) -> pd.DataFrame:
    """The family difference of mean ``D`` per statistic, unadjusted and adjusted for lineage:
    :data:`ADJUSTED_COLUMNS`.

    * ``difference``: ``mean_b - mean_a`` over all RMs of the two families (as :func:`.rm_level.rm_level_tests`).
    * The exact permutation test within lineages (:func:`rmvalues.stats.stratified_split_test`): family labels
      permuted only within each lineage; ``stratified_difference`` (its statistic: the within-lineage
      differences weighted by the harmonic-mean lineage size), ``p_stratified``, ``n_relabellings``,
      ``p_min_stratified`` (the smallest p it can give), ``exact``, ``n_lineages`` and
      ``n_informative_lineages`` (lineages holding both families; the others carry no information).
      ``p_stratified_corrected`` and ``p_min_corrected``: Bonferroni over the ``n_tests`` statistics of one
      (corpus, analysis, subcategory), as in :func:`.rm_level.rm_level_tests`.
    * OLS ``D ~ C(family) + C(lineage)`` over the RMs: ``ols_coef`` (family ``b`` minus ``a`` at fixed
      lineage), ``ols_se``, ``ols_t`` on ``ols_df`` residual degrees of freedom (RMs minus coefficients),
      ``ols_p``, the ``1 - alpha`` interval, and ``lineage_f_p`` (F-test of the lineage terms against
      ``D ~ C(family)``); NaN with ``ols_note`` saying why when the design is singular (no lineage holds
      both families) or the residual df is below 1. Each RM of unknown lineage is its own lineage. With
      lineage as fixed effects, ``ols_coef`` equals ``stratified_difference`` (the harmonic-mean weights are
      the OLS weights); the two differ in their reference distribution (t on ``ols_df`` against exact
      relabellings).

    ``survives_lineage`` (:data:`SURVIVAL`), in this order: ``"cannot be tested"`` when no lineage holds both
    families or the OLS residual df is below 1 (or the design is singular); ``"sign flips"`` when the
    stratified difference and the unadjusted difference differ in sign (zero counts as a sign);
    ``"same sign, cannot reach alpha"`` when the corrected smallest attainable p of the stratified test
    exceeds ``alpha`` (not significant says nothing then); else ``"same sign, significant"`` or ``"same sign,
    not significant"`` by the corrected stratified p against ``alpha``.
    """
    fam_a, fam_b = families[0], families[1]
    df = _with_lineage(contrasts, lineages, families)
    rows = []
    for key, grp in _groups(df, KEYS):
        grp = grp.sort_values("rm")
        test = stratified_split_test(grp["D"], grp["family"], grp["lineage"], fam_b)
        rows.append(
            {
                **dict(zip(KEYS, key, strict=True)),
                "family_a": fam_a,
                "family_b": fam_b,
                "n_rms_a": test.n_a,
                "n_rms_b": test.n_b,
                "n_lineages": test.n_strata,
                "n_informative_lineages": test.n_informative,
                "n_unknown_lineage": int((~grp["known"]).sum()),
                "difference": test.difference,
                "stratified_difference": test.stratified_difference,
                "p_stratified": test.p,
                "n_relabellings": test.n_relabellings,
                "p_min_stratified": test.p_min,
                "exact": test.exact,
                **_ols_family(grp, families, alpha),
            }
        )
    out = pd.DataFrame(rows)
    if out.empty:
        return pd.DataFrame(columns=ADJUSTED_COLUMNS)
    n_tests = out.groupby(["corpus", "analysis", "subcategory"], dropna=False)["statistic"].transform("size")
    out["n_tests"] = n_tests.astype(int)
    out["p_stratified_corrected"] = np.minimum(1.0, out["p_stratified"] * out["n_tests"])
    out["p_min_corrected"] = np.minimum(1.0, out["p_min_stratified"] * out["n_tests"])
    out["survives_lineage"] = [_survival(r, alpha) for r in out.to_dict("records")]
    return out[ADJUSTED_COLUMNS]
