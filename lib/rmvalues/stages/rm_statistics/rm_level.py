"""The central interaction at the unit that was sampled: the reward model.

The paper's central result is the family x category x framing term of its mixed model, whose standard error
comes from every (RM, prompt) point although only the RMs were sampled. Here the same quantity is computed
per RM and compared between families over the RMs alone, side by side with the paper's model and with a
random-slope model.

**The statistic.** Per RM, with ``m(k, f)`` the RM's mean over prompts of the median rank of category ``k``
under framing ``f``::

    D(k) = [mean_{j != k} m(j, positive) - m(k, positive)] - [mean_{j != k} m(j, negative) - m(k, negative)]

how much category ``k`` gains in rank (moves towards rank 1), relative to the other categories, from negative
to positive prompts. For the Big Two (two categories) ``D(Communion)`` is exactly the issue's
``D = (Agency - Communion gap under positive prompts) - (the same under negative prompts)``, and only it is
reported (``D(Agency) = -D(Communion)``). For MFD 2.0 each foundation gets its ``D`` against the mean of
the other four: the analogue of the Big Two contrast when there are five categories, with no reference
foundation singled out (the model's coefficients, by contrast, compare each foundation with Authority).

**The tests** (:func:`rm_level_tests`), per statistic: the family difference of mean ``D`` (``b - a``,
families as in ``families``) with the exact permutation test over every split of the RMs into groups of the
two families' sizes (C(10, 4) = 210; :func:`rmvalues.stats.split_test`), Bonferroni over the statistics of
one analysis; the 95% interval that inverts that test (:func:`rmvalues.stats.split_interval`), chosen over a
bootstrap of four and six values, which draws from only 35 distinct resamples of the four and whose
percentile intervals are too narrow (that bootstrap is reported too, ``boot_ci_*``).

**Side by side** (:func:`interaction_models`): the same contrast of cell means from the paper's
random-intercept model and from the random-slope model (:func:`rmvalues.stats.fit_random_slopes`), with the
unit each treats as independent. In this balanced design all three estimates are equal (the model contrast
is a contrast of cell means); only the uncertainty differs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ...stats import (
    MixedFit,
    cell_contrast,
    cluster_bootstrap_ci,
    correct_pvalues,
    fit_random_slopes,
    split_interval,
    split_test,
    stable_seed,
)
from ...stats.contrasts import INTERACTION_COLUMNS, analyses, rm_contrasts
from .analysis import ALPHA, verdict

__all__ = [
    "INTERACTION_COLUMNS",
    "MODEL_COLUMNS",
    "RM_LEVEL_COLUMNS",
    "contrast_weights",
    "interaction_models",
    "rm_contrasts",
    "rm_level_tests",
    "separation",
]

#: Columns of ``rm_level_interaction.csv``: the issue's, then the analysis, the RM counts, the correction,
#: the smallest attainable p, the verdict and the bootstrap interval over RMs.
RM_LEVEL_COLUMNS = [
    "corpus",
    "subcategory",
    "statistic",
    "family_a",
    "family_b",
    "mean_a",
    "mean_b",
    "difference",
    "p_exact",
    "n_splits",
    "ci_low",
    "ci_high",
    "analysis",
    "category",
    "versus",
    "n_rms_a",
    "n_rms_b",
    "n_tests",
    "p_corrected",
    "p_min",
    "p_min_corrected",
    "verdict",
    "boot_ci_low",
    "boot_ci_high",
    "separation",
]
#: Values of ``separation``: every RM of one family lies above every RM of the other (the most extreme split,
#: whose exact p is the smallest attainable), or not.
SEPARATIONS = (
    "perfect: every {b} RM above every {a} RM",
    "perfect: every {b} RM below every {a} RM",
    "overlap",
)
#: Columns of ``interaction_models.csv`` (one row per statistic and method).
MODEL_COLUMNS = [
    "corpus",
    "analysis",
    "subcategory",
    "statistic",
    "method",
    "unit",
    "n_units",
    "estimate",
    "se",
    "ci_low",
    "ci_high",
    "p",
    "df",
    "p_t",
]
#: The unit each method treats as independent.
UNITS = {
    "random intercept (paper)": "(RM, prompt) point, given its RM's intercept",
    "random slopes": "RM (each RM has its own category x framing effects)",
    "RM level, exact split test": "RM",
}


def rm_level_tests(
    contrasts: pd.DataFrame,
    families: Sequence[str],
    n_bootstrap: int = 2000,
    seed: int = 0,
    alpha: float = ALPHA,
) -> pd.DataFrame:
    """The family difference of mean ``D`` per (corpus, analysis, subcategory, statistic), tested over RMs:
    :data:`RM_LEVEL_COLUMNS`. ``p_corrected``: Bonferroni over the ``n_tests`` statistics of one (corpus,
    analysis, subcategory); ``p_min``/``p_min_corrected``: the smallest p the exact test can give before and
    after that correction; ``verdict``: significant / inconclusive / cannot be tested at this n;
    ``separation``: whether every RM of one family lies beyond every RM of the other."""
    fam_a, fam_b = families[0], families[1]
    keys = ["corpus", "analysis", "subcategory", "statistic", "category", "versus"]
    rows = []
    for key, grp in contrasts.groupby(keys, sort=True, dropna=False):
        a = grp.loc[grp["family"] == fam_a].sort_values("rm")["D"].to_numpy(float)
        b = grp.loc[grp["family"] == fam_b].sort_values("rm")["D"].to_numpy(float)
        test = split_test(a, b)
        lo, hi = split_interval(a, b, alpha)
        boot = cluster_bootstrap_ci([[v] for v in a], [[v] for v in b], n_bootstrap, stable_seed(seed, *key))
        rows.append(
            {
                **dict(zip(keys, key, strict=True)),
                "family_a": fam_a,
                "family_b": fam_b,
                "mean_a": a.mean() if a.size else np.nan,
                "mean_b": b.mean() if b.size else np.nan,
                "difference": test.difference,
                "p_exact": test.p,
                "n_splits": test.n_splits,
                "ci_low": lo,
                "ci_high": hi,
                "n_rms_a": a.size,
                "n_rms_b": b.size,
                "p_min": test.p_min,
                "boot_ci_low": boot[0],
                "boot_ci_high": boot[1],
                "separation": separation(a, b, fam_a, fam_b),
            }
        )
    out = pd.DataFrame(rows)
    if out.empty:
        return pd.DataFrame(columns=RM_LEVEL_COLUMNS)
    for _, idx in out.groupby(["corpus", "analysis", "subcategory"], dropna=False).groups.items():
        out.loc[idx, "n_tests"] = len(idx)
        p = out.loc[idx, "p_exact"]
        out.loc[idx, "p_corrected"] = correct_pvalues(p.fillna(1.0), "bonf") if p.notna().any() else np.nan
        out.loc[idx, "p_min_corrected"] = np.minimum(1.0, out.loc[idx, "p_min"] * len(idx))
    out["n_tests"] = out["n_tests"].astype(int)
    out["verdict"] = [
        verdict(p, pm, alpha) for p, pm in zip(out["p_corrected"], out["p_min_corrected"], strict=True)
    ]
    return out[RM_LEVEL_COLUMNS]


def separation(a: np.ndarray, b: np.ndarray, fam_a: str, fam_b: str) -> str:
    """Whether the two families' values are perfectly separated (:data:`SEPARATIONS`)."""
    if a.size and b.size and b.min() > a.max():
        return SEPARATIONS[0].format(a=fam_a, b=fam_b)
    if a.size and b.size and b.max() < a.min():
        return SEPARATIONS[1].format(a=fam_a, b=fam_b)
    return SEPARATIONS[2]


