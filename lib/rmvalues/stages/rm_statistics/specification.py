"""The specification curve of every RM-level verdict (see :mod:`rmvalues.stats.specification`).

The chapter's verdicts (the family difference of ``D(Communion)`` for the Big Two; of each foundation's
``D`` for MFD 2.0, pooled and split into virtue and vice words) are recomputed under every combination of
four named choices, declared as data (:data:`WORD_SETS`, :func:`prompt_sets`,
:data:`rmvalues.stats.specification.SUMMARIES`, :data:`rmvalues.stats.specification.TESTS`):

* **summary** of a (RM, prompt, category) cell: median rank (the paper's), mean rank, min-max normalised
  score, z-score, share in the top quartile;
* **word set**: all words; the words that are one token in the RM's tokenizer (:func:`single_token_table`);
  a frequency-matched and a valence-matched subset (:func:`matched_words`: coarsened exact matching of
  the categories on the word's Zipf frequency or Warriner valence; words without a norm are left out);
* **prompt set**: all prompts; each adjective left out in turn; each of the three phrasings alone;
* **test** of the family difference over RMs: exact mean difference, permuted Welch t, exact
  Mann-Whitney, Welch t.

The first choice of each is the chapter's primary specification, whose numbers equal the RM-level table's.
Words are ranked within (RM, prompt) among the words of the word set. For the split analyses the ranking
universe is the word set's virtue and vice words together, as in the chapter's split analysis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ...data.tokenizers import FamilyTokenizer, count_tokens
from ...stats import stable_seed
from ...stats.specification import (
    SUMMARIES,
    SUMMARY_UNITS,
    TESTS,
    CurveRule,
    cell_array,
    cell_standings,
    curve_label,
    rm_statistics,
    standardised,
    two_group_tests,
)

__all__ = [
    "CURVE_COLUMNS",
    "FREQUENCY_BIN",
    "LABEL_COLUMNS",
    "TOKENIZER_COLUMNS",
    "VALENCE_BIN",
    "WORD_SETS",
    "curve_labels",
    "matched_words",
    "prompt_sets",
    "single_token_table",
    "specification_curve",
]

#: Word sets, the primary first.
WORD_SETS: tuple[str, ...] = ("all", "single-token", "frequency-matched", "valence-matched")
#: Coarsened exact matching: bin widths of Zipf frequency and of Warriner valence (1-9 scale).
FREQUENCY_BIN = 0.5
VALENCE_BIN = 0.5
#: Columns of ``specification_curve.csv``.
CURVE_COLUMNS = [
    "corpus",
    "analysis",
    "subcategory",
    "statistic",
    "summary",
    "word_set",
    "prompt_set",
    "test",
    "primary",
    "family_a",
    "family_b",
    "n_rms_a",
    "n_rms_b",
    "n_words",
    "n_prompts",
    "estimate",
    "ci_low",
    "ci_high",
    "p",
    "p_corrected",
    "n_tests",
    "p_min",
    "std_estimate",
    "std_ci_low",
    "std_ci_high",
    "unit",
]
#: Columns of ``specification_labels.csv`` (one row per verdict).
LABEL_COLUMNS = [
    "corpus",
    "analysis",
    "subcategory",
    "statistic",
    "primary_estimate",
    "primary_p",
    "label",
    "share_same_sign",
    "share_significant",
    "n_specifications",
    "n_missing",
    "rule",
]


#: Columns of ``tokenizers.csv``: per RM, the tokenizer its single-token word set was counted in.
TOKENIZER_COLUMNS = [
    "rm",
    "family",
    "source",
    "corpus",
    "tokenizer",
    "exact",
    "note",
    "n_words",
    "n_single_token",
]


def single_token_table(
    ranked: pd.DataFrame, tokenization: pd.DataFrame, tokenizers: Mapping[str, FamilyTokenizer]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each RM's token count of each corpus word in its family's tokenizer (:mod:`rmvalues.data.tokenizers`):
    ``(rm, corpus, word, n_tokens)`` rows, and :data:`TOKENIZER_COLUMNS` (one row per RM and corpus, with
    why a count is missing or only a proxy). ``tokenization``: the corpora run's ``tokenization.parquet``
    (``corpus, word, model, n_tokens_bare``), used for tokenizers declared by a registered model."""
    words = ranked[["corpus", "word"]].drop_duplicates()
    rms = ranked[["rm", "family", "source"]].drop_duplicates("rm")
    counts, summary = [], []
    for rm, family, source in rms.itertuples(index=False):
        tok = tokenizers.get(family)
        for corpus, cw in words.groupby("corpus", sort=True):
            note, got = "", None
            if tok is None:
                note = f"no tokenizer declared for family {family!r} (config/published_rms.yaml, tokenizers:)"
            elif tok.dataset is not None:
                got = cw.assign(n_tokens=count_tokens(tok.dataset, list(cw["word"])))
            else:
                have = tokenization[(tokenization["model"] == tok.model) & (tokenization["corpus"] == corpus)]
                if have.empty:
                    note = (
                        f"the corpora run did not tokenize {corpus} with {tok.model} (its `models` parameter)"
                    )
                else:
                    got = cw.merge(
                        have[["word", "n_tokens_bare"]].rename(columns={"n_tokens_bare": "n_tokens"}),
                        on="word",
                    )
            proxy = tok is not None and source == "published" and bool(tok.proxy_for_published)
            if got is not None:
                counts.append(got.assign(rm=rm))
                note = tok.proxy_for_published if proxy else note
            summary.append(
                {"rm": rm, "family": family, "source": source, "corpus": corpus,
                 "tokenizer": tok.name if tok is not None else "", "exact": got is not None and not proxy,
                 "note": note, "n_words": len(cw),
                 "n_single_token": int((got["n_tokens"] == 1).sum()) if got is not None else 0}
            )  # fmt: skip
    cols = ["rm", "corpus", "word", "n_tokens"]
    table = pd.concat(counts, ignore_index=True)[cols] if counts else pd.DataFrame(columns=cols)
    return table, pd.DataFrame(summary, columns=TOKENIZER_COLUMNS)


