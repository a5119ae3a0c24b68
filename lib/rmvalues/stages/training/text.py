"""Sentences of the training chapter, built from the numbers of the run (no sentence states a result the run
did not compute)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...core.display import p_clause

__all__ = [
    "describe_accuracy",
    "describe_comparison",
    "describe_confounds",
    "describe_data",
    "describe_gaps",
    "describe_paper",
    "describe_subsets",
    "describe_registry",
    "describe_time",
    "key_numbers",
    "summary",
]


def _f(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f} %"


def _ci(lo: float, hi: float, pct: bool = False, digits: int = 1) -> str:
    if pct:
        return f"{_pct(lo)} to {_pct(hi)}"
    return f"{_f(lo, digits)} to {_f(hi, digits)}"


def _join(parts: Sequence[str]) -> str:
    parts = list(parts)
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def describe_data(data: pd.DataFrame, cells: pd.DataFrame, quantities: Sequence[int]) -> str:
    """One paragraph per source: pairs examined, eligible, dropped (why), truncated, held out, the pool."""
    out = []
    q = ", ".join(str(x) for x in quantities)
    for row in data.to_dict("records"):
        drops = {k[len("dropped: ") :]: v for k, v in row.items() if k.startswith("dropped: ") and v}
        why = "; ".join(f"{v} {k}" for k, v in sorted(drops.items(), key=lambda kv: -kv[1])) or "none"
        cut = {k[len("left-truncated: ") :]: v for k, v in row.items() if k.startswith("left-truncated: ")}
        cut = {k: v for k, v in cut.items() if not pd.isna(v)}
        n_el = row["n_eligible"]
        trunc = (
            " Sequences longer than "
            f"{row['max_length']} tokens were left-truncated (their end kept): "
            + _join([f"{int(v):,} of the {n_el:,} pairs under {k}" for k, v in sorted(cut.items())])
            + " had at least one truncated side."
            if cut
            else ""
        )
        out.append(
            f"Source `{row['source']}`: {row['n_rows']:,} pairs; {row['n_examined']:,} were visited in the fixed "
            f"data order (data seed {row['data_seed']}) until {n_el:,} eligible pairs were found "
            f"(dropped on the way: {why}).{trunc} The first {row['n_eval']} are held out; the other "
            f"{row['n_train_pool']} form the training pool from which every seed draws its own nested subsets "
            f"of {q} pairs, the same pairs for every base model."
        )
    trained = cells[["quantity", "n_train_used"]].drop_duplicates()
    if (trained["quantity"] == trained["n_train_used"]).all():
        out.append("TRL kept every selected pair in every cell.")
    else:
        out.append(f"TRL dropped pairs in some cells: {trained.to_dict('records')}.")
    return "\n\n".join(out)


def describe_subsets(subsets: pd.DataFrame) -> str:
    """How much the training subsets of different seeds overlap, per quantity (mean share of pairs that two
    seeds' subsets have in common)."""
    if subsets is None or subsets.empty:
        return ""
    parts = []
    for (_source, q), g in subsets.groupby(["data", "quantity"], sort=True):
        sets = [set(v) for _, v in g.groupby("seed")["pair_id"]]
        if len(sets) < 2:
            continue
        shares = [len(a & b) / q for i, a in enumerate(sets) for b in sets[i + 1 :]]
        parts.append(
            f"{q} pairs: {_pct(float(np.mean(shares)))} (range {_pct(min(shares))}-{_pct(max(shares))})"
        )
    if not parts:
        return ""
    return (
        "Share of training pairs that two seeds have in common (mean over pairs of seeds): "
        + "; ".join(parts)
        + ". The spread across seeds therefore includes the draw of the training data, less so where the "
        "subsets overlap more."
    )


def describe_confounds(bases: pd.DataFrame) -> str:
    """What differs between the base models besides their pretraining, from the registry and the model files."""
    if bases is None or len(bases) < 2:
        return "One base model: no comparison between base models."
    rows = bases.to_dict("records")
    names = [r["base_model"] for r in rows]

    def contrast(label: str, key: str, fmt: str = "{}") -> str | None:
        values = [fmt.format(r[key]) for r in rows]
        if len(set(values)) == 1:
            return None
        return f"{label} ({' vs '.join(values)})"

    diffs = [
        contrast("training type", "type"),
        contrast("size", "size"),
        contrast("quantization of the weight file", "quantization"),
        contrast("tokenizer vocabulary", "tokenizer_vocab", "{:,} tokens"),
        contrast("hidden size the head reads", "hidden_size"),
        contrast("layers", "layers"),
        contrast("chat template", "chat_template"),
    ]
    diffs = [d for d in diffs if d]
    text = (
        f"The base models ({' vs '.join(names)}) differ in more than their pretraining data: "
        + (_join(diffs) if diffs else "nothing else recorded in the registry")
        + "."
    )
    kinds = {r["base_model"]: (r["type"], r["chat_template"]) for r in rows}
    pre = [n for n, (t, _) in kinds.items() if t == "pretrained"]
    if pre and len(pre) < len(rows):
        text += (
            f" The pretrained {_join(pre)} reads the conversations in a chat format it was not trained on, the "
            "instruction-tuned model(s) in their own."
        )
    return (
        text
        + " A difference between their reward models is a difference between these packages and cannot be "
        "attributed to any one of them, pretraining included."
    )


def describe_accuracy(accuracy: pd.DataFrame) -> str:
    """Held-out accuracy per base model and quantity with both intervals, the verdict per quantity, and, for a
    base whose largest quantity does not learn, what the numbers show about why."""
    if accuracy is None or accuracy.empty:
        return ""
    parts = []
    for r in accuracy.to_dict("records"):
        pair = (
            f", pairs {_ci(r['pair_ci_low'], r['pair_ci_high'], pct=True)}"
            if not pd.isna(r["pair_ci_low"])
            else ""
        )
        seeds = (
            f"seeds {_ci(r['seed_ci_low'], r['seed_ci_high'], pct=True)}"
            if not pd.isna(r["seed_ci_low"])
            else "one seed, no interval over seeds"
        )
        parts.append(
            f"{r['base_model']}, {r['quantity']} pairs: {_pct(r['accuracy'])} (95 % intervals: {seeds}{pair}; "
            f"{'above chance' if r['learns'] else 'not above chance'})"
        )
    n_eval = int(accuracy["n_eval"].max())
    n_seeds = int(accuracy["n_seeds"].max())
    out = [
        f"Held-out preference accuracy ({n_eval} pairs never trained on, mean over {n_seeds} "
        f"seed{'s' if n_seeds != 1 else ''}; chance 50 %): " + "; ".join(parts) + "."
    ]
    top = accuracy[accuracy["quantity"] == accuracy.groupby("base_model")["quantity"].transform("max")]
    for r in top.to_dict("records"):
        if r["learns"]:
            out.append(
                f"With {r['quantity']} pairs, {r['base_model']}'s probe learns: both lower bounds are above 50 %."
            )
        else:
            out.append(
                f"With {r['quantity']} pairs, {r['base_model']}'s probe does not reach a held-out accuracy "
                f"interval above chance. Its heads rank {_pct(r['train_accuracy'])} of their own training "
                f"pairs correctly, against {_pct(r['accuracy'])} of the held-out pairs (randomly drawn heads: "
                f"{_pct(r['untrained_accuracy'])}): "
                + (
                    "the head fits its training pairs but what it fits does not carry over to new pairs."
                    if r["train_accuracy"] - r["accuracy"] > 0.1
                    else "the head does not even separate its training pairs, so these features hold little "
                    "linearly readable preference signal at this size."
                )
            )
    return " ".join(out)


def describe_gaps(final: pd.DataFrame, framing: str = "positive") -> str:
    """The Agency - Communion gap at the last checkpoint per base model and quantity, with its interval across
    seeds and the range of randomly drawn heads."""
    if final is None or final.empty:
        return ""
    g = final[final["framing"] == framing]
    if g.empty:
        return ""
    parts = []
    for r in g.to_dict("records"):
        ci = (
            f"95 % CI {_ci(r['ci_low'], r['ci_high'])}"
            if not pd.isna(r["ci_low"])
            else "one seed: no interval"
        )
        if pd.isna(r["ci_low"]):
            lean = ""
        elif r["ci_low"] > 0:
            lean = "Communion favoured"
        elif r["ci_high"] < 0:
            lean = "Agency favoured"
        else:
            lean = "interval includes 0"
        null = ""
        if "null_low" in r and not pd.isna(r.get("null_low")):
            null = (
                f"; means of random heads {_ci(r['null_low'], r['null_high'])}, "
                f"{_pct(r['null_share_beyond'])} of them at least as far from 0"
            )
        lean = f"; {lean}" if lean else ""
        parts.append(f"{r['base_model']}, {r['quantity']} pairs: {_f(r['gap'])} ({ci}{lean}{null})")
    return (
        f"Agency minus Communion median rank at the last checkpoint under {framing} prompts (positive: "
        "Communion words get more reward; mean over seeds): " + "; ".join(parts) + "."
    )


def describe_comparison(comparison: pd.DataFrame | None) -> str:
    """The difference between base models at matched quantities (last checkpoint), and how it changes from the
    smallest to the largest quantity."""
    if comparison is None or comparison.empty:
        return "Only one base model: no comparison between base models."
    c = comparison[comparison["checkpoint"] == "last"]
    out = []
    for framing, f in c.groupby("framing", sort=False):
        parts = []
        for r in f.sort_values("quantity").to_dict("records"):
            if pd.isna(r.get("ci_low", np.nan)):
                parts.append(f"{r['quantity']} pairs: {_f(r['difference'])} (too few seeds for an interval)")
                continue
            excl = "excludes" if r["ci_low"] > 0 or r["ci_high"] < 0 else "includes"
            parts.append(
                f"{r['quantity']} pairs: {_f(r['difference'])} (Welch 95 % CI {_ci(r['ci_low'], r['ci_high'])}, "
                f"{excl} 0; exact permutation {p_clause(r['p_perm'])}, smallest attainable "
                f"{_f(r['p_min'], 4)}; d = {_f(r['d'], 2)})"
            )
        first = f.iloc[0]
        out.append(
            f"{first['base_a']} minus {first['base_b']}, gap difference under {framing} prompts at matched "
            "quantities: " + "; ".join(parts) + "."
        )
        ordered = f.sort_values("quantity")
        if len(ordered) >= 2:
            lo, hi = ordered.iloc[0], ordered.iloc[-1]
            out.append(
                f"From {lo['quantity']} to {hi['quantity']} pairs the difference went from "
                f"{_f(lo['difference'])} to {_f(hi['difference'])} rank units ({framing} prompts)."
            )
    return " ".join(out)


def describe_paper(pvo: pd.DataFrame | None, files: pd.DataFrame | None = None) -> str:
    """The paper's runs: which category each base family favoured at its last checkpoint, and which released
    files were left out as byte-identical copies."""
    out = []
    if files is not None and not files.empty and "used" in files.columns:
        for r in files[~files["used"]].to_dict("records"):
            out.append(
                f"The released file {r['dataset']} ({r['label']}) is byte-identical to {r['identical_to']} "
                f"(sha256 {str(r['sha256'])[:12]}...), so it is not counted as a run of its own."
            )
        dup = files[files["duplicate_rows_dropped"] > 0]
        for r in dup.to_dict("records"):
            out.append(
                f"{r['dataset']} repeats {r['duplicate_rows_dropped']} of its {r['rows']} rows (dropped)."
            )
    if pvo is not None and not pvo.empty:
        paper = pvo[pvo["study"] == "paper"]
        parts = []
        for base, g in paper.groupby("base", sort=True):
            fav = g["favoured_at_end"].value_counts()
            parts.append(
                f"{base}: {', '.join(f'{k} in {v} of {len(g)}' for k, v in fav.items())} training sets"
            )
        if parts:
            out.append(
                "The paper's released runs, last checkpoint (one seed each): " + "; ".join(parts) + "."
            )
    return " ".join(out)


def describe_registry(registry: object, consistency: Mapping[str, Any]) -> str:
    """Where the trained RMs are registered, and the check that the last one loads by name and scores as its
    last checkpoint did."""
    from ...core import paths

    path = Path(registry)
    with contextlib.suppress(ValueError):
        path = path.resolve().relative_to(paths.project_root().resolve())
    out = f"The trained RMs are registered in `{path}`."
    if consistency:
        out += (
            f" Loaded by name from it and scored by the scoring engine under `{consistency['prompt_id']}` on "
            f"{consistency['words']:,} words, `{consistency['rm']}` gives rewards at most "
            f"{consistency['max_abs_difference']:.1e} away from its last checkpoint's (the run stops above "
            f"{consistency.get('tolerance', float('nan')):g})."
        )
    return out


def _is_training(key: str) -> bool:
    """A timing of one cell's training (``train <cell>``, or ``grid: train <cell>`` in the manifest)."""
    return key.removeprefix("grid: ").startswith("train ")


def describe_time(seconds: float, cells: pd.DataFrame, timings: Mapping[str, float] | None = None) -> str:
    """The chapter's wall-clock time, the cells trained in this run and the feature pass's share."""
    trained = int((cells["status"] == "trained now").sum())
    text = f"training chapter: {seconds:.0f} s in total; {len(cells)} cells, {trained} trained in this run"
    if timings:
        feats = sum(v for k, v in timings.items() if "pair features" in k or "pair-activations" in k)
        train = sum(v for k, v in timings.items() if _is_training(k))
        text += f"; pair features {feats:.0f} s, training {train:.0f} s"
    return text


def summary(
    accuracy: pd.DataFrame,
    final: pd.DataFrame,
    comparison: pd.DataFrame | None,
    bases: pd.DataFrame,
    framing: str = "positive",
) -> str:
    """The chapter's summary, from the numbers: which probes learned, whether the gaps leave the random-head
    range, whether the base models differ at matched quantities, and what the comparison is confounded by."""
    out = []
    if accuracy is not None and not accuracy.empty:
        top = accuracy[accuracy["quantity"] == accuracy.groupby("base_model")["quantity"].transform("max")]
        learned = [
            f"{r['base_model']} ({_pct(r['accuracy'])})" for r in top.to_dict("records") if r["learns"]
        ]
        failed = [
            f"{r['base_model']} ({_pct(r['accuracy'])})" for r in top.to_dict("records") if not r["learns"]
        ]
        q = int(top["quantity"].max())
        if learned:
            out.append(
                f"With {q} training pairs the linear probes of {_join(learned)} rank held-out pairs better than "
                "chance, with both intervals above 50 %."
            )
        if failed:
            out.append(f"The probes of {_join(failed)} do not (see the accuracy section for why).")
    if final is not None and not final.empty and "null_low" in final.columns:
        f = final[(final["framing"] == framing)]
        f = f[f["quantity"] == f["quantity"].max()]
        inside = [
            r["base_model"] for r in f.to_dict("records") if r["null_low"] <= r["gap"] <= r["null_high"]
        ]
        outside = [
            r["base_model"] for r in f.to_dict("records") if not r["null_low"] <= r["gap"] <= r["null_high"]
        ]
        if inside:
            out.append(
                f"At the largest quantity the mean Agency - Communion gap under {framing} prompts of "
                f"{_join(inside)} lies within the central 95 % of mean gaps of as many random heads as seeds, so "
                "training on these preferences did not move it beyond what any readout of the same features gives."
            )
        if outside:
            out.append(
                f"At the largest quantity the mean gap under {framing} prompts of {_join(outside)} lies outside "
                "the central 95 % of those random means."
            )
    if comparison is not None and not comparison.empty:
        c = comparison[(comparison["framing"] == framing) & (comparison["checkpoint"] == "last")]
        if not c.empty and "ci_low" in c.columns:
            sep = c[(c["ci_low"] > 0) | (c["ci_high"] < 0)]["quantity"].tolist()
            qs = c["quantity"].tolist()
            out.append(
                f"The two base models' gaps differ ({framing} prompts, Welch interval excluding 0) at "
                f"{len(sep)} of {len(qs)} matched quantities"
                + (f" ({', '.join(map(str, sep))} pairs)." if sep else ".")
            )
    if bases is not None and len(bases) >= 2:
        out.append(
            "Any such difference is between two packages that differ in training type, size, quantization, "
            "tokenizer and chat format as well as in pretraining (table above), and the RMs are linear probes of "
            "frozen models trained on at most a few hundred pairs, not LoRA on tens of thousands: the run does "
            "not test the paper's claim that pretraining alone carries the bias into trained reward models."
        )
    return " ".join(out)


# -- numbers glued into the chapter's prose ----------------------------------------------------------------------


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
            f"seeds {_ci(r['seed_ci_low'], r['seed_ci_high'], pct=True)}"
            if pd.notna(r["seed_ci_low"])
            else "one seed"
        )
        pairs = (
            f", pairs {_ci(r['pair_ci_low'], r['pair_ci_high'], pct=True)}"
            if pd.notna(r["pair_ci_low"])
            else ""
        )
        parts.append(f"{r['base_model']} {_pct(r['accuracy'])} ({seeds}{pairs})")
    return "; ".join(parts) or "n/a"


