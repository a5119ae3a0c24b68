"""The language-model variant of the paper's analysis: a type II three-way ANOVA of ranks and Welch post-hoc
tests within cells (statsmodels and pingouin), and its counterpart with prompts clustered by adjective.

:func:`anova_3way` is the paper's analysis: every (prompt, category, model) median rank is an independent
observation, so a framing term is tested against the variation between prompts (residual df 208 for 54
prompts, 2 categories and 2 models), although the prompts of a framing share only three adjectives.

:func:`anova_3way_clustered` is its clustered counterpart, a split-plot ANOVA with the cluster (the prompt's
adjective) as the whole plot, nested in the framing: the ranks are first averaged over the prompts of each
(cluster, category, model) cell; then every term is tested against its own interaction with the clusters
within framing (the term's error stratum), as in a repeated-measures ANOVA with category and model within
clusters and framing between them. The category x framing x model term is tested against
category x model x adjective(framing): with 3 adjectives per framing, on 1 and 4 df (2 categories). Terms with
framing also get the exact permutation p over every split of the clusters into the framings (C(6, 3) = 20;
its smallest p is 2/20 = 0.1). With one df a term's F is the square of the pooled two-sample t of the
clusters' contrast scores; with more (three categories or more) the univariate F assumes sphericity.
Why this rather than a mixed model with a random adjective: for balanced cells it is that model's exact F
test (random adjective effects and their interactions with category and model), computed in closed form
instead of fitted, and three adjectives per framing would hardly estimate a variance of their own; averaging
first also weighs each adjective the same when the prompts per adjective differ.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pingouin as pg
from scipy import stats

from .prompts import ADJECTIVE, with_cluster
from .twogroup import cohens_d, correct_pvalues
from .units import n_splits

#: Columns of :func:`anova_3way_clustered`.
CLUSTERED_COLUMNS = [
    "term", "sum_sq", "df", "F", "p", "df_error", "error", "p_exact", "p_min", "n_splits", "n_clusters",
]  # fmt: skip
#: Beyond this many splits of the clusters, :func:`anova_3way_clustered` gives no permutation p.
MAX_CLUSTER_SPLITS = 100_000


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


def _contrast_basis(levels: int, within: bool) -> np.ndarray:
    """Orthonormal columns: the ``levels - 1`` contrasts of a factor in the term (``within``), else its
    normalised mean."""
    if not within:
        return np.full((levels, 1), 1 / math.sqrt(levels))
    helmert = np.linalg.qr(np.column_stack([np.ones(levels), np.eye(levels)[:, : levels - 1]]))[0]
    return helmert[:, 1:]


def _stratum(scores: np.ndarray, groups: np.ndarray) -> tuple[float, float, float]:
    """Sums of squares of one stratum's contrast scores (clusters x df): of their mean over clusters, of
    the between-group differences, and within groups (the error)."""
    grand = scores.mean(axis=0)
    ss_mean = scores.shape[0] * float(grand @ grand)
    ss_between, ss_error = 0.0, 0.0
    for g in np.unique(groups):
        part = scores[groups == g]
        dev = part.mean(axis=0) - grand
        ss_between += part.shape[0] * float(dev @ dev)
        ss_error += float(((part - part.mean(axis=0)) ** 2).sum())
    return ss_mean, ss_between, ss_error


def _cell_table(
    df: pd.DataFrame, dv: str, within: list[str], between: str | None, cluster: str
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Cluster x within-cell means (columns: the product of the within factors' sorted levels, the last
    factor fastest; clusters lacking a cell dropped), each cluster's group, the within factors' level
    counts."""
    data = with_cluster(df, cluster)
    if between is not None:
        mixed = data.groupby(cluster, observed=True)[between].nunique()
        if (mixed > 1).any():
            raise ValueError(f"clusters {sorted(map(str, mixed[mixed > 1].index))} lie in several {between}s")
    grid = [sorted(data[w].unique()) for w in within]
    means = data.groupby([cluster, *within], observed=True)[dv].mean()
    if within:
        cols = list(itertools.product(*grid))
        wide = means.unstack(within)
        wide.columns = [c if isinstance(c, tuple) else (c,) for c in wide.columns]
        cells = wide.reindex(columns=cols).dropna()
    else:
        cells = means.to_frame().dropna()
    groups = (
        data.drop_duplicates(cluster).set_index(cluster)[between].reindex(cells.index).to_numpy(object)
        if between is not None
        else np.zeros(len(cells), dtype=object)
    )
    return cells.to_numpy(float), groups, [len(g) for g in grid]


def _group_splits(groups: np.ndarray) -> list[np.ndarray] | None:
    """Every relabelling of two groups that keeps their sizes (the observed one first); None beyond
    :data:`MAX_CLUSTER_SPLITS` or for other than two groups."""
    labels = np.unique(groups)
    if len(labels) != 2 or n_splits(int((groups == labels[0]).sum()), int((groups == labels[1]).sum())) > (
        MAX_CLUSTER_SPLITS
    ):
        return None
    k = int((groups == labels[0]).sum())
    out = [groups]
    for combo in itertools.combinations(range(len(groups)), k):
        g = np.full(len(groups), labels[1], dtype=object)
        g[list(combo)] = labels[0]
        if not (g == groups).all():
            out.append(g)
    return out


