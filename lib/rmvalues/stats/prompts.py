"""Inference over prompts, for one reward model or a pair of them: what a run with one RM per base model can
estimate, and the unit it generalises over (other prompts like these, not other reward models).

With ``m(k, p)`` the median rank of category ``k`` under prompt ``p`` (rank 1 = highest reward), the **gap**
of category ``k`` under ``p`` is ``mean_{j != k} m(j, p) - m(k, p)``: how many ranks ``k`` stands above the
other categories. The **framing contrast** is the mean gap over positive prompts minus the mean gap over
negative prompts, the per-RM ``D(k)`` of the statistics chapter. For two RMs scored on the same prompts, the
contrast of their per-prompt gap differences (:func:`paired_gap_difference`) is the difference of their
``D(k)``, paired by prompt.

**What the interval counts.** The paper's 54 prompts are 6 adjectives x 3 frames x 3 concision styles, and
the framing of a prompt is its adjective's (best, greatest, good: positive; worst, bad, terrible: negative).
The 27 prompts of a framing are not 27 independent draws of "a positive prompt": they share three adjectives,
so a framing contrast rests on 3 positive against 3 negative adjectives.

* :func:`framing_contrast` (the default the chapters use) clusters by adjective: it averages the per-prompt
  values within each adjective, then compares the positive against the negative adjective means, with
  Welch's interval and p over those means (Welch-Satterthwaite degrees of freedom) and the exact permutation
  test over every split of the adjectives into two framings (C(6, 3) = 20 splits for 3 against 3, so its
  smallest two-sided p is 2/20 = 0.1). In the balanced design (every adjective with the same prompts) its
  estimate equals the prompt-level one; otherwise each adjective weighs the same.
* :func:`framing_contrast_prompts` is the paper's assumption, kept for comparison: every prompt an
  independent draw, Welch's interval over the prompts.

The adjective of a prompt is read from its key by :func:`adjective_of` (the first ``_``-separated part of
``<adjective>_<frame>_<style>``; the statistics layer does not import the data layer), unless the table
carries an explicit cluster column.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats

from ..core.display import interval, pvalue, reader_table
from .units import n_splits, split_test

FRAMINGS = ("positive", "negative")
#: The default cluster of a framing contrast: the prompt's adjective, which carries its framing.
ADJECTIVE = "adjective"


@dataclass(frozen=True)
class FramingContrast:
    """The positive-minus-negative difference of a per-prompt quantity, with its Welch interval over the
    units (``unit``: ``prompt``, or the cluster, e.g. ``adjective``, whose means are compared)."""

    estimate: float
    ci_low: float  # NaN when a framing has fewer than two units
    ci_high: float
    p: float  # Welch's two-sided p over the units
    n_positive: int  # units (prompts, or clusters) per framing
    n_negative: int
    unit: str = "prompt"
    df: float = math.nan  # Welch-Satterthwaite degrees of freedom
    p_exact: float = math.nan  # exact permutation p over every split of the clusters (clustered only)
    p_min: float = math.nan  # the smallest two-sided p that permutation test could give
    n_splits: int = 0  # C(n_positive + n_negative, n_positive) (clustered only)
    n_prompts: int = 0  # the prompts behind the units

    @property
    def n_units(self) -> int:
        return self.n_positive + self.n_negative

    @property
    def includes_zero(self) -> bool:
        """Whether the interval includes zero (also True without an interval: nothing is established)."""
        if math.isnan(self.ci_low) or math.isnan(self.ci_high):
            return True
        return bool(self.ci_low <= 0 <= self.ci_high)


def adjective_of(prompt_id: str) -> str:
    """The adjective of a prompt key ``<adjective>_<frame>_<style>``: its first ``_``-separated part
    (``greatest_ever_one`` -> ``greatest``); a key without ``_`` is its own adjective."""
    return str(prompt_id).split("_", 1)[0]


def with_cluster(values: pd.DataFrame, cluster: str = ADJECTIVE) -> pd.DataFrame:
    """``values`` with a ``cluster`` column: kept where present, else (``cluster == "adjective"``) read from
    ``prompt_id`` by :func:`adjective_of`. ``KeyError`` when neither is possible."""
    if cluster in values.columns:
        return values
    if cluster == ADJECTIVE and "prompt_id" in values.columns:
        return values.assign(**{cluster: values["prompt_id"].map(adjective_of)})
    raise KeyError(f"no {cluster!r} column (and no prompt_id to read the adjective from)")


def cluster_means(
    values: pd.DataFrame, column: str = "gap", cluster: str = ADJECTIVE, by: Sequence[str] = ()
) -> pd.DataFrame:
    """The mean of ``column`` per (``by``, framing, cluster), with ``n_prompts`` (rows averaged).
    ``ValueError`` when a cluster lies in both framings (the cluster must carry the framing)."""
    df = with_cluster(values, cluster)
    keys = [*by, cluster]
    mixed = df.groupby(keys, observed=True)["framing"].nunique()
    if (mixed > 1).any():
        bad = sorted(map(str, mixed[mixed > 1].index))
        raise ValueError(f"clusters {bad} hold prompts of both framings; a cluster must lie in one framing")
    return (
        df.groupby([*by, "framing", cluster], observed=True, sort=True)[column]
        .agg(["mean", "size"])
        .rename(columns={"mean": column, "size": "n_prompts"})
        .reset_index()
    )


def prompt_gaps(medians: pd.DataFrame, category: str) -> pd.DataFrame:
    """``rm, prompt_id, framing, gap`` from pooled median ranks (columns of
    :func:`rmvalues.stats.median_ranks`); prompts where ``category`` or every other category is missing are
    dropped."""
    pooled = medians[medians["analysis"] == "pooled"] if "analysis" in medians.columns else medians
    wide = pooled.pivot_table(
        index=["rm", "prompt_id", "framing"], columns="category", values="median_rank", observed=True
    )
    if category not in wide.columns or wide.shape[1] < 2:
        return pd.DataFrame(columns=["rm", "prompt_id", "framing", "gap"])
    gap = wide.drop(columns=category).mean(axis=1) - wide[category]
    return gap.rename("gap").dropna().reset_index()


def _welch(pos: np.ndarray, neg: np.ndarray, confidence: float) -> tuple[float, float, float, float, float]:
    """``estimate, ci_low, ci_high, p, df`` of Welch's test of ``mean(pos) - mean(neg)`` (NaN where a group
    has fewer than two values; a degenerate interval at the estimate where both groups are constant)."""
    est = float(pos.mean() - neg.mean()) if len(pos) and len(neg) else math.nan
    if len(pos) < 2 or len(neg) < 2:
        return est, math.nan, math.nan, math.nan, math.nan
    scale = max(1.0, float(abs(pos).max()), float(abs(neg).max()))
    if pos.std(ddof=1) <= 1e-9 * scale and neg.std(ddof=1) <= 1e-9 * scale:
        # every unit of each framing gives the same value: the difference is exact, a t test has no variance
        return est, est, est, math.nan, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy's precision-loss note on near-constant groups
        test = stats.ttest_ind(pos, neg, equal_var=False)
        ci = test.confidence_interval(confidence)
    return est, float(ci.low), float(ci.high), float(test.pvalue), float(test.df)


def _framing_arrays(values: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    pos = values.loc[values["framing"] == FRAMINGS[0], column].to_numpy(float)
    neg = values.loc[values["framing"] == FRAMINGS[1], column].to_numpy(float)
    return pos, neg


def framing_contrast_prompts(
    values: pd.DataFrame, column: str = "gap", confidence: float = 0.95
) -> FramingContrast:
    """The paper's assumption: mean of ``column`` over positive minus over negative prompts (``values`` has
    a ``framing`` column), every prompt an independent unit, with Welch's interval and p-value over the
    prompts (NaN when a framing has fewer than two prompts)."""
    pos, neg = _framing_arrays(values, column)
    est, low, high, p, df = _welch(pos, neg, confidence)
    n = len(pos) + len(neg)
    return FramingContrast(est, low, high, p, len(pos), len(neg), unit="prompt", df=df, n_prompts=n)


def framing_contrast(
    values: pd.DataFrame, column: str = "gap", cluster: str | None = ADJECTIVE, confidence: float = 0.95
) -> FramingContrast:
    """The framing contrast with prompts clustered by ``cluster`` (default: the prompt's adjective, see
    :func:`with_cluster`): the mean of ``column`` per cluster, then the mean over positive clusters minus
    over negative ones, with Welch's interval, p and degrees of freedom over the cluster means and the exact
    permutation p over every split of the clusters into the two framings (``p_min``: the smallest it can
    give; 0.1 for 3 against 3). ``cluster=None``: :func:`framing_contrast_prompts`."""
    if cluster is None:
        return framing_contrast_prompts(values, column, confidence)
    means = cluster_means(values, column, cluster)
    pos, neg = _framing_arrays(means, column)
    est, low, high, p, df = _welch(pos, neg, confidence)
    n_prompts = int(means["n_prompts"].sum())
    if not len(pos) or not len(neg):
        return FramingContrast(est, low, high, p, len(pos), len(neg), cluster, df, n_prompts=n_prompts)
    exact = split_test(neg, pos)  # mean(pos) - mean(neg) over every split of the clusters
    return FramingContrast(
        est, low, high, p, len(pos), len(neg), unit=cluster, df=df, p_exact=exact.p, p_min=exact.p_min,
        n_splits=n_splits(len(pos), len(neg)), n_prompts=n_prompts,
    )  # fmt: skip


def paired_gap_difference(gaps: pd.DataFrame, rm_a: str, rm_b: str) -> pd.DataFrame:
    """``prompt_id, framing, gap`` of ``rm_b`` minus ``rm_a`` on the prompts both were scored on (the
    clustered contrast of this table averages these differences within each adjective first)."""
    a = gaps[gaps["rm"] == rm_a].set_index(["prompt_id", "framing"])["gap"]
    b = gaps[gaps["rm"] == rm_b].set_index(["prompt_id", "framing"])["gap"]
    return (b - a).dropna().rename("gap").reset_index()


#: Columns of :func:`framing_contrasts`.
CONTRAST_COLUMNS = [
    "rm", *(f.name for f in FramingContrast.__dataclass_fields__.values()),
    "ci_low_prompts", "ci_high_prompts", "p_prompts", "df_prompts",
]  # fmt: skip


def framing_contrasts(
    gaps: pd.DataFrame,
    pairs: Sequence[tuple[str, str]] = (),
    cluster: str = ADJECTIVE,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """One row per RM of ``gaps`` (``rm, prompt_id, framing, gap``; its ``D``) and per pair ``(a, b)`` (``rm``
    = ``"b − a"``: the difference of their ``D``, paired by prompt): the clustered contrast of
    :func:`framing_contrast` and, beside it, the prompt-level interval of :func:`framing_contrast_prompts`
    (``*_prompts``; the same estimate in the balanced design). Columns :data:`CONTRAST_COLUMNS`."""
    parts = [(str(rm), grp) for rm, grp in gaps.groupby("rm", sort=True)]
    parts += [(f"{b} \u2212 {a}", paired_gap_difference(gaps, a, b)) for a, b in pairs]
    rows = []
    for name, values in parts:
        if values.empty:
            continue
        c, flat = (
            framing_contrast(values, cluster=cluster, confidence=confidence),
            framing_contrast_prompts(values, confidence=confidence),
        )
        rows.append(
            {"rm": name, **asdict(c), "ci_low_prompts": flat.ci_low, "ci_high_prompts": flat.ci_high,
             "p_prompts": flat.p, "df_prompts": flat.df}
        )  # fmt: skip
    return pd.DataFrame(rows, columns=CONTRAST_COLUMNS)


def contrast_reader_table(
    contrasts: pd.DataFrame, categories: Mapping[str, str] | None = None, pair: bool = False
) -> pd.DataFrame:
    """Framing contrasts (rows of :func:`framing_contrasts`) for readers: the estimate ``D``, its interval over
    the adjective means, Welch's p, the exact p over the splits of the adjectives (the smallest it can give in
    brackets), the adjectives per framing, and the interval and p of the paper's prompt-level analysis.
    ``categories`` (corpus -> category) keeps one category per corpus (e.g. Communion of the Big Two); ``pair``
    leads with the ``pair`` column (a chapter comparing pairs of models)."""
    lead = {"pair": "pair"} if pair else {}
    if contrasts.empty:
        return pd.DataFrame(columns=[*lead.values(), "corpus", "category", "D of"])
    df = contrasts.copy()
    if categories:
        keep = df["corpus"].map(categories)
        df = df[keep.isna() | (df["category"] == keep)]

    def ci(lo: pd.Series, hi: pd.Series) -> list[str]:
        return [interval(a, b, 1) if pd.notna(a) else "" for a, b in zip(lo, hi, strict=True)]

    df["ci"] = ci(df["ci_low"], df["ci_high"])
    df["ci_prompts"] = ci(df["ci_low_prompts"], df["ci_high_prompts"])
    df["exact"] = [f"{pvalue(p)} ({pvalue(m)})" for p, m in zip(df["p_exact"], df["p_min"], strict=True)]
    df["clusters"] = [f"{int(a)} + {int(b)}" for a, b in zip(df["n_positive"], df["n_negative"], strict=True)]
    cols = {**lead, "corpus": "corpus", "category": "category", "rm": "D of", "estimate": "D"}
    cols |= {"ci": "95% CI (adjectives)", "p": "Welch p", "exact": "exact p (smallest)"}
    cols |= {"clusters": "adjectives (+ / −)", "ci_prompts": "95% CI (prompts, the paper's)"}
    cols |= {"p_prompts": "p (prompts)"}
    return reader_table(df, cols, digits=1, pvalues=["p", "p_prompts"])