def prompt_sets(prompts: pd.DataFrame) -> dict[str, list[str]]:
    """Named prompt sets from the prompt table (``prompt_id, adjective, style``) of the prompts analysed:
    all; without each adjective; each phrasing (style) alone. Sets that leave a framing without prompts are
    dropped."""
    ids = list(prompts["prompt_id"])
    out = {f"all {len(ids)}": ids}
    for adj in prompts["adjective"].drop_duplicates():
        out[f"without '{adj}'"] = list(prompts.loc[prompts["adjective"] != adj, "prompt_id"])
    for style in prompts["style"].drop_duplicates():
        out[f"phrasing '{style}' only"] = list(prompts.loc[prompts["style"] == style, "prompt_id"])
    framing = prompts.set_index("prompt_id")["framing"]
    return {k: v for k, v in out.items() if set(framing.loc[v]) == {"positive", "negative"}}


def matched_words(
    labels: pd.DataFrame, covariate: str, width: float, seed: Sequence[int] | int
) -> pd.DataFrame:
    """Coarsened exact matching of the categories of ``labels`` (``word, category`` and ``covariate``): per
    bin of ``width``, every category keeps as many of its words (drawn without replacement, seeded) as the
    smallest category has there. Words without the covariate are left out. Returns the kept rows."""
    df = labels.dropna(subset=[covariate]).copy()
    if df.empty or df["category"].nunique() < 2:
        return df.iloc[0:0]
    df["bin"] = np.floor(df[covariate].to_numpy(float) / width).astype(int)
    counts = df.groupby(["bin", "category"]).size().unstack(fill_value=0)
    counts = counts.reindex(columns=sorted(df["category"].unique()), fill_value=0)
    keep_n = counts.min(axis=1)
    rng = np.random.default_rng(seed)
    kept = []
    for (b, _cat), grp in df.sort_values("word").groupby(["bin", "category"], sort=True):
        n = int(keep_n.get(b, 0))
        if n:
            kept.append(grp.iloc[np.sort(rng.choice(len(grp), n, replace=False))])
    return pd.concat(kept).drop(columns="bin") if kept else df.iloc[0:0].drop(columns="bin")


