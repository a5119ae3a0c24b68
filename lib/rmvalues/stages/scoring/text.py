"""The values the RM-scoring chapter's prose cites (glued) and its registration table, from the run; the
sentences themselves are the notebook's Markdown."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ...core import paths
from ...data.prompts import FRAMINGS
from ...models.registry import ModelSpec

__all__ = [
    "MARKDOWN_KEYS",
    "cluster_numbers",
    "failure_message",
    "key_numbers",
    "registration",
    "top_categories",
]

#: Keys of :func:`key_numbers` that hold Markdown (pasted with ``{glue:md}``, not set in bold as a value).
MARKDOWN_KEYS = ("framing_findings",)


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


def registration(specs: Mapping[str, ModelSpec], training_registry: str | None = None) -> pd.DataFrame:
    """Per scored RM: where it is registered (the training run's ``registry.yaml`` or a registry file) and its
    registry note (for a trained RM: base model, data, method, pairs, seed)."""
    return pd.DataFrame(
        {
            "model": list(specs),
            "registered": [_where(spec, training_registry) for spec in specs.values()],
            "note": [spec.notes.strip() if spec.notes else "" for spec in specs.values()],
        },
        columns=["model", "registered", "note"],
    )


def failure_message(failures: Sequence[Mapping[str, Any]]) -> str:
    """The error raised at the end of a chapter whose run had failed models: each failed model with the step
    and the exception it failed with (the runner shows it on the console)."""
    first: dict[str, Mapping[str, Any]] = {}
    for f in failures:
        first.setdefault(str(f["model"]), f)
    lines = [
        f"{name} at {f['step']}" + (f" ({f['prompt_id']})" if f.get("prompt_id") else "") + f": {f['error']}"
        for name, f in sorted(first.items())
    ]
    return (
        f"scoring failed for {len(lines)} model(s) (the other models were scored; the failure table above "
        "has every failure):\n  - " + "\n  - ".join(lines)
    )


def _category_means(medians: pd.DataFrame) -> pd.DataFrame:
    """Per (corpus, RM, framing) and category: the median over prompts of the category's median rank."""
    pooled = medians[medians["analysis"] == "pooled"] if "analysis" in medians.columns else medians
    return (
        pooled.groupby(["corpus", "rm", "framing", "category"], sort=True, observed=True)["median_rank"]
        .median()
        .reset_index()
    )


def top_categories(medians: pd.DataFrame) -> str:
    """Per framing, how often each category ranks highest (lowest median over prompts of its median rank)
    over the (corpus, RM) comparisons, e.g. ``positive prompts: Communion in 2 of 2; negative prompts:
    Agency in 1 and Communion in 1 of 2``; ``n/a`` without medians."""
    if medians.empty:
        return "n/a"
    per = _category_means(medians)
    keys = ["corpus", "rm", "framing"]
    per = per[per.groupby(keys, observed=True)["category"].transform("size") > 1]
    if per.empty:
        return "n/a"
    best = per.loc[per.groupby(keys, observed=True)["median_rank"].idxmin()]
    parts = []
    for framing in [f for f in FRAMINGS if f in set(best["framing"])]:
        sub = best[best["framing"] == framing]
        counts = [f"{cat} in {n}" for cat, n in sub["category"].value_counts().sort_index().items()]
        joined = counts[0] if len(counts) == 1 else ", ".join(counts[:-1]) + " and " + counts[-1]
        parts.append(f"{framing} prompts: {joined} of {len(sub)}")
    return "; ".join(parts)


def _seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def _expected_rank(results: Any) -> str:
    """The median rank of a category whose words were placed at random, per corpus: (words + 1) / 2."""
    scores = results.scores
    if scores.empty:
        return "n/a"
    n = scores.groupby("corpus", observed=True)["word"].nunique()
    if len(n) == 1:
        return f"{(n.iloc[0] + 1) / 2:g}"
    return ", ".join(f"{(k + 1) / 2:g} ({c})" for c, k in n.items())


def cluster_numbers(contrasts: pd.DataFrame) -> dict[str, str]:
    """What the framing contrasts compare (the first row of :func:`~rmvalues.stages.scoring.findings.
    contrast_table`; every RM of a run has the same prompts): ``n_adjectives`` (``3 positive and 3
    negative``), ``n_contrast_prompts``, ``n_splits`` and ``p_min`` of the exact split test; ``n/a`` without
    contrasts."""
    from ...core.display import pvalue

    keys = ("n_adjectives", "n_contrast_prompts", "n_splits", "p_min")
    if contrasts.empty:
        return dict.fromkeys(keys, "n/a")
    r = contrasts.iloc[0]
    return {
        "n_adjectives": f"{int(r['n_positive'])} positive and {int(r['n_negative'])} negative",
        "n_contrast_prompts": str(int(r["n_prompts"])),
        "n_splits": str(int(r["n_splits"])) if r["n_splits"] else "n/a",
        "p_min": pvalue(r["p_min"]),
    }


def key_numbers(results: Any) -> dict[str, str]:
    """The numbers the chapter's prose cites, as text to glue (every key always present; ``n/a`` where the
    run has no such number, e.g. no published scores for its corpora or no RM scored on words)."""
    from ...core.display import number

    scores, timings, checks = results.scores, results.timings, results.inputs.checks
    sizes = [s.size for s in results.specs.values() if s.size]
    pub = results.published
    comp = results.comparison
    out = {
        "n_rms": str(scores["model"].nunique()),
        "rm_names": ", ".join(sorted(scores["model"].unique())) or "n/a",
        "rm_sizes": " and ".join(dict.fromkeys(sizes)) or "n/a",
        "corpora": ", ".join(sorted(scores["corpus"].unique())) or "n/a",
        "n_words": f"{scores['word'].nunique():,}",
        "n_prompts": str(scores["prompt_id"].nunique()),
        "n_rows": f"{len(scores):,}",
        "n_units": str(results.units.get("total", 0)),
        "units_scored": str(results.units.get("scored", 0)),
        "units_reused": str(results.units.get("skipped", 0)),
        "n_failed": str(len({f["model"] for f in results.failures})),
        "n_checked": f"{int(checks['inputs checked'].sum()):,}" if not checks.empty else "n/a",
        "n_problems": f"{int(checks['problems'].sum()):,}" if not checks.empty else "n/a",
        "score_time": _seconds(float(timings["score_s"].sum())) if not timings.empty else "n/a",
        "throughput": (
            " to ".join(dict.fromkeys(f"{v:,.0f}" for v in timings["candidates_per_s"].agg(["min", "max"])))
            if not timings.empty and timings["candidates_per_s"].notna().any()
            else "n/a"
        ),
        "expected_rank": _expected_rank(results),
        "live_top": top_categories(results.medians),
        "n_published_rms": str(pub["model"].nunique()) if not pub.empty else "n/a",
        "published_top": top_categories(results.published_medians),
        "n_compared": str(comp["model"].nunique()) if not comp.empty else "0",
        "live_published_rho": number(float(comp["median_spearman"].median())) if not comp.empty else "n/a",
    }
    out.update(cluster_numbers(results.framing_contrasts))
    answers = [f.answer for f in results.findings]
    out["framing_findings"] = " ".join(answers) or (
        "n/a (computed for at most three RMs scored on a Big Two corpus; the statistics chapter compares more)"
    )
    if out["throughput"] != "n/a":
        out["scoring"] = f"took {out['score_time']} at {out['throughput']} candidates per second"
    elif results.units.get("skipped", 0) and not results.units.get("scored", 0):
        out["scoring"] = "took no time: every unit was reused from an earlier run"
    else:
        out["scoring"] = "n/a"
    return out
