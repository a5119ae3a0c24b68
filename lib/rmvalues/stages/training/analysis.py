"""Trajectories of the trained RMs: the long scores table per checkpoint, category median ranks (paper Fig. 4),
their mean across seeds with t intervals (the paper had one seed), the Agency - Communion gap, its
random-head null, the comparison of base models at matched quantities, and the words that rose or fell most
(paper Fig. 5).

Trajectories start at the first checkpoint after step 0: step 0 is a randomly drawn head, so a change
"from step 0" would be movement away from noise (the paper's trajectories start at step 1,000)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from math import comb
from typing import Any

import numpy as np
import pandas as pd

from ...data.prompts import framing_of
from ...data.scores import SCORE_COLUMNS, conform
from .config import Cell

__all__ = [
    "NULL_HEADS",
    "NULL_MEANS",
    "category_gaps",
    "category_trajectories",
    "compare_bases",
    "final_gaps",
    "null_gaps",
    "null_means",
    "mover_balance",
    "per_cell_category",
    "seed_summary",
    "timing_summary",
    "trajectory_table",
    "word_movers",
]

#: Columns that identify a checkpoint of a cell in the trajectory tables.
META = ["cell", "base_model", "data", "method", "depth", "quantity", "seed", "step"]
#: Random heads per head-only cell for the untrained-readout null of the category gaps (:func:`null_gaps`).
NULL_HEADS = 40


def trajectory_table(
    cell: Cell,
    family: str,
    steps: Sequence[int],
    rewards: Mapping[str, np.ndarray],
    words: Sequence[str],
    labels: pd.DataFrame,
    n_tokens: Mapping[str, Sequence[int]] | None = None,
) -> pd.DataFrame:
    """Long scores table (:data:`rmvalues.data.scores.SCORE_COLUMNS` + ``cell, base_model, data, method,
    quantity, seed, step``) from ``rewards[prompt]`` of shape ``(n_words, n_steps)``. ``model`` is
    ``<cell>@<step>``."""
    frames = []
    for pid, r in rewards.items():
        r = np.asarray(r, dtype=np.float64).reshape(len(words), len(steps))
        for j, step in enumerate(steps):
            frames.append(
                pd.DataFrame(
                    {
                        "word": list(words),
                        "prompt_id": pid,
                        "step": int(step),
                        "score": r[:, j],
                        "n_tokens": list(n_tokens[pid]) if n_tokens else [pd.NA] * len(words),
                    }
                )
            )
    df = pd.concat(frames, ignore_index=True)
    df = df.merge(labels[["corpus", "word", "category", "subcategory"]], on="word", how="inner")
    df["model"] = cell.name + "@" + df["step"].astype(str)
    df["revision"] = None
    df["family"] = family
    df["source"] = "live"
    df["framing"] = df["prompt_id"].map(framing_of)
    out = conform(df)
    for key, value in (
        ("cell", cell.name),
        ("base_model", cell.model),
        ("data", cell.source),
        ("method", cell.arm),
        ("depth", cell.depth),
        ("quantity", cell.quantity),
        ("seed", cell.seed),
    ):
        out[key] = value
    out["step"] = df["step"].to_numpy()
    return out


def category_trajectories(trajectories: pd.DataFrame) -> pd.DataFrame:
    """Median rank of each category per cell, checkpoint and prompt (the paper's Fig. 4 unit), through
    :func:`rmvalues.stats.rank_scores` and :func:`rmvalues.stats.median_ranks` (rank 1 = the highest reward;
    every checkpoint ranks the words anew). Returns ``cell, base_model, data, method, quantity, seed, family,
    step, prompt_id, framing, category, median_rank, n_words``."""
    from ...stats import median_ranks, rank_scores

    ranked = rank_scores(trajectories[list(SCORE_COLUMNS)])
    med = median_ranks(ranked, split=False)
    meta = trajectories[["model", *META]].drop_duplicates("model")
    out = med.merge(meta, on="model", how="left")
    cols = [*META[:-1], "family", "step", "prompt_id", "framing", "category", "median_rank", "n_words"]
    return out[cols].sort_values(["cell", "step", "prompt_id", "category"]).reset_index(drop=True)


def per_cell_category(cat: pd.DataFrame) -> pd.DataFrame:
    """Median ranks averaged over the prompts of each framing: one value per cell, step, framing, category."""
    keys = [
        "cell",
        "base_model",
        "family",
        "data",
        "method",
        "depth",
        "quantity",
        "seed",
        "step",
        "framing",
        "category",
    ]
    return cat.groupby(keys, sort=True, observed=True)["median_rank"].mean().reset_index()


def seed_summary(cat: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Across seeds: mean median rank per base model, data, quantity, step, framing and category, with sd
    and a t confidence interval (``n_seeds`` values each; :func:`rmvalues.stats.mean_ci`)."""
    from ...stats import mean_ci

    per_cell = per_cell_category(cat)
    keys = ["base_model", "family", "data", "method", "quantity", "step", "framing", "category"]
    rows = []
    for key, g in per_cell.groupby(keys, sort=True, observed=True):
        mean, sd, lo, hi, n = mean_ci(g["median_rank"], confidence)
        rows.append(
            {
                **dict(zip(keys, key, strict=True)),
                "mean": mean,
                "sd": sd,
                "ci_low": lo,
                "ci_high": hi,
                "n_seeds": n,
            }
        )
    return pd.DataFrame(rows)


def category_gaps(cat: pd.DataFrame, first: str = "Agency", second: str = "Communion") -> pd.DataFrame:
    """Per cell, step and framing: ``gap = median rank(first) - median rank(second)`` (averaged over prompts).

    Positive: the ``second`` category's words get more reward (lower ranks) than the ``first``'s. A corpus
    without both categories is a ``ValueError``.
    """
    per_cell = per_cell_category(cat)
    have = set(per_cell["category"])
    if not {first, second} <= have:
        raise ValueError(
            f"categories {first!r} and {second!r} are needed for a gap; the corpus has {sorted(have)}"
        )
    keys = ["cell", "base_model", "family", "data", "method", "depth", "quantity", "seed", "step", "framing"]
    wide = per_cell.pivot_table(
        index=keys, columns="category", values="median_rank", observed=True
    ).reset_index()
    wide["gap"] = wide[first] - wide[second]
    return wide[[*keys, "gap"]]


def compare_bases(gaps: pd.DataFrame, n_permutations: int = 9999, seed: int = 0) -> pd.DataFrame:
    """Between every two base models at matched quantities (per data, quantity and framing), at each cell's
    last checkpoint: the difference of mean gaps across seeds (the sampled unit: one trained RM per seed),
    Welch's t confidence interval, a permutation Welch test and Cohen's d
    (:func:`rmvalues.stats.permutation_welch`, :func:`rmvalues.stats.cohens_d`). The permutation test is exact
    when the relabellings (``n_relabellings``) are at most ``n_permutations``; ``p_min`` is the smallest p it
    can give (2 / relabellings for equal groups: 0.0079 with 5 seeds per base)."""
    rows = []
    keys = ["data", "method", "quantity", "framing"]
    for (data, method, quantity, framing), g in gaps.groupby(keys, sort=True):
        bases = sorted(g["base_model"].unique())
        for i, a in enumerate(bases):
            for b in bases[i + 1 :]:
                row = {"data": data, "method": method, "quantity": quantity, "framing": framing}
                row["checkpoint"] = "last"
                x, y = _gaps_at(g, a, "last"), _gaps_at(g, b, "last")
                rows.append(row | _compare_two(a, x, b, y, n_permutations, seed))
    return pd.DataFrame(rows)


def _compare_two(
    a: str, x: np.ndarray, b: str, y: np.ndarray, n_permutations: int, seed: int
) -> dict[str, object]:
    from scipy import stats

    from ...stats import cohens_d, permutation_welch

    row: dict[str, object] = {
        "base_a": a,
        "base_b": b,
        "gap_a": float(np.mean(x)),
        "gap_b": float(np.mean(y)),
        "difference": float(np.mean(x) - np.mean(y)),
        "n_a": len(x),
        "n_b": len(y),
    }
    if len(x) >= 2 and len(y) >= 2:
        ci = stats.ttest_ind(x, y, equal_var=False).confidence_interval(0.95)
        _, p = permutation_welch(x, y, n_permutations, seed)
        n_rel = comb(len(x) + len(y), len(x))
        p_min = (
            (2 if len(x) == len(y) else 1) / n_rel if n_rel <= n_permutations else 1 / (n_permutations + 1)
        )
        row.update(
            ci_low=float(ci.low),
            ci_high=float(ci.high),
            p_perm=p,
            n_relabellings=n_rel,
            p_min=p_min,
            d=cohens_d(x, y),
        )
    return row


def _gaps_at(g: pd.DataFrame, base: str, when: str) -> np.ndarray:
    """The gaps of ``base``'s cells at their first or last checkpoint."""
    sub = g[g["base_model"] == base]
    step = sub.groupby("cell")["step"].transform("min" if when == "first" else "max")
    return sub.loc[sub["step"] == step, "gap"].to_numpy(float)


def word_movers(trajectories: pd.DataFrame, top: int = 10) -> pd.DataFrame:
    """The words whose rank rose or fell most between the first and the last checkpoint (paper Fig. 5).

    Per cell: each word's rank averaged over prompts at the first and last scored step (the first checkpoint
    after step 0 and the last); ``change = rank_last - rank_first`` (negative: the word rose, i.e. gained
    reward relative to the others); cells with a single scored checkpoint have no change and are left out. Averaged over seeds
    per base model, data and quantity; the ``top`` risers and fallers of each are returned with ``direction``.
    """
    from ...stats import rank_scores

    ranked = rank_scores(trajectories[list(SCORE_COLUMNS)])
    meta = trajectories[["model", *META]].drop_duplicates("model")
    ranked = ranked.drop_duplicates(["model", "prompt_id", "word"]).merge(meta, on="model")
    first = ranked.groupby("cell")["step"].transform("min")
    last = ranked.groupby("cell")["step"].transform("max")
    ranked = ranked[((ranked["step"] == first) | (ranked["step"] == last)) & (first < last)].copy()
    if ranked.empty:  # no cell has two scored checkpoints
        cols = ["base_model", "data", "quantity", "word", "rank_first", "rank_last", "change", "change_sd"]
        return pd.DataFrame(columns=[*cols, "n_seeds", "category", "direction"])
    first = first[ranked.index]
    ranked["when"] = np.where(ranked["step"] == first, "first", "last")
    per = (
        ranked.groupby(["base_model", "data", "quantity", "seed", "word", "when"])["rank"]
        .mean()
        .unstack("when")
    )
    per["change"] = per["last"] - per["first"]
    per = per.reset_index()
    agg = (
        per.groupby(["base_model", "data", "quantity", "word"])
        .agg(
            rank_first=("first", "mean"),
            rank_last=("last", "mean"),
            change=("change", "mean"),
            change_sd=("change", "std"),
            n_seeds=("change", "size"),
        )
        .reset_index()
    )
    cats = trajectories.groupby("word")["category"].agg(lambda s: "/".join(sorted(set(s))))
    agg["category"] = agg["word"].map(cats)
    out = []
    for _, g in agg.groupby(["base_model", "data", "quantity"], sort=True):
        g = g.sort_values("change")
        out.append(g.head(top).assign(direction="rose"))
        out.append(g.tail(top).iloc[::-1].assign(direction="fell"))
    return pd.concat(out, ignore_index=True)


def mover_balance(movers: pd.DataFrame) -> pd.DataFrame:
    """How many of the top risers and fallers are Agency or Communion words, per base model and data."""
    return (
        movers.groupby(["base_model", "data", "quantity", "direction", "category"])
        .size()
        .rename("n_words")
        .reset_index()
    )


def timing_summary(timings: Mapping[str, float], models: Sequence[str]) -> pd.DataFrame:
    """Seconds per kind of work (data, loading, features, training, trajectories) and base model, with the
    number of timed items (cells for training and trajectories)."""
    labels = {
        "load": "load base model",
        "word": "word features",
        "pair": "pair features",
        "pair-activations": "pair features and activations below the top blocks (one pass)",
        "word-activations": "word activations below the top blocks",
    }
    rows = []
    for key, sec in timings.items():
        kind, _, rest = key.partition(" ")
        rest = rest.removeprefix("features ")
        model = next(
            (m for m in sorted(models, key=len, reverse=True) if rest == m or rest.startswith(m + "-")), ""
        )
        rows.append({"work": labels.get(kind, kind), "model": model or "(all)", "seconds": sec, "n": 1})
    df = (
        pd.DataFrame(rows)
        .groupby(["work", "model"], sort=False)
        .agg(seconds=("seconds", "sum"), n=("n", "sum"))
    )
    return df.reset_index()


def null_gaps(
    cell: Cell,
    family: str,
    word_features: Any,
    scale: np.ndarray | None,
    labels: pd.DataFrame,
    n_heads: int = NULL_HEADS,
) -> pd.DataFrame | None:
    """The Agency - Communion gap of ``n_heads`` random heads of one cell: heads drawn like its initial head
    (isotropic Gaussian in the space it was trained in, i.e. divided by the cell's ``scale`` when its features
    were standardized) and read through the same word features (``word_features.rewards``). Returns
    :func:`category_gaps` rows with ``head`` (1..n) in place of ``step``, or None when the corpus has no
    Agency / Communion pair. The seed is a stable function of the cell's name."""
    from ...stats import stable_seed

    hidden = next(iter(word_features.features.values())).shape[1]
    rng = np.random.default_rng(stable_seed(cell.seed, "null", cell.name))
    heads = rng.normal(size=(n_heads, hidden))
    if scale is not None:
        heads = heads / np.asarray(scale, dtype=np.float64)
    rewards = word_features.rewards(heads)
    traj = trajectory_table(cell, family, list(range(1, n_heads + 1)), rewards, word_features.words, labels)
    try:
        gaps = category_gaps(category_trajectories(traj))
    except ValueError:
        return None
    return gaps.rename(columns={"step": "head"})


#: Random means drawn per group for the null at the estimate's unit (:func:`null_means`).
NULL_MEANS = 4000


def null_means(heads: np.ndarray, n_draws: int = NULL_MEANS, seed: int = 0) -> np.ndarray:
    """Means of random-head gaps at the estimate's unit: ``heads`` is ``(n_cells, n_heads)`` (the random
    heads of each seed's cell); each draw takes one random head of every cell and averages them, so a random
    mean averages as many heads as the trained mean averages seeds."""
    m = np.asarray(heads, dtype=np.float64)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, m.shape[1], size=(n_draws, m.shape[0]))
    return m[np.arange(m.shape[0]), pick].mean(axis=1)