def _word_filter(
    scores: pd.DataFrame,
    word_set: str,
    corpus_words: pd.DataFrame,
    single_token: pd.DataFrame,
    by: Sequence[str],
    seed: int,
) -> pd.DataFrame:
    """The rows of ``scores`` (one corpus, one analysis type) in ``word_set``; matching is done per group of
    ``by`` (the analysis' subcategory for split analyses)."""
    if word_set == "all":
        return scores
    if word_set == "single-token":
        one = single_token.loc[single_token["n_tokens"] == 1, ["rm", "word"]]
        return scores.merge(one, on=["rm", "word"], how="inner")
    covariate, width = {
        "frequency-matched": ("zipf_frequency", FREQUENCY_BIN),
        "valence-matched": ("valence", VALENCE_BIN),
    }[word_set]
    keys = ["word", "category", *by]
    labels = scores[keys].drop_duplicates().merge(corpus_words[["word", covariate]], on="word", how="left")
    if by:
        groups = [(tuple(k), g) for k, g in labels.groupby(list(by), sort=True, dropna=False)]
    else:
        groups = [((), labels)]
    parts = [matched_words(g, covariate, width, stable_seed(seed, word_set, *k)) for k, g in groups]
    kept = pd.concat(parts)[keys] if parts else labels.iloc[0:0][keys]
    return scores.merge(kept, on=keys, how="inner")


def _verdict_rows(
    cells: pd.DataFrame,
    key: tuple[str, str, Any],
    choices: Mapping[str, Any],
    prompt_groups: Mapping[str, list[str]],
    families: Sequence[str],
    alpha: float,
) -> list[dict[str, Any]]:
    """The curve's rows of one analysis (``key`` = corpus, analysis, subcategory) and word set."""
    arr = cell_array(cells, SUMMARIES)
    if len(arr.categories) < 2:
        return []
    fam_a, fam_b = families
    in_a, in_b = arr.family == fam_a, arr.family == fam_b
    reported = arr.categories[1:] if len(arr.categories) == 2 else arr.categories
    n_words = int(cells.groupby("rm")["n_words"].sum().max() / max(len(arr.prompts), 1))
    rows = []
    for summary in SUMMARIES:
        for pset, ids in prompt_groups.items():
            mask = np.isin(np.asarray(arr.prompts, object), ids)
            d = rm_statistics(arr.values[summary], arr.framing, mask)
            for cat in reported:
                j = arr.categories.index(cat)
                a, b = d[in_a, j], d[in_b, j]
                a, b = a[np.isfinite(a)], b[np.isfinite(b)]
                for t in two_group_tests(a, b, TESTS, alpha):
                    scale = standardised(1.0, a, b)
                    rows.append(
                        {
                            "corpus": key[0],
                            "analysis": key[1],
                            "subcategory": key[2],
                            "statistic": f"D({cat})",
                            "summary": summary,
                            **choices,
                            "prompt_set": pset,
                            "test": t["test"],
                            "family_a": fam_a,
                            "family_b": fam_b,
                            "n_rms_a": a.size,
                            "n_rms_b": b.size,
                            "n_words": n_words,
                            "n_prompts": int(mask.sum()),
                            "estimate": t["estimate"],
                            "ci_low": t["ci_low"],
                            "ci_high": t["ci_high"],
                            "p": t["p"],
                            "p_min": t["p_min"],
                            "std_estimate": t["estimate"] * scale,
                            "std_ci_low": t["ci_low"] * scale,
                            "std_ci_high": t["ci_high"] * scale,
                            "unit": SUMMARY_UNITS[summary],
                        }
                    )
    return rows


