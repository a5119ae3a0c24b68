"""Null baselines: how large is a family x category gap against chance?

The category labels are permuted among a corpus' words (ranks untouched) and the family gaps recomputed
(:func:`null_baseline`); for corpora with subcategories a second null permutes only within subcategory.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .ranks import FRAMINGS, RANK_KEY
from .twogroup import check_families


def family_gaps(
    R: np.ndarray, word_idx: np.ndarray, codes: np.ndarray, n_cat: int, masks: np.ndarray
) -> np.ndarray:
    """Delta[k, f] = mean median rank of category k under framing f, family b minus family a.

    ``R``: ranks (RM x prompt rows, words); ``masks``: (2 families, n framings, rows) booleans.
    """
    med = np.empty((n_cat, R.shape[0]))
    for k in range(n_cat):
        block = R[:, word_idx[codes == k]]
        n = block.shape[1]
        part = np.partition(block, n // 2, axis=1)  # the median, without np.median's overhead
        med[k] = part[:, n // 2] if n % 2 else (part[:, n // 2] + part[:, : n // 2].max(axis=1)) / 2
    # mean over rows of each (family, framing): (n_cat, 2, n_fr)
    sums = np.einsum("kr,gfr->kgf", med, masks)
    means = sums / masks.sum(axis=2)[None]
    return means[:, 1, :] - means[:, 0, :]


def null_baseline(
    ranked: pd.DataFrame,
    families: Sequence[str] = ("gemma", "llama"),
    n_null: int = 1000,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """How large is the family x category gap against chance?

    For each corpus (categories pooled over subcategories), with Delta(k, f) the family difference
    (b - a) of the mean median rank of category k under framing f (the panel ``difference``):

    * ``gap`` (per category and framing): Delta(k, f) minus its mean over categories: how much more family
      b disfavours category k than it disfavours the corpus' categories on average. For two categories
      the gap of the second is half the difference-in-differences Delta(2, f) - Delta(1, f).
    * ``range`` (per framing): max_k Delta(k, f) - min_k Delta(k, f) (two categories: |DiD|).
    * ``framing_contrast`` (per category): gap(k, positive) - gap(k, negative), the analogue of the
      family x category x framing interaction.

    The null distribution comes from ``n_null`` random permutations of the category labels among the
    corpus' (word, label) entries, ranks unchanged (category sizes kept; a word with two labels can end
    up with any two). ``null = "all words"`` permutes among all entries; for corpora with subcategories
    (MFD 2.0: virtue/vice) ``null = "within subcategory"`` also permutes only among entries of the same
    subcategory, so every random category keeps the real one's virtue/vice mix (the pooled gap of a
    foundation with many vice words partly reflects how the families treat vice words in general).

    Returns ``(summary, draws)``: per null and statistic the observed value, the null mean, SD and
    2.5/97.5% quantiles, ``z`` and a permutation p (two-sided for gap and framing_contrast, one-sided
    upper for range; (1 + #as extreme) / (n_null + 1)); and the null draws (long).
    """
    fam_a, fam_b = check_families(ranked, families)
    df = ranked[ranked["family"].isin([fam_a, fam_b])]
    rng = np.random.default_rng(seed)
    summaries, nulls = [], []
    for corpus, grp in df.groupby("corpus", sort=True):
        design = _CorpusDesign.of(corpus, grp, fam_a, fam_b)
        labels = grp.drop_duplicates(["word", "category"])
        stats_obs = design.statistics(
            design.word_index(labels), labels["category"].map(design.cat_code).to_numpy(int)
        )
        variants = [("all words", labels, None)]
        if grp["subcategory"].notna().any():
            strat = grp.drop_duplicates(["word", "category", "subcategory"])
            variants.append(("within subcategory", strat, strat["subcategory"].fillna("").to_numpy()))
        for null_name, lab, strata in variants:
            codes = lab["category"].map(design.cat_code).to_numpy(int)
            words = design.word_index(lab)
            groups = [np.flatnonzero(strata == v) for v in np.unique(strata)] if strata is not None else None
            stats_null = [design.statistics(words, permute_within(codes, groups, rng)) for _ in range(n_null)]
            for name, obs in stats_obs.items():
                null = np.array([s_[name] for s_ in stats_null])
                key = {
                    "corpus": corpus,
                    "null": null_name,
                    "statistic": name[0],
                    "framing": name[1],
                    "category": name[2],
                }
                summaries.append({**key, **_against_null(name[0], obs, null)})
                nulls.append(pd.DataFrame({**key, "draw": np.arange(n_null), "value": null}))
    return pd.DataFrame(summaries), pd.concat(nulls, ignore_index=True)


class _CorpusDesign:
    """One corpus' ranks as a matrix (rows: RM x prompt, columns: words) with the family x framing masks."""

    def __init__(
        self, R: np.ndarray, masks: np.ndarray, framings: list[str], categories: list[str], words: list[str]
    ):
        self.R, self.masks, self.framings, self.categories = R, masks, framings, categories
        self.cat_code = {c: i for i, c in enumerate(categories)}
        self.word_pos = {w: i for i, w in enumerate(words)}

    @classmethod
    def of(cls, corpus: str, grp: pd.DataFrame, fam_a: str, fam_b: str) -> _CorpusDesign:
        wide = grp.drop_duplicates([*RANK_KEY, "word"]).pivot(
            index=["rm", "prompt_id"], columns="word", values="rank"
        )
        if wide.isna().any().any():
            raise ValueError(
                f"{corpus}: not every RM scored every word under every prompt; cannot permute labels"
            )
        rows = wide.index.to_frame(index=False).merge(
            grp.drop_duplicates(["rm", "prompt_id"])[["rm", "prompt_id", "family", "framing"]],
            on=["rm", "prompt_id"],
            how="left",
        )
        framings = [f for f in FRAMINGS if f in set(rows["framing"])]
        masks = np.stack(
            [
                np.stack([((rows["family"] == fam) & (rows["framing"] == fr)).to_numpy() for fr in framings])
                for fam in (fam_a, fam_b)
            ]
        ).astype(float)
        return cls(
            wide.to_numpy(float), masks, framings, sorted(grp["category"].unique()), list(wide.columns)
        )

    def word_index(self, labels: pd.DataFrame) -> np.ndarray:
        """Column of each labelled entry's word in the rank matrix."""
        return labels["word"].map(self.word_pos).to_numpy(int)

    def statistics(self, word_idx: np.ndarray, codes: np.ndarray) -> dict[tuple, float]:
        """The gap statistics of one labelling (``codes[i]`` = category index of entry ``word_idx[i]``)."""
        gaps = family_gaps(self.R, word_idx, codes, len(self.categories), self.masks)
        return gap_statistics(gaps, self.categories, self.framings)


def _against_null(statistic: str, obs: float, null: np.ndarray) -> dict[str, float]:
    """Observed value against its null draws: mean, SD, 95% range, z and the permutation p (upper tail
    for ``range``, two-sided around the null mean otherwise)."""
    if statistic == "range":
        extreme = np.sum(null >= obs)
    else:
        extreme = np.sum(np.abs(null - null.mean()) >= abs(obs - null.mean()))
    sd = null.std(ddof=1)
    return {
        "observed": obs,
        "null_mean": null.mean(),
        "null_sd": sd,
        "null_q025": np.quantile(null, 0.025),
        "null_q975": np.quantile(null, 0.975),
        "z": (obs - null.mean()) / sd if sd > 0 else np.nan,
        "p_perm": (1 + extreme) / (len(null) + 1),
        "n_null": len(null),
    }


def permute_within(
    codes: np.ndarray, groups: list[np.ndarray] | None, rng: np.random.Generator
) -> np.ndarray:
    """A random permutation of ``codes``, within each index group when ``groups`` is given."""
    if groups is None:
        return rng.permutation(codes)
    out = codes.copy()
    for g in groups:
        out[g] = rng.permutation(codes[g])
    return out


def gap_statistics(delta: np.ndarray, categories: list[str], framings: list[str]) -> dict[tuple, float]:
    out: dict[tuple, float] = {}
    gap = delta - delta.mean(axis=0, keepdims=True)
    for j, fr in enumerate(framings):
        for k, cat in enumerate(categories):
            out[("gap", fr, cat)] = float(gap[k, j])
        out[("range", fr, "(all)")] = float(delta[:, j].max() - delta[:, j].min())
    if framings == ["positive", "negative"]:
        for k, cat in enumerate(categories):
            out[("framing_contrast", "positive-negative", cat)] = float(gap[k, 0] - gap[k, 1])
    return out
