"""The paper's released training results: the category trajectories of its own training runs
(``rank_results_*.csv``: median rank of the Agency and Communion words per checkpoint, one seed per run)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ...data import datasets

__all__ = [
    "PAPER_TRAINING_FILES",
    "PAPER_TRAINING_LABELS",
    "load_paper_training_results",
    "paper_gaps",
    "paper_inputs",
    "paper_vs_ours",
]

PAPER_TRAINING_FILES: dict[str, str] = {
    "sky_80k": "paper/training/rank_results_sky_80k",
    "uf_13": "paper/training/rank_results_uf_13",
    "uf_27": "paper/training/rank_results_uf_27",
    "uf_54": "paper/training/rank_results_uf_54",
    "uf_100": "paper/training/rank_results_uf_100",
    "grm_80k": "paper/training/rank_results_grm_80k",
}
PAPER_TRAINING_LABELS: dict[str, str] = {
    "sky_80k": "Skywork 80K v0.2",
    "uf_13": "Unified-Feedback 13K",
    "uf_27": "Unified-Feedback 27K",
    "uf_54": "Unified-Feedback 54K",
    "uf_100": "Unified-Feedback 100K",
    "grm_80k": "GRM (off the shelf)",
}


def paper_inputs() -> dict[str, str]:
    """``{data-set name: sha256}`` of the released files (for the manifest)."""
    return {name: datasets.get(name).sha256 for name in PAPER_TRAINING_FILES.values()}


def _paper_family(model_id: str, base: Any) -> str:
    if isinstance(base, str) and base:
        return base
    low = str(model_id).lower()
    for key, fam in (("qwen", "Qwen"), ("gemma", "Gemma"), ("llama", "Llama")):
        if key in low:
            return fam
    return "unknown"


def load_paper_training_results() -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(results, files)``: the paper's ``rank_results_*.csv`` in one tidy table, and one row per file.

    ``results``: ``dataset, label, model_id, base_model, category, checkpoint, value`` (``value`` is the
    file's ``sum_value``: the release README calls it the median rank of the category's tokens per
    checkpoint). Exact duplicate rows (``uf_100`` repeats its rows) are dropped; a missing ``base_model``
    (the Qwen runs) is filled from the model id. ``files``: rows, duplicates dropped, sha256, which other
    file has identical bytes, and ``used``: a file byte-identical to a later file of the list is left out of
    ``results`` (in the release ``uf_13`` = ``uf_27``, so the 13K run is not in it and only ``uf_27`` counts).
    """
    frames, info = [], []
    shas = {k: datasets.get(v).sha256 for k, v in PAPER_TRAINING_FILES.items()}
    for key, name in PAPER_TRAINING_FILES.items():
        raw = pd.read_csv(datasets.fetch(name))
        raw = raw.drop(columns=[c for c in raw.columns if c in ("", "X") or c.startswith("Unnamed")])
        n = len(raw)
        raw = raw.drop_duplicates()
        same = [k for k, s in shas.items() if s == shas[key] and k != key]
        keys = list(PAPER_TRAINING_FILES)
        used = not any(keys.index(k) > keys.index(key) for k in same)
        info.append(
            {
                "dataset": key,
                "label": PAPER_TRAINING_LABELS[key],
                "rows": n,
                "duplicate_rows_dropped": n - len(raw),
                "sha256": shas[key],
                "identical_to": ", ".join(same),
                "used": used,
            }
        )
        if not used:
            continue
        df = pd.DataFrame(
            {
                "dataset": key,
                "label": PAPER_TRAINING_LABELS[key],
                "model_id": raw["model_id"].astype(str),
                "base_model": [
                    _paper_family(m, b) for m, b in zip(raw["model_id"], raw["base_model"], strict=True)
                ],
                "category": raw["Category"].astype(str),
                "checkpoint": raw["checkpoint"].astype(int),
                "value": raw["sum_value"].astype(float),
            }
        )
        frames.append(df)
    return pd.concat(frames, ignore_index=True), pd.DataFrame(info)


def paper_gaps(results: pd.DataFrame, first: str = "Agency", second: str = "Communion") -> pd.DataFrame:
    """The paper's ``value(first) - value(second)`` per data set, model and checkpoint (same sign convention
    as :func:`rmvalues.stages.training.analysis.category_gaps`: positive = the second category ranked
    higher); first/last checkpoint flagged."""
    wide = results.pivot_table(
        index=["dataset", "label", "model_id", "base_model", "checkpoint"], columns="category", values="value"
    ).reset_index()
    wide["gap"] = wide[first] - wide[second]
    g = wide.groupby(["dataset", "model_id"])["checkpoint"]
    wide["is_first"] = wide["checkpoint"] == g.transform("min")
    wide["is_last"] = wide["checkpoint"] == g.transform("max")
    return wide


def paper_vs_ours(paper: pd.DataFrame, ours: pd.DataFrame) -> pd.DataFrame:
    """Side by side: the sign and change of the Agency - Communion gap per base family between the first and
    the last checkpoint, in the paper's runs (one seed; its first checkpoint is step 1,000) and ours (mean over
    seeds, positive framing; the first checkpoint after step 0, with the t interval of the last one across
    seeds). Both first checkpoints follow real training: neither is a randomly drawn head."""
    from ...stats import mean_ci

    rows = []
    for (_ds, label, fam), g in paper[paper["dataset"] != "grm_80k"].groupby(
        ["dataset", "label", "base_model"]
    ):
        f, l_ = g.loc[g["is_first"], "gap"].mean(), g.loc[g["is_last"], "gap"].mean()
        rows.append(
            {"study": "paper", "data": label, "base": fam, "seeds": 1, "gap_first": f, "gap_last": l_}
        )
    pos = ours[ours["framing"] == "positive"] if "positive" in set(ours["framing"]) else ours
    for (data_, q, base), g in pos.groupby(["data", "quantity", "base_model"]):
        first = g[g["step"] == g.groupby("cell")["step"].transform("min")]["gap"]
        last = g[g["step"] == g.groupby("cell")["step"].transform("max")]["gap"]
        mean, _, lo, hi, n = mean_ci(last)
        rows.append(
            {
                "study": "this book",
                "data": f"{data_} ({q} pairs)",
                "base": base,
                "seeds": n,
                "gap_first": float(first.mean()),
                "gap_last": mean,
                "gap_last_ci_low": lo,
                "gap_last_ci_high": hi,
            }
        )
    out = pd.DataFrame(rows)
    out["favoured_at_end"] = np.where(
        out["gap_last"] > 0, "Communion", np.where(out["gap_last"] < 0, "Agency", "neither")
    )
    if "gap_last_ci_low" in out.columns:  # ours: no direction when the interval across seeds includes 0
        open_ = (out["gap_last_ci_low"] <= 0) & (out["gap_last_ci_high"] >= 0)
        out.loc[open_, "favoured_at_end"] = "neither (interval includes 0)"
    out["gap_change"] = out["gap_last"] - out["gap_first"]
    return out
