"""Numbers and short verdict phrases the chapter's Markdown cites (myst-nb glue) for the converged probes,
their logistic references, the null at the estimate's unit, the joint intervals and the depth arm. Every key is
always present (``n/a`` where the run has no such number)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ...core.display import ci, count, number, percent, signed
from .analysis import NULL_MEANS
from .findings import differences
from .metrics import REFERENCE_TOLERANCE
from .readings import ONE_BASE

__all__ = ["convergence_numbers", "depth_numbers"]

NA = "n/a"


def _pct(x: float) -> str:
    return percent(x, 1)


def _points(x: float, lo: float, hi: float) -> str:
    """A change of a share in percentage points with its interval: ``+1.3 points (95% CI [−0.4, 3.0])``."""
    return f"{signed(100 * x, 1)} points ({ci(100 * lo, 100 * hi, 1)})"


def _blocks(k: int) -> str:
    return f"the top {k} block{'s' if k > 1 else ''} adapted"


def _verdict_phrase(verdict: str, k: int) -> str:
    """A depth verdict in a sentence about the between-base difference (data-chosen: the interval decides)."""
    if verdict == "inconclusive":
        return f"is inconclusive with {_blocks(k)} (the interval of its change in size includes zero)"
    if verdict in ("shrinks", "grows"):
        return f"{verdict} with {_blocks(k)}"
    return f"is {verdict} with {_blocks(k)}"


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
        "seeds_vary": _seeds_vary(cells, full_batch),
        "grad_norm_max": _sci(cells, "grad_norm_end"),
        "grad_norm_max_top": _sci(_top(cells), "grad_norm_end"),
        "objective_change_max": _sci(cells, "objective_change"),
        "reference_distance_max": _sci(cells, "reference_distance"),
        "reference_tolerance": f"{100 * REFERENCE_TOLERANCE:g} point",
        "reference_top": "; ".join(
            f"{r.base_model} probe {_pct(r.accuracy)}, reference {_pct(r.reference_accuracy)} (largest "
            f"difference over seeds {number(100 * r.reference_difference_max, 1)} points)"
            for r in top.itertuples(index=False)
            if pd.notna(r.reference_accuracy)
        )
        or NA,
        "reference_verdict": _reference_verdict(top, _top(cells)),
        "reference_within": (
            f"{int(acc['within_reference'].fillna(False).sum())} of {int(acc['within_reference'].notna().sum())}"
            if acc["within_reference"].notna().any()
            else NA
        ),
        "accuracy_joint_top": "; ".join(
            f"{r.base_model} {_pct(r.accuracy)} (seeds and pairs resampled together: "
            f"{ci(r.joint_ci_low, r.joint_ci_high, 1, share=True)})"
            for r in top.itertuples(index=False)
        )
        or NA,
        "accuracy_difference_top": _accuracy_difference(results.accuracy_comparison, s.method),
        "null_unit": f"{len(spec.seeds)}",
        "n_null_means": count(NULL_MEANS),
        "base_differences": "; ".join(differences(results.bases)) or ONE_BASE,
    }
    return out


#: Largest distance of a probe's head from its reference (relative to the reference's norm) at which the
#: probe counts as converged to it (then its random start no longer matters).
CONVERGED_DISTANCE = 0.01


def _seeds_vary(cells: pd.DataFrame, full_batch: bool) -> str:
    """What the seeds vary besides the training subset, chosen by the run: the batch order unless every step
    uses every pair; the head's random start unless every probe converged to its (unique) reference."""
    dist = cells["reference_distance"] if "reference_distance" in cells else pd.Series(dtype=float)
    converged = len(dist) > 0 and dist.notna().all() and float(dist.max()) <= CONVERGED_DISTANCE
    order = (
        "each step uses every training pair, so there is no batch order"
        if full_batch
        else "the order of the training batches"
    )
    start = (
        f"every probe ends within {percent(CONVERGED_DISTANCE)} of its reference, the unique optimum, so the head's "
        "random start does not survive"
        if converged
        else f"the head's random start (the probes end up to {_sci(cells, 'reference_distance')} of the "
        "reference's norm away from the unique optimum, so part of where each starts remains)"
    )
    if full_batch:
        return f"the training subset; {order}; {start}"
    return f"the training subset and {order}; {start}"


