"""The chapter's analyses of the annotated word lists: category balance on frequency and valence (the
confounds), and token counts per model tokenizer."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ...models.loading import load_tokenizer, model_info

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase


def compare_groups(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """Two independent samples (NaN dropped): sizes, means, medians, Cohen's d, Hedges' g (NaN when either
    group has fewer than 2 values or both have zero variance), Mann-Whitney U (for ``x``), its two-sided p and
    the rank-biserial correlation (positive: ``x`` tends to be larger)."""
    import pingouin as pg

    x = np.asarray(pd.Series(x, dtype=float).dropna())
    y = np.asarray(pd.Series(y, dtype=float).dropna())
    out: dict[str, float] = {
        "n_a": len(x),
        "n_b": len(y),
        "mean_a": float(np.mean(x)) if len(x) else np.nan,
        "mean_b": float(np.mean(y)) if len(y) else np.nan,
        "median_a": float(np.median(x)) if len(x) else np.nan,
        "median_b": float(np.median(y)) if len(y) else np.nan,
        "cohen_d": np.nan,
        "hedges_g": np.nan,
        "mwu_u": np.nan,
        "p_value": np.nan,
        "rank_biserial": np.nan,
    }
    # d needs 2+ values per group and a pooled sd > 0
    if len(x) >= 2 and len(y) >= 2 and np.var(x, ddof=1) + np.var(y, ddof=1) > 0:
        out["cohen_d"] = float(pg.compute_effsize(x, y, paired=False, eftype="cohen"))
        out["hedges_g"] = float(pg.compute_effsize(x, y, paired=False, eftype="hedges"))
    if len(x) >= 1 and len(y) >= 1:
        res = pg.mwu(x, y, alternative="two-sided")
        out["mwu_u"] = float(res["U_val"].iloc[0])
        out["p_value"] = float(res["p_val"].iloc[0])
        out["rank_biserial"] = float(res["RBC"].iloc[0])
    return out


def category_balance(
    corpora: pd.DataFrame,
    variables: Sequence[str] = ("zipf_frequency", "valence"),
    *,
    group: str = "category",
    within: str | None = None,
) -> pd.DataFrame:
    """Compare the groups of each corpus on each variable.

    With two groups (Agency vs Communion) one row compares them; with more (the five moral foundations) each
    group is compared with the rest of its corpus (``group_b = "rest"``). ``within`` repeats the comparison
    inside each value of another column, e.g. ``group="subcategory", within="category"`` compares virtue with
    vice words inside each foundation. Columns: ``corpus, [within], variable, group_a, group_b`` and the
    statistics of :func:`compare_groups`.
    """
    rows = []
    split_cols = ["corpus"] + ([within] if within else [])
    for keys, part in corpora.groupby(split_cols, sort=True, dropna=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        levels = sorted(part[group].dropna().unique())
        if len(levels) < 2:
            continue
        pairs = [(levels[0], levels[1])] if len(levels) == 2 else [(lv, "rest") for lv in levels]
        for var in variables:
            for a, b in pairs:
                xa = part.loc[part[group] == a, var]
                xb = part.loc[part[group] != a, var] if b == "rest" else part.loc[part[group] == b, var]
                rows.append(
                    {
                        **dict(zip(split_cols, keys, strict=True)),
                        "variable": var,
                        "group_a": a,
                        "group_b": b,
                        **compare_groups(xa, xb),
                    }
                )
    return pd.DataFrame(rows)


def subcategory_mix(corpora: pd.DataFrame, variable: str = "valence") -> pd.DataFrame:
    """Per corpus and category: the share of each subcategory and the mean of ``variable`` per subcategory and
    pooled. Shows how pooling subcategories (e.g. MFD virtue and vice) mixes categories of different valence."""
    df = corpora[corpora["subcategory"].notna()]
    if df.empty:
        return pd.DataFrame()
    counts = df.pivot_table(
        index=["corpus", "category"], columns="subcategory", values="word", aggfunc="size"
    )
    means = df.pivot_table(
        index=["corpus", "category"], columns="subcategory", values=variable, aggfunc="mean"
    )
    out = counts.add_prefix("n_").join(means.add_prefix(f"mean_{variable}_"))
    out[f"mean_{variable}_pooled"] = df.groupby(["corpus", "category"])[variable].mean()
    n = counts.sum(axis=1)
    for col in counts.columns:
        out[f"share_{col}"] = counts[col] / n
    return out.reset_index()


def token_ids(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text without special tokens (BOS/EOS), as the tokenizer itself produces them."""
    if not texts:
        return []
    enc = tokenizer(list(texts), add_special_tokens=False)
    return [list(map(int, ids)) for ids in enc["input_ids"]]