def anova_3way_clustered(
    df: pd.DataFrame,
    dv: str = "median_rank",
    factors: Sequence[str] = ("category", "framing", "model"),
    cluster: str = ADJECTIVE,
    between: str = "framing",
) -> pd.DataFrame:
    """The clustered counterpart of :func:`anova_3way` (module docstring): ``dv`` averaged per (cluster,
    within-cell), every term of ``factors`` tested against its interaction with the clusters within
    ``between`` (the factor the cluster carries: a cluster lies in one framing). ``cluster`` is a column of
    ``df`` or, for ``adjective``, read from ``prompt_id``. Terms are named as :func:`anova_3way` names
    them; columns :data:`CLUSTERED_COLUMNS` (``df_error``: the error stratum's df, ``error``: its name;
    ``p_exact``, ``p_min``, ``n_splits``: the permutation test of a term with ``between``, NaN for the
    others). A term without ``between`` is tested on the mean of its contrast over the clusters (each
    cluster weighs the same). Clusters lacking a within-cell are left out (``n_clusters`` counts those
    used)."""
    factors = list(factors)
    has_between = between in factors
    within = [f for f in factors if f != between]
    y, groups, levels = _cell_table(df, dv, within, between if has_between else None, cluster)
    name = {f: f"C({f})" for f in factors}
    splits = _group_splits(groups) if has_between else None
    n_groups = len(np.unique(groups))
    rows = []
    for size in range(len(within) + 1):
        for term in itertools.combinations(within, size):
            basis = np.ones((1, 1))
            for f, k in zip(within, levels, strict=True):
                basis = np.kron(basis, _contrast_basis(k, f in term))
            scores = y @ basis
            ss_mean, ss_between, ss_error = _stratum(scores, groups)
            df_term, df_error = basis.shape[1], basis.shape[1] * (len(y) - n_groups)
            error = ":".join([*(name[f] for f in term), f"C({cluster})"])
            tests = [(list(term), ss_mean, df_term)] if term else []
            if has_between:
                tests.append(([*term, between], ss_between, df_term * (n_groups - 1)))
            for parts, ss, d in tests:
                label = ":".join(name[f] for f in factors if f in parts)
                row = _clustered_row(label, ss, d, ss_error, df_error, error, len(y))
                if between in parts and splits is not None:
                    row |= _permutation_p(scores, splits, row["F"])
                rows.append(row)
    order = {":".join(name[f] for f in c): i for i, c in enumerate(_terms(factors))}
    rows.sort(key=lambda r: order.get(r["term"], len(order)))
    return pd.DataFrame(rows, columns=CLUSTERED_COLUMNS)


def _terms(factors: list[str]) -> list[tuple[str, ...]]:
    """The terms of a full factorial in statsmodels' order (main effects, then two-way, ...)."""
    return [c for k in range(1, len(factors) + 1) for c in itertools.combinations(factors, k)]


def _clustered_row(
    term: str, ss: float, df_term: int, ss_error: float, df_error: int, error: str, n_clusters: int
) -> dict[str, object]:
    ms_error = ss_error / df_error if df_error > 0 else math.nan
    scale = 1e-12 * max(1.0, ss)
    if df_error <= 0 or (ms_error <= scale and ss <= scale):
        f = math.nan  # no error df, or neither the term nor its error varies
    else:
        f = (ss / df_term) / ms_error if ms_error > scale else math.inf
    p = float(stats.f.sf(f, df_term, df_error)) if not math.isnan(f) else math.nan
    return {
        "term": term, "sum_sq": ss, "df": float(df_term), "F": f, "p": p, "df_error": float(df_error),
        "error": error, "p_exact": math.nan, "p_min": math.nan, "n_splits": 0, "n_clusters": n_clusters,
    }  # fmt: skip


def _permutation_p(scores: np.ndarray, splits: list[np.ndarray], f_obs: float) -> dict[str, float]:
    """The share of the splits of the clusters whose between-group F is at least the observed one, and the
    smallest such share any data could give (a split and its mirror give the same F when the groups are of
    equal size)."""
    if math.isnan(f_obs):
        return {}
    fs = []
    for g in splits:
        _, ss_b, ss_e = _stratum(scores, g)
        fs.append(ss_b / ss_e if ss_e > 0 else (math.inf if ss_b > 0 else 0.0))
    fs_arr = np.asarray(fs)
    at_least = fs_arr[0] - 1e-9 * max(1.0, float(fs_arr[0])) if np.isfinite(fs_arr[0]) else math.inf
    sizes = np.unique(splits[0], return_counts=True)[1]
    mirror = 2 if len(sizes) == 2 and sizes[0] == sizes[1] else 1
    return {
        "p_exact": float(np.mean(fs_arr >= at_least)),
        "p_min": min(1.0, mirror / len(splits)),
        "n_splits": len(splits),
    }
