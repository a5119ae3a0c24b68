"""The graded planted-word validation: how weak a plant each metric still detects.

The main validation (:mod:`.plant_validation`) plants at one strength, strong enough that every metric finds the planted
words (AUC near 1), so it cannot tell the metrics apart. Here the same fine-tune (the planted words, and the
sham control aimed at the frequency-matched sham words) is run at several **strengths**: learning rates of the
same number of AdamW steps, from one too weak to move any ranking to one that saturates. At every strength each
metric's planted-word AUC is measured under the tuned model and under both controls, the sham plant *of the
same strength* and the untuned model (:func:`detection_rows`).

**Detection** at a strength: the planted-word AUC under the plant minus that under the sham plant (the
``excess``) and minus that under the untuned model, each with a 95% percentile interval from the paired
bootstrap of :func:`.validation.paired_auc_bootstrap`, which resamples the evaluation prompts and the planted
words jointly: the units that were sampled. Every metric and condition of a level gets the same draws, so the
metrics are compared at each strength by the difference of their excess AUCs on those draws
(:func:`metric_differences`). **The metric that detects weaker plants wins** (:func:`winner`): at the weakest
strength where one metric's excess exceeds every other metric's of its level with an interval that excludes
zero; where no strength separates one metric from all the others the verdict is ``inconclusive``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .validation import Panel, paired_auc_bootstrap, panel_columns

__all__ = [
    "DETECTION_COLUMNS",
    "DIFFERENCE_COLUMNS",
    "Verdict",
    "detection_rows",
    "metric_differences",
    "weakest_detected",
    "winner",
]

#: Columns of the detection table (one row per level, metric and strength).
DETECTION_COLUMNS = [
    "level",
    "metric",
    "strength",
    "steps",
    "n_prompts",
    "n_planted",
    "n_candidates",
    "auc_planted",
    "ci_low_planted",
    "ci_high_planted",
    "auc_sham",
    "ci_low_sham",
    "ci_high_sham",
    "auc_untuned",
    "excess",
    "ci_low_excess",
    "ci_high_excess",
    "diff_untuned",
    "ci_low_untuned",
    "ci_high_untuned",
    "detected",
    "n_bootstrap",
]
#: Columns of the metric comparison (one row per level, strength and pair of metrics).
DIFFERENCE_COLUMNS = [
    "level",
    "strength",
    "metric_a",
    "metric_b",
    "excess_a",
    "excess_b",
    "difference",
    "ci_low",
    "ci_high",
    "separated",
    "n_bootstrap",
]


def _ci(x: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(x, [2.5, 97.5])
    return float(lo), float(hi)


def detection_rows(
    panels: Sequence[Panel],
    planted: Mapping[str, Any],
    sham: Mapping[str, Any],
    strength: float,
    steps: int,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray], dict[str, float]]:
    """The detection rows of one strength and level (:data:`DETECTION_COLUMNS`), with every metric's excess
    AUC replicates and point estimate (for :func:`metric_differences`). Each panel must hold the three
    conditions ``planted``, ``sham`` and ``untuned``; ``planted``/``sham``: word -> its unit in the panels."""
    rows, boots, points = [], {}, {}
    for panel in panels:
        missing = {"planted", "sham", "untuned"} - set(panel.values)
        if missing:
            raise ValueError(f"panel {panel.level}/{panel.metric} lacks the condition(s) {sorted(missing)}")
        cols = panel_columns(panel, planted, sham)
        point = {c: float(a[0]) for c, a in paired_auc_bootstrap(panel.values, *cols, 0).items()}
        boot = paired_auc_bootstrap(panel.values, *cols, n_bootstrap, seed)
        excess, over = boot["planted"] - boot["sham"], boot["planted"] - boot["untuned"]
        lo_e, hi_e = _ci(excess)
        lo_u, hi_u = _ci(over)
        row = {
            "level": panel.level,
            "metric": panel.metric,
            "strength": float(strength),
            "steps": int(steps),
            "n_prompts": next(iter(panel.values.values())).shape[0],
            "n_planted": len(cols[0]),
            "n_candidates": len(cols[0]) + len(cols[1]),
            "auc_untuned": point["untuned"],
            "excess": point["planted"] - point["sham"],
            "ci_low_excess": lo_e,
            "ci_high_excess": hi_e,
            "diff_untuned": point["planted"] - point["untuned"],
            "ci_low_untuned": lo_u,
            "ci_high_untuned": hi_u,
            "detected": bool(lo_e > 0 and lo_u > 0),
            "n_bootstrap": n_bootstrap,
        }
        for cond in ("planted", "sham"):
            row[f"auc_{cond}"] = point[cond]
            row[f"ci_low_{cond}"], row[f"ci_high_{cond}"] = _ci(boot[cond])
        rows.append(row)
        boots[panel.metric], points[panel.metric] = excess, point["planted"] - point["sham"]
    return rows, boots, points


def metric_differences(
    level: str,
    strength: float,
    boots: Mapping[str, np.ndarray],
    points: Mapping[str, float],
    n_bootstrap: int,
) -> list[dict[str, Any]]:
    """Every pair of metrics of one level and strength: the difference of their excess AUCs (``a`` minus
    ``b``) with its 95% interval over the shared draws (:data:`DIFFERENCE_COLUMNS`); ``separated`` when the
    interval excludes zero."""
    rows = []
    for a, b in itertools.combinations(list(boots), 2):
        lo, hi = _ci(boots[a] - boots[b])
        rows.append(
            {
                "level": level,
                "strength": float(strength),
                "metric_a": a,
                "metric_b": b,
                "excess_a": points[a],
                "excess_b": points[b],
                "difference": points[a] - points[b],
                "ci_low": lo,
                "ci_high": hi,
                "separated": bool(lo > 0 or hi < 0),
                "n_bootstrap": n_bootstrap,
            }
        )
    return rows


def weakest_detected(detection: pd.DataFrame) -> pd.DataFrame:
    """Per level and metric, the weakest strength at which the plant is detected (``NaN``: at none) and the
    number of strengths tried: ``level, metric, weakest_detected, n_strengths``."""
    rows = []
    for (level, metric), grp in detection.groupby(["level", "metric"], sort=False):
        hit = grp.loc[grp["detected"], "strength"]
        rows.append(
            {
                "level": level,
                "metric": metric,
                "weakest_detected": float(hit.min()) if len(hit) else np.nan,
                "n_strengths": int(grp["strength"].nunique()),
            }
        )
    return pd.DataFrame(rows, columns=["level", "metric", "weakest_detected", "n_strengths"])


@dataclass(frozen=True)
class Verdict:
    """Which metric of a level detects weaker plants (:func:`winner`)."""

    level: str
    metric: str  # the winner ('' = inconclusive)
    strength: float  # the weakest strength at which it beats every other metric (NaN = none)
    leaders: tuple[str, ...]  # at the first strength that separates any two metrics: those no metric beats
    first_separating: float  # that strength (NaN = no strength separates any two metrics)
    n_separated: int  # metric pairs separated at some strength
    n_pairs: int  # metric pairs of the level

    @property
    def conclusive(self) -> bool:
        return bool(self.metric)


def winner(differences: pd.DataFrame, level: str) -> Verdict:
    """The metric of ``level`` that detects weaker plants: at the weakest strength where its excess AUC
    exceeds every other metric's with a paired interval that excludes zero. Without one the verdict is
    inconclusive (``metric=''``), and ``leaders`` lists, at the weakest strength separating any two metrics,
    the metrics that no other metric beats there."""
    d = differences[differences["level"] == level]
    metrics = list(dict.fromkeys([*d["metric_a"], *d["metric_b"]]))
    if len(metrics) < 2:
        return Verdict(level, "", np.nan, tuple(metrics), np.nan, 0, 0)
    pairs = {tuple(sorted(x)) for x in d[["metric_a", "metric_b"]].itertuples(index=False)}
    separated = {tuple(sorted((r.metric_a, r.metric_b))) for r in d[d["separated"]].itertuples()}
    first, leaders = np.nan, tuple(metrics)
    for strength in sorted(d["strength"].unique()):
        at = d[d["strength"] == strength]
        beaten: dict[str, set[str]] = {m: set() for m in metrics}  # m -> the metrics m beats
        for r in at[at["separated"]].itertuples():
            win, lose = (r.metric_a, r.metric_b) if r.ci_low > 0 else (r.metric_b, r.metric_a)
            beaten[win].add(lose)
        if any(beaten.values()) and np.isnan(first):
            first = float(strength)
            losers = set().union(*beaten.values())
            leaders = tuple(m for m in metrics if m not in losers)
        top = [m for m in metrics if len(beaten[m]) == len(metrics) - 1]
        if top:
            return Verdict(level, top[0], float(strength), leaders, first, len(separated), len(pairs))
    return Verdict(level, "", np.nan, leaders, first, len(separated), len(pairs))
