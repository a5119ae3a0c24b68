"""The data-chosen parts of the training chapter's sentences, as short texts to glue: per-source data
selection, how much the seeds' subsets overlap, why a probe does or does not learn, which category a gap
favours, how the difference between bases moves with the data, the paper's released files, the registry check
and the Summary's verdicts. The sentences around them are the notebook's Markdown; every key is always present
(``n/a``, ``none`` or ``no base model`` where the run has no such value)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...core import paths
from ...core.formats import NA, count, number, percent
from .findings import method_caveat

__all__ = ["NO_BASE", "ONE_BASE", "reading_values"]

#: What a list of base models reads as when it has none (``the mean gaps of no base model lie ...``).
NO_BASE = "no base model"
#: What a comparison between base models reads as in a run with one base model.
ONE_BASE = "n/a (one base model)"


def _pct(x: float | None) -> str:
    return percent(x, 1)


def _join(parts: list[str], empty: str = "none") -> str:
    if not parts:
        return empty
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _top(frame: pd.DataFrame | None) -> pd.DataFrame:
    """Rows at each base model's largest quantity (empty without rows)."""
    if frame is None or frame.empty:
        return pd.DataFrame()
    return frame[frame["quantity"] == frame.groupby("base_model")["quantity"].transform("max")]


def data_values(data: pd.DataFrame, cells: pd.DataFrame) -> dict[str, str]:
    """Per source: pairs visited until enough were eligible, those dropped on the way (why), the pairs with a
    left-truncated side per base model; whether TRL kept every selected pair."""
    visited, dropped, truncated = [], [], []
    for row in data.to_dict("records"):
        src = row["source"]
        visited.append(
            f"{src}: {count(row['n_examined'])} of its {count(row['n_rows'])} pairs (data seed "
            f"{row['data_seed']}) until {count(row['n_eligible'])} were eligible"
        )
        drops = {k.removeprefix("dropped: "): v for k, v in row.items() if k.startswith("dropped: ") and v}
        why = ", ".join(f"{count(v)} {k}" for k, v in sorted(drops.items(), key=lambda kv: -kv[1]))
        dropped.append(f"{src}: {why or 'none'}")
        cut = {
            k.removeprefix("left-truncated: "): v
            for k, v in row.items()
            if k.startswith("left-truncated: ") and not pd.isna(v)
        }
        if cut:
            per = _join([f"{count(v)} under {k}" for k, v in sorted(cut.items())])
            truncated.append(f"{src}: of its {count(row['n_eligible'])} eligible pairs, {per}")
    trained = cells[["quantity", "n_train_used"]].drop_duplicates()
    kept = (trained["quantity"] == trained["n_train_used"]).all()
    lost = trained[trained["quantity"] != trained["n_train_used"]]
    return {
        "data_visited": "; ".join(visited) or NA,
        "data_dropped": "; ".join(dropped) or NA,
        "data_truncated": "; ".join(truncated) or "none",
        "trl_kept": (
            "kept every selected pair in every cell"
            if kept
            else "dropped pairs in some cells ("
            + ", ".join(f"{count(r.n_train_used)} of {count(r.quantity)}" for r in lost.itertuples())
            + ")"
        ),
    }


def subset_overlap(subsets: pd.DataFrame | None) -> str:
    """Mean share (with its range) of training pairs two seeds' subsets have in common, per quantity."""
    if subsets is None or subsets.empty:
        return NA
    parts = []
    for (_source, q), g in subsets.groupby(["data", "quantity"], sort=True):
        sets = [set(v) for _, v in g.groupby("seed")["pair_id"]]
        shares = [len(a & b) / q for i, a in enumerate(sets) for b in sets[i + 1 :]]
        if shares:
            parts.append(
                f"{count(q)} pairs {_pct(float(np.mean(shares)))} (range {_pct(min(shares))} to "
                f"{_pct(max(shares))})"
            )
    return "; ".join(parts) or "n/a (one seed)"


def accuracy_reading(accuracy: pd.DataFrame | None) -> str:
    """Per base model at its largest quantity: it learns, or it does not and what its training accuracy says
    about why (it fits its training pairs without carrying over, or it does not separate them either)."""
    top = _top(accuracy)
    parts = []
    for r in top.to_dict("records"):
        if r["learns"]:
            parts.append(f"{r['base_model']}'s probe learns (every lower bound above 50%)")
            continue
        why = (
            "it fits its training pairs, but what it fits does not carry over to new pairs"
            if r["train_accuracy"] - r["accuracy"] > 0.1
            else "it does not separate even its training pairs, so these features hold little linearly "
            "readable preference signal at this size"
        )
        parts.append(
            f"{r['base_model']}'s probe does not reach an interval above chance: its heads rank "
            f"{_pct(r['train_accuracy'])} of their own training pairs correctly against {_pct(r['accuracy'])} "
            f"of the held-out pairs (random heads {_pct(r['untrained_accuracy'])}), so {why}"
        )
    return "; ".join(parts) or NA


