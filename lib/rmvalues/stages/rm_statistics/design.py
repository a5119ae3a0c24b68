"""What the RM-level design can show, and over what it generalises: power, and crossed inference.

**Power** (:func:`power_tables`). For each RM-level verdict (``rm_level_interaction.csv``), the chance that a
study like this one (the observed RMs per family, or ``sizes`` per family) detects the observed family
difference of mean ``D``, or half of it, by simulation (:func:`rmvalues.stats.simulate_power`): per-RM values
normal with each family's observed SD (the SDs differ up to threefold, so they are not pooled), tested at the
verdict's level (alpha divided by the number of contrasts that share a corpus, as the Bonferroni correction
of the verdict), by the chapter's exact split test and by Welch's t. The central verdict (the first pooled
statistic of the first corpus) gets every size; the others the observed size. ``power_needed.csv``: the RMs
per family a replication needs for 80% power (Welch's t, the non-central t approximation).

**Crossed inference** (:func:`crossed_tables`). The RM-level test holds the words fixed; the word-label null
holds the RMs fixed. The crossed bootstrap resamples RMs within family and words within category together
(:func:`rmvalues.stats.crossed_bootstrap_many`, words keep their ranks as scored), next to the RM-only and
word-only intervals from the same machinery, for every pooled verdict.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ...stats import POWER_COLUMNS, crossed_bootstrap_many, power_table, rank_array, rms_needed, stable_seed

__all__ = ["CROSSED_COLUMNS", "NEEDED_COLUMNS", "POWER_TARGET", "crossed_tables", "power_tables"]

#: The power a replication should have.
POWER_TARGET = 0.8
#: Effect sizes simulated, as fractions of the observed difference.
FRACTIONS = (1.0, 0.5)
KEYS = ["corpus", "analysis", "subcategory", "statistic"]
#: Columns of ``power.csv``.
TABLE_COLUMNS = [*KEYS, "alpha", "sd_a", "sd_b", *POWER_COLUMNS]
#: Columns of ``power_needed.csv``.
NEEDED_COLUMNS = [
    *KEYS,
    "effect_fraction",
    "effect",
    "sd_a",
    "sd_b",
    "alpha",
    "target",
    "n_per_family",
    "max_n",
]
#: Columns of ``crossed.csv``.
CROSSED_COLUMNS = [*KEYS, "resample", "estimate", "ci_low", "ci_high", "n_bootstrap", "n_rms", "n_words"]
#: Names of the intervals of :func:`crossed_tables` (what each resamples).
RESAMPLES = {"RMs and words (crossed)": ("rms", "words"), "RMs only": ("rms",), "words only": ("words",)}
MAX_N = 200


def _family_values(
    contrasts: pd.DataFrame, key: tuple, families: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    sub = contrasts
    for k, v in zip(KEYS, key, strict=True):
        sub = sub[sub[k].isna()] if pd.isna(v) else sub[sub[k] == v]
    return tuple(sub.loc[sub["family"] == f, "D"].to_numpy(float) for f in families)  # type: ignore[return-value]


def power_tables(
    rm_level: pd.DataFrame,
    contrasts: pd.DataFrame,
    families: Sequence[str],
    sizes: Sequence[int],
    n_sims: int,
    seed: int,
    alpha: float,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(power, needed)``: :data:`TABLE_COLUMNS` and :data:`NEEDED_COLUMNS` (see the module docstring)."""
    rows, needed = [], []
    pooled = rm_level["analysis"] == "pooled"
    ordered = pd.concat([rm_level[pooled], rm_level[~pooled]])
    for i, r in enumerate(ordered.itertuples()):
        key = tuple(getattr(r, k) for k in KEYS)
        a, b = _family_values(contrasts, key, families)
        if a.size < 2 or b.size < 2 or not np.isfinite(r.difference):
            continue
        sd_a, sd_b = float(a.std(ddof=1)), float(b.std(ddof=1))
        level = alpha / int(r.n_tests)
        grid = [(a.size, b.size)] + ([(n, n) for n in sizes] if i == 0 else [])
        table = power_table(float(r.difference), sd_a, sd_b, grid, FRACTIONS, ("exact", "welch"), level, n_sims,
                            stable_seed(seed, *key))  # fmt: skip
        rows.append(table.assign(**dict(zip(KEYS, key, strict=True)), alpha=level, sd_a=sd_a, sd_b=sd_b))
        for frac in FRACTIONS:
            n = rms_needed(float(r.difference) * frac, sd_a, sd_b, POWER_TARGET, level, max_n=MAX_N)
            needed.append({**dict(zip(KEYS, key, strict=True)), "effect_fraction": frac,
                           "effect": float(r.difference) * frac, "sd_a": sd_a, "sd_b": sd_b, "alpha": level,
                           "target": POWER_TARGET, "n_per_family": n, "max_n": MAX_N})  # fmt: skip
    power = pd.concat(rows, ignore_index=True)[TABLE_COLUMNS] if rows else pd.DataFrame(columns=TABLE_COLUMNS)
    return power, pd.DataFrame(needed, columns=NEEDED_COLUMNS)


def crossed_tables(
    ranked: pd.DataFrame, families: Sequence[str], n_bootstrap: int, seed: int
) -> pd.DataFrame:
    """The family difference of mean ``D(k)`` of every pooled analysis with the crossed, RM-only and
    word-only percentile intervals: :data:`CROSSED_COLUMNS`."""
    rows = []
    df = ranked[ranked["family"].isin(list(families))]
    for corpus, cdf in df.groupby("corpus", sort=True):
        pooled = cdf.drop_duplicates(["rm", "prompt_id", "word", "category"])
        if pooled["category"].nunique() < 2 or set(pooled["framing"]) != {"positive", "negative"}:
            continue
        arr = rank_array(pooled)
        cats = sorted(set(arr.word_category))
        reported = cats[1:] if len(cats) == 2 else cats
        for name, resample in RESAMPLES.items():
            out = crossed_bootstrap_many(
                arr.ranks, arr.word_category, arr.rm_family, arr.prompt_framing, reported, families,
                n_bootstrap, stable_seed(seed, corpus, name), resample, arr.word_index,
            )  # fmt: skip
            for cat, res in out.items():
                rows.append({"corpus": corpus, "analysis": "pooled", "subcategory": None, "statistic": f"D({cat})",
                             "resample": name, "estimate": res.estimate, "ci_low": res.ci_low,
                             "ci_high": res.ci_high, "n_bootstrap": n_bootstrap, "n_rms": len(arr.rms),
                             "n_words": len(arr.words)})  # fmt: skip
    return pd.DataFrame(rows, columns=CROSSED_COLUMNS)