def _gap_at_top(final: pd.DataFrame | None, framing: str) -> str:
    top = _top_rows(final, framing=framing)
    parts = []
    for r in top.to_dict("records"):
        ci = f", 95 % CI {_ci(r['ci_low'], r['ci_high'])}" if pd.notna(r["ci_low"]) else ""
        null = (
            f"; means of random heads {_ci(r['null_low'], r['null_high'])}"
            if pd.notna(r.get("null_low", np.nan))
            else ""
        )
        parts.append(f"{r['base_model']} {_f(r['gap'])}{ci}{null}")
    return "; ".join(parts) or "n/a"


def _difference_at_top(comparison: pd.DataFrame | None, framing: str) -> str:
    if comparison is None or comparison.empty:
        return "n/a"
    top = _top_rows(comparison[comparison["checkpoint"] == "last"], framing=framing)
    parts = []
    for r in top.to_dict("records"):
        text = f"{r['base_a']} minus {r['base_b']} {_f(r['difference'])}"
        if pd.notna(r.get("ci_low", np.nan)):
            text += f" (Welch 95 % CI {_ci(r['ci_low'], r['ci_high'])}, exact permutation {p_clause(r['p_perm'])})"
        parts.append(text)
    return "; ".join(parts) or "n/a"


def _separated(comparison: pd.DataFrame | None, framing: str) -> str:
    """At how many matched quantities the Welch interval of the difference excludes 0 (``k of n``)."""
    if comparison is None or comparison.empty or "ci_low" not in comparison.columns:
        return "n/a"
    c = comparison[(comparison["framing"] == framing) & (comparison["checkpoint"] == "last")]
    if c.empty:
        return "n/a"
    sep = int(((c["ci_low"] > 0) | (c["ci_high"] < 0)).sum())
    return f"{sep} of {len(c)}"