def tokenize_words(corpus: pd.DataFrame, tokenizers: Mapping[str, PreTrainedTokenizerBase]) -> pd.DataFrame:
    """Token counts of every (corpus, word) under every tokenizer, bare (``"word"``) and with a leading space
    (``" word"``, how a word usually appears after another word or after ``"Answer:"``).

    Columns: ``corpus, word, model, n_tokens_bare, n_tokens_space, ids_bare, ids_space, tokens_bare,
    tokens_space`` (ids as lists of ints, tokens as the tokenizer's token strings).
    """
    words = corpus[corpus["entry"] != "stem"] if "entry" in corpus else corpus
    pairs = words[["corpus", "word"]].drop_duplicates().reset_index(drop=True)
    unique = list(pd.unique(pairs["word"]))
    frames = []
    for model, tok in tokenizers.items():
        bare = token_ids(tok, unique)
        space = token_ids(tok, [" " + w for w in unique])
        t = pd.DataFrame(
            {
                "word": unique,
                "model": model,
                "n_tokens_bare": [len(i) for i in bare],
                "n_tokens_space": [len(i) for i in space],
                "ids_bare": bare,
                "ids_space": space,
                "tokens_bare": [tok.convert_ids_to_tokens(i) for i in bare],
                "tokens_space": [tok.convert_ids_to_tokens(i) for i in space],
            }
        )
        frames.append(pairs.merge(t, on="word", how="left"))
    cols = [
        "corpus",
        "word",
        "model",
        "n_tokens_bare",
        "n_tokens_space",
        "ids_bare",
        "ids_space",
        "tokens_bare",
        "tokens_space",
    ]
    if not frames:
        return pd.DataFrame(columns=cols)
    out = pd.concat(frames, ignore_index=True)[cols]
    out["n_tokens_bare"] = out["n_tokens_bare"].astype("int64")
    out["n_tokens_space"] = out["n_tokens_space"].astype("int64")
    return out


def token_summary(tokens: pd.DataFrame) -> pd.DataFrame:
    """Per corpus and model: words, how many are one token bare / with a leading space / only one way / both /
    neither, the one-token shares, and the mean token counts."""
    t = tokens.assign(
        one_bare=tokens["n_tokens_bare"] == 1,
        one_space=tokens["n_tokens_space"] == 1,
    )
    g = t.groupby(["corpus", "model"], sort=True)
    out = g.agg(
        n_words=("word", "size"),
        one_token_bare=("one_bare", "sum"),
        one_token_space=("one_space", "sum"),
        mean_tokens_bare=("n_tokens_bare", "mean"),
        mean_tokens_space=("n_tokens_space", "mean"),
        max_tokens_space=("n_tokens_space", "max"),
    ).reset_index()
    both = t.groupby(["corpus", "model"], sort=True).apply(
        lambda d: pd.Series(
            {
                "one_token_both": int((d["one_bare"] & d["one_space"]).sum()),
                "one_token_space_only": int((~d["one_bare"] & d["one_space"]).sum()),
                "one_token_bare_only": int((d["one_bare"] & ~d["one_space"]).sum()),
                "one_token_neither": int((~d["one_bare"] & ~d["one_space"]).sum()),
            }
        ),
        include_groups=False,
    )
    out = out.merge(both.reset_index(), on=["corpus", "model"])
    out["share_one_token_bare"] = out["one_token_bare"] / out["n_words"]
    out["share_one_token_space"] = out["one_token_space"] / out["n_words"]
    for c in ("one_token_bare", "one_token_space"):
        out[c] = out[c].astype("int64")
    return out


def token_share_by_category(
    tokens: pd.DataFrame, corpora: pd.DataFrame, variant: str = "space"
) -> pd.DataFrame:
    """Per corpus, model and label: scored words, the share that is one token (``variant`` "space" or "bare")
    and the mean token count, so that a tokenization difference between categories is visible."""
    col = f"n_tokens_{variant}"
    labelled = corpora[["corpus", "word", "category", "subcategory"]].merge(
        tokens[["corpus", "word", "model", col]], on=["corpus", "word"], how="inner"
    )
    labelled = labelled.assign(subcategory=labelled["subcategory"].fillna(""), one=labelled[col] == 1)
    out = (
        labelled.groupby(["corpus", "model", "category", "subcategory"])
        .agg(n_words=("word", "size"), share_one_token=("one", "mean"), mean_tokens=(col, "mean"))
        .reset_index()
    )
    out["subcategory"] = out["subcategory"].replace("", None)
    return out


def token_count_distribution(tokens: pd.DataFrame, variant: str = "space") -> pd.DataFrame:
    """Words per number of tokens (``variant`` "space" or "bare"), per corpus and model."""
    col = f"n_tokens_{variant}"
    return tokens.groupby(["corpus", "model", col]).size().rename("n_words").reset_index()


def load_tokenizers(names: Iterable[str]) -> tuple[dict[str, PreTrainedTokenizerBase], list[dict[str, Any]]]:
    """Tokenizers of registered models and what identifies each model (for the manifest)."""
    toks: dict[str, PreTrainedTokenizerBase] = {}
    infos: list[dict[str, Any]] = []
    for name in names:
        toks[name] = load_tokenizer(name)
        info: dict[str, Any] = {"name": name, "use": "tokenizer", **model_info(name)}
        info.setdefault("tokenizer_class", type(toks[name]).__name__)
        infos.append(info)
    return toks, infos
