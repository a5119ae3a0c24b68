"""Numbers and short verdict phrases the chapter's Markdown cites (myst-nb glue) for the converged probes,
their logistic references, the null at the estimate's unit, the joint intervals and the depth arm. Every key is
always present (``n/a`` where the run has no such number)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .analysis import NULL_MEANS
from .findings import differences
from .metrics import REFERENCE_TOLERANCE

__all__ = ["convergence_numbers", "depth_numbers"]

NA = "n/a"


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %" if pd.notna(x) else NA


def _ci(lo: float, hi: float, pct: bool = False) -> str:
    if pd.isna(lo) or pd.isna(hi):
        return NA
    return f"{100 * lo:.1f} to {100 * hi:.1f} %" if pct else f"{lo:.1f} to {hi:.1f}"


def _top(frame: pd.DataFrame, col: str = "quantity") -> pd.DataFrame:
    return frame[frame[col] == frame[col].max()] if frame is not None and len(frame) else pd.DataFrame()


def convergence_numbers(results: Any) -> dict[str, str]:
    """The probes (k = 0): penalty, steps, convergence, reference, what seeds vary, joint intervals, null."""
    s, spec = results.spec.settings, results.spec
    cells = results.cells[results.cells["depth"] == 0]
    acc = results.accuracy[results.accuracy["method"] == s.method]
    top = _top(acc)
    full_batch = s.batch_size >= max(spec.quantities)
    out = {
        "head_l2": f"{s.head_l2:g}",
        "probe_steps": _steps(cells),
        "probe_batch": "every training pair (full batch)" if full_batch else f"{s.batch_size} pairs",
        "seeds_vary": (
            "the training subset only: each step uses every training pair, so there is no batch order, and "
            "the head's random start does not survive convergence to the unique optimum"
            if full_batch
            else "the training subset, the batch order and the head's random start"
        ),
        "grad_norm_max": _sci(cells, "grad_norm_end"),
        "grad_norm_max_top": _sci(_top(cells), "grad_norm_end"),
        "objective_change_max": _sci(cells, "objective_change"),
        "reference_distance_max": _sci(cells, "reference_distance"),
        "reference_tolerance": f"{100 * REFERENCE_TOLERANCE:g} point",
        "reference_top": "; ".join(
            f"{r.base_model} probe {_pct(r.accuracy)}, reference {_pct(r.reference_accuracy)} (largest "
            f"difference over seeds {100 * r.reference_difference_max:.1f} points)"
            for r in top.itertuples(index=False)
            if pd.notna(r.reference_accuracy)
        )
        or NA,
        "reference_verdict": _reference_verdict(top),
        "reference_within": (
            f"{int(acc['within_reference'].fillna(False).sum())} of {int(acc['within_reference'].notna().sum())}"
            if acc["within_reference"].notna().any()
            else NA
        ),
        "accuracy_joint_top": "; ".join(
            f"{r.base_model} {_pct(r.accuracy)} (seeds and pairs resampled together: "
            f"{_ci(r.joint_ci_low, r.joint_ci_high, pct=True)})"
            for r in top.itertuples(index=False)
        )
        or NA,
        "accuracy_difference_top": _accuracy_difference(results.accuracy_comparison, s.method),
        "null_unit": f"{len(spec.seeds)}",
        "n_null_means": f"{NULL_MEANS:,}",
        "base_differences": "; ".join(differences(results.bases)) or NA,
    }
    return out


def _steps(cells: pd.DataFrame) -> str:
    if cells.empty:
        return NA
    lo, hi = int(cells["steps"].min()), int(cells["steps"].max())
    return f"{lo:,}" if lo == hi else f"{lo:,} to {hi:,}"


def _sci(cells: pd.DataFrame, col: str) -> str:
    if cells.empty or col not in cells or cells[col].isna().all():
        return NA
    return f"{float(cells[col].max()):.1e}"


def _reference_verdict(top: pd.DataFrame) -> str:
    if top.empty or top["within_reference"].isna().all():
        return "not computed (no L2 penalty, so no finite reference)"
    bad = top[top["within_reference"] == False]  # noqa: E712 (None = no reference)
    if bad.empty:
        return f"every base's probe is within {100 * REFERENCE_TOLERANCE:g} point of its reference"
    return "outside the tolerance: " + ", ".join(
        f"{r.base_model} ({100 * r.reference_difference_max:.1f} points)" for r in bad.itertuples(index=False)
    )


def _accuracy_difference(comp: pd.DataFrame, method: str) -> str:
    if comp is None or comp.empty:
        return NA
    top = _top(comp[comp["method"] == method])
    return (
        "; ".join(
            f"{r.base_a} minus {r.base_b} {100 * r.difference:+.1f} points (95 % CI "
            f"{100 * r.ci_low:+.1f} to {100 * r.ci_high:+.1f})"
            if pd.notna(r.ci_low)
            else f"{r.base_a} minus {r.base_b} {100 * r.difference:+.1f} points"
            for r in top.itertuples(index=False)
        )
        or NA
    )


def depth_numbers(results: Any) -> dict[str, str]:
    """The depth arm: its design, the between-base difference per framing and its verdict, accuracy per
    base and its verdict, and its cost."""
    s, spec = results.spec.settings, results.spec
    dcells = results.cells[results.cells["depth"] > 0]
    out = {
        "depths": ", ".join(map(str, s.depths)) or NA,
        "depth_quantities": ", ".join(map(str, spec.depth_quantities)) if s.depths else NA,
        "depth_n_seeds": f"{len(spec.depth_seeds)}" if s.depths else NA,
        "depth_learning_rate": f"{s.depth_learning_rate:g}",
        "depth_epochs": f"{s.depth_epochs:g}",
        "depth_batch": f"{s.depth_batch_size}",
        "depth_steps": _steps(dcells),
        "n_depth_cells": f"{len(dcells)}",
        "depth_train_seconds": f"{dcells['train_seconds'].sum():,.0f} s" if len(dcells) else NA,
        "depth_activation_seconds": _activation_seconds(results.timings),
    }
    dg = _top(results.depth_gaps)
    for framing in ("positive", "negative"):
        sel = dg[dg["framing"] == framing] if len(dg) else dg
        out[f"depth_gap_{framing}"] = (
            "; ".join(
                f"k = {r.depth}: {r.base_a} minus {r.base_b} {r.difference_0:.1f} ranks at k = 0, "
                f"{r.difference_k:.1f} at k = {r.depth}, size change {r.size_change:+.1f} (95 % CI "
                f"{_ci(r.ci_low, r.ci_high)})"
                for r in sel.itertuples(index=False)
            )
            or NA
        )
        out[f"depth_verdict_{framing}"] = (
            ", ".join(f"{r.verdict} (k = {r.depth})" for r in sel.itertuples(index=False)) or NA
        )
    da = _top(results.depth_accuracy)
    out["depth_accuracy"] = (
        "; ".join(
            f"{r.base_model}, k = {r.depth}: {_pct(r.accuracy_0)} at k = 0, {_pct(r.accuracy_k)} at k = {r.depth} "
            f"(change {100 * r.change:+.1f} points, 95 % CI {100 * r.ci_low:+.1f} to {100 * r.ci_high:+.1f}): "
            f"{r.verdict}"
            for r in da.itertuples(index=False)
        )
        or NA
    )
    return out


def _activation_seconds(timings: dict[str, float]) -> str:
    sec = [v for k, v in (timings or {}).items() if "activations" in k]
    return f"{np.sum(sec):,.0f} s" if sec else NA
