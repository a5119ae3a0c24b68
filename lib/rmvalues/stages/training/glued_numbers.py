"""The numbers the training chapter's prose cites, as short texts to glue (the grid's design and settings,
accuracies, gaps and differences at the largest quantity, times); with :mod:`.glue` (converged probes, null,
depth arm) and :mod:`.readings` (data-chosen phrases). Every key is always present (``n/a`` where the run has
no such number, e.g. one base model, or a corpus without Agency and Communion)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ...core.formats import NA, interval, number, p_clause, percent
from .readings import ONE_BASE, reading_values

__all__ = ["key_numbers"]


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def is_training(key: str) -> bool:
    """A timing of one cell's training (``train <cell>``, or ``grid: train <cell>`` in the manifest)."""
    return key.removeprefix("grid: ").startswith("train ")


def _top_rows(frame: pd.DataFrame | None, **match: str) -> pd.DataFrame:
    """Rows of ``frame`` at its largest quantity (and the given column values); empty when there are none."""
    if frame is None or frame.empty or "quantity" not in frame.columns:
        return pd.DataFrame()
    for col, value in match.items():
        frame = frame[frame[col] == value]
    return frame[frame["quantity"] == frame["quantity"].max()] if not frame.empty else frame


def _accuracy_at_top(accuracy: pd.DataFrame | None) -> str:
    top = _top_rows(accuracy)
    parts = []
    for r in top.to_dict("records"):
        seeds = (
            f"seeds {interval(r['seed_ci_low'], r['seed_ci_high'], 1, share=True)}"
            if pd.notna(r["seed_ci_low"])
            else "one seed"
        )
        pairs = (
            f", pairs {interval(r['pair_ci_low'], r['pair_ci_high'], 1, share=True)}"
            if pd.notna(r["pair_ci_low"])
            else ""
        )
        parts.append(f"{r['base_model']} {percent(r['accuracy'], 1)} ({seeds}{pairs})")
    return "; ".join(parts) or NA


def _gap_at_top(final: pd.DataFrame | None, framing: str) -> str:
    top = _top_rows(final, framing=framing)
    parts = []
    for r in top.to_dict("records"):
        ci = f", 95% CI {interval(r['ci_low'], r['ci_high'], 1)}" if pd.notna(r["ci_low"]) else ""
        null = (
            f"; means of random heads {interval(r['null_low'], r['null_high'], 1)}"
            if pd.notna(r.get("null_low", np.nan))
            else ""
        )
        parts.append(f"{r['base_model']} {number(r['gap'], 1)}{ci}{null}")
    return "; ".join(parts) or NA


def _difference_at_top(comparison: pd.DataFrame | None, framing: str) -> str:
    if comparison is None or comparison.empty:
        return NA
    top = _top_rows(comparison[comparison["checkpoint"] == "last"], framing=framing)
    parts = []
    for r in top.to_dict("records"):
        text = f"{r['base_a']} minus {r['base_b']} {number(r['difference'], 1)}"
        if pd.notna(r.get("ci_low", np.nan)):
            text += f" (Welch 95% CI {interval(r['ci_low'], r['ci_high'], 1)}, exact permutation {p_clause(r['p_perm'])})"
        parts.append(text)
    return "; ".join(parts) or NA


def _separated(comparison: pd.DataFrame | None, framing: str) -> str:
    """At how many matched quantities the Welch interval of the difference excludes 0 (``k of n``)."""
    if comparison is None or comparison.empty or "ci_low" not in comparison.columns:
        return ONE_BASE
    c = comparison[(comparison["framing"] == framing) & (comparison["checkpoint"] == "last")]
    if c.empty:
        return NA
    sep = int(((c["ci_low"] > 0) | (c["ci_high"] < 0)).sum())
    return f"{sep} of {len(c)}"


def _null_share(final: pd.DataFrame | None, framing: str) -> str:
    """How many (base, quantity) mean gaps lie outside the central 95 % of random heads (``k of n``)."""
    if final is None or final.empty or "null_low" not in final.columns:
        return NA
    f = final[(final["framing"] == framing) & final["null_low"].notna()]
    if f.empty:
        return NA
    out = int(((f["gap"] < f["null_low"]) | (f["gap"] > f["null_high"])).sum())
    return f"{out} of {len(f)}"


