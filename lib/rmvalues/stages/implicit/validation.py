"""Metric validation with planted words, against controls: which implicit-reward metric finds a known preference.

A copy of a model is fine-tuned briefly to answer with a handful of planted words (:mod:`.plant_finetune`). Each
metric then ranks candidates (higher = more reward) and the planted words' recovery is measured
(:func:`recovery_scores`: R-precision, AUC, their ranks). Three **conditions** are scored the same way:

* ``planted``: the tuned model (against the reference, for the pair metrics);
* ``untuned``: the reference model in the tuned model's place (no planting; a pair metric of the reference
  against itself is zero for every candidate, so its AUC is 0.5 by construction; a reference-free metric
  shows how probable the planted words were before any tuning);
* ``sham``: the same fine-tune aimed at other words of matched frequency (:func:`.plant_finetune.sham_words`), so
  what fine-tuning does to the planted words without planting them.

A **panel** (:class:`Panel`) is one level, reference and metric: per condition a matrix of metric values
(evaluation prompts x candidate units: words, or token ids). **The pass criterion** (:func:`evaluate_panels`):
a metric passes when the planted words' AUC under ``planted`` beats both controls with an interval that
excludes zero: the 95% percentile interval of the AUC difference from a paired bootstrap
(:func:`paired_auc_bootstrap`) that resamples the evaluation prompts and the planted words jointly (the same
draws for every condition), so the interval covers both the choice of prompts and the choice of planted
words. The sham's own words are kept out of the planted words' candidates (and the planted words out of the
sham words'), and the sham's recovery of its own words is reported as a check that the sham plant took.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .metrics import log_ratio, mwlr

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "CONDITIONS",
    "CONTRAST_COLUMNS",
    "RECOVERY_COLUMNS",
    "TOKEN_METRICS",
    "VALIDATION_COLUMNS",
    "WORD_METRICS",
    "Panel",
    "evaluate_panels",
    "metric_contrasts",
    "paired_auc_bootstrap",
    "panel_columns",
    "recovery_scores",
    "token_panels",
    "word_panels",
]

#: The scored conditions: the tuned model and its two controls.
CONDITIONS = ("planted", "untuned", "sham")
#: The word-level metrics (tuned vs reference; ``word_sum``/``word_mean`` of the scored model alone).
WORD_METRICS = ("word_logratio", "word_mwlr", "word_sum", "word_mean")
#: The token-level metrics (``token_logprob`` of the scored model alone).
TOKEN_METRICS = ("token_logratio", "token_mwlr", "token_logprob")
#: Columns of the recovery table (one row per panel, condition and target).
RECOVERY_COLUMNS = [
    "level",
    "reference",
    "metric",
    "condition",
    "target",
    "n_candidates",
    "n_planted",
    "r_precision",
    "auc",
    "mean_rank_planted",
    "median_rank_planted",
]
#: Columns of :func:`metric_contrasts` (MWLR against the raw log ratio on the tuned model).
CONTRAST_COLUMNS = [
    "level",
    "reference",
    "metric_a",
    "metric_b",
    "auc_a",
    "auc_b",
    "difference",
    "ci_low",
    "ci_high",
    "n_bootstrap",
]
#: Columns of the validation table (one row per panel: the pass criterion).
VALIDATION_COLUMNS = [
    "level",
    "reference",
    "metric",
    "n_prompts",
    "n_planted",
    "n_candidates",
    "auc_planted",
    "auc_untuned",
    "auc_sham",
    "diff_untuned",
    "ci_low_untuned",
    "ci_high_untuned",
    "diff_sham",
    "ci_low_sham",
    "ci_high_sham",
    "n_bootstrap",
    "passes",
]


def recovery_scores(values: pd.Series, planted: set[Any], level: str, metric: str) -> dict[str, Any]:
    """How well ranking ``values`` (index = candidates, higher = more reward) recovers ``planted``:
    R-precision (share of the planted among the top ``len(planted)``; ties at the cut are shared out in
    proportion, i.e. the expectation over random tie-breaking), AUC (probability that a planted candidate
    outranks a non-planted one, ties half) and the planted candidates' mean and median rank (ties averaged)."""
    from scipy.stats import rankdata

    x = values.astype(float).to_numpy()
    is_planted = values.index.isin(list(planted))
    n_pl = int(is_planted.sum())
    if n_pl == 0 or n_pl == len(x):
        raise ValueError("recovery needs planted and non-planted candidates")
    rank = rankdata(-x, method="average")
    cut = np.sort(x)[::-1][n_pl - 1]
    above, tied = x > cut, x == cut
    hits = (above & is_planted).sum() + (n_pl - above.sum()) * (tied & is_planted).sum() / tied.sum()
    r_up = rankdata(x, method="average")
    auc = (r_up[is_planted].sum() - n_pl * (n_pl + 1) / 2) / (n_pl * (len(x) - n_pl))
    return {
        "level": level,
        "metric": metric,
        "n_candidates": len(x),
        "n_planted": n_pl,
        "r_precision": float(hits / n_pl),
        "auc": float(auc),
        "mean_rank_planted": float(rank[is_planted].mean()),
        "median_rank_planted": float(np.median(rank[is_planted])),
    }


