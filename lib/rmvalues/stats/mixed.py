"""Linear mixed models of median ranks (statsmodels ``MixedLM``), fitted robustly, with an explicit coding.

* Coding (:func:`treatment_levels`, :func:`design`): treatment contrasts, every factor's levels in R's
  default (alphabetical) order, the first level the reference, unless a level is put first explicitly (as
  R's ``factor(x, levels = ...)``); :attr:`MixedFit.levels` records the coding a model was fitted with.
* :func:`fit_mixed_model` fits ``median_rank ~ family * category * framing`` (or any formula) with a random
  intercept per RM (or given random-effect formulas), REML by default; gradient optimizers first,
  derivative-free ones when the RM variance sits on the boundary (:data:`OPTIMIZERS`); BLAS single-threaded
  while fitting (:data:`BLAS_THREADS`).
* :func:`fit_random_slopes`: the same fixed effects with random slopes of the within-RM factors per RM, the
  richest covariance structure that can be fitted (:data:`SLOPE_STRUCTURES`), every attempt reported.
* :func:`cell_contrast`: a linear contrast of the model's cell means (estimate, SE, Wald and t tests).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import stats

from .ranks import FRAMINGS
from .twogroup import check_families

if TYPE_CHECKING:  # pragma: no cover
    from statsmodels.regression.mixed_linear_model import MixedLMResults

__all__ = [
    "BLAS_THREADS",
    "FACTORS",
    "FIT_OPTIONS",
    "FRAMINGS",
    "OPTIMIZERS",
    "SLOPE_STRUCTURES",
    "TIGHT_FIT",
    "MixedFit",
    "cell_contrast",
    "containment_df",
    "default_formula",
    "design",
    "fit_mixed_model",
    "fit_random_slopes",
    "fit_with_fallback",
    "top_family_terms",
    "treatment_levels",
]

#: The factors of the paper's model, in the formula's order.
FACTORS: tuple[str, ...] = ("family", "category", "framing")
#: Optimizers tried in turn for the mixed models (statsmodels ``MixedLM.fit(method=...)``): statsmodels'
#: default sequence first (BFGS, then L-BFGS, then CG), then derivative-free ones.
OPTIMIZERS = ("bfgs,lbfgs,cg", "powell", "nm")
#: BLAS threads used while fitting: the design matrices are small, and several BLAS threads competing for
#: two busy cores made one word-level fit take 40x longer (38 s instead of 0.9 s).
BLAS_THREADS = 1
#: Random-slope structures of :func:`fit_random_slopes`, richest first: ``unstructured`` (``re_formula`` =
#: the within factors' full interaction, every covariance free) and ``variance components`` (a random
#: intercept and one independent random effect per RM and level of every within term, one variance per
#: term: lme4's ``(1|rm) + (1|rm:category) + (1|rm:framing) + (1|rm:category:framing)``).
SLOPE_STRUCTURES = ("unstructured", "variance components")
#: The optimizer options ``MixedLM.fit`` accepts (``fit_options`` of :func:`fit_mixed_model`).
FIT_OPTIONS = ("gtol", "maxiter", "eps", "maxcor", "ftol", "tol", "disp", "maxls")
#: A tight fit (``fit_options`` of :func:`fit_mixed_model`) for cross-checks against R: BFGS's gradient
#: tolerance from statsmodels' 1e-5 down to 1e-10. With the default the RM variance of the paper's model
#: differs from nlme's by about 1e-4 (relative; coefficients of a balanced design agree anyway), with this
#: by about 1e-10.
TIGHT_FIT: Mapping[str, Any] = MappingProxyType({"gtol": 1e-10})


@dataclass
class MixedFit:
    """A fitted mixed model: the statsmodels result, its fixed-effect table and how it was fitted.

    ``converged``: the optimizer converged (statsmodels' flag) and every fixed effect has a finite SE;
    ``hessian_pd``: the Hessian at the estimate is positive definite (when not, typically a variance on the
    boundary, the SEs are conditional on the variance estimates); ``boundary``: some variance is
    estimated at (numerically) zero.
    """

    result: MixedLMResults
    table: pd.DataFrame
    formula: str
    n_obs: int
    n_groups: int
    converged: bool
    optimizer: str = "bfgs,lbfgs,cg"
    levels: dict[str, list[str]] = field(default_factory=dict)
    structure: str = "random intercept"
    hessian_pd: bool = True
    boundary: bool = False
    messages: list[str] = field(default_factory=list)

    @property
    def reference(self) -> dict[str, str]:
        """The reference level of each coded factor (its first level)."""
        return {f: lv[0] for f, lv in self.levels.items() if lv}


def treatment_levels(
    df: pd.DataFrame, factors: Sequence[str] = FACTORS, first: Mapping[str, str] | None = None
) -> dict[str, list[str]]:
    """The levels of each factor in ``df`` in R's default order (sorted), the first being the reference of
    treatment coding; ``first`` puts a given level first for some factors (R's ``factor(x, levels = ...)``).
    A level in ``first`` that the data lack is ignored."""
    out = {}
    for f in factors:
        if f not in df.columns:
            continue
        levels = sorted(str(v) for v in df[f].dropna().unique())
        ref = (first or {}).get(f)
        if ref is not None and ref in levels:
            levels = [ref] + [v for v in levels if v != ref]
        out[f] = levels
    return out


def design(
    df: pd.DataFrame, families: Sequence[str], levels: Mapping[str, Sequence[str]] | None = None
) -> pd.DataFrame:
    """The rows of ``families`` with ``family``, ``category`` and ``framing`` coded as categoricals: in the
    order of ``levels`` where given (levels the rows lack are dropped), else R's default (sorted), so the
    reference levels never depend on the order of ``families``."""
    out = df[df["family"].isin(list(families))].copy()
    default = treatment_levels(out)
    for f in FACTORS:
        if f not in out.columns:
            continue
        present = set(out[f].astype(object).dropna().astype(str))
        order = [str(v) for v in (levels or {}).get(f, default[f]) if str(v) in present]
        order += [v for v in default[f] if v not in order]
        out[f] = pd.Categorical(out[f].astype(object).astype(str), categories=order)
    out["rm"] = out["rm"].astype(object)
    return out


def default_formula(df: pd.DataFrame, response: str = "median_rank") -> str:
    """``<response> ~ family * category * framing``, leaving out factors with a single level."""
    factors = [f for f in FACTORS if df[f].nunique() > 1]
    return f"{response} ~ " + (" * ".join(factors) if factors else "1")


def fit_mixed_model(
    medians: pd.DataFrame,
    families: Sequence[str] = ("gemma", "llama"),
    formula: str | None = None,
    reml: bool = True,
    optimizers: Sequence[str] = OPTIMIZERS,
    levels: Mapping[str, Sequence[str]] | None = None,
    re_formula: str | None = None,
    vc_formula: Mapping[str, str] | None = None,
    structure: str = "random intercept",
    fit_options: Mapping[str, Any] | None = None,
) -> MixedFit:
    """Linear mixed model, by default with a random intercept per RM (statsmodels ``MixedLM``, REML).

    Default formula :func:`default_formula` (the paper's ``median_rank ~ family * category * framing``),
    coded by :func:`design` (``levels``: explicit level orders; default R's alphabetical order). The table
    has one row per fixed-effect term: ``term, coef, se, z, p, ci_low, ci_high`` (Wald, 95%).
    ``fit_options``: options of the optimizers (:func:`fit_with_fallback`), e.g. :data:`TIGHT_FIT`.
    """
    import statsmodels.formula.api as smf

    check_families(medians, families)
    df = design(medians, families, levels)
    formula = formula or default_formula(df)
    model = smf.mixedlm(formula, df, groups=df["rm"], re_formula=re_formula, vc_formula=vc_formula)
    result, caught, optimizer = fit_with_fallback(model, reml, optimizers, fit_options)
    messages = sorted({str(w.message) for w in caught})
    table = _fixed_effects(result)
    finite = bool(table["se"].notna().all() and np.isfinite(table["se"]).all())
    variances = np.r_[np.diag(np.atleast_2d(result.cov_re)), np.atleast_1d(result.vcomp)]
    boundary = any("boundary" in m for m in messages) or bool(
        variances.size and np.nanmin(variances) < 1e-6 * max(float(result.scale), 1e-12)
    )
    return MixedFit(
        result=result,
        table=table,
        formula=formula,
        n_obs=int(result.nobs),
        n_groups=int(df["rm"].nunique()),
        converged=bool(getattr(result, "converged", True)) and finite,
        optimizer=optimizer,
        levels={f: list(df[f].cat.categories) for f in FACTORS if f in df.columns},
        structure=structure,
        hessian_pd=not any("Hessian" in m for m in messages),
        boundary=boundary,
        messages=messages,
    )


def _fixed_effects(result: Any) -> pd.DataFrame:
    """``term, coef, se, z, p, ci_low, ci_high`` of a fitted MixedLM (NaN SEs of a degenerate fit kept)."""
    names = list(result.fe_params.index)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ci = result.conf_int().loc[names]
        return pd.DataFrame(
            {
                "term": names,
                "coef": result.fe_params.to_numpy(),
                "se": result.bse_fe.loc[names].to_numpy(),
                "z": result.tvalues.loc[names].to_numpy(),
                "p": result.pvalues.loc[names].to_numpy(),
                "ci_low": ci.iloc[:, 0].to_numpy(),
                "ci_high": ci.iloc[:, 1].to_numpy(),
            }
        )


def fit_with_fallback(
    model: Any,
    reml: bool,
    optimizers: Sequence[str] = OPTIMIZERS,
    fit_options: Mapping[str, Any] | None = None,
) -> tuple[Any, list[warnings.WarningMessage], str]:
    """Fit ``model`` with the first of ``optimizers`` that works: ``(result, warnings, optimizer)``.
    ``fit_options`` go to ``MixedLM.fit`` (:data:`FIT_OPTIONS`, e.g. :data:`TIGHT_FIT`); another option is
    a ``ValueError``.

    statsmodels' gradient optimizers fail with a singular matrix when the RM variance sits on the boundary
    (0), as with very few prompts; derivative-free optimizers then still find the REML estimate.
    """
    from threadpoolctl import threadpool_limits

    unknown = sorted(set(fit_options or {}) - set(FIT_OPTIONS))
    if unknown:
        raise ValueError(
            f"fit_options {unknown} are not options of MixedLM.fit: use only {list(FIT_OPTIONS)}"
        )
    for optimizer in optimizers:
        with warnings.catch_warnings(record=True) as caught, threadpool_limits(BLAS_THREADS, user_api="blas"):
            warnings.simplefilter("always")
            try:
                result = model.fit(reml=reml, method=optimizer.split(","), **dict(fit_options or {}))
            except np.linalg.LinAlgError:
                continue
        return result, list(caught), optimizer
    raise RuntimeError(f"mixed model {model.formula!r} could not be fitted with any of {list(optimizers)}")


def _slope_specs(df: pd.DataFrame, within: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The random-effect arguments of each structure of :data:`SLOPE_STRUCTURES` for ``within``."""
    terms = [":".join(c) for k in range(1, len(within) + 1) for c in combinations(within, k)]
    vc = {t: "0 + " + ":".join(f"C({f})" for f in t.split(":")) for t in terms}
    q = math.prod(df[f].nunique() for f in within)
    return {
        "unstructured": {"re_formula": "~" + "*".join(within), "n_cov": q * (q + 1) // 2},
        "variance components": {"re_formula": "1", "vc_formula": vc, "n_cov": 1 + len(vc)},
    }


def fit_random_slopes(
    medians: pd.DataFrame,
    families: Sequence[str] = ("gemma", "llama"),
    within: Sequence[str] = ("category", "framing"),
    levels: Mapping[str, Sequence[str]] | None = None,
    optimizers: Sequence[str] = OPTIMIZERS,
    min_groups_per_family: int = 2,
) -> tuple[MixedFit | None, pd.DataFrame]:
    """The fixed effects of :func:`fit_mixed_model` with random slopes of the ``within`` factors per RM.

    Tries :data:`SLOPE_STRUCTURES` in turn, each with the ``optimizers`` in turn, and keeps the first
    structure that converges (:attr:`MixedFit.converged`).
    The unstructured covariance is attempted only when it has at most as many parameters as there are RMs
    (else it is reported as skipped). Returns ``(fit or None, attempts)``; ``attempts`` has one row per
    structure: ``structure, re_formula, vc_formula, n_cov_params, n_groups, status`` (fitted / skipped /
    failed), ``converged, hessian_pd, boundary, optimizer, llf, note``. With fewer than
    ``min_groups_per_family`` RMs in a family (or no within factor that varies) nothing is fitted: the
    random slopes would be confounded with the fixed family interactions.
    """
    check_families(medians, families)
    df = design(medians, families, levels)
    within = [f for f in within if df[f].nunique() > 1]
    per_family = df.groupby("family", observed=True)["rm"].nunique()
    rows: list[dict[str, Any]] = []
    n_groups = int(df["rm"].nunique())
    if not within or int(per_family.min()) < min_groups_per_family:
        why = (
            "no within-RM factor varies"
            if not within
            else f"random slopes need at least {min_groups_per_family} RMs per family "
            f"({', '.join(f'{k}: {v}' for k, v in per_family.items())})"
        )
        return None, pd.DataFrame(
            [{"structure": s, "status": "skipped", "note": why} for s in SLOPE_STRUCTURES]
        )
    chosen = None
    for structure, spec in _slope_specs(df, within).items():
        row = {
            "structure": structure,
            "re_formula": spec["re_formula"],
            "vc_formula": "; ".join(f"{k}: {v}" for k, v in spec.get("vc_formula", {}).items()),
            "n_cov_params": spec["n_cov"],
            "n_groups": n_groups,
        }
        if chosen is not None:
            rows.append({**row, "status": "not needed", "note": f"{chosen.structure} converged"})
            continue
        if spec["n_cov"] > n_groups:
            note = f"{spec['n_cov']} covariance parameters from {n_groups} RMs: not attempted"
            rows.append({**row, "status": "skipped", "note": note})
            continue
        fit, failures = _first_converged(medians, families, levels, optimizers, structure, spec)
        if fit is None:
            rows.append({**row, "status": "failed", "note": "; ".join(failures)})
            continue
        rows.append(
            {
                **row,
                "status": "fitted",
                "converged": fit.converged,
                "hessian_pd": fit.hessian_pd,
                "boundary": fit.boundary,
                "optimizer": fit.optimizer,
                "llf": float(fit.result.llf),
                "note": "; ".join(failures + fit.messages),
            }
        )
        if fit.converged:
            chosen = fit
    return chosen, pd.DataFrame(rows)


def _first_converged(
    medians: pd.DataFrame,
    families: Sequence[str],
    levels: Mapping[str, Sequence[str]] | None,
    optimizers: Sequence[str],
    structure: str,
    spec: Mapping[str, Any],
) -> tuple[MixedFit | None, list[str]]:
    """Fit one random-effect structure with each optimizer in turn until one converges: ``(fit, notes on
    the optimizers that failed)``; the last fit when none converges, ``None`` when none could fit."""
    fit, notes = None, []
    for optimizer in optimizers:
        try:
            fit = fit_mixed_model(
                medians,
                families,
                levels=levels,
                optimizers=(optimizer,),
                re_formula=spec["re_formula"],
                vc_formula=spec.get("vc_formula"),
                structure=structure,
            )
        except (RuntimeError, ValueError, np.linalg.LinAlgError) as err:
            notes.append(f"{optimizer}: {err}")
            continue
        if fit.converged:
            break
        notes.append(f"{optimizer}: did not converge")
    return fit, notes


def cell_contrast(fit: MixedFit, cells: pd.DataFrame, df: float | None = None) -> dict[str, float]:
    """A linear contrast ``sum(weight x cell mean)`` of a fitted model's cell means.

    ``cells`` has one row per cell: the model's factors (e.g. family, category, framing) and ``weight``.
    Returns ``estimate, se, z, p`` (Wald, normal), ``ci_low, ci_high`` (95%, normal) and, when ``df`` is
    given, ``df`` and ``p_t`` (the same statistic against a t distribution with ``df`` degrees of freedom,
    e.g. the number of RMs minus the number of families for a contrast within RMs).
    """
    from patsy import build_design_matrices, dmatrix

    grid = cells.drop(columns="weight").copy()
    for f in grid.columns:
        if f in fit.levels:
            grid[f] = pd.Categorical(grid[f].astype(str), categories=fit.levels[f])
    rhs = fit.formula.split("~", 1)[1]
    info = dmatrix(rhs, fit.result.model.data.frame, return_type="dataframe").design_info
    names = list(fit.result.fe_params.index)
    if info.column_names != names:
        raise ValueError(f"cell_contrast: design columns {info.column_names} differ from the model's {names}")
    X = np.asarray(build_design_matrices([info], grid, return_type="dataframe")[0], float)
    L = cells["weight"].to_numpy(float) @ X
    k = len(fit.result.fe_params)
    cov = np.asarray(fit.result.cov_params(), float)[:k, :k]
    est = float(L @ fit.result.fe_params.to_numpy(float))
    se = float(np.sqrt(L @ cov @ L)) if np.all(np.isfinite(cov)) else float("nan")
    z = est / se if se > 0 else float("nan")
    out = {
        "estimate": est,
        "se": se,
        "z": z,
        "p": float(2 * stats.norm.sf(abs(z))),
        "ci_low": est - 1.959963984540054 * se,
        "ci_high": est + 1.959963984540054 * se,
    }
    if df is not None:
        out["df"] = float(df)
        out["p_t"] = float(2 * stats.t.sf(abs(z), df)) if df > 0 else float("nan")
    return out


def containment_df(fit: MixedFit) -> pd.DataFrame:
    """nlme's containment ("between/within") degrees of freedom of a random-intercept fit's fixed effects,
    and their t tests: one row per term, ``term, df, t, p_t`` (``t`` = coef / SE, ``p_t`` two-sided).

    The rule of ``nlme::lme`` (its ``getFixDF``), per design column: a column that varies within some RM
    is a within-RM term, one constant within every RM (but not overall) a between-RM term, and a column
    constant overall the intercept. Between-RM terms get ``n_RMs - n_between - 1`` df (the intercept
    counted among the between-RM parameters), within-RM terms ``n_obs - n_RMs - n_within``, and the
    intercept the larger of the two (nlme's choice: with the paper's design the within-RM df, not the
    between-RM df). With 10 RMs, ``family`` gets 8 df.
    """
    model = fit.result.model
    if model.k_re != 1 or model.k_vc != 0 or not np.allclose(model.exog_re, 1.0):
        raise ValueError(
            f"containment_df needs a fit with only a random intercept per RM; this one is "
            f"{fit.structure!r}: refit with fit_mixed_model's default random effects"
        )
    X = pd.DataFrame(np.asarray(model.exog, float), columns=model.exog_names)
    groups = np.asarray(model.groups)
    n_obs, n_groups = len(X), len(np.unique(groups))
    first = X.iloc[0].to_numpy()
    scale = np.where(first == 0, 1.0, np.abs(first))
    constant = pd.Series(np.all(np.abs(X.to_numpy() - first) / scale < math.sqrt(np.finfo(float).eps), 0))
    constant.index = X.columns
    spread = X.groupby(groups).agg(lambda c: c.max() - c.min())
    within = (spread > 0).any(axis=0) & ~constant
    between = ~within & ~constant
    df_between, df_within = n_groups, n_obs - n_groups
    if not constant.all():
        df_between -= int(between.sum())
        df_within -= int(within.sum())
        if constant.any():
            df_between -= 1
        else:
            df_within += 1
    df = np.where(within, df_within, df_between).astype(float)
    df[constant.to_numpy()] = max(df_between, df_within)
    names = list(fit.result.fe_params.index)
    t = (fit.result.fe_params / fit.result.bse_fe.loc[names]).to_numpy(float)
    with np.errstate(invalid="ignore"):
        p_t = 2 * stats.t.sf(np.abs(t), np.where(df > 0, df, np.nan))
    return pd.DataFrame({"term": names, "df": df, "t": t, "p_t": p_t})


def top_family_terms(table: pd.DataFrame) -> pd.DataFrame:
    """The highest-order fixed-effect terms that involve ``family`` (the family x category x framing terms
    of the default formula)."""
    fam = table[table["term"].str.contains("family")]
    if fam.empty:
        return fam
    order = fam["term"].str.count(":")
    return fam[order == order.max()]