def contrast_weights(category: str, families: Sequence[str], categories: Sequence[str]) -> pd.DataFrame:
    """The cell weights whose sum of weight x cell mean is the family difference (``b - a``) of ``D(k)``:
    one row per (family, category, framing) with ``weight``."""
    others = [c for c in categories if c != category]
    rows = []
    for fam, sf in ((families[0], -1.0), (families[1], 1.0)):
        for fr, sr in (("positive", 1.0), ("negative", -1.0)):
            for c in categories:
                wc = -1.0 if c == category else 1.0 / len(others)
                rows.append({"family": fam, "category": c, "framing": fr, "weight": sf * sr * wc})
    return pd.DataFrame(rows)


def interaction_models(
    medians: pd.DataFrame,
    rm_level: pd.DataFrame,
    paper_fits: Mapping[tuple[str, str, str | None], MixedFit],
    families: Sequence[str],
    levels: Mapping[str, Sequence[str]],
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The family difference of every ``D(k)`` of ``rm_level`` three ways: from the paper's random-intercept
    model (``paper_fits``), from the random-slope model and at the RM level (the exact test).

    Returns ``(side_by_side, slope_fits, slope_model)``: :data:`MODEL_COLUMNS` (``df`` and ``p_t``: the t
    reference with the number of RMs minus two degrees of freedom, for the random-slope model); one row per
    analysis and random-slope structure tried (:func:`rmvalues.stats.fit_random_slopes`: status,
    convergence, what was skipped); and the fixed effects of the structure used, per analysis.
    """
    rows: list[dict[str, Any]] = []
    attempts, slope_tables = [], []
    for key, grp in analyses(medians[medians["family"].isin(list(families))]):
        tests = rm_level[
            (rm_level["corpus"] == key[0])
            & (rm_level["analysis"] == key[1])
            & (rm_level["subcategory"].astype(object).fillna("") == (key[2] or ""))
        ]
        if tests.empty:
            continue
        slope_fit, tried = _random_slopes(grp, families, levels)
        attempts.append(tried.assign(corpus=key[0], analysis=key[1], subcategory=key[2]))
        if slope_fit is not None:
            table = slope_fit.table.assign(structure=slope_fit.structure, optimizer=slope_fit.optimizer)
            slope_tables.append(table.assign(corpus=key[0], analysis=key[1], subcategory=key[2]))
        n_rms = int(grp["rm"].nunique())
        cats = sorted(grp["category"].unique())
        for t in tests.itertuples():
            base = {"corpus": key[0], "analysis": key[1], "subcategory": key[2], "statistic": t.statistic}
            cells = contrast_weights(t.category, families, cats)
            fits = [("random intercept (paper)", paper_fits.get(key), None, None)]
            if slope_fit is not None:
                fits.append((f"random slopes ({slope_fit.structure})", slope_fit, n_rms - 2, "random slopes"))
            for method, fit, df, unit_key in fits:
                if fit is None:
                    continue
                c = cell_contrast(fit, cells, df=df)
                unit = UNITS[unit_key or method]
                n_units = fit.n_obs if unit_key is None else n_rms
                rows.append({**base, "method": method, "unit": unit, "n_units": n_units, **c})
            rows.append(
                {
                    **base,
                    "method": "RM level, exact split test",
                    "unit": UNITS["RM level, exact split test"],
                    "n_units": n_rms,
                    "estimate": t.difference,
                    "ci_low": t.ci_low,
                    "ci_high": t.ci_high,
                    "p": t.p_exact,
                }
            )
    side = pd.DataFrame(rows).reindex(columns=MODEL_COLUMNS)
    return side, _keyed_first(attempts), _keyed_first(slope_tables)


#: Why no random-slope model is fitted for an analysis with more than two categories.
SLOPES_NOT_FITTED = (
    "not fitted: with {k} categories the unstructured covariance has {n_cov} parameters from {n_rms} RMs, and "
    "the variance-components structure gives every {k}-category contrast the same variance (every foundation "
    "contrast gets the same SE), an assumption the per-RM values contradict; the exact RM-level tests are the "
    "inference for these contrasts"
)


def _random_slopes(
    grp: pd.DataFrame, families: Sequence[str], levels: Mapping[str, Sequence[str]]
) -> tuple[MixedFit | None, pd.DataFrame]:
    """The random-slope model of one analysis: fitted for two categories (the Big Two), not fitted (with
    the reason, :data:`SLOPES_NOT_FITTED`) for more."""
    k = int(grp["category"].nunique())
    if k <= 2:
        return fit_random_slopes(grp, families, levels=levels)
    q = 2 * k
    note = SLOPES_NOT_FITTED.format(k=k, n_cov=q * (q + 1) // 2, n_rms=int(grp["rm"].nunique()))
    return None, pd.DataFrame([{"structure": "any", "status": "not fitted", "note": note}])


def _keyed_first(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """``parts`` stacked with ``corpus, analysis, subcategory`` first (empty when there are none)."""
    if not parts:
        return pd.DataFrame(columns=["corpus", "analysis", "subcategory"])
    out = pd.concat(parts, ignore_index=True)
    first = ["corpus", "analysis", "subcategory"]
    return out[first + [c for c in out.columns if c not in first]]