def _steps(cells: pd.DataFrame) -> str:
    if cells.empty:
        return NA
    lo, hi = int(cells["steps"].min()), int(cells["steps"].max())
    return f"{lo:,}" if lo == hi else f"{lo:,} to {hi:,}"


def _sci(cells: pd.DataFrame, col: str) -> str:
    if cells.empty or col not in cells or cells[col].isna().all():
        return NA
    return f"{float(cells[col].max()):.1e}"


def _reference_verdict(top: pd.DataFrame, cells: pd.DataFrame) -> str:
    """Whether every base's probe at the largest quantity is within the tolerance of its reference; else which
    base falls short, by how much, and how far its heads stopped from the reference's optimum (the reason)."""
    if top.empty or top["within_reference"].isna().all():
        return "not computed (no L2 penalty, so no finite reference)"
    bad = top[top["within_reference"] == False]  # noqa: E712 (None = no reference)
    if bad.empty:
        return f"every base's probe is within {100 * REFERENCE_TOLERANCE:g} point of its reference"
    parts = []
    for r in bad.itertuples(index=False):
        c = cells[(cells["base_model"] == r.base_model) & (cells["quantity"] == r.quantity)]
        parts.append(
            f"{r.base_model} falls short (up to {number(100 * r.reference_difference_max, 1)} points over "
            f"seeds; its heads stop at a distance of up to {_sci(c, 'reference_distance')} of the "
            f"reference's norm from it, with a final gradient norm of up to {_sci(c, 'grad_norm_end')}, so "
            "some held-out pairs are ranked differently by the two)"
        )
    return "; ".join(parts)


def _accuracy_difference(comp: pd.DataFrame, method: str) -> str:
    if comp is None or comp.empty:
        return NA
    top = _top(comp[comp["method"] == method])
    return (
        "; ".join(
            f"{r.base_a} minus {r.base_b} {_points(r.difference, r.ci_low, r.ci_high)}"
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
        "depth_train_seconds": _cell_seconds(results.timings, dcells),
        "depth_activation_seconds": _activation_seconds(results.timings),
    }
    dg = _top(results.depth_gaps)
    for framing in ("positive", "negative"):
        sel = dg[dg["framing"] == framing] if len(dg) else dg
        out[f"depth_gap_{framing}"] = (
            "; ".join(
                f"{r.base_a} minus {r.base_b} {number(r.difference_0, 1)} ranks with nothing of the base "
                f"adapted, {number(r.difference_k, 1)} with {_blocks(r.depth)}, a change in size of "
                f"{signed(r.size_change, 1)} ({ci(r.ci_low, r.ci_high, 1)})"
                for r in sel.itertuples(index=False)
            )
            or NA
        )
        out[f"depth_verdict_{framing}"] = (
            "; ".join(_verdict_phrase(r.verdict, r.depth) for r in sel.itertuples(index=False)) or NA
        )
    da = _top(results.depth_accuracy)
    out["depth_accuracy"] = (
        "; ".join(
            f"{r.base_model} {_pct(r.accuracy_0)} with nothing of the base adapted, {_pct(r.accuracy_k)} with "
            f"{_blocks(r.depth)}, a change of {_points(r.change, r.ci_low, r.ci_high)}: {r.verdict}"
            for r in da.itertuples(index=False)
        )
        or NA
    )
    return out


def _cell_seconds(timings: dict[str, float], cells: pd.DataFrame) -> str:
    """Seconds timed for training and scoring ``cells`` in this run (``train <cell>``); the training times
    the cells recorded when nothing was timed now (reused cells)."""
    timed = [timings[f"train {c}"] for c in cells["cell"] if f"train {c}" in (timings or {})]
    if timed:
        return f"{np.sum(timed):,.0f} s"
    return f"{cells['train_seconds'].sum():,.0f} s (recorded when trained)" if len(cells) else NA


def _activation_seconds(timings: dict[str, float]) -> str:
    sec = [v for k, v in (timings or {}).items() if "word-activations" in k]
    return f"{np.sum(sec):,.0f} s" if sec else NA