def _run_facts(results: Any) -> dict[str, str]:
    """The grid's design and settings as texts."""
    spec, cells = results.spec, results.cells
    s = spec.settings
    steps = cells["steps"] if "steps" in cells.columns and len(cells) else pd.Series(dtype=float)
    data = results.data
    first = data.iloc[0] if data is not None and len(data) else None
    return {
        "bases": _join(list(spec.models)) if spec.models else NA,
        "n_bases": str(len(spec.models)),
        "sources": _join(list(spec.sources)) if spec.sources else NA,
        "quantities": _join([f"{q:,}" for q in spec.quantities]) if spec.quantities else NA,
        "q_max": f"{max(spec.quantities):,}" if spec.quantities else NA,
        "n_seeds": str(len(spec.seeds)),
        "n_cells": f"{len(cells):,}",
        "n_trained_now": f"{int((cells['status'] == 'trained now').sum()):,}" if "status" in cells else NA,
        "method": str(s.method),
        "max_length": f"{s.max_length:,}" if s.max_length else NA,
        "truncation": str(s.truncation),
        "n_eval": f"{int(first['n_eval']):,}" if first is not None else NA,
        "n_pool": f"{int(first['n_train_pool']):,}" if first is not None else NA,
        "learning_rate": f"{s.learning_rate:g}",
        "lr_schedule": str(s.lr_scheduler_type),
        "warmup": f"{100 * s.warmup_ratio:g} %",
        "weight_decay": f"{s.weight_decay:g}",
        "batch_size": str(s.batch_size),
        "epochs": f"{s.epochs:g}",
        "checkpoint_every": f"{s.checkpoint_every:,}",
        "steps_range": f"{int(steps.min()):,} to {int(steps.max()):,}" if len(steps) else NA,
    }


def key_numbers(results: Any) -> dict[str, str]:
    """The numbers the chapter's prose cites, as texts to glue (every key always present; ``n/a`` where the
    run has no such number, e.g. one base model, or a corpus without Agency and Communion)."""
    from .analysis import NULL_HEADS
    from .metrics import N_BOOTSTRAP

    res = results
    out = _run_facts(res)
    traj = res.trajectories
    comparison = res.comparison
    out.update(
        {
            "corpus": str(res.params.corpus),
            "n_words": f"{traj['word'].nunique():,}" if traj is not None and len(traj) else NA,
            "n_prompts": f"{len(res.params.prompts):,}",
            "n_bootstrap": f"{N_BOOTSTRAP:,}",
            "n_null_heads": f"{NULL_HEADS:,}" if res.null is not None and len(res.null) else NA,
            "accuracy_top": _accuracy_at_top(res.accuracy),
            "n_learning": (
                f"{int(res.accuracy['learns'].sum())} of {len(res.accuracy)}"
                if res.accuracy is not None and len(res.accuracy)
                else NA
            ),
            "p_min": (
                number(float(comparison["p_min"].min()), 4)
                if comparison is not None and len(comparison) and "p_min" in comparison
                else NA
            ),
            "seconds": f"{res.seconds:,.0f} s",
            "paper_files": f"{len(res.paper_files):,}" if len(res.paper_files) else NA,
            "paper_files_used": (
                f"{int(res.paper_files['used'].sum()):,}" if "used" in res.paper_files.columns else NA
            ),
            "consistency_rm": str(res.consistency.get("rm", NA)),
            "consistency_tolerance": (
                f"{res.consistency['tolerance']:g}" if "tolerance" in res.consistency else NA
            ),
            "consistency_difference": (
                f"{res.consistency['max_abs_difference']:.1e}"
                if "max_abs_difference" in res.consistency
                else NA
            ),
        }
    )
    for framing in ("positive", "negative"):
        out[f"gap_top_{framing}"] = _gap_at_top(res.final, framing)
        out[f"outside_null_{framing}"] = _null_share(res.final, framing)
        out[f"difference_top_{framing}"] = _difference_at_top(comparison, framing)
        out[f"separated_{framing}"] = _separated(comparison, framing)
    feats = (
        sum(v for k, v in res.timings.items() if "pair features" in k or "pair-activations" in k)
        if res.timings
        else float("nan")
    )
    train = sum(v for k, v in res.timings.items() if is_training(k)) if res.timings else float("nan")
    cells = res.cells
    out["cells_train_seconds"] = (
        f"{cells['train_seconds'].sum():,.0f} s"
        if "train_seconds" in cells.columns and cells["train_seconds"].notna().any()
        else NA
    )
    out["feature_seconds"] = f"{feats:,.0f} s" if not pd.isna(feats) else NA
    out["train_seconds"] = f"{train:,.0f} s" if not pd.isna(train) else NA
    out.update(reading_values(res))
    return out