def specification_curve(
    ranked: pd.DataFrame,
    corpus_words: pd.DataFrame,
    single_token: pd.DataFrame,
    prompts: pd.DataFrame,
    families: Sequence[str],
    seed: int = 0,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Every specification of every verdict: :data:`CURVE_COLUMNS`.

    ``ranked``: the chapter's scores with ``rm`` (:func:`rmvalues.stats.rank_scores`); ``corpus_words``:
    ``corpus, word, zipf_frequency, valence``; ``single_token``: ``rm, corpus, word, n_tokens`` in each RM's
    tokenizer; ``prompts``: the prompt table of the prompts analysed (:func:`prompt_sets`).
    ``p_corrected``: Bonferroni over the statistics of one (corpus, analysis, subcategory) and specification,
    as the chapter's RM-level table; ``primary``: the first choice of every kind.
    """
    groups = prompt_sets(prompts[prompts["prompt_id"].isin(ranked["prompt_id"].unique())])
    df = ranked[ranked["family"].isin(list(families))]
    rows: list[dict[str, Any]] = []
    for corpus, cdf in df.groupby("corpus", sort=True):
        words = corpus_words[corpus_words["corpus"] == corpus]
        tokens = single_token[single_token["corpus"] == corpus]
        for word_set in WORD_SETS:
            pooled = _word_filter(cdf, word_set, words, tokens, (), seed)
            cells = cell_standings(pooled, ("category",))
            rows += _verdict_rows(
                cells, (corpus, "pooled", None), {"word_set": word_set}, groups, families, alpha
            )
            if cdf["subcategory"].notna().any():
                split = _word_filter(
                    cdf[cdf["subcategory"].notna()], word_set, words, tokens, ("subcategory",), seed
                )
                cells = cell_standings(split, ("category", "subcategory"))
                for sub, sc in cells.groupby("subcategory", sort=True):
                    rows += _verdict_rows(
                        sc.drop(columns="subcategory"), (corpus, "split", sub), {"word_set": word_set}, groups,
                        families, alpha,
                    )  # fmt: skip
    curve = pd.DataFrame(rows)
    if curve.empty:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    spec = ["corpus", "analysis", "subcategory", "summary", "word_set", "prompt_set", "test"]
    curve["n_tests"] = curve.groupby(spec, dropna=False)["statistic"].transform("size").astype(int)
    curve["p_corrected"] = np.minimum(1.0, curve["p"] * curve["n_tests"])
    curve["p_min"] = np.minimum(1.0, curve["p_min"] * curve["n_tests"])
    first = {
        "summary": SUMMARIES[0],
        "word_set": WORD_SETS[0],
        "prompt_set": next(iter(groups)),
        "test": TESTS[0],
    }
    curve["primary"] = np.logical_and.reduce([curve[k] == v for k, v in first.items()])
    return curve[CURVE_COLUMNS]


def curve_labels(curve: pd.DataFrame, rule: CurveRule) -> pd.DataFrame:
    """One row per verdict (corpus, analysis, subcategory, statistic): its label by ``rule`` from the
    corrected p-values (:func:`rmvalues.stats.specification.curve_label`), with the primary estimate and p:
    :data:`LABEL_COLUMNS`."""
    keys = ["corpus", "analysis", "subcategory", "statistic"]
    rows = []
    for key, grp in curve.groupby(keys, sort=True, dropna=False):
        prim = grp[grp["primary"]]
        est = float(prim["estimate"].iloc[0]) if len(prim) else float("nan")
        lab = curve_label(grp["estimate"], grp["p_corrected"], np.sign(est), rule)
        p_prim = float(prim["p_corrected"].iloc[0]) if len(prim) else float("nan")
        rows.append(
            {**dict(zip(keys, key, strict=True)), "primary_estimate": est, "primary_p": p_prim, **lab,
             "rule": rule.describe()}
        )  # fmt: skip
    return pd.DataFrame(rows, columns=LABEL_COLUMNS)