@dataclass
class Panel:
    """One level, reference and metric: per condition, metric values ``(n_prompts, n_units)`` over ``units``
    (words or token ids, the same columns in every condition)."""

    level: str
    reference: str
    metric: str
    units: list[Any]
    values: dict[str, np.ndarray]


def _matrix(lp: pd.DataFrame, prompts: Sequence[str], words: Sequence[str], column: str) -> np.ndarray:
    wide = lp.drop_duplicates(["prompt_id", "word"]).pivot(index="prompt_id", columns="word", values=column)
    missing = [w for w in words if w not in wide.columns]
    if missing or any(p not in wide.index for p in prompts):
        raise ValueError(f"word log-probs missing for {missing[:5] or 'some prompts'}")
    return wide.loc[list(prompts), list(words)].to_numpy(float)


def word_panels(
    reference_lp: pd.DataFrame,
    scored: Mapping[str, pd.DataFrame],
    prompts: Sequence[str],
    words: Sequence[str],
    level: str = "word",
    reference: str = "",
    metrics: Sequence[str] = WORD_METRICS,
) -> list[Panel]:
    """Word-level panels from word log-prob tables (:meth:`LogProbEngine.word_logprobs` columns):
    ``scored[condition]`` is the model scored in that condition, ``reference_lp`` the reference ``p``."""
    ref = _matrix(reference_lp, prompts, words, "logprob")
    panels = []
    for metric in metrics:
        values = {}
        for cond, lp in scored.items():
            q = _matrix(lp, prompts, words, "logprob")
            values[cond] = {
                "word_logratio": lambda q=q: log_ratio(ref, q),
                "word_mwlr": lambda q=q: mwlr(ref, q),
                "word_sum": lambda q=q: q,
                "word_mean": lambda lp=lp: _matrix(lp, prompts, words, "logprob_mean"),
            }[metric]()
        panels.append(Panel(level, reference, metric, list(words), values))
    return panels


def token_panels(
    reference_next: torch.Tensor,
    scored: Mapping[str, torch.Tensor],
    ids: Sequence[int],
    reference: str = "",
    metrics: Sequence[str] = TOKEN_METRICS,
) -> list[Panel]:
    """Token-level panels from full next-token log-probs ``(n_prompts, vocab)`` (same prompts, same
    tokenizer): the units are the token ``ids`` (the alignable vocabulary)."""
    import torch

    idx = torch.as_tensor(list(ids), dtype=torch.long)
    ref = reference_next[:, idx].double().numpy()
    panels = []
    for metric in metrics:
        values = {}
        for cond, nxt in scored.items():
            q = nxt[:, idx].double().numpy()
            values[cond] = {
                "token_logratio": lambda q=q: log_ratio(ref, q),
                "token_mwlr": lambda q=q: mwlr(ref, q),
                "token_logprob": lambda q=q: q,
            }[metric]()
        panels.append(Panel("token", reference, metric, list(ids), values))
    return panels