def final_gaps(
    gaps: pd.DataFrame, null: pd.DataFrame | None = None, confidence: float = 0.95
) -> pd.DataFrame:
    """The gap at each cell's last checkpoint, summarised across seeds per base model, data, method,
    quantity and framing: mean, sd and t interval (:func:`rmvalues.stats.mean_ci`), with the random-head null
    of the same cells at the estimate's unit (``null``: :func:`null_gaps` rows; :func:`null_means`): means of
    ``null_unit`` random heads (one per seed's cell, as many as the trained mean averages), their mean, 2.5
    and 97.5 percentiles and ``null_share_beyond``, the share of random means at least as far from 0 as the
    trained mean gap. Depth cells have no random-head null (NaN)."""
    from ...stats import mean_ci, stable_seed

    keys = ["base_model", "family", "data", "method", "quantity", "framing"]
    last = gaps[gaps["step"] == gaps.groupby("cell")["step"].transform("max")]
    rows = []
    for key, g in last.groupby(keys, sort=True, observed=True):
        mean, sd, lo, hi, n = mean_ci(g["gap"], confidence)
        row = {**dict(zip(keys, key, strict=True)), "gap": mean, "sd": sd, "ci_low": lo, "ci_high": hi}
        row["n_seeds"] = n
        if null is not None and not null.empty:
            sel = null[(null["cell"].isin(g["cell"])) & (null["framing"] == key[-1])]
            if len(sel) and sel["cell"].nunique() == g["cell"].nunique():
                wide = sel.pivot_table(index="cell", columns="head", values="gap").dropna(axis=1)
                means = null_means(wide.to_numpy(), seed=stable_seed(0, "null-means", *map(str, key)))
                row.update(
                    null_unit=int(wide.shape[0]),
                    null_mean=float(means.mean()),
                    null_low=float(np.percentile(means, 2.5)),
                    null_high=float(np.percentile(means, 97.5)),
                    null_share_beyond=float(np.mean(np.abs(means) >= abs(mean))),
                    n_null=len(means),
                )
        rows.append(row)
    return pd.DataFrame(rows)