def _null_share(final: pd.DataFrame | None, framing: str) -> str:
    """How many (base, quantity) mean gaps lie outside the central 95 % of random heads (``k of n``)."""
    if final is None or final.empty or "null_low" not in final.columns:
        return "n/a"
    f = final[(final["framing"] == framing) & final["null_low"].notna()]
    if f.empty:
        return "n/a"
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
        "bases": _join(list(spec.models)) if spec.models else "n/a",
        "n_bases": str(len(spec.models)),
        "sources": _join(list(spec.sources)) if spec.sources else "n/a",
        "quantities": _join([f"{q:,}" for q in spec.quantities]) if spec.quantities else "n/a",
        "q_max": f"{max(spec.quantities):,}" if spec.quantities else "n/a",
        "n_seeds": str(len(spec.seeds)),
        "n_cells": f"{len(cells):,}",
        "n_trained_now": f"{int((cells['status'] == 'trained now').sum()):,}" if "status" in cells else "n/a",
        "method": str(s.method),
        "max_length": f"{s.max_length:,}" if s.max_length else "n/a",
        "truncation": str(s.truncation),
        "n_eval": f"{int(first['n_eval']):,}" if first is not None else "n/a",
        "n_pool": f"{int(first['n_train_pool']):,}" if first is not None else "n/a",
        "learning_rate": f"{s.learning_rate:g}",
        "lr_schedule": str(s.lr_scheduler_type),
        "warmup": f"{100 * s.warmup_ratio:g} %",
        "weight_decay": f"{s.weight_decay:g}",
        "batch_size": str(s.batch_size),
        "epochs": f"{s.epochs:g}",
        "checkpoint_every": f"{s.checkpoint_every:,}",
        "steps_range": f"{int(steps.min()):,} to {int(steps.max()):,}" if len(steps) else "n/a",
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
            "n_words": f"{traj['word'].nunique():,}" if traj is not None and len(traj) else "n/a",
            "n_prompts": f"{len(res.params.prompts):,}",
            "n_bootstrap": f"{N_BOOTSTRAP:,}",
            "n_null_heads": f"{NULL_HEADS:,}" if res.null is not None and len(res.null) else "n/a",
            "accuracy_top": _accuracy_at_top(res.accuracy),
            "n_learning": (
                f"{int(res.accuracy['learns'].sum())} of {len(res.accuracy)}"
                if res.accuracy is not None and len(res.accuracy)
                else "n/a"
            ),
            "p_min": (
                _f(float(comparison["p_min"].min()), 4)
                if comparison is not None and len(comparison) and "p_min" in comparison
                else "n/a"
            ),
            "seconds": f"{res.seconds:,.0f} s",
            "paper_files": f"{len(res.paper_files):,}" if len(res.paper_files) else "n/a",
            "paper_files_used": (
                f"{int(res.paper_files['used'].sum()):,}" if "used" in res.paper_files.columns else "n/a"
            ),
            "consistency_rm": str(res.consistency.get("rm", "n/a")),
            "consistency_tolerance": (
                f"{res.consistency['tolerance']:g}" if "tolerance" in res.consistency else "n/a"
            ),
            "consistency_difference": (
                f"{res.consistency['max_abs_difference']:.1e}"
                if "max_abs_difference" in res.consistency
                else "n/a"
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
    train = sum(v for k, v in res.timings.items() if _is_training(k)) if res.timings else float("nan")
    cells = res.cells
    out["cells_train_seconds"] = (
        f"{cells['train_seconds'].sum():,.0f} s"
        if "train_seconds" in cells.columns and cells["train_seconds"].notna().any()
        else "n/a"
    )
    out["feature_seconds"] = f"{feats:,.0f} s" if not pd.isna(feats) else "n/a"
    out["train_seconds"] = f"{train:,.0f} s" if not pd.isna(train) else "n/a"
    return out