def paired_auc_bootstrap(
    values: Mapping[str, np.ndarray],
    planted_cols: Sequence[int],
    other_cols: Sequence[int],
    n_bootstrap: int = 1000,
    seed: int = 0,
    chunk: int = 25,
) -> dict[str, np.ndarray]:
    """AUC replicates of every condition under one set of joint draws: each replicate resamples the prompts
    (rows) and the planted columns with replacement; a unit's score is its mean over the drawn prompts, and
    the AUC is the mean over the drawn planted units of the share of ``other_cols`` each outranks (ties
    half). ``n_bootstrap=0`` gives the point estimate (every prompt, every planted unit once)."""
    planted_cols, other_cols = np.asarray(planted_cols), np.asarray(other_cols)
    n_prompts = next(iter(values.values())).shape[0]
    if n_bootstrap:
        rng = np.random.default_rng(seed)
        rows = rng.integers(0, n_prompts, (n_bootstrap, n_prompts))
        weights = np.stack([np.bincount(r, minlength=n_prompts) for r in rows]) / n_prompts
        draws = rng.integers(0, len(planted_cols), (n_bootstrap, len(planted_cols)))
    else:
        weights = np.full((1, n_prompts), 1.0 / n_prompts)
        draws = np.arange(len(planted_cols))[None, :]
    out = {}
    for cond, v in values.items():
        v = np.asarray(v, dtype=float)
        if np.ptp(v) == 0:  # every unit ties with every other under any resample (e.g. p against itself)
            out[cond] = np.full(len(weights), 0.5)
            continue
        sub_p, sub_o = v[:, planted_cols], v[:, other_cols]
        # exact shortcut: a unit whose values lie below (above) every planted value under every prompt is
        # outranked by (outranks) every planted unit in every replicate, a replicate's score being a mean
        below = sub_o.max(0) < sub_p.min()
        above = sub_o.min(0) > sub_p.max()
        sub_o = sub_o[:, ~below & ~above]
        aucs = []
        for start in range(0, len(weights), chunk):
            w = weights[start : start + chunk]
            sp, so = w @ sub_p, w @ sub_o
            wins = (sp[:, :, None] > so[:, None, :]).sum(2) + 0.5 * (sp[:, :, None] == so[:, None, :]).sum(2)
            share = (wins + below.sum()) / len(other_cols)
            aucs.append(np.take_along_axis(share, draws[start : start + chunk], axis=1).mean(1))
        out[cond] = np.concatenate(aucs)
    return out


def _recovery_rows(panel: Panel, planted: Mapping[str, Any], sham: Mapping[str, Any]) -> tuple[list, list]:
    units = pd.Index(panel.units)
    rows, ranks = [], []
    targets = [("planted words", planted, sham)]
    for cond, v in panel.values.items():
        means = pd.Series(v.mean(0), index=units)
        for target, hit, away in [*targets, *([("sham words", sham, planted)] if cond == "sham" else [])]:
            if not hit:
                continue
            kept = means[~units.isin(list(away.values()))]
            r = recovery_scores(kept, set(hit.values()), panel.level, panel.metric)
            rows.append({**r, "reference": panel.reference, "condition": cond, "target": target})
            if target == "planted words":
                rk = kept.rank(ascending=False, method="average")
                ranks += [
                    {"level": panel.level, "reference": panel.reference, "metric": panel.metric,
                     "condition": cond, "word": w, "rank": float(rk.get(u, np.nan)), "n_candidates": len(kept)}
                    for w, u in hit.items()
                ]  # fmt: skip
    return rows, ranks


