"""Values the chapter's Markdown glues for the graded validation (:mod:`.graded`) and for what the two bases of a
pair differ in (read from the models table, which the model registry fills): short numbers and verdict
phrases chosen by the data, no paragraphs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .graded import Verdict, weakest_detected, winner

__all__ = ["base_differences", "graded_numbers", "key_numbers", "verdict_phrase"]

#: The planted words' AUC at which every metric counts as saturated at the strongest plant.
SATURATED = 0.95
#: The levels of the graded validation, as the prose names them.
LEVEL_NAMES = {"word": "word-level", "token": "token-level"}


def _lr(x: float) -> str:
    return f"{x:g}"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1] if items else "none"


def verdict_phrase(v: Verdict) -> str:
    """The verdict of one level in a short phrase: the winner, or ``inconclusive`` and why."""
    name = LEVEL_NAMES.get(v.level, v.level)
    if v.conclusive:
        return (
            f"{v.metric} separates weaker plants from the sham than every other {name} metric (from learning rate "
            f"{_lr(v.strength)}, its AUC above the sham exceeds each other's, paired 95% intervals excluding zero)"
        )
    if np.isnan(v.first_separating):
        return (
            f"inconclusive: at no strength do two {name} metrics' AUCs above the sham differ by more than their "
            "paired 95% interval"
        )
    return (
        f"inconclusive between {_join(list(v.leaders))}: no strength separates one {name} metric from all the "
        f"others; at learning rate {_lr(v.first_separating)}, the weakest that separates any two, no other "
        "metric is ahead of these"
    )


def graded_numbers(graded: pd.DataFrame, differences: pd.DataFrame) -> dict[str, str]:
    """The graded validation's glued values: the strengths, the evaluation prompts, per level the weakest
    strength each metric detects and the verdict, the number of metric pairs separated at some strength,
    and what the weakest and the strongest plant do."""
    if graded.empty:
        skipped = "skipped in this run"
        return dict.fromkeys(
            [
                "graded_strengths",
                "graded_n_strengths",
                "graded_steps",
                "graded_word_prompts",
                "graded_token_prompts",
                "graded_word_verdict",
                "graded_token_verdict",
                "graded_word_weakest",
                "graded_token_weakest",
                "graded_separated",
                "graded_floor",
                "graded_ceiling",
            ],
            skipped,
        )
    strengths = sorted(graded["strength"].unique())
    out = {
        "graded_strengths": _join([_lr(s) for s in strengths]),
        "graded_n_strengths": str(len(strengths)),
        "graded_steps": str(int(graded["steps"].iloc[0])),
    }
    weakest = weakest_detected(graded)
    separated = []
    for level in ("word", "token"):
        rows = graded[graded["level"] == level]
        out[f"graded_{level}_prompts"] = str(int(rows["n_prompts"].iloc[0])) if len(rows) else "none"
        w = weakest[weakest["level"] == level]
        out[f"graded_{level}_weakest"] = _join(
            [
                f"{r.metric} "
                + (f"from {_lr(r.weakest_detected)}" if pd.notna(r.weakest_detected) else "at none")
                for r in w.itertuples()
            ]
        )
        v = winner(differences, level)
        out[f"graded_{level}_verdict"] = verdict_phrase(v)
        if v.n_pairs:
            separated.append(f"{v.n_separated} of {v.n_pairs} {LEVEL_NAMES[level]} pairs")
    out["graded_separated"] = _join(separated)
    low = graded[graded["strength"] == strengths[0]]
    n_hit = int(low["detected"].sum())
    out["graded_floor"] = (
        f"no metric detects the plant at learning rate {_lr(strengths[0])}"
        if n_hit == 0
        else f"{n_hit} of {len(low)} metrics already detect the plant at the weakest strength, "
        f"{_lr(strengths[0])} (the grid does not reach an undetectable plant)"
    )
    high = graded[graded["strength"] == strengths[-1]]
    lowest = float(high["auc_planted"].min())
    out["graded_ceiling"] = (
        f"at learning rate {_lr(strengths[-1])} the planted words' AUC ranges from "
        f"{lowest:.3f} to {high['auc_planted'].max():.3f} over the metrics"
        + (
            f" (saturated: every metric at {SATURATED} or above)"
            if lowest >= SATURATED
            else f" (not saturated: a metric below {SATURATED}; the grid does not reach a plant every metric finds)"
        )
    )
    return out


def base_differences(models: pd.DataFrame, pair: tuple[str, str] | None) -> dict[str, str]:
    """What the two models of ``pair`` differ in, from the models table (registry facts): ``base_p``,
    ``base_q``, ``base_family``, ``base_size``, ``base_vocabulary``, ``base_release`` (the upstream hub
    releases, which name each developer's pretraining), ``base_type``, ``base_format``, ``base_quantization``,
    each ``"<p's> vs <q's>"``."""
    keys = {
        "base_family": "family",
        "base_size": "size",
        "base_vocabulary": "vocabulary",
        "base_release": "hub_id",
        "base_type": "type",
        "base_format": "prompt_format",
        "base_quantization": "quantization",
    }
    if models.empty or pair is None:
        return {"base_p": "none", "base_q": "none", **dict.fromkeys(keys, "no pair")}
    info = models.set_index("model")
    p, q = pair

    def fmt(col: str, m: str) -> str:
        v = info.loc[m, col]
        return f"{int(v):,}" if col == "vocabulary" else str(v)

    return {"base_p": p, "base_q": q, **{k: f"{fmt(c, p)} vs {fmt(c, q)}" for k, c in keys.items()}}


def key_numbers(results: Any) -> dict[str, str]:
    """The glued values of this module for a run's results."""
    pair = results.pairs[0] if results.pairs else None
    return {
        **graded_numbers(results.graded, results.graded_differences),
        **base_differences(results.models, pair),
    }
