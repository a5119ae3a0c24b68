"""Small synthetic score, median-rank and word-rank tables for the statistics tests (tests/test_stats.py and
tests/test_stage_statistics.py), with planted effects of known size."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rmvalues.data.prompts import framing_of
from rmvalues.data.scores import conform

__all__ = ["THREE_WAY", "THREE_WAY_R", "medians_table", "scores_table", "synthetic_scores", "valence_driven"]

#: The family x category x framing term of the mixed model on these tables, in the paper's coding (positive
#: prompts the reference framing, as its script sets them).
THREE_WAY = "family[T.llama]:category[T.Communion]:framing[T.negative]"
#: The same term in R's default alphabetical coding (negative prompts the reference): the opposite sign.
THREE_WAY_R = "family[T.llama]:category[T.Communion]:framing[T.positive]"


def scores_table(rows: list[tuple]) -> pd.DataFrame:
    """Long scores table from (model, family, prompt_id, word, category, subcategory, score) tuples."""
    df = pd.DataFrame(
        rows, columns=["model", "family", "prompt_id", "word", "category", "subcategory", "score"]
    )
    df["revision"] = None
    df["source"] = "live"
    df["framing"] = df["prompt_id"].map(framing_of)
    df["corpus"] = "toy"
    df["n_tokens"] = pd.NA
    return conform(df)


def synthetic_scores(
    n_rm: int = 6,
    n_words: int = 40,
    prompts: tuple[str, ...] = ("best_ever_one", "best_world_one", "worst_ever_one", "worst_world_one"),
    planted: float = 0.0,
    seed: int = 0,
) -> pd.DataFrame:
    """Scores of ``n_rm`` RMs (half gemma, half llama) on ``n_words`` words (half A, half B), random normal.

    ``planted``: llama RMs give category-B words ``planted`` less reward under positive prompts and
    ``planted`` more under negative ones (a family x category x framing effect).
    """
    rng = np.random.default_rng(seed)
    word_effect = rng.normal(0, 1, n_words)
    rows = []
    for m in range(n_rm):
        fam = "gemma" if m < n_rm // 2 else "llama"
        for p in prompts:
            sign = 1 if framing_of(p) == "positive" else -1
            for w in range(n_words):
                cat = "A" if w < n_words // 2 else "B"
                s = sign * word_effect[w] + rng.normal(0, 1)
                if fam == "llama" and cat == "B":
                    s -= sign * planted
                rows.append((f"rm{m}", fam, p, f"w{w:02d}", cat, None, s))
    return scores_table(rows)


def medians_table(
    n_rm: int = 10,
    n_prompts: int = 27,
    effect: float = 0.0,
    seed: int = 0,
    slope_sd: float = 0.0,
    categories: tuple[str, ...] = ("Agency", "Communion"),
) -> pd.DataFrame:
    """Median-rank table like the paper's (RM x prompt x category points) with a planted 3-way effect:
    ``effect`` ranks added to llama RMs' last category under negative prompts; ``slope_sd``: each RM's own
    shift of that cell (a random category x framing slope per RM)."""
    rng = np.random.default_rng(seed)
    rows = []
    for m in range(n_rm):
        fam = "gemma" if m < 4 else "llama"
        u = rng.normal(0, 5)
        slope = rng.normal(0, slope_sd) if slope_sd > 0 else 0.0
        for framing in ("positive", "negative"):
            for p in range(n_prompts):
                for cat in categories:
                    y = 130 + u + rng.normal(0, 10)
                    if fam == "llama" and cat == categories[-1] and framing == "negative":
                        y += effect
                    if cat == categories[-1] and framing == "negative":
                        y += slope
                    rows.append(("toy", "pooled", f"rm{m}", fam, f"{framing}_{p}", framing, cat, None, y))
    df = pd.DataFrame(
        rows,
        columns=[
            "corpus",
            "analysis",
            "rm",
            "family",
            "prompt_id",
            "framing",
            "category",
            "subcategory",
            "median_rank",
        ],
    )
    df["model"] = df["rm"]
    return df


def valence_driven(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Word-level ranks driven by family x framing x valence only; category B words have lower valence.
    Returns ``(ranked, covariates)``."""
    rng = np.random.default_rng(seed)
    words = [f"w{i:02d}" for i in range(60)]
    cat = np.array(["A"] * 30 + ["B"] * 30)
    valence = np.where(cat == "A", rng.normal(6, 1, 60), rng.normal(4, 1, 60))
    cov = pd.DataFrame(
        {"corpus": "toy", "word": words, "zipf_frequency": rng.normal(4, 1, 60), "valence": valence}
    )
    vz = (valence - valence.mean()) / valence.std(ddof=1)
    rows = []
    for m in range(6):
        fam = "gemma" if m < 3 else "llama"
        u = rng.normal(0, 3)
        for p in ("best_ever_one", "best_world_one", "worst_ever_one", "worst_world_one"):
            sign = 1 if framing_of(p) == "positive" else -1
            for i, w in enumerate(words):
                y = 100 + u + rng.normal(0, 3) + (10 * sign * vz[i] if fam == "llama" else 0)
                rows.append(("toy", "live", f"rm{m}", f"rm{m}", fam, p, framing_of(p), w, cat[i], None, y))
    ranked = pd.DataFrame(
        rows,
        columns=[
            "corpus",
            "source",
            "model",
            "rm",
            "family",
            "prompt_id",
            "framing",
            "word",
            "category",
            "subcategory",
            "rank",
        ],
    )
    return ranked, cov