def gap_lean(final: pd.DataFrame | None, framing: str) -> str:
    """Per base model and quantity, which category the mean gap favours where its interval across seeds
    excludes zero (``interval includes zero`` otherwise; ``one seed`` without an interval)."""
    if final is None or final.empty:
        return NA
    parts = []
    for r in final[final["framing"] == framing].to_dict("records"):
        if pd.isna(r["ci_low"]):
            lean = "one seed, no interval"
        elif r["ci_low"] > 0:
            lean = "Communion favoured"
        elif r["ci_high"] < 0:
            lean = "Agency favoured"
        else:
            lean = "interval includes zero"
        parts.append(f"{r['base_model']} at {count(r['quantity'])} pairs: {lean}")
    return "; ".join(parts) or NA


def comparison_change(comparison: pd.DataFrame | None, framing: str) -> str:
    """How the difference between base models moved from the smallest to the largest quantity (last
    checkpoint)."""
    if comparison is None or comparison.empty:
        return ONE_BASE
    c = comparison[(comparison["checkpoint"] == "last") & (comparison["framing"] == framing)]
    c = c.sort_values("quantity")
    if len(c) < 2:
        return "n/a (one quantity)"
    lo, hi = c.iloc[0], c.iloc[-1]
    return (
        f"from {number(lo['difference'], 1)} at {count(lo['quantity'])} pairs to "
        f"{number(hi['difference'], 1)} at {count(hi['quantity'])} pairs"
    )


def paper_values(pvo: pd.DataFrame | None, files: pd.DataFrame | None) -> dict[str, str]:
    """The paper's released files left out as byte-identical copies, the rows files repeat, and which category
    each base family's runs favoured at their last checkpoint."""
    copies, repeats, favoured = [], [], []
    if files is not None and not files.empty and "used" in files.columns:
        copies = [
            f"{r['dataset']} ({r['label']}) is byte-identical to {r['identical_to']} (sha256 "
            f"{str(r['sha256'])[:12]}...)"
            for r in files[~files["used"]].to_dict("records")
        ]
        repeats = [
            f"{r['dataset']} repeats {count(r['duplicate_rows_dropped'])} of its {count(r['rows'])} rows"
            for r in files[files["duplicate_rows_dropped"] > 0].to_dict("records")
        ]
    if pvo is not None and not pvo.empty:
        for base, g in pvo[pvo["study"] == "paper"].groupby("base", sort=True):
            fav = g["favoured_at_end"].value_counts()
            favoured.append(f"{base}: " + ", ".join(f"{k} in {v} of {len(g)}" for k, v in fav.items()))
    return {
        "paper_copies": "; ".join(copies) or "none",
        "paper_repeats": "; ".join(repeats) or "none",
        "paper_favoured": "; ".join(favoured) or NA,
    }


def registry_values(registry: object, consistency: Mapping[str, Any]) -> dict[str, str]:
    """Where the trained RMs are registered, and the check that the last one loads by name and scores as its
    last checkpoint did."""
    path = Path(str(registry))
    with contextlib.suppress(ValueError):
        path = path.resolve().relative_to(paths.project_root().resolve())
    check = (
        f"loaded by name and scored by the scoring engine under {consistency['prompt_id']} on "
        f"{count(consistency['words'])} words, {consistency['rm']} gives rewards at most "
        f"{consistency['max_abs_difference']:.1e} away from its last checkpoint's"
        if consistency
        else "not run in this run (no trained RM)"
    )
    return {"registry_path": str(path), "consistency_check": check}


def summary_values(
    accuracy: pd.DataFrame | None, final: pd.DataFrame | None, method: str, framing: str = "positive"
) -> dict[str, str]:
    """The Summary's verdicts at the largest quantity: which probes learn, which mean gaps lie inside or outside
    the random-head range, and what kind of reward model was compared."""
    top = _top(accuracy)
    learned = [f"{r.base_model} ({_pct(r.accuracy)})" for r in top.itertuples() if r.learns]
    failed = [f"{r.base_model} ({_pct(r.accuracy)})" for r in top.itertuples() if not r.learns]
    inside, outside = [], []
    if final is not None and not final.empty and "null_low" in final.columns:
        f = final[final["framing"] == framing]
        f = f[(f["quantity"] == f["quantity"].max()) & f["null_low"].notna()]
        for r in f.itertuples():
            (inside if r.null_low <= r.gap <= r.null_high else outside).append(r.base_model)
    return {
        "learned_top": _join(learned, NO_BASE),
        "not_learned_top": _join(failed, NO_BASE),
        "null_inside_top": _join(inside, NO_BASE),
        "null_outside_top": _join(outside, NO_BASE),
        "method_caveat": method_caveat(method),
    }


def reading_values(results: Any) -> dict[str, str]:
    """Every data-chosen phrase of the chapter (``results``: the probes' view, :meth:`Results.probes`)."""
    out = {
        **data_values(results.data, results.cells),
        "subset_overlap": subset_overlap(results.subsets),
        "accuracy_reading": accuracy_reading(results.accuracy),
        **paper_values(results.paper_vs_ours, results.paper_files),
        **registry_values(results.registry, results.consistency),
        **summary_values(results.accuracy, results.final, results.spec.settings.method),
    }
    for framing in ("positive", "negative"):
        out[f"gap_lean_{framing}"] = gap_lean(results.final, framing)
        out[f"comparison_change_{framing}"] = comparison_change(results.comparison, framing)
    return out
