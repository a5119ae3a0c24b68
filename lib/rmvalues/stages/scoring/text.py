"""Sentences of the RM-scoring chapter, built from the numbers of the run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ...core import paths
from ...models.registry import ModelSpec

__all__ = ["describe_models", "failure_message", "score_counts", "summary_text"]


def _where(spec: ModelSpec, training_registry: str | None) -> str:
    file = Path(spec.registry_file) if spec.registry_file else None
    if (
        file is not None
        and training_registry
        and file.resolve() == paths.resolve(training_registry).resolve()
    ):
        return "registered by the training run"
    if file is None:
        return "registry entry"
    try:
        return f"registered in `{file.resolve().relative_to(paths.project_root().resolve())}`"
    except ValueError:
        return f"registered in `{file}`"


def describe_models(specs: Mapping[str, ModelSpec], training_registry: str | None = None) -> str:
    """Markdown bullets: each scored RM, where it is registered (the training run's ``registry.yaml`` or a
    registry file) and its registry note (for a trained RM: base model, data, method, pairs, seed)."""
    lines = []
    for name, spec in specs.items():
        size = f", {spec.size}" if spec.size else ""
        note = f": {spec.notes.strip()}" if spec.notes else ""
        lines.append(f"- **{name}** ({spec.family}{size}; {_where(spec, training_registry)}){note}")
    return "\n".join(lines) if lines else "No reward model could be planned in this run."


def score_counts(scores: pd.DataFrame, units: Mapping[str, int]) -> str:
    """One sentence: rows, RMs, prompts and words of the live scores, and how many units were scored now."""
    return (
        f"{len(scores)} rows: {scores['model'].nunique()} RMs x {scores['prompt_id'].nunique()} prompts x "
        f"{scores['word'].nunique()} words ({units.get('scored', 0)} units scored now, "
        f"{units.get('skipped', 0)} reused)"
    )


def failure_message(failures: Sequence[Mapping[str, Any]]) -> str:
    """The error raised at the end of a chapter whose run had failed models."""
    return (
        "scoring failed for: "
        + ", ".join(sorted({str(f["model"]) for f in failures}))
        + " (the other models were scored; see the failure table above)"
    )


def summary_text(medians: pd.DataFrame, timings: pd.DataFrame) -> str:
    """Sentences from the numbers: per RM and framing, the category ranked higher, and the throughput."""
    lines = []
    pooled = medians[medians["analysis"] == "pooled"] if not medians.empty else medians
    if not pooled.empty:
        for (corpus, rm, framing), g in pooled.groupby(["corpus", "rm", "framing"], sort=True, observed=True):
            med = g.groupby("category", observed=True)["median_rank"].median().sort_values()
            if len(med) < 2:
                continue
            best, worst = med.index[0], med.index[-1]
            lines.append(
                f"- **{rm}** ({corpus}, {framing} prompts): {best} words rank higher (median of the prompts' "
                f"median ranks {med.iloc[0]:.1f}) than {worst} words ({med.iloc[-1]:.1f})."
            )
    for row in timings.itertuples():
        if row.candidates:
            lines.append(
                f"- {row.model}: {row.candidates} candidates in {row.score_s:.1f} s "
                f"({row.candidates_per_s:.0f}/s, {row.method}, batch {row.batch_size}, {row.dtype}, {row.device})."
            )
    return "\n".join(lines) if lines else "No scores in this run."
