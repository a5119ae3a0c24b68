"""Implicit rewards of a pair of models, token and word level, and their analyses like reward-model scores.

* :func:`token_rewards`: ``token_mwlr``/``token_logratio`` of a pair over its aligned vocabulary, per framing;
  :func:`top_tokens`: the top and bottom tokens (the paper's Table 1).
* :func:`word_rewards`: ``word_mwlr``/``word_logratio`` of whole words, ``p(word|x)`` being the product of the
  word's token probabilities (needs no shared vocabulary, so any two models compare);
  :func:`pair_contrasts`: a word-pair contrast in case and leading-space variants (the paper's Fig. 3).

The rankings and ANOVAs of these rewards are in :mod:`.ranking`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .metrics import VocabAlignment, log_ratio, mwlr

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "TOKEN_COLUMNS",
    "WORD_PAIR_COLUMNS",
    "contrast_variants",
    "pair_contrasts",
    "pair_label",
    "token_rewards",
    "top_tokens",
    "word_rewards",
]

#: Columns of :func:`token_rewards`.
TOKEN_COLUMNS = [
    "pair",
    "model_p",
    "model_q",
    "framing",
    "token",
    "p",
    "q",
    "logratio",
    "mwlr",
    "rank_mwlr",
    "rank_logratio",
    "n_prompts",
]


def token_rewards(
    logp: torch.Tensor,
    logq: torch.Tensor,
    alignment: VocabAlignment,
    framings: Sequence[str],
    pair: str | None = None,
) -> pd.DataFrame:
    """Token-level implicit rewards of a pair on the shared vocabulary (:data:`TOKEN_COLUMNS`).

    ``logp``/``logq``: full-vocabulary next-token log-probs ``(n_prompts, vocab)`` of the two models, rows in
    the same prompt order as ``framings``. Per framing (and ``all``): ``p``/``q`` are the mean probabilities
    over the prompts, ``logratio``/``mwlr`` the means of the per-prompt metrics; ranks are 1 = highest reward.
    """
    ap = alignment.aggregate(logp, "p").numpy()
    aq = alignment.aggregate(logq, "q").numpy()
    framings = np.asarray(list(framings))
    if len(framings) != ap.shape[0]:
        raise ValueError(f"{len(framings)} framings for {ap.shape[0]} prompts")
    with np.errstate(invalid="ignore", divide="ignore"):
        lr = aq - ap
        mw = mwlr(ap, aq)
    frames = []
    groups = [(f, framings == f) for f in sorted(set(framings))] + [("all", np.ones(len(framings), bool))]
    for fr, sel in groups:
        df = pd.DataFrame(
            {
                "token": alignment.strings,
                "p": np.exp(ap[sel]).mean(0),
                "q": np.exp(aq[sel]).mean(0),
                "logratio": lr[sel].mean(0),
                "mwlr": mw[sel].mean(0),
            }
        )
        df["rank_mwlr"] = df["mwlr"].rank(ascending=False, method="min").astype("int64")
        df["rank_logratio"] = df["logratio"].rank(ascending=False, method="min").astype("int64")
        df["n_prompts"] = int(sel.sum())
        df["framing"] = fr
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    out["pair"] = pair or f"{alignment.model_q} vs {alignment.model_p}"
    out["model_p"], out["model_q"] = alignment.model_p, alignment.model_q
    return out[TOKEN_COLUMNS]


def top_tokens(
    tokens: pd.DataFrame, k: int = 15, metric: str = "mwlr", words_only: bool = False
) -> pd.DataFrame:
    """Top and bottom ``k`` tokens of each pair and framing by ``metric`` (paper Table 1).

    ``words_only`` keeps tokens that are a word (letters only, optionally after one leading space, at least
    three letters). Columns: ``pair, framing, end (top|bottom), position, token, <metric>, p, q``.
    """
    df = tokens
    if words_only:
        df = df[df["token"].str.fullmatch(r" ?[A-Za-z]{3,}")]
    rows = []
    for (pair, fr), grp in df.groupby(["pair", "framing"], sort=False):
        ordered = grp.sort_values(metric, ascending=False)
        for end, part in (("top", ordered.head(k)), ("bottom", ordered.tail(k).iloc[::-1])):
            part = part.assign(pair=pair, framing=fr, end=end, position=np.arange(1, len(part) + 1))
            rows.append(part[["pair", "framing", "end", "position", "token", metric, "p", "q"]])
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


WORD_PAIR_COLUMNS = [
    "pair",
    "model_p",
    "model_q",
    "prompt_id",
    "word",
    "n_tokens_p",
    "n_tokens_q",
    "logprob_p",
    "logprob_q",
    "logratio",
    "mwlr",
]


def pair_label(p: str, q: str) -> str:
    """Name of the implicit RM of pair (p, q): ``"q vs p"`` (positive rewards favour ``q``)."""
    return f"{q} vs {p}"


def word_rewards(word_lp: pd.DataFrame, pairs: Sequence[tuple[str, str]]) -> pd.DataFrame:
    """Word-level ``logratio`` and ``mwlr`` of every pair from a :meth:`LogProbEngine.word_logprobs` table
    (several models stacked): :data:`WORD_PAIR_COLUMNS`, one row per (pair, prompt, word)."""
    frames = []
    key = ["prompt_id", "word"]
    for p, q in pairs:
        a = word_lp[word_lp["model"] == p][[*key, "n_tokens", "logprob"]]
        b = word_lp[word_lp["model"] == q][[*key, "n_tokens", "logprob"]]
        if a.empty or b.empty:
            missing = [m for m, d in ((p, a), (q, b)) if d.empty]
            raise ValueError(f"no word log-probs for {missing}")
        m = a.merge(b, on=key, suffixes=("_p", "_q"), how="inner", validate="one_to_one")
        if m.empty:
            raise ValueError(f"models {p!r} and {q!r} have no (prompt, word) in common")
        m["logratio"] = log_ratio(m["logprob_p"], m["logprob_q"])
        m["mwlr"] = mwlr(m["logprob_p"].to_numpy(), m["logprob_q"].to_numpy())
        m["pair"], m["model_p"], m["model_q"] = pair_label(p, q), p, q
        frames.append(m)
    return pd.concat(frames, ignore_index=True)[WORD_PAIR_COLUMNS]


def contrast_variants(a: str = "freedom", b: str = "love") -> pd.DataFrame:
    """Case and leading-space variants of a word pair: ``case, space, text_a, text_b`` (4 rows: lower and
    capitalised, bare and with one leading space)."""
    rows = []
    for case, f in (("lower", str.lower), ("capitalized", str.capitalize)):
        for space, pre in (("bare", ""), ("leading space", " ")):
            rows.append({"case": case, "space": space, "text_a": pre + f(a), "text_b": pre + f(b)})
    return pd.DataFrame(rows)


def pair_contrasts(
    variant_lp: pd.DataFrame,
    pairs: Sequence[tuple[str, str]],
    a: str = "freedom",
    b: str = "love",
    framing: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """For every pair and variant: word MWLR of ``a`` and of ``b`` (mean over prompts), their difference
    and the share of prompts where ``a`` gets the higher MWLR (paper Fig. 3: "Freedom" beats "Love").

    ``variant_lp``: word log-probs of the variant texts (``word`` column = the exact text, scored with an
    empty separator). With ``framing`` (``{prompt_id: framing}``) each framing gets its own rows too.
    """
    variants = contrast_variants(a, b)
    rewards = word_rewards(variant_lp, pairs)
    if framing is not None:
        rewards["framing"] = rewards["prompt_id"].map(dict(framing))
    rows = []
    for (pair, mp, mq), grp in rewards.groupby(["pair", "model_p", "model_q"], sort=False):
        parts = [("all", grp)]
        if framing is not None:
            parts += [(f, g) for f, g in grp.groupby("framing", sort=True)]
        for fr, part in parts:
            for v in variants.itertuples(index=False):
                xa = part[part["word"] == v.text_a].set_index("prompt_id")["mwlr"]
                xb = part[part["word"] == v.text_b].set_index("prompt_id")["mwlr"]
                xa, xb = xa.align(xb, join="inner")
                rows.append(
                    {
                        "pair": pair,
                        "model_p": mp,
                        "model_q": mq,
                        "framing": fr,
                        "case": v.case,
                        "space": v.space,
                        "text_a": v.text_a,
                        "text_b": v.text_b,
                        "mwlr_a": xa.mean(),
                        "mwlr_b": xb.mean(),
                        "difference": (xa - xb).mean(),
                        "share_a_wins": float((xa > xb).mean()) if len(xa) else math.nan,
                        "n_prompts": len(xa),
                    }
                )
    return pd.DataFrame(rows)
