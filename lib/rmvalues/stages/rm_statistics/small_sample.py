"""Small-sample tests of the paper's mixed model: its fixed effects with t on few degrees of freedom.

statsmodels' MixedLM reports z (a normal reference); the paper's software, R's ``nlme::lme``, reports t with
"containment" degrees of freedom: a term that varies only between RMs (the family) is tested on the number of
RMs minus the between-RM parameters (8 with 10 RMs), not on a thousand (RM, prompt) points. Per pooled
analysis, :func:`small_sample_table` gives each fixed effect of the paper's random-intercept model three ways:
statsmodels' z; the same estimate with nlme's containment df computed in Python
(:func:`rmvalues.stats.containment_df`); and the model fitted in R (:func:`rmvalues.stats.fit_paper_model_r`:
nlme's t, df and p, and lmerTest's Satterthwaite df and p), which the chapter reports. Without R the R
columns are empty and the status says why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ...stats import MixedFit, containment_df, fit_paper_model_r, r_available

__all__ = ["SMALL_SAMPLE_COLUMNS", "small_sample_table"]

#: Columns of ``mixed_model_small_sample.csv``.
SMALL_SAMPLE_COLUMNS = [
    "corpus",
    "analysis",
    "subcategory",
    "term",
    "coef",
    "se",
    "z",
    "p_z",
    "df_containment",
    "p_t_containment",
    "r_coef",
    "r_se",
    "r_df",
    "r_t",
    "r_p",
    "satterthwaite_df",
    "satterthwaite_p",
    "max_abs_coef_diff",
]


def small_sample_table(
    fits: Mapping[tuple[str, str, str | None], MixedFit],
    medians: pd.DataFrame,
    families: Sequence[str],
    use_r: bool = True,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """:data:`SMALL_SAMPLE_COLUMNS` for every pooled analysis of ``fits`` (the paper's model per analysis),
    and the R status: ``{"r": "fitted" | "not available" | "failed", "note": ..., "seconds": ...,
    "versions": {...}}``."""
    reason = r_available() if use_r else "not asked for"
    status: dict[str, Any] = {"r": "fitted" if reason is None else "not available", "note": reason or ""}
    seconds = 0.0
    parts = []
    for key, fit in sorted(fits.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or "")):
        if key[1] != "pooled" or fit.structure != "random intercept":
            continue
        df = _python_side(fit)
        if status["r"] == "fitted":
            rows = medians[(medians["corpus"] == key[0]) & (medians["analysis"] == key[1])]
            try:
                r = fit_paper_model_r(rows, families, fit.levels)
            except (RuntimeError, ValueError, OSError) as err:
                status = {"r": "failed", "note": f"{key[0]}: {err}"}
            else:
                seconds += r.seconds
                status["versions"] = r.versions
                df = _with_r(df, r)
        parts.append(df.assign(corpus=key[0], analysis=key[1], subcategory=key[2]))
    status["seconds"] = round(seconds, 2)
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return out.reindex(columns=SMALL_SAMPLE_COLUMNS), status


def _python_side(fit: MixedFit) -> pd.DataFrame:
    """statsmodels' z test and the containment-df t test of each fixed effect."""
    tab = fit.table[["term", "coef", "se", "z", "p"]].rename(columns={"p": "p_z"})
    cdf = containment_df(fit)[["term", "df", "p_t"]].rename(
        columns={"df": "df_containment", "p_t": "p_t_containment"}
    )
    return tab.merge(cdf, on="term", how="left", validate="one_to_one")


def _with_r(df: pd.DataFrame, r: Any) -> pd.DataFrame:
    """The R fit's nlme and Satterthwaite columns beside the Python ones (matched by term)."""
    nlme = r.fixed[["term", "coef", "se", "df", "t", "p"]].rename(
        columns={"coef": "r_coef", "se": "r_se", "df": "r_df", "t": "r_t", "p": "r_p"}
    )
    satt = r.satterthwaite[["term", "df", "p"]].rename(
        columns={"df": "satterthwaite_df", "p": "satterthwaite_p"}
    )
    out = df.merge(nlme, on="term", how="left", validate="one_to_one").merge(
        satt, on="term", how="left", validate="one_to_one"
    )
    if out["r_coef"].isna().any():
        missing = out.loc[out["r_coef"].isna(), "term"].tolist()
        raise ValueError(f"the R fit lacks the terms {missing}: the two codings differ")
    out["max_abs_coef_diff"] = float(np.max(np.abs(out["coef"] - out["r_coef"])))
    return out
