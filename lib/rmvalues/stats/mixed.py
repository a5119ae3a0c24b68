"""Linear mixed models of median ranks (statsmodels ``MixedLM``), fitted robustly.

:func:`fit_mixed_model` fits ``median_rank ~ family * category * framing`` (or any formula) with a random
intercept per RM, REML by default; gradient optimizers first, derivative-free ones when the RM variance sits
on the boundary (:data:`OPTIMIZERS`); BLAS single-threaded while fitting (:data:`BLAS_THREADS`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .twogroup import check_families

if TYPE_CHECKING:  # pragma: no cover
    from statsmodels.regression.mixed_linear_model import MixedLMResults

#: Framings in the order their factor levels are coded (the first is the reference level).
FRAMINGS: tuple[str, ...] = ("positive", "negative")
#: Optimizers tried in turn for the mixed models (statsmodels ``MixedLM.fit(method=...)``): statsmodels'
#: default sequence first (BFGS, then L-BFGS, then CG), then derivative-free ones.
OPTIMIZERS = ("bfgs,lbfgs,cg", "powell", "nm")
#: BLAS threads used while fitting: the design matrices are small, and several BLAS threads competing for
#: two busy cores made one word-level fit take 40x longer (38 s instead of 0.9 s).
BLAS_THREADS = 1


@dataclass
class MixedFit:
    """A fitted mixed model: the statsmodels result, its fixed-effect table and the data it was fit on."""

    result: MixedLMResults
    table: pd.DataFrame
    formula: str
    n_obs: int
    n_groups: int
    converged: bool
    optimizer: str = "bfgs,lbfgs,cg"


def design(df: pd.DataFrame, families: Sequence[str]) -> pd.DataFrame:
    out = df[df["family"].isin(list(families))].copy()
    out["family"] = pd.Categorical(out["family"].astype(object), categories=list(families))
    fr = [f for f in FRAMINGS if f in set(out["framing"].unique())]
    out["framing"] = pd.Categorical(out["framing"].astype(object), categories=fr)
    out["category"] = pd.Categorical(
        out["category"].astype(object), categories=sorted(out["category"].unique())
    )
    out["rm"] = out["rm"].astype(object)
    return out


def default_formula(df: pd.DataFrame, response: str = "median_rank") -> str:
    """``<response> ~ family * category * framing``, leaving out factors with a single level."""
    factors = [f for f in ("family", "category", "framing") if df[f].nunique() > 1]
    return f"{response} ~ " + (" * ".join(factors) if factors else "1")


def fit_mixed_model(
    medians: pd.DataFrame,
    families: Sequence[str] = ("gemma", "llama"),
    formula: str | None = None,
    reml: bool = True,
    optimizers: Sequence[str] = OPTIMIZERS,
) -> MixedFit:
    """Linear mixed model with a random intercept per RM (statsmodels ``MixedLM``, REML by default).

    Default formula :func:`default_formula` (the paper's ``median_rank ~ family * category * framing``).
    The table has one row per fixed-effect term: ``term, coef, se, z, p, ci_low, ci_high`` (Wald, 95%).
    """
    import statsmodels.formula.api as smf
    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    check_families(medians, families)
    df = design(medians, families)
    formula = formula or default_formula(df)
    model = smf.mixedlm(formula, df, groups=df["rm"])
    result, caught, optimizer = fit_with_fallback(model, reml, optimizers)
    converged = bool(getattr(result, "converged", True)) and not any(
        issubclass(w.category, ConvergenceWarning) for w in caught
    )
    names = list(result.fe_params.index)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a degenerate fit gives NaN SEs: kept as NaN
        ci = result.conf_int().loc[names]
        table = pd.DataFrame(
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
    converged = converged and bool(table["se"].notna().all())
    return MixedFit(result, table, formula, int(result.nobs), int(df["rm"].nunique()), converged, optimizer)


def fit_with_fallback(
    model: Any, reml: bool, optimizers: Sequence[str] = OPTIMIZERS
) -> tuple[Any, list[warnings.WarningMessage], str]:
    """Fit ``model`` with the first of ``optimizers`` that works: ``(result, warnings, optimizer)``.

    statsmodels' gradient optimizers fail with a singular matrix when the RM variance sits on the boundary
    (0), as with very few prompts; derivative-free optimizers then still find the REML estimate.
    """
    from threadpoolctl import threadpool_limits

    for optimizer in optimizers:
        with warnings.catch_warnings(record=True) as caught, threadpool_limits(BLAS_THREADS, user_api="blas"):
            warnings.simplefilter("always")
            try:
                result = model.fit(reml=reml, method=optimizer.split(","))
            except np.linalg.LinAlgError:
                continue
        return result, list(caught), optimizer
    raise RuntimeError(f"mixed model {model.formula!r} could not be fitted with any of {list(optimizers)}")


def top_family_terms(table: pd.DataFrame) -> pd.DataFrame:
    """The highest-order fixed-effect terms that involve ``family`` (the family x category x framing terms
    of the default formula)."""
    fam = table[table["term"].str.contains("family")]
    if fam.empty:
        return fam
    order = fam["term"].str.count(":")
    return fam[order == order.max()]
