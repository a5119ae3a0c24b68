"""The language-model variant of the paper's analysis: a type II three-way ANOVA of ranks and Welch post-hoc
tests within cells (statsmodels and pingouin)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import pingouin as pg

from .twogroup import cohens_d, correct_pvalues


def anova_3way(
    df: pd.DataFrame,
    dv: str = "median_rank",
    factors: Sequence[str] = ("category", "framing", "model"),
    typ: int = 2,
) -> pd.DataFrame:
    """Type II ANOVA of ``dv ~ C(f1) * C(f2) * C(f3)`` (statsmodels ``ols`` + ``anova_lm``), as the paper's
    language-model figures: ``term, sum_sq, df, F, p``."""
    import statsmodels.api as sm
    from statsmodels.formula.api import ols

    formula = f"{dv} ~ " + " * ".join(f"C({f})" for f in factors)
    data = df[[dv, *factors]].copy()
    for f in factors:
        data[f] = data[f].astype(object)
    table = sm.stats.anova_lm(ols(formula, data=data).fit(), typ=typ)
    table = table.reset_index().rename(columns={"index": "term", "PR(>F)": "p"})
    return table[["term", "sum_sq", "df", "F", "p"]]


def welch_posthocs(
    df: pd.DataFrame,
    dv: str = "median_rank",
    group: str = "model",
    levels: Sequence[str] | None = None,
    cells: Sequence[str] = ("category", "framing"),
    correction: str = "fdr_bh",
) -> pd.DataFrame:
    """Welch t-test of ``levels[1]`` vs ``levels[0]`` of ``group`` within each cell (``pingouin.ttest``,
    ``correction=True``), p-values corrected over cells (``pingouin.multicomp``, FDR by default)."""
    levels = list(levels) if levels is not None else sorted(df[group].unique())[:2]
    rows = []
    for key, cell in df.groupby(list(cells), sort=True, observed=True):
        x = cell.loc[cell[group] == levels[1], dv].to_numpy(float)
        y = cell.loc[cell[group] == levels[0], dv].to_numpy(float)
        res = pg.ttest(x, y, correction=True)
        rows.append(
            {
                **dict(zip(cells, key if isinstance(key, tuple) else (key,), strict=True)),
                "level_a": levels[0],
                "level_b": levels[1],
                "mean_a": y.mean(),
                "mean_b": x.mean(),
                "difference": x.mean() - y.mean(),
                "t": float(res["T"].iloc[0]),
                "dof": float(res["dof"].iloc[0]),
                "p": float(res["p_val"].iloc[0] if "p_val" in res else res["p-val"].iloc[0]),
                "d": cohens_d(x, y),
            }
        )
    out = pd.DataFrame(rows)
    out["p_corrected"] = correct_pvalues(out["p"], correction)
    return out
