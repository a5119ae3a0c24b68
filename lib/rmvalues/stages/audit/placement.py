"""Where an audited RM stands among the published reference RMs: per-RM statistics, family summaries,
percentiles, distances in units of a family's RM-level spread, the audited RM's own resampling, and a
leave-one-RM-out check of the families' ranges.

* **The statistics** are :func:`rmvalues.stats.rm_values` of the audited RM's live scores and of the published
  scores, on the same words and prompts (:func:`common_design`): the code of the statistics chapter.
* **Percentile** of a value ``x`` among a family's ``n`` RM values ``v``: ``100 * (#{v < x} + #{v = x} / 2) /
  n`` (ties count half). **Distance**: ``(x - mean(v)) / sd(v)`` with the RM-level sample SD (``ddof = 1``).
  **Prediction interval** of one more RM of the family, if its RMs' values were normal:
  ``mean +- t(n - 1, 0.975) * sd * sqrt(1 + 1/n)``.
* **The audited RM's interval** (:func:`bootstrap_values`): its prompts resampled within framing and its words
  within their labels, the words re-ranked in every resample; the interval covers the audited RM's own
  sampling of prompts and words, not the sampling of the reference RMs (whose values are held fixed).
* **What the references allow**: under exchangeability, one more RM of a family of ``n`` falls beyond the
  range of those ``n`` with probability ``2 / (n + 1)``, and a rank-based test of "unlike this family" has
  smallest two-sided p ``2 / (n + 1)`` (:func:`reference_limits`); with four to six RMs per family no such test
  reaches 0.05, so the page describes positions and does not classify.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps
from scipy.stats import rankdata

from ...stats import rm_values, stable_seed

__all__ = [
    "KEY",
    "PLACEMENT_COLUMNS",
    "bootstrap_values",
    "common_design",
    "distance",
    "family_summary",
    "leave_one_out",
    "loo_summary",
    "audited_values",
    "percentile",
    "placement",
    "position",
    "reference_limits",
]

#: The key of one statistic (one row of :func:`rmvalues.stats.rm_contrasts` per RM).
KEY = ["corpus", "analysis", "subcategory", "statistic", "category", "versus"]
#: Columns of :func:`placement` (one row per audited RM, statistic and reference family).
PLACEMENT_COLUMNS = [
    *KEY,
    "rm",
    "rm_family",
    "family",
    "D",
    "D_low",
    "D_high",
    "n_family",
    "family_min",
    "family_max",
    "family_mean",
    "family_sd",
    "percentile",
    "percentile_low",
    "percentile_high",
    "distance",
    "distance_low",
    "distance_high",
    "pred_low",
    "pred_high",
    "inside_prediction",
    "position",
]
ALPHA = 0.05


def percentile(value: float, refs: Sequence[float]) -> float:
    """The percentile of ``value`` among ``refs``: ``100 * (#below + #equal / 2) / n`` (NaN without refs)."""
    v = np.asarray(refs, dtype=float)
    if v.size == 0 or math.isnan(value):
        return float("nan")
    return float(100.0 * ((v < value).sum() + 0.5 * (v == value).sum()) / v.size)


def distance(value: float, refs: Sequence[float]) -> float:
    """``(value - mean(refs)) / sd(refs)``, the RM-level sample SD (``ddof = 1``); NaN with fewer than two refs
    or no spread."""
    v = np.asarray(refs, dtype=float)
    if v.size < 2:
        return float("nan")
    sd = float(v.std(ddof=1))
    return float((value - v.mean()) / sd) if sd > 0 else float("nan")


def position(value: float, refs: Sequence[float]) -> str:
    """``below``, ``above`` or ``within`` the range of ``refs``."""
    v = np.asarray(refs, dtype=float)
    if value < v.min():
        return "below"
    if value > v.max():
        return "above"
    return "within"


def reference_limits(n: int, alpha: float = ALPHA) -> dict[str, float]:
    """What ``n`` reference RMs of a family can say: the chance that one more RM of that family falls beyond
    their range (``2 / (n + 1)``), the smallest two-sided p of a rank-based test (the same), and the family size
    at which that test could reach ``alpha`` (``ceil(2 / alpha) - 1``)."""
    return {
        "n": n,
        "p_beyond_range": 2.0 / (n + 1),
        "p_min_two_sided": min(1.0, 2.0 / (n + 1)),
        "n_needed": math.ceil(2.0 / alpha) - 1,
    }


def common_design(audited: pd.DataFrame, published: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both score tables restricted, per corpus, to the words and prompts that every audited RM and every
    published RM has (ranks depend on the word set, so the statistics compare only on the same words and
    prompts)."""
    keep_a, keep_p = [], []
    for corpus, grp in audited.groupby("corpus", sort=True):
        pub = published[published["corpus"] == corpus]
        words = set.intersection(*(set(g["word"]) for _, g in grp.groupby("model")))
        prompts = set.intersection(*(set(g["prompt_id"]) for _, g in grp.groupby("model")))
        if not pub.empty:
            words &= set.intersection(*(set(g["word"]) for _, g in pub.groupby("model")))
            prompts &= set.intersection(*(set(g["prompt_id"]) for _, g in pub.groupby("model")))
        keep_a.append(grp[grp["word"].isin(words) & grp["prompt_id"].isin(prompts)])
        keep_p.append(pub[pub["word"].isin(words) & pub["prompt_id"].isin(prompts)])
    return (
        pd.concat(keep_a, ignore_index=True),
        pd.concat(keep_p, ignore_index=True) if keep_p else published.iloc[0:0],
    )


def family_summary(reference: pd.DataFrame) -> pd.DataFrame:
    """Per statistic and family of the reference RMs' values (:func:`rmvalues.stats.rm_contrasts` rows): ``n,
    min, max, mean, sd`` (``ddof = 1``) and the 95% prediction interval of one more RM of the family."""
    rows = []
    for key, grp in reference.groupby([*KEY, "family"], sort=True, dropna=False):
        v = grp["D"].to_numpy(float)
        n, sd = v.size, float(v.std(ddof=1)) if v.size > 1 else float("nan")
        half = float(sps.t.ppf(1 - ALPHA / 2, n - 1) * sd * math.sqrt(1 + 1 / n)) if n > 1 else float("nan")
        rows.append(
            {
                **dict(zip([*KEY, "family"], key, strict=True)),
                "n_family": n,
                "family_min": float(v.min()),
                "family_max": float(v.max()),
                "family_mean": float(v.mean()),
                "family_sd": sd,
                "pred_low": float(v.mean()) - half,
                "pred_high": float(v.mean()) + half,
                "rms": ", ".join(sorted(grp["rm"])),
            }
        )
    return pd.DataFrame(rows)


@dataclass
class _Design:
    """One audited RM's scores on one corpus as arrays: ``scores[prompt, word]``, the prompts' framing, and
    per analysis its categories' word masks."""

    scores: np.ndarray
    positive: np.ndarray
    strata: np.ndarray  # one label signature per word (words are resampled within it)
    groups: list[tuple[str, str | None, list[str], list[np.ndarray]]]  # analysis, subcategory, cats, masks


def _mask(words: list[str], members: pd.Series) -> np.ndarray:
    """Which of ``words`` are among ``members`` (a hash lookup: numpy's isin sorts object arrays)."""
    have = set(members)
    return np.fromiter((w in have for w in words), dtype=bool, count=len(words))


def _design(scores: pd.DataFrame) -> _Design:
    wide = scores.drop_duplicates(["prompt_id", "word"]).pivot(
        index="prompt_id", columns="word", values="score"
    )
    words = list(wide.columns)
    framing = scores.drop_duplicates("prompt_id").set_index("prompt_id")["framing"]
    labels = scores.drop_duplicates(["word", "category", "subcategory"])
    signature = labels.assign(lab=labels["category"] + "|" + labels["subcategory"].fillna("")).groupby(
        "word"
    )["lab"]
    strata = signature.agg(lambda s: ";".join(sorted(s))).reindex(words).to_numpy()
    groups = []
    cats = sorted(labels["category"].unique())
    groups.append(
        ("pooled", None, cats, [_mask(words, labels.loc[labels["category"] == c, "word"]) for c in cats])
    )
    for sub in sorted(labels["subcategory"].dropna().unique()):
        sl = labels[labels["subcategory"] == sub]
        scats = sorted(sl["category"].unique())
        groups.append(
            ("split", sub, scats, [_mask(words, sl.loc[sl["category"] == c, "word"]) for c in scats])
        )
    return _Design(
        wide.to_numpy(float), (framing.reindex(wide.index) == "positive").to_numpy(), strata, groups
    )


def _d_values(d: _Design, p: np.ndarray, w: np.ndarray) -> list[float]:
    """``D(k)`` of one resample (prompts ``p``, words ``w``), in the order of :func:`_keys`."""
    ranks = rankdata(-d.scores[np.ix_(p, w)], axis=1, method="average")
    pos = d.positive[p]
    out = []
    for _, _, cats, masks in d.groups:
        if len(cats) < 2:
            continue
        med = {c: np.median(ranks[:, m[w]], axis=1) for c, m in zip(cats, masks, strict=True)}
        mean = {(c, f): med[c][pos == f].mean() for c in cats for f in (True, False)}
        for k in cats[1:] if len(cats) == 2 else cats:
            others = [c for c in cats if c != k]
            gain = {f: np.mean([mean[(c, f)] for c in others]) - mean[(k, f)] for f in (True, False)}
            out.append(float(gain[True] - gain[False]))
    return out


def _keys(d: _Design, corpus: str) -> list[tuple[str, str, str | None, str]]:
    out = []
    for analysis, sub, cats, _ in d.groups:
        if len(cats) < 2:
            continue
        out += [(corpus, analysis, sub, f"D({k})") for k in (cats[1:] if len(cats) == 2 else cats)]
    return out


def bootstrap_values(scores: pd.DataFrame, n_bootstrap: int, seed: int) -> pd.DataFrame:
    """``n_bootstrap`` resampled ``D(k)`` of each audited RM (``scores``: its live scores, one or more RMs):
    per resample its prompts drawn with replacement within framing and its words within their label
    signature, the words ranked again. Columns ``corpus, analysis, subcategory, statistic, rm, draw, D``; draw
    0 is the identity resample (the point estimate)."""
    rows = []
    for (rm, corpus), grp in scores.groupby(["model", "corpus"], sort=True):
        d = _design(grp)
        rng = np.random.default_rng(stable_seed(seed, rm, corpus))
        idx_p = [np.flatnonzero(d.positive == f) for f in (True, False)]
        idx_w = [np.flatnonzero(d.strata == s) for s in pd.unique(d.strata)]
        keys = _keys(d, corpus)
        draws = [_d_values(d, np.arange(d.scores.shape[0]), np.arange(d.scores.shape[1]))]
        for _ in range(n_bootstrap):
            p = np.concatenate([rng.choice(i, i.size) for i in idx_p])
            w = np.concatenate([rng.choice(i, i.size) for i in idx_w])
            draws.append(_d_values(d, p, w))
        arr = np.asarray(draws)
        for j, (c, a, s, st) in enumerate(keys):
            rows.append(
                pd.DataFrame(
                    {"corpus": c, "analysis": a, "subcategory": s, "statistic": st, "rm": rm,
                     "draw": np.arange(len(arr)), "D": arr[:, j]}
                )
            )  # fmt: skip
    return pd.concat(rows, ignore_index=True)


def placement(audited: pd.DataFrame, reference: pd.DataFrame, draws: pd.DataFrame) -> pd.DataFrame:
    """One row per audited RM, statistic and reference family: :data:`PLACEMENT_COLUMNS`. ``audited`` and
    ``reference``: :func:`rmvalues.stats.rm_contrasts` rows; ``draws``: :func:`bootstrap_values` (the interval
    of ``D`` and, mapped through the same family, of the percentile and the distance: 2.5% and 97.5% of the
    draws other than draw 0)."""
    summary = family_summary(reference)
    rows = []
    merge_key = ["corpus", "analysis", "subcategory", "statistic"]
    for a in audited.itertuples(index=False):
        fams = summary[
            (summary["corpus"] == a.corpus)
            & (summary["analysis"] == a.analysis)
            & (summary["subcategory"].astype(object).fillna("") == (a.subcategory or ""))
            & (summary["statistic"] == a.statistic)
        ]
        sel = draws[(draws["rm"] == a.rm) & (draws["draw"] > 0)]
        for col, val in zip(merge_key, (a.corpus, a.analysis, a.subcategory, a.statistic), strict=True):
            sel = sel[sel[col].astype(object).fillna("") == (val or "")]
        boot = sel["D"].to_numpy(float)
        for f in fams.itertuples(index=False):
            refs = reference[
                (reference["family"] == f.family)
                & (reference["statistic"] == a.statistic)
                & (reference["corpus"] == a.corpus)
                & (reference["analysis"] == a.analysis)
                & (reference["subcategory"].astype(object).fillna("") == (a.subcategory or ""))
            ]["D"].to_numpy(float)
            pct = np.array([percentile(x, refs) for x in boot]) if boot.size else np.array([np.nan])
            dist = (boot - f.family_mean) / f.family_sd if boot.size else np.array([np.nan])
            rows.append(
                {
                    **{k: getattr(a, k) for k in KEY},
                    "rm": a.rm,
                    "rm_family": a.family,
                    "family": f.family,
                    "D": a.D,
                    "D_low": _q(boot, 0.025),
                    "D_high": _q(boot, 0.975),
                    "n_family": f.n_family,
                    "family_min": f.family_min,
                    "family_max": f.family_max,
                    "family_mean": f.family_mean,
                    "family_sd": f.family_sd,
                    "percentile": percentile(a.D, refs),
                    "percentile_low": _q(pct, 0.025),
                    "percentile_high": _q(pct, 0.975),
                    "distance": distance(a.D, refs),
                    "distance_low": _q(dist, 0.025),
                    "distance_high": _q(dist, 0.975),
                    "pred_low": f.pred_low,
                    "pred_high": f.pred_high,
                    "inside_prediction": bool(f.pred_low <= a.D <= f.pred_high),
                    "position": position(a.D, refs),
                }
            )
    return pd.DataFrame(rows, columns=PLACEMENT_COLUMNS)


def _q(values: np.ndarray, q: float) -> float:
    v = values[~np.isnan(values)]
    return float(np.quantile(v, q)) if v.size else float("nan")


def leave_one_out(audited: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """How stable each family's range and the audited RM's place in it are when one reference RM is left out:
    per audited RM, statistic, family and left-out RM the family's min, max, mean and SD without it, and the
    audited RM's percentile, distance and position against the rest."""
    rows = []
    for a in audited.itertuples(index=False):
        ref = reference[
            (reference["statistic"] == a.statistic)
            & (reference["corpus"] == a.corpus)
            & (reference["analysis"] == a.analysis)
            & (reference["subcategory"].astype(object).fillna("") == (a.subcategory or ""))
        ]
        for fam, grp in ref.groupby("family", sort=True):
            full = position(a.D, grp["D"].to_numpy(float))
            for left in sorted(grp["rm"]):
                v = grp.loc[grp["rm"] != left, "D"].to_numpy(float)
                if v.size == 0:
                    continue
                rows.append(
                    {
                        **{k: getattr(a, k) for k in KEY},
                        "rm": a.rm,
                        "family": fam,
                        "left_out": left,
                        "family_min": float(v.min()),
                        "family_max": float(v.max()),
                        "family_mean": float(v.mean()),
                        "family_sd": float(v.std(ddof=1)) if v.size > 1 else float("nan"),
                        "percentile": percentile(a.D, v),
                        "distance": distance(a.D, v),
                        "position": position(a.D, v),
                        "position_all": full,
                    }
                )
    return pd.DataFrame(rows)


def loo_summary(loo: pd.DataFrame) -> pd.DataFrame:
    """Per audited RM, statistic and family: the range of the family's min and max, and of the audited RM's
    distance, over the left-out RMs, and whether its position (below / within / above the range) holds for
    every one."""
    if loo.empty:
        return pd.DataFrame()
    keys = [*KEY, "rm", "family"]
    out = (
        loo.assign(changed=loo["position"] != loo["position_all"])
        .groupby(keys, sort=True, dropna=False)
        .agg(
            n_left_out=("left_out", "size"),
            min_low=("family_min", "min"),
            min_high=("family_min", "max"),
            max_low=("family_max", "min"),
            max_high=("family_max", "max"),
            distance_low=("distance", "min"),
            distance_high=("distance", "max"),
            position_all=("position_all", "first"),
            n_position_changed=("changed", "sum"),
        )
        .reset_index()
    )
    out["n_position_changed"] = out["n_position_changed"].astype(int)
    out["position_stable"] = out["n_position_changed"] == 0
    return out


def audited_values(audited_scores: pd.DataFrame) -> pd.DataFrame:
    """The per-RM statistics of the audited RMs: :func:`rmvalues.stats.rm_values` of their scores."""
    return rm_values(audited_scores)