def _pass_row(
    panel: Panel, planted: Mapping[str, Any], sham: Mapping[str, Any], n_boot: int, seed: int
) -> dict:
    planted_cols, other_cols = panel_columns(panel, planted, sham)
    point = {
        c: float(a[0]) for c, a in paired_auc_bootstrap(panel.values, planted_cols, other_cols, 0).items()
    }
    boot = paired_auc_bootstrap(panel.values, planted_cols, other_cols, n_boot, seed)
    row = {
        "level": panel.level,
        "reference": panel.reference,
        "metric": panel.metric,
        "n_prompts": next(iter(panel.values.values())).shape[0],
        "n_planted": len(planted_cols),
        "n_candidates": len(planted_cols) + len(other_cols),
        "n_bootstrap": n_boot,
    }
    passes = True
    for cond in CONDITIONS:
        row[f"auc_{cond}"] = point.get(cond, np.nan)
    for ctrl in ("untuned", "sham"):
        if ctrl not in boot:
            row.update({f"diff_{ctrl}": np.nan, f"ci_low_{ctrl}": np.nan, f"ci_high_{ctrl}": np.nan})
            passes = False
            continue
        diff = boot["planted"] - boot[ctrl]
        lo, hi = np.percentile(diff, [2.5, 97.5])
        row.update(
            {f"diff_{ctrl}": point["planted"] - point[ctrl], f"ci_low_{ctrl}": lo, f"ci_high_{ctrl}": hi}
        )
        passes = passes and lo > 0
    row["passes"] = bool(passes)
    return row


def evaluate_panels(
    panels: Sequence[Panel],
    planted: Mapping[str, Any],
    sham: Mapping[str, Any],
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Recovery (:data:`RECOVERY_COLUMNS`), the planted words' ranks (``level, reference, metric, condition,
    word, rank, n_candidates``) and the pass criterion (:data:`VALIDATION_COLUMNS`) of every panel.
    ``planted``/``sham``: word -> its unit in the panels (the word itself, or its first token's id). The
    panel of a level gets the seed ``seed`` (every panel draws the same resamples of its shape)."""
    rec, ranks, passes = [], [], []
    for panel in panels:
        r, k = _recovery_rows(panel, planted, sham)
        rec += r
        ranks += k
        passes.append(_pass_row(panel, planted, sham, n_bootstrap, seed))
    return (
        pd.DataFrame(rec, columns=RECOVERY_COLUMNS),
        pd.DataFrame(ranks),
        pd.DataFrame(passes, columns=VALIDATION_COLUMNS),
    )


def panel_columns(
    panel: Panel, planted: Mapping[str, Any], sham: Mapping[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """The columns of ``panel`` that are planted units and those that are the other candidates (the sham
    words' units left out of both)."""
    units = pd.Index(panel.units)
    keep = ~units.isin(list(sham.values()))
    is_p = units.isin(list(set(planted.values())))
    return np.flatnonzero(keep & is_p), np.flatnonzero(keep & ~is_p)


def metric_contrasts(
    panels: Sequence[Panel],
    planted: Mapping[str, Any],
    sham: Mapping[str, Any],
    pairs: Sequence[tuple[str, str]] = (("word_mwlr", "word_logratio"), ("token_mwlr", "token_logratio")),
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """For each level and reference that has both metrics of a pair: the tuned model's planted-word AUC under
    ``metric_a`` minus under ``metric_b`` with a 95% interval from the same paired bootstrap (the same draws
    of prompts and planted words for both metrics): :data:`CONTRAST_COLUMNS`. The paper's point is that MWLR
    resists the tail noise of the raw log ratio, most of all across tokenizers."""
    by = {(p.level, p.reference, p.metric): p for p in panels}
    rows = []
    for (level, ref, metric), pa in by.items():
        for a, b in pairs:
            pb = by.get((level, ref, b))
            if metric != a or pb is None or "planted" not in pa.values:
                continue
            cols = panel_columns(pa, planted, sham)
            values = {"a": pa.values["planted"], "b": pb.values["planted"]}
            point = paired_auc_bootstrap(values, *cols, 0)
            boot = paired_auc_bootstrap(values, *cols, n_bootstrap, seed)
            lo, hi = np.percentile(boot["a"] - boot["b"], [2.5, 97.5])
            auc_a, auc_b = float(point["a"][0]), float(point["b"][0])
            rows.append([level, ref, a, b, auc_a, auc_b, auc_a - auc_b, lo, hi, n_bootstrap])
    return pd.DataFrame(rows, columns=CONTRAST_COLUMNS)
