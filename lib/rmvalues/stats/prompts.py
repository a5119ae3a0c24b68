"""Inference over prompts, for one reward model or a pair of them: what a run with one RM per base model can
estimate, and the unit it generalises over (other prompts like these, not other reward models).

With ``m(k, p)`` the median rank of category ``k`` under prompt ``p`` (rank 1 = highest reward), the **gap**
of category ``k`` under ``p`` is ``mean_{j != k} m(j, p) - m(k, p)``: how many ranks ``k`` stands above the
other categories. The **framing contrast** is the mean gap over positive prompts minus the mean gap over
negative prompts, the per-RM ``D(k)`` of the statistics chapter, with a Welch interval that treats the prompts
of each framing as independent draws. For two RMs scored on the same prompts, the contrast of their per-prompt
gap differences is the difference of their ``D(k)``, paired by prompt.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import pandas as pd
from scipy import stats

FRAMINGS = ("positive", "negative")


@dataclass(frozen=True)
class FramingContrast:
    """The positive-minus-negative difference of a per-prompt quantity, with its Welch interval."""

    estimate: float
    ci_low: float  # NaN when a framing has fewer than two prompts
    ci_high: float
    p: float
    n_positive: int
    n_negative: int


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


def framing_contrast(values: pd.DataFrame, column: str = "gap", confidence: float = 0.95) -> FramingContrast:
    """Mean of ``column`` over positive minus over negative prompts (``values`` has a ``framing`` column),
    with Welch's interval and p-value (NaN when a framing has fewer than two prompts)."""
    pos = values.loc[values["framing"] == FRAMINGS[0], column].to_numpy(float)
    neg = values.loc[values["framing"] == FRAMINGS[1], column].to_numpy(float)
    est = float(pos.mean() - neg.mean()) if len(pos) and len(neg) else math.nan
    if len(pos) < 2 or len(neg) < 2:
        return FramingContrast(est, math.nan, math.nan, math.nan, len(pos), len(neg))
    scale = max(1.0, float(abs(pos).max()), float(abs(neg).max()))
    if pos.std(ddof=1) <= 1e-9 * scale and neg.std(ddof=1) <= 1e-9 * scale:
        # every prompt of each framing gives the same value: the difference is exact, a t test has no variance
        return FramingContrast(est, est, est, math.nan, len(pos), len(neg))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy's precision-loss note on near-constant groups
        test = stats.ttest_ind(pos, neg, equal_var=False)
        ci = test.confidence_interval(confidence)
    return FramingContrast(est, float(ci.low), float(ci.high), float(test.pvalue), len(pos), len(neg))


def paired_gap_difference(gaps: pd.DataFrame, rm_a: str, rm_b: str) -> pd.DataFrame:
    """``prompt_id, framing, gap`` of ``rm_b`` minus ``rm_a`` on the prompts both were scored on."""
    a = gaps[gaps["rm"] == rm_a].set_index(["prompt_id", "framing"])["gap"]
    b = gaps[gaps["rm"] == rm_b].set_index(["prompt_id", "framing"])["gap"]
    return (b - a).dropna().rename("gap").reset_index()
