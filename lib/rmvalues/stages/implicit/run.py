"""Implicit reward models from language-model log-probabilities (the paper's Sections 4-5 and Figs. 2-3).

At the optimum of KL-regularised RL, a tuned policy is ``pi_r(y|x) ∝ pi_ref(y|x) exp(r(x, y) / beta)``, so
``r(x, y) = c(x) + beta log pi_r(y|x) / pi_ref(y|x)``: a log-probability ratio between two models is itself a
reward model. This module computes such *implicit rewards* from :mod:`rmvalues.logprobs` and analyses them
like the RM scores of the statistics chapter.

**Metrics** (:data:`METRICS`; ``p`` = the first model of a pair, the reference, ``q`` = the second):

``token_logratio``
    DPO-style ``log q(t|x) - log p(t|x)`` over the vocabulary, for two models that share one tokenizer (a tuned
    model and its reference, same prompt ``x`` for both). Different tokenizers are an error that names the
    metrics that work for them.
``token_mwlr``
    the paper's mixture-weighted log ratio ``MWLR(t) = 1/2 (p(t) + q(t)) (log q(t) - log p(t))`` (raw ratios are
    dominated by improbable tail tokens; the mixture weight damps them). Across tokenizers on their *shared
    vocabulary*: tokens are aligned by their decoded string (:func:`align_vocabularies`; ``Ġ``/``▁`` read as a
    space, special and partial-byte tokens left out); when several ids of one tokenizer decode to the same
    string (a collision), the string's probability is the *sum* of theirs, and every collision is reported.
``word_mwlr`` / ``word_logratio``
    the same on whole words, ``p(word|x)`` being the product of the word's token probabilities: needs no
    shared vocabulary, so any two models compare.
``word_sum`` / ``word_mean``
    reference-free rewards of one model: the word's log-probability (sum over its tokens) or its mean per
    token (length-normalised, SimPO-style).

**Analyses**: per model (and per implicit RM) the corpus words are ranked under each prompt and the median
rank of each category is taken (:func:`rmvalues.statistics.rank_scores` / ``median_ranks``); the 3-way ANOVA
``median_rank ~ category * framing * model`` with Welch post-hocs (:func:`rmvalues.statistics.anova_3way`,
``welch_posthocs``; paper Fig. 2); the top and bottom tokens of each token-level implicit RM (Table 1); and
a word-pair contrast (``freedom`` vs ``love`` in case and leading-space variants) for every pair (Fig. 3).

**Metric validation** (:func:`plant_words`, :func:`planted_recovery`): a model is fine-tuned briefly to
answer the prompts with a handful of planted words; each metric ranks the candidates by implicit reward of
the tuned model against its reference, and the recovery of the planted words (R-precision, AUC, mean rank)
says which metric finds them.

The stage entry point is :func:`run_implicit`; :func:`check_parameters` validates its parameters.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from . import logprobs as lp_mod
from . import models as models_mod
from . import paths
from . import scores as scores_mod
from . import statistics as st

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from matplotlib.figure import Figure
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from .manifest import RunRecord

METRICS = ("token_mwlr", "token_logratio", "word_mwlr", "word_logratio", "word_sum", "word_mean")
PAIR_METRICS = ("token_mwlr", "token_logratio", "word_mwlr", "word_logratio")
TOKEN_METRICS = ("token_mwlr", "token_logratio")
SINGLE_METRICS = ("word_sum", "word_mean")

#: The chapter's default prompt subset (CPU budget): two positive prompts and their negative mirrors (same
#: frame and concision style; best <-> worst, greatest <-> terrible), so framing is not confounded with the
#: wording. [] = all 54.
DEFAULT_PROMPTS = [
    "best_ever_one",
    "greatest_time_please",
    "worst_ever_one",
    "terrible_time_please",
]
#: Ten MFD 2.0 Authority (virtue) words planted by the validation fine-tune (the paper planted ten
#: "authority" words).
DEFAULT_PLANTED = [
    "authority",
    "obedience",
    "duty",
    "hierarchy",
    "tradition",
    "respect",
    "leader",
    "order",
    "command",
    "compliance",
]
#: Prompts the validation fine-tune trains on (held out from the evaluation prompts).
DEFAULT_PLANTED_TRAIN = ["good_world_single", "bad_world_single"]

DEFAULT_PARAMETERS: dict[str, Any] = {
    "models": ["gemma3-270m", "smollm2-135m-instruct"],
    "pairs": [],
    "corpora": ["big2_nouns", "mfd2"],
    "prompts": list(DEFAULT_PROMPTS),
    "prompt_format": "auto",
    "include_end_of_turn": False,
    "metrics": ["token_mwlr", "word_mwlr", "word_logratio", "word_sum", "word_mean"],
    "contrast": ["freedom", "love"],
    "top_k": 15,
    "planted_model": "smollm2-135m-instruct",
    "planted_words": list(DEFAULT_PLANTED),
    "planted_train_prompts": list(DEFAULT_PLANTED_TRAIN),
    "planted_steps": 3,
    "planted_lr": 3e-4,
    "extra_registry": [],
    "batch_size": 64,
    "device": "auto",
    "threads": 0,
    "seed": 0,
    "corpora_run": "default",
    "output_dir": "results/implicit/default",
    "results_root": "results",
    "run_name": "default",
}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class TokenizerMismatchError(ValueError):
    """A token-level metric that needs one shared tokenizer was asked of two models with different ones."""


# =========================================================================================================
# Metrics
# =========================================================================================================


def log_ratio(logp: Any, logq: Any) -> Any:
    """``log q - log p`` (elementwise; numpy arrays, tensors or floats)."""
    return logq - logp


def mwlr(logp: Any, logq: Any) -> Any:
    """Mixture-weighted log ratio ``1/2 (p + q) (log q - log p)`` from log-probabilities (elementwise)."""
    if hasattr(logp, "exp") and not isinstance(logp, np.ndarray):  # torch tensors
        return 0.5 * (logp.exp() + logq.exp()) * (logq - logp)
    logp, logq = np.asarray(logp, dtype=float), np.asarray(logq, dtype=float)
    return 0.5 * (np.exp(logp) + np.exp(logq)) * (logq - logp)


# =========================================================================================================
# Vocabulary alignment
# =========================================================================================================


def _bytes_decoder() -> dict[str, int]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {v: k for k, v in bytes_to_unicode().items()}


def _is_byte_level(tokenizer: PreTrainedTokenizerBase) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    return "ByteLevel" in repr(backend.decoder) or "ByteLevel" in repr(backend.pre_tokenizer)


_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def token_strings(tokenizer: PreTrainedTokenizerBase) -> list[str | None]:
    """Each token id's text, normalised for alignment across tokenizers (``None`` = not alignable).

    Byte-level BPE (``Ġ``, GPT-2/Llama 3/SmolLM): the token's bytes decoded as UTF-8 (partial UTF-8 sequences
    are not alignable). SentencePiece-style (``▁``, Gemma): ``▁`` read as a space; byte-fallback tokens
    ``<0xNN>`` are the character for ASCII bytes and not alignable otherwise. Special tokens (and added
    special tokens) are not alignable.
    """
    n = len(tokenizer)
    tokens = tokenizer.convert_ids_to_tokens(list(range(n)))
    special = set(tokenizer.all_special_ids)
    special |= {i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items() if t.special}
    out: list[str | None] = []
    if _is_byte_level(tokenizer):
        dec = _bytes_decoder()
        added = set(getattr(tokenizer, "added_tokens_decoder", {}))
        for i, tok in enumerate(tokens):
            if i in special or tok is None:
                out.append(None)
                continue
            if i in added:
                out.append(tok)
                continue
            try:
                out.append(bytes(dec[c] for c in tok).decode("utf-8"))
            except (KeyError, UnicodeDecodeError):
                out.append(None)
        return out
    for i, tok in enumerate(tokens):
        if i in special or tok is None:
            out.append(None)
            continue
        m = _BYTE_FALLBACK.match(tok)
        if m:
            b = int(m.group(1), 16)
            out.append(chr(b) if b < 0x80 else None)
            continue
        out.append(tok.replace("▁", " "))
    return out


@dataclass
class VocabAlignment:
    """Two vocabularies aligned by token string (:func:`align_vocabularies`).

    ``strings[k]`` is a shared string; ``group_p[i]`` / ``group_q[i]`` the index into ``strings`` of token id
    ``i`` of each tokenizer (``-1``: not shared or not alignable). ``collisions`` lists every shared string
    several ids of one tokenizer decode to (their probabilities are summed).
    """

    model_p: str
    model_q: str
    strings: list[str]
    group_p: np.ndarray
    group_q: np.ndarray
    identical: bool
    collisions: pd.DataFrame
    n_vocab_p: int
    n_vocab_q: int
    n_alignable_p: int
    n_alignable_q: int

    @property
    def n_shared(self) -> int:
        return len(self.strings)

    def summary(self) -> dict[str, Any]:
        """One row for the alignment report."""
        coll = self.collisions
        return {
            "model_p": self.model_p,
            "model_q": self.model_q,
            "identical_tokenizers": self.identical,
            "vocab_p": self.n_vocab_p,
            "vocab_q": self.n_vocab_q,
            "alignable_p": self.n_alignable_p,
            "alignable_q": self.n_alignable_q,
            "shared_strings": self.n_shared,
            "collision_strings_p": int((coll["model"] == self.model_p).sum()) if len(coll) else 0,
            "collision_strings_q": int((coll["model"] == self.model_q).sum()) if len(coll) else 0,
            "collision_ids_p": int(coll.loc[coll["model"] == self.model_p, "n_ids"].sum())
            if len(coll)
            else 0,
            "collision_ids_q": int(coll.loc[coll["model"] == self.model_q, "n_ids"].sum())
            if len(coll)
            else 0,
        }

    def aggregate(self, logprobs: torch.Tensor, side: str) -> torch.Tensor:
        """Log-probabilities ``(n, vocab)`` of one side summed into the shared strings: ``(n, n_shared)``."""
        import torch

        group = torch.as_tensor(self.group_p if side == "p" else self.group_q, dtype=torch.long)
        if logprobs.shape[-1] < len(group):
            group = group[: logprobs.shape[-1]]
        elif logprobs.shape[-1] > len(
            group
        ):  # model vocab padded beyond the tokenizer: those ids never align
            group = torch.cat([group, torch.full((logprobs.shape[-1] - len(group),), -1, dtype=torch.long)])
        keep = group >= 0
        probs = logprobs[:, keep].double().exp()
        out = torch.zeros((logprobs.shape[0], self.n_shared), dtype=torch.float64)
        out.index_add_(1, group[keep], probs)
        return out.log()


def _same_tokenizer(tok_p: PreTrainedTokenizerBase, tok_q: PreTrainedTokenizerBase) -> bool:
    return tok_p is tok_q or (len(tok_p) == len(tok_q) and tok_p.get_vocab() == tok_q.get_vocab())


def align_vocabularies(
    tok_p: PreTrainedTokenizerBase,
    tok_q: PreTrainedTokenizerBase,
    model_p: str = "p",
    model_q: str = "q",
) -> VocabAlignment:
    """Align two vocabularies by decoded token string (:func:`token_strings`).

    Identical tokenizers are aligned id by id (no collisions). Otherwise every string both tokenizers can
    produce is shared; ids of one tokenizer that decode to the same string are a collision (reported, their
    probabilities summed). Raises ``ValueError`` when nothing is shared.
    """
    if _same_tokenizer(tok_p, tok_q):
        strings_p = token_strings(tok_p)
        ids = [i for i, s in enumerate(strings_p) if s is not None]
        group = np.full(len(strings_p), -1, dtype=np.int64)
        group[ids] = np.arange(len(ids))
        labels = [strings_p[i] for i in ids]
        # keep identical strings apart (same tokenizer: ids are the unit), marking duplicates with the id
        seen = pd.Series(labels).value_counts().to_dict()
        labels = [s if seen[s] == 1 else f"{s}#{i}" for s, i in zip(labels, ids, strict=True)]
        empty = pd.DataFrame(columns=["model", "string", "ids", "tokens", "n_ids"])
        return VocabAlignment(
            model_p,
            model_q,
            labels,
            group,
            group.copy(),
            True,
            empty,
            len(tok_p),
            len(tok_q),
            len(ids),
            len(ids),
        )
    strings_p, strings_q = token_strings(tok_p), token_strings(tok_q)
    shared = sorted({s for s in strings_p if s is not None} & {s for s in strings_q if s is not None})
    if not shared:
        raise ValueError(
            f"models {model_p!r} and {model_q!r} share no token string: the token-level metrics have nothing to "
            "compare; use the word-level metrics (word_mwlr, word_logratio), which need no shared vocabulary"
        )
    index = {s: k for k, s in enumerate(shared)}
    groups = []
    coll_rows = []
    for model, tok, strings in ((model_p, tok_p, strings_p), (model_q, tok_q, strings_q)):
        g = np.array([index.get(s, -1) if s is not None else -1 for s in strings], dtype=np.int64)
        groups.append(g)
        counts = np.bincount(g[g >= 0], minlength=len(shared))
        for k in np.flatnonzero(counts > 1):
            ids = np.flatnonzero(g == k).tolist()
            coll_rows.append(
                {
                    "model": model,
                    "string": shared[k],
                    "ids": ids,
                    "tokens": tok.convert_ids_to_tokens(ids),
                    "n_ids": len(ids),
                }
            )
    coll = pd.DataFrame(coll_rows, columns=["model", "string", "ids", "tokens", "n_ids"])
    return VocabAlignment(
        model_p,
        model_q,
        shared,
        groups[0],
        groups[1],
        False,
        coll,
        len(tok_p),
        len(tok_q),
        sum(s is not None for s in strings_p),
        sum(s is not None for s in strings_q),
    )


def require_same_tokenizer(
    tok_p: PreTrainedTokenizerBase, tok_q: PreTrainedTokenizerBase, model_p: str, model_q: str
) -> None:
    """Raise :class:`TokenizerMismatchError` (explaining the alternatives) unless the tokenizers are the same."""
    if not _same_tokenizer(tok_p, tok_q):
        raise TokenizerMismatchError(
            f"token_logratio compares the probabilities two models give the SAME token ids, but {model_p!r} "
            f"({len(tok_p)} tokens) and {model_q!r} ({len(tok_q)} tokens) have different tokenizers, so a token "
            "id means different text in each. Use word_logratio (the same log ratio on whole words, any "
            "tokenizers) or token_mwlr (aligns the shared vocabulary by decoded string)"
        )


# =========================================================================================================
# Token-level implicit rewards
# =========================================================================================================

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


# =========================================================================================================
# Word-level implicit rewards
# =========================================================================================================

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


# =========================================================================================================
# Ranks, median ranks and the ANOVA (the statistics library's language-model variant)
# =========================================================================================================


def scores_table(
    values: pd.DataFrame,
    labels: pd.DataFrame,
    score: str,
    model_col: str = "model",
    family: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """A long scores table (statistics' columns) from per-(scorer, prompt, word) values: each scorer (a
    model or an implicit RM) is a ``model``; ``score`` names the column used as the score. ``labels``:
    ``corpus, word, category, subcategory`` (one row per label)."""
    df = values[[model_col, "prompt_id", "word", score]].rename(columns={model_col: "model", score: "score"})
    df = df.merge(labels[["corpus", "word", "category", "subcategory"]], on="word", how="inner")
    fam = dict(family or {})
    df["family"] = df["model"].map(lambda m: fam.get(m, "pair"))
    df["source"] = "live"
    df["framing"] = df["prompt_id"].map(scores_mod.framing_of)
    return df


def median_ranks(scores: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Ranks per (corpus, scorer, prompt) and the median rank per category (pooled, and split where the
    corpus has subcategories) via :mod:`rmvalues.statistics`; adds the ``metric`` column."""
    ranked = st.rank_scores(scores)
    out = st.all_median_ranks(ranked)
    out.insert(0, "metric", metric)
    return out


def lm_anova(medians: pd.DataFrame, models: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per corpus (pooled analysis): the 3-way ANOVA ``median_rank ~ category * framing * model`` of the
    models' log-prob ranks (metric ``word_sum``) and Welch post-hocs for every model pair (FDR over the
    category x framing cells). Needs two models and two prompts per framing."""
    med = medians[(medians["metric"] == "word_sum") & (medians["analysis"] == "pooled")]
    med = med[med["model"].isin(list(models))]
    anovas, posthocs = [], []
    for corpus, grp in med.groupby("corpus", sort=True):
        factors = [f for f in ("category", "framing", "model") if grp[f].nunique() > 1]
        a = st.anova_3way(grp, factors=factors)
        a.insert(0, "corpus", corpus)
        anovas.append(a)
        for m1, m2 in itertools.combinations([m for m in models if m in set(grp["model"])], 2):
            ph = st.welch_posthocs(grp[grp["model"].isin([m1, m2])], group="model", levels=[m1, m2])
            ph.insert(0, "corpus", corpus)
            posthocs.append(ph)
    return (
        pd.concat(anovas, ignore_index=True) if anovas else pd.DataFrame(),
        pd.concat(posthocs, ignore_index=True) if posthocs else pd.DataFrame(),
    )


# =========================================================================================================
# Metric validation: planted words
# =========================================================================================================


def plant_words(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    words: Sequence[str],
    prompt_format: str = "chat",
    steps: int = 8,
    lr: float = 1e-4,
    seed: int = 0,
    include_end_of_turn: bool = True,
) -> tuple[PreTrainedModel, list[float]]:
    """A copy of ``model`` fine-tuned briefly to answer every prompt with the planted ``words``.

    Supervised fine-tuning with AdamW on all (prompt, word) pairs, full batch, ``steps`` steps; the loss is
    the mean negative log-likelihood of the answer tokens (the word, plus the end-of-turn token when
    ``include_end_of_turn``), built with the same token-exact construction as the log-prob engine. To stay
    cheap on a CPU each prompt is encoded once per step and its keys/values are shared (expanded, with
    gradient) by all its answers, which gives the same gradient as encoding every (prompt, answer) sequence
    separately. Returns the tuned copy (eval mode; ``model`` is untouched) and the loss before each step.
    """
    import torch

    if steps < 1:
        raise ValueError(f"steps={steps}: give at least one training step")
    if not words or not prompts:
        raise ValueError("plant_words needs at least one prompt and one word")
    tuned = copy.deepcopy(model)
    base = lp_mod.LogProbEngine(tuned, tokenizer, name="tuned", prompt_format=prompt_format)
    splits = [base.split(p, f"train{i}") for i, p in enumerate(prompts)]
    examples: list[tuple[int, list[int]]] = []
    for k, sp in enumerate(splits):
        end = list(lp_mod.end_of_turn_ids(tokenizer, sp)) if include_end_of_turn else []
        for c in base.word_candidates(sp, list(words)):
            examples.append((k, list(c.ids) + end))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        opt = torch.optim.AdamW([p for p in tuned.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
        losses: list[float] = []
        for _ in range(steps):
            tuned.eval()  # no dropout; gradients still flow
            opt.zero_grad()
            total = torch.zeros((), device=next(tuned.parameters()).device)
            n_tok = 0
            for k, sp in enumerate(splits):
                rows = [ids for j, ids in examples if j == k]
                prefix, first_lp = _prefix_with_grad(tuned, sp.prefix_ids)
                dev = first_lp.device
                total = total - first_lp[torch.tensor([r[0] for r in rows], device=dev)].sum()
                n_tok += len(rows)
                longer = [r for r in rows if len(r) > 1]
                if longer:
                    logits, lse = base._continuation_logits(prefix, [r[:-1] for r in longer])
                    for i, r in enumerate(longer):
                        tgt = torch.tensor(r[1:], device=dev)
                        pos = torch.arange(len(r) - 1, device=dev)
                        total = total - (logits[i, pos, tgt] - lse[i, pos]).sum()
                        n_tok += len(r) - 1
            loss = total / n_tok
            losses.append(float(loss.detach()))
            loss.backward()
            opt.step()
    tuned.eval()
    return tuned, losses


def _prefix_with_grad(
    model: PreTrainedModel, prefix_ids: Sequence[int]
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
    """The prefix's keys/values (batch 1, every layer keeps all tokens) and next-token log-probs, with
    gradient (for :func:`plant_words`)."""
    import torch
    from transformers.cache_utils import DynamicCache

    cache = DynamicCache()
    ids = torch.tensor([list(prefix_ids)], device=next(model.parameters()).device)
    out = model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
    first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
    return [(layer.keys, layer.values) for layer in cache.layers], first


RECOVERY_COLUMNS = [
    "level",
    "metric",
    "n_candidates",
    "n_planted",
    "r_precision",
    "auc",
    "mean_rank_planted",
    "median_rank_planted",
]


def recovery_scores(values: pd.Series, planted: set[Any], level: str, metric: str) -> dict[str, Any]:
    """How well ranking ``values`` (index = candidates, higher = more reward) recovers ``planted``:
    R-precision (share of the planted among the top ``len(planted)``), AUC (probability that a planted
    candidate outranks a non-planted one, ties half) and the planted candidates' mean and median rank."""
    from scipy.stats import rankdata

    values = values.astype(float)
    is_planted = values.index.isin(list(planted))
    n_pl = int(is_planted.sum())
    if n_pl == 0 or n_pl == len(values):
        raise ValueError("recovery needs planted and non-planted candidates")
    rank = rankdata(-values.to_numpy(), method="average")
    top = rankdata(-values.to_numpy(), method="ordinal") <= n_pl
    r_up = rankdata(values.to_numpy(), method="average")
    auc = (r_up[is_planted].sum() - n_pl * (n_pl + 1) / 2) / (n_pl * (len(values) - n_pl))
    return {
        "level": level,
        "metric": metric,
        "n_candidates": len(values),
        "n_planted": n_pl,
        "r_precision": float((top & is_planted).sum() / n_pl),
        "auc": float(auc),
        "mean_rank_planted": float(rank[is_planted].mean()),
        "median_rank_planted": float(np.median(rank[is_planted])),
    }


def planted_recovery(
    reference: lp_mod.LogProbEngine,
    tuned: lp_mod.LogProbEngine,
    prompts: Mapping[str, str],
    candidates: Sequence[str],
    planted: Sequence[str],
    include_end_of_turn: bool = False,
    reference_lp: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Which implicit-reward metric recovers the planted words (:data:`RECOVERY_COLUMNS`, one row per level
    and metric) and the planted words' ranks (``level, metric, word, rank, n_candidates``).

    Word level: the candidates (planted words included) ranked by each metric's mean over ``prompts``
    (``word_logratio``, ``word_mwlr`` of tuned vs reference; ``word_sum``, ``word_mean`` of the tuned model).
    Token level: the whole vocabulary ranked by ``token_logratio``, ``token_mwlr`` and the tuned model's
    ``token_logprob``; the planted units are the planted words' first tokens. ``reference_lp``: the reference
    model's word log-probs computed already (same prompt format and end-of-turn setting); the (prompt, word)
    pairs it lacks are computed.
    """
    import torch

    cands = list(dict.fromkeys([*candidates, *planted]))
    ref_lp = None
    if reference_lp is not None:
        have = reference_lp[reference_lp["prompt_id"].isin(list(prompts)) & reference_lp["word"].isin(cands)]
        have = have.drop_duplicates(["prompt_id", "word"])
        missing = [w for w in cands if (have["word"] == w).sum() < len(prompts)]
        if not missing:
            ref_lp = have
        elif len(missing) < len(cands):
            ref_lp = pd.concat(
                [
                    have[~have["word"].isin(missing)],
                    reference.word_logprobs(prompts, missing, include_end_of_turn),
                ],
                ignore_index=True,
            )
    if ref_lp is None:
        ref_lp = reference.word_logprobs(prompts, cands, include_end_of_turn)
    tun_lp = tuned.word_logprobs(prompts, cands, include_end_of_turn)
    m = ref_lp.merge(tun_lp, on=["prompt_id", "word"], suffixes=("_p", "_q"))
    m["word_logratio"] = log_ratio(m["logprob_p"], m["logprob_q"])
    m["word_mwlr"] = mwlr(m["logprob_p"].to_numpy(), m["logprob_q"].to_numpy())
    m["word_sum"] = m["logprob_q"]
    m["word_mean"] = m["logprob_mean_q"]
    means = m.groupby("word")[["word_logratio", "word_mwlr", "word_sum", "word_mean"]].mean()
    planted_set = set(planted)
    rows, ranks = [], []
    for metric in ("word_logratio", "word_mwlr", "word_sum", "word_mean"):
        rows.append(recovery_scores(means[metric], planted_set, "word", metric))
        r = means[metric].rank(ascending=False, method="average")
        ranks += [{"level": "word", "metric": metric, "word": w, "rank": float(r[w])} for w in planted]
    # token level: full vocabulary, same tokenizer
    require_same_tokenizer(reference.tokenizer, tuned.tokenizer, reference.name, tuned.name)
    lp_p = reference.next_token_logprobs(prompts)
    lp_q = tuned.next_token_logprobs(prompts)
    strings = token_strings(reference.tokenizer)
    n = min(lp_p.shape[1], len(strings))
    ok = np.array([s is not None for s in strings[:n]])
    first_ids = {}
    for w in planted:
        sp = reference.split(next(iter(prompts.values())), next(iter(prompts)))
        first_ids[w] = reference.word_candidates(sp, [w])[0].ids[0]
    planted_ids = set(first_ids.values())
    with torch.no_grad():
        tok_metrics = {
            "token_logratio": (lp_q[:, :n] - lp_p[:, :n]).mean(0).numpy(),
            "token_mwlr": mwlr(lp_p[:, :n], lp_q[:, :n]).mean(0).numpy(),
            "token_logprob": lp_q[:, :n].mean(0).numpy(),
        }
    ids = np.flatnonzero(ok)
    for metric, vals in tok_metrics.items():
        s = pd.Series(vals[ids], index=ids)
        rows.append(recovery_scores(s, planted_ids, "token", metric))
        r = s.rank(ascending=False, method="average")
        ranks += [
            {"level": "token", "metric": metric, "word": w, "rank": float(r.get(i, np.nan))}
            for w, i in first_ids.items()
        ]
    n_cands = {"word": len(cands), "token": len(ids)}
    rk = pd.DataFrame(ranks)
    rk["n_candidates"] = rk["level"].map(n_cands)
    return pd.DataFrame(rows)[RECOVERY_COLUMNS], rk


# =========================================================================================================
# Parameters
# =========================================================================================================


def _is_int(x: Any) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


def _is_str_list(x: Any) -> bool:
    return isinstance(x, list | tuple) and all(isinstance(v, str) for v in x)


def resolve_pairs(
    models: Sequence[str], pairs: Any, families: Mapping[str, str] | None = None
) -> list[tuple[str, str]]:
    """The model pairs: ``[]`` = every pair in ``models`` order (first = reference ``p``),
    ``["cross-family"]`` = the pairs of different families, else an explicit list of ``[p, q]``."""
    if pairs in ([], (), None):
        return list(itertools.combinations(models, 2))
    if pairs in ("cross-family", ["cross-family"], ("cross-family",)):
        fam = dict(families or {})
        return [(a, b) for a, b in itertools.combinations(models, 2) if fam.get(a) != fam.get(b)]
    return [(str(a), str(b)) for a, b in pairs]


def check_parameters(params: Mapping[str, Any]) -> None:
    """Validate the stage's parameters before any work; raise ``ValueError`` naming the valid choices."""
    unknown = sorted(set(params) - set(DEFAULT_PARAMETERS))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown}; the implicit stage takes: {', '.join(DEFAULT_PARAMETERS)}"
        )
    p = {**DEFAULT_PARAMETERS, **params}
    errors: list[str] = []
    extra = p["extra_registry"]
    reg: dict[str, models_mod.ModelSpec] = {}
    if not _is_str_list(extra):
        errors.append(
            f"extra_registry={extra!r}: give a list of registry YAML files (e.g. config/paper_models.yaml)"
        )
    else:
        try:
            reg = models_mod.registry(extra=list(extra))
        except (models_mod.RegistryError, OSError) as exc:
            errors.append(f"extra_registry: {exc}")
    lms = sorted(n for n, s in reg.items() if s.kind == "causal-lm")
    mods = p["models"]
    if not _is_str_list(mods) or not mods:
        errors.append(f"models={mods!r}: give a list of registered causal LMs, e.g. {lms}")
        mods = []
    else:
        if len(set(mods)) != len(mods):
            errors.append(f"models={mods!r}: a model is listed twice")
        if reg:
            bad = [m for m in mods if m not in lms]
            if bad:
                errors.append(
                    f"models: {bad} are not registered causal LMs; registered: {lms} (add models in "
                    "config/models.yaml or a file in extra_registry)"
                )
    metrics = p["metrics"]
    if not _is_str_list(metrics) or not metrics:
        errors.append(f"metrics={metrics!r}: give a non-empty list from {list(METRICS)}")
        metrics = []
    else:
        bad = [m for m in metrics if m not in METRICS]
        if bad:
            errors.append(f"metrics: unknown {bad}; valid: {list(METRICS)}")
    pairs = p["pairs"]
    if pairs not in ([], (), "cross-family", ["cross-family"]) and not (
        isinstance(pairs, list | tuple)
        and all(isinstance(x, list | tuple) and len(x) == 2 and _is_str_list(x) for x in pairs)
    ):
        errors.append(
            f"pairs={pairs!r}: give [] (every pair of `models`), ['cross-family'], or a list of [p, q] pairs"
        )
    elif isinstance(pairs, list | tuple) and pairs and pairs != ["cross-family"]:
        for a, b in pairs:
            if a == b:
                errors.append(f"pairs: [{a}, {b}] pairs a model with itself")
            if a not in mods or b not in mods:
                errors.append(f"pairs: [{a}, {b}] uses a model not in `models` ({list(mods)})")
    if any(m in PAIR_METRICS for m in metrics) and len(mods) < 2:
        errors.append(
            f"metrics {[m for m in metrics if m in PAIR_METRICS]} compare two models; give at least two models"
        )
    fmt = p["prompt_format"]
    if isinstance(fmt, Mapping):
        bad = {k: v for k, v in fmt.items() if v not in lp_mod.PROMPT_FORMATS or k not in mods}
        if bad:
            errors.append(
                f"prompt_format: {bad} invalid; give {{model: format}} for models in `models` with formats "
                f"{list(lp_mod.PROMPT_FORMATS)}"
            )
    elif fmt not in lp_mod.PROMPT_FORMATS:
        errors.append(
            f"prompt_format={fmt!r}: choose one of {list(lp_mod.PROMPT_FORMATS)} (auto = chat template for "
            "instruction-tuned models, raw prompt for pretrained ones) or a {model: format} mapping"
        )
    if not errors and reg:
        resolved: dict[str, str] = {}
        for m in mods:
            f = fmt.get(m, "auto") if isinstance(fmt, Mapping) else fmt
            try:
                resolved[m] = lp_mod.resolve_prompt_format(reg[m], f)
            except lp_mod.PromptFormatError as exc:
                errors.append(str(exc))
        if "token_logratio" in metrics and len(resolved) == len(mods):
            for a, b in resolve_pairs(mods, pairs, {m: reg[m].family for m in mods}):
                if resolved[a] != resolved[b]:
                    errors.append(
                        f"token_logratio compares two models on the same prompt x, but {a!r} is prompted "
                        f"{resolved[a]} and {b!r} {resolved[b]}; set prompt_format to 'chat' or 'raw' for both"
                    )
    if not isinstance(p["include_end_of_turn"], bool):
        errors.append(f"include_end_of_turn={p['include_end_of_turn']!r}: give true or false")
    corpora = p["corpora"]
    if not _is_str_list(corpora) or not corpora:
        errors.append(
            f"corpora={corpora!r}: give a non-empty list of corpus names, e.g. ['big2_nouns', 'mfd2']"
        )
    else:
        from . import corpora as corpora_mod

        known = corpora_mod.list_corpora()
        bad = [c for c in corpora if c not in known]
        if bad:
            errors.append(f"corpora: unknown {bad}; registered corpora: {known}")
    prompts = p["prompts"]
    valid = scores_mod.prompt_ids()
    if not _is_str_list(prompts):
        errors.append(f"prompts={prompts!r}: give a list of prompt ids ([] = all 54)")
    else:
        bad = [x for x in prompts if x not in valid]
        if bad:
            errors.append(
                f"prompts: unknown id(s) {bad}; valid ids are <adjective>_<frame>_<style> (e.g. "
                f"'greatest_ever_one'); [] = all 54"
            )
        else:
            sel = prompts or valid
            per = {f: sum(scores_mod.framing_of(x) == f for x in sel) for f in scores_mod.FRAMINGS}
            if min(per.values()) < 2:
                errors.append(
                    f"prompts: the ANOVA needs at least two prompts per framing; this selection has {per}"
                )
    contrast = p["contrast"]
    if not _is_str_list(contrast) or len(contrast) != 2 or contrast[0] == contrast[1] or not all(contrast):
        errors.append(f"contrast={contrast!r}: give two different words, e.g. ['freedom', 'love']")
    if not _is_int(p["top_k"]) or p["top_k"] < 1:
        errors.append(f"top_k={p['top_k']!r}: give a positive integer")
    pm = p["planted_model"]
    if not isinstance(pm, str):
        errors.append(f"planted_model={pm!r}: give a registered causal LM, or '' to skip the validation")
    elif pm:
        if reg and pm not in lms:
            errors.append(f"planted_model={pm!r}: not a registered causal LM; registered: {lms} ('' = skip)")
        pw = p["planted_words"]
        if not _is_str_list(pw) or not pw or len(set(pw)) != len(pw) or not all(w.strip() for w in pw):
            errors.append(f"planted_words={pw!r}: give a list of distinct non-empty words")
        tp = p["planted_train_prompts"]
        if not _is_str_list(tp) or not tp or [x for x in tp if x not in valid]:
            errors.append(
                f"planted_train_prompts={tp!r}: give a non-empty list of prompt ids (e.g. 'best_world_please')"
            )
        if not _is_int(p["planted_steps"]) or p["planted_steps"] < 1:
            errors.append(f"planted_steps={p['planted_steps']!r}: give a positive integer")
        if (
            not isinstance(p["planted_lr"], int | float)
            or isinstance(p["planted_lr"], bool)
            or p["planted_lr"] <= 0
        ):
            errors.append(f"planted_lr={p['planted_lr']!r}: give a positive learning rate")
    if not _is_int(p["batch_size"]) or p["batch_size"] < 1:
        errors.append(f"batch_size={p['batch_size']!r}: give a positive integer")
    if not _is_int(p["seed"]) or p["seed"] < 0:
        errors.append(f"seed={p['seed']!r}: give a non-negative integer")
    if p["device"] not in ("auto", "cpu", "cuda"):
        errors.append(f"device={p['device']!r}: choose auto (cuda when available), cpu or cuda")
    if not _is_int(p["threads"]) or p["threads"] < 0:
        errors.append(
            f"threads={p['threads']!r}: give the number of CPU threads for torch (0 = torch's default)"
        )
    for key in ("corpora_run", "run_name"):
        if not isinstance(p[key], str) or not _NAME.match(p[key]):
            errors.append(f"{key}={p[key]!r}: give a run name of letters, digits, '_', '-', '.'")
    for key in ("output_dir", "results_root"):
        if not isinstance(p[key], str) or not p[key].strip():
            errors.append(
                f"{key}={p[key]!r}: give a folder path (relative paths are taken from the project root)"
            )
    if errors:
        raise ValueError("invalid implicit parameters:\n  - " + "\n  - ".join(errors))


# =========================================================================================================
# The stage
# =========================================================================================================


def corpus_labels(
    corpora: Sequence[str], corpora_run: str = "default", results_root: str | None = None
) -> pd.DataFrame:
    """``corpus, word, category, subcategory`` of the corpora, from the corpora stage's ``corpora.parquet``
    (raises ``FileNotFoundError`` saying to run that stage first)."""
    root = paths.resolve(results_root) if results_root is not None else paths.results_root()
    path = root / "corpora" / corpora_run / "corpora.parquet"
    if not path.is_file():
        raise FileNotFoundError(
            f"no corpora stage output at {path}: run the corpora stage (run {corpora_run!r}) first"
        )
    df = pd.read_parquet(path, columns=["corpus", "word", "category", "subcategory"])
    missing = [c for c in corpora if c not in set(df["corpus"])]
    if missing:
        raise ValueError(
            f"{path} holds no {missing}; run the corpora stage with these corpora (it holds {sorted(set(df['corpus']))})"
        )
    return df[df["corpus"].isin(list(corpora))].drop_duplicates().reset_index(drop=True)


@dataclass
class ImplicitResults:
    """Every table the stage produces (see :func:`run_implicit`)."""

    parameters: dict[str, Any]
    model_table: pd.DataFrame
    word_logprobs: pd.DataFrame
    word_rewards: pd.DataFrame
    token_rewards: pd.DataFrame
    alignment: pd.DataFrame
    collisions: pd.DataFrame
    medians: pd.DataFrame
    anova: pd.DataFrame
    posthocs: pd.DataFrame
    top_tokens: pd.DataFrame
    contrasts: pd.DataFrame
    recovery: pd.DataFrame
    planted_ranks: pd.DataFrame
    planted_losses: list[float]
    timings: dict[str, float] = field(default_factory=dict)
    engine_stats: dict[str, Any] = field(default_factory=dict)


def _prompt_format_of(p: Mapping[str, Any], model: str) -> str:
    fmt = p["prompt_format"]
    return fmt.get(model, "auto") if isinstance(fmt, Mapping) else fmt


def run_implicit(
    params: Mapping[str, Any], record: RunRecord | None = None, progress: bool = True
) -> ImplicitResults:
    """Run the chapter: log-probs of every model, implicit rewards of every pair, analyses, validation.

    Writes through ``record`` (if given): ``word_logprobs.parquet``, ``word_mwlr.parquet``,
    ``token_mwlr.parquet``, ``token_alignment.csv``, ``token_collisions.csv``, ``median_ranks.parquet``,
    ``anova.csv``, ``anova_posthocs.csv``, ``top_tokens.csv``, ``pair_contrasts.csv``,
    ``planted_recovery.csv``, ``planted_ranks.csv``; records models (with their prompt format), inputs, seeds.
    """
    import torch
    from tqdm.auto import tqdm

    check_parameters(dict(params))
    p = {**DEFAULT_PARAMETERS, **params}
    extra = list(p["extra_registry"])
    specs = {m: models_mod.get_spec(m, extra=extra) for m in p["models"]}
    families = {m: s.family for m, s in specs.items()}
    pairs = resolve_pairs(p["models"], p["pairs"], families)
    metrics = list(p["metrics"])
    timings: dict[str, float] = {}
    if p["threads"]:
        torch.set_num_threads(int(p["threads"]))
    device = p["device"] if p["device"] != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")

    def step(name: str) -> st._Timer:
        return st._Timer(name, timings, record)

    prompts_df = scores_mod.load_prompts()
    sel = p["prompts"] or scores_mod.prompt_ids()
    prompts_df = prompts_df.set_index("prompt_id").loc[sel].reset_index()
    prompts = dict(zip(prompts_df["prompt_id"], prompts_df["text"], strict=True))
    framing = dict(zip(prompts_df["prompt_id"], prompts_df["framing"], strict=True))
    labels = corpus_labels(p["corpora"], p["corpora_run"], p["results_root"])
    words = list(dict.fromkeys(labels["word"]))
    variants = contrast_variants(*p["contrast"])
    variant_texts = list(dict.fromkeys([*variants["text_a"], *variants["text_b"]]))

    # a token log ratio across tokenizers fails here, before any model is loaded
    tokenizers: dict[str, Any] = {}
    if "token_logratio" in metrics:
        with step("tokenizers"):
            tokenizers = {m: models_mod.load_tokenizer(specs[m]) for m in p["models"]}
            for a, b in pairs:
                require_same_tokenizer(tokenizers[a], tokenizers[b], a, b)

    word_frames, variant_frames, next_tok, model_rows, engine_stats = [], [], {}, [], {}
    for m in p["models"]:
        fmt = lp_mod.resolve_prompt_format(specs[m], _prompt_format_of(p, m))
        with step(f"load {m}"):
            eng = lp_mod.LogProbEngine.from_registry(
                specs[m], prompt_format=fmt, device=device, batch_size=p["batch_size"]
            )
        if record is not None:
            record.add_model(**models_mod.model_info(specs[m]), **eng.describe())
        model_rows.append({"model": m, "family": families[m], "type": specs[m].type, **eng.describe()})
        with step(f"next-token log-probs {m}"):
            next_tok[m] = eng.next_token_logprobs(prompts)
        with step(f"word log-probs {m}"):
            bar = tqdm(total=len(prompts), desc=f"{m}: words", disable=not progress)
            word_frames.append(
                eng.word_logprobs(prompts, words, p["include_end_of_turn"], progress=bar.update)
            )
            bar.close()
            variant_frames.append(
                eng.word_logprobs(prompts, variant_texts, p["include_end_of_turn"], separator="")
            )
        tokenizers.setdefault(m, eng.tokenizer)
        engine_stats[m] = {
            "forward_positions": eng.stats.forward_positions,
            "naive_positions": eng.stats.naive_positions,
            "seconds": round(eng.stats.seconds, 2),
        }
        del eng
    word_lp = pd.concat(word_frames, ignore_index=True)
    variant_lp = pd.concat(variant_frames, ignore_index=True)
    alignments: dict[tuple[str, str], VocabAlignment] = {}
    if any(m in TOKEN_METRICS for m in metrics):
        with step("align vocabularies"):
            for a, b in pairs:
                alignments[(a, b)] = align_vocabularies(tokenizers[a], tokenizers[b], a, b)

    with step("implicit rewards"):
        wr = word_rewards(word_lp, pairs) if pairs else pd.DataFrame(columns=WORD_PAIR_COLUMNS)
        tok_frames = []
        fr_list = [framing[x] for x in prompts]
        for (a, b), al in alignments.items():
            tok_frames.append(token_rewards(next_tok[a], next_tok[b], al, fr_list, pair_label(a, b)))
        tokens = (
            pd.concat(tok_frames, ignore_index=True) if tok_frames else pd.DataFrame(columns=TOKEN_COLUMNS)
        )
        alignment = pd.DataFrame([al.summary() for al in alignments.values()])
        collisions = (
            pd.concat(
                [al.collisions.assign(pair=pair_label(a, b)) for (a, b), al in alignments.items()],
                ignore_index=True,
            )
            if alignments
            else pd.DataFrame()
        )
    with step("median ranks and ANOVA"):
        parts = [median_ranks(scores_table(word_lp, labels, "logprob", family=families), "word_sum")]
        if "word_mean" in metrics:
            parts.append(
                median_ranks(scores_table(word_lp, labels, "logprob_mean", family=families), "word_mean")
            )
        for metric in ("word_mwlr", "word_logratio"):
            if metric in metrics and len(wr):
                parts.append(median_ranks(scores_table(wr, labels, metric.split("_", 1)[1], "pair"), metric))
        medians = pd.concat(parts, ignore_index=True)
        if len(p["models"]) >= 2:
            anova, posthocs = lm_anova(medians, p["models"])
        else:
            anova, posthocs = pd.DataFrame(), pd.DataFrame()
        top = (
            pd.concat(
                [
                    top_tokens(tokens, p["top_k"]).assign(filter="all tokens"),
                    top_tokens(tokens, p["top_k"], words_only=True).assign(filter="words only"),
                ],
                ignore_index=True,
            )
            if len(tokens)
            else pd.DataFrame()
        )
        contrasts = (
            pair_contrasts(variant_lp, pairs, *p["contrast"], framing=framing) if pairs else pd.DataFrame()
        )

    recovery, planted_ranks, losses = pd.DataFrame(), pd.DataFrame(), []
    if p["planted_model"]:
        with step("planted-word validation"):
            pspec = models_mod.get_spec(p["planted_model"], extra=extra)
            fmt = lp_mod.resolve_prompt_format(pspec, _prompt_format_of(p, p["planted_model"]))
            ref = lp_mod.LogProbEngine.from_registry(
                pspec, prompt_format=fmt, device=device, batch_size=p["batch_size"]
            )
            all_prompts = scores_mod.load_prompts().set_index("prompt_id")["text"]
            train = [all_prompts[x] for x in p["planted_train_prompts"]]
            eval_prompts = {k: v for k, v in prompts.items() if k not in set(p["planted_train_prompts"])}
            torch.manual_seed(int(p["seed"]))
            tuned_model, losses = plant_words(
                ref.model,
                ref.tokenizer,
                train,
                p["planted_words"],
                fmt,
                p["planted_steps"],
                float(p["planted_lr"]),
                int(p["seed"]),
            )
            tuned = lp_mod.LogProbEngine(
                tuned_model,
                ref.tokenizer,
                name=f"{pspec.name}+planted",
                prompt_format=fmt,
                batch_size=p["batch_size"],
            )
            # candidates: the words of the first corpus (the Big Two nouns by default) plus the planted words
            cand = list(dict.fromkeys(labels.loc[labels["corpus"] == p["corpora"][0], "word"]))
            known = word_lp[(word_lp["model"] == pspec.name) & (word_lp["prompt_format"] == fmt)]
            recovery, planted_ranks = planted_recovery(
                ref,
                tuned,
                eval_prompts,
                cand,
                p["planted_words"],
                p["include_end_of_turn"],
                reference_lp=known if len(known) else None,
            )
            recovery.insert(0, "model", pspec.name)
            del ref, tuned, tuned_model

    res = ImplicitResults(
        dict(p),
        pd.DataFrame(model_rows),
        word_lp.merge(labels, on="word", how="left"),
        wr,
        tokens,
        alignment,
        collisions,
        medians,
        anova,
        posthocs,
        top,
        contrasts,
        recovery,
        planted_ranks,
        losses,
        timings,
        engine_stats,
    )
    if record is not None:
        _record(record, res)
    return res


def _record(record: RunRecord, res: ImplicitResults) -> None:
    from . import corpora as corpora_mod
    from . import data
    from .data import sha256_file

    p = res.parameters
    record.add_input(scores_mod.PROMPTS_DATASET, data.get(scores_mod.PROMPTS_DATASET).sha256)
    for name, sha in corpora_mod.input_checksums(p["corpora"]).items():
        record.add_input(name, sha)
    path = paths.resolve(p["results_root"]) / "corpora" / p["corpora_run"] / "corpora.parquet"
    record.add_input(f"corpora/{p['corpora_run']}/corpora.parquet", sha256_file(path))
    record.seeds.setdefault("seed", int(p["seed"]))
    record.extra["engine"] = res.engine_stats
    record.extra["planted_losses"] = res.planted_losses
    wl = res.word_logprobs.copy()
    wl["framing"] = wl["prompt_id"].map(scores_mod.framing_of)
    record.write_parquet(wl, "word_logprobs.parquet")
    record.write_parquet(res.word_rewards, "word_mwlr.parquet")
    record.write_parquet(res.token_rewards, "token_mwlr.parquet")
    record.write_csv(res.alignment, "token_alignment.csv")
    coll = res.collisions.copy()
    for c in ("ids", "tokens"):
        if c in coll:
            coll[c] = coll[c].map(lambda v: " ".join(map(str, v)))
    record.write_csv(coll, "token_collisions.csv")
    record.write_parquet(res.medians, "median_ranks.parquet")
    record.write_csv(res.anova, "anova.csv")
    record.write_csv(res.posthocs, "anova_posthocs.csv")
    record.write_csv(res.top_tokens, "top_tokens.csv")
    record.write_csv(res.contrasts, "pair_contrasts.csv")
    record.write_csv(res.recovery, "planted_recovery.csv")
    record.write_csv(res.planted_ranks, "planted_ranks.csv")


# =========================================================================================================
# Figures and text
# =========================================================================================================


def quiet_loading() -> None:
    """No weight-loading progress bars from transformers (for the book's pages)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def plot_median_ranks(medians: pd.DataFrame, corpus: str, metric: str = "word_sum") -> Figure:
    """Mean (± SE over prompts) of each category's median rank per model and framing (paper Fig. 2)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    df = medians[
        (medians["corpus"] == corpus) & (medians["metric"] == metric) & (medians["analysis"] == "pooled")
    ]
    g = sns.catplot(
        data=df,
        x="category",
        y="median_rank",
        hue="model",
        col="framing",
        col_order=[f for f in ("positive", "negative") if f in set(df["framing"])],
        kind="point",
        errorbar="se",
        dodge=0.3 if df["model"].nunique() > 1 else False,
        height=3.2,
        aspect=1.3 if df["category"].nunique() <= 2 else 1.9,
    )
    g.set_axis_labels("", "median rank (1 = most probable)")
    for ax in g.axes.flat:
        ax.invert_yaxis()
        ax.tick_params(axis="x", rotation=30 if df["category"].nunique() > 2 else 0)
    g.figure.suptitle(f"{corpus}: {metric}", y=1.03)
    plt.close(g.figure)
    return g.figure


def plot_contrasts(contrasts: pd.DataFrame) -> Figure:
    """Lollipop of the word-pair contrast (MWLR of word a minus word b) per pair and variant (Fig. 3)."""
    import matplotlib.pyplot as plt

    df = contrasts[contrasts["framing"] == "all"].copy()
    df["label"] = df["pair"] + " | " + df["case"] + ", " + df["space"]
    from matplotlib.ticker import FormatStrFormatter

    a, b = df["text_a"].iloc[0].strip().lower(), df["text_b"].iloc[0].strip().lower()
    df = df.iloc[::-1]
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(df) + 1.5))
    y = np.arange(len(df))
    ax.hlines(y, 0, df["difference"], color="0.6")
    ax.scatter(df["difference"], y, color=np.where(df["difference"] > 0, "#0064E0", "#DB4437"), zorder=3)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(y, df["label"])
    ax.xaxis.set_major_formatter(FormatStrFormatter("%.1e"))
    ax.tick_params(axis="x", rotation=30)
    ax.set_xlabel(f"MWLR({a}) - MWLR({b}), mean over prompts")
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_recovery(recovery: pd.DataFrame) -> Figure:
    """R-precision and AUC of each metric in recovering the planted words."""
    import matplotlib.pyplot as plt

    df = recovery.copy()
    df["label"] = df["level"] + ": " + df["metric"]
    fig, axes = plt.subplots(1, 2, figsize=(8, 0.4 * len(df) + 1.2), sharey=True)
    for ax, col in zip(axes, ("r_precision", "auc"), strict=True):
        ax.barh(df["label"], df[col], color="#555")
        ax.set_xlim(0, 1)
        ax.set_xlabel(col.replace("_", "-"))
    axes[0].invert_yaxis()
    fig.tight_layout()
    plt.close(fig)
    return fig


def describe_recovery(recovery: pd.DataFrame) -> str:
    """One sentence per level naming the metric that recovers the planted words best."""
    if recovery.empty:
        return "The planted-word validation was skipped (planted_model = '')."
    out = []
    for level, grp in recovery.groupby("level", sort=False):
        best = grp.sort_values(["r_precision", "auc"], ascending=False).iloc[0]
        worst = grp.sort_values(["r_precision", "auc"]).iloc[0]
        out.append(
            f"At the {level} level, **{best['metric']}** recovers the planted words best (R-precision "
            f"{best['r_precision']:.2f}, AUC {best['auc']:.3f}, planted words' median rank "
            f"{best['median_rank_planted']:.0f} of {best['n_candidates']}); **{worst['metric']}** does worst "
            f"(R-precision {worst['r_precision']:.2f}, AUC {worst['auc']:.3f})."
        )
    return " ".join(out)


def describe_contrasts(contrasts: pd.DataFrame) -> str:
    """Where word a beats word b (positive mean MWLR difference), per pair, over the variants."""
    if contrasts.empty:
        return "No model pair: no contrast."
    df = contrasts[contrasts["framing"] == "all"]
    out = []
    for pair, grp in df.groupby("pair", sort=False):
        wins = int((grp["difference"] > 0).sum())
        a, b = grp["text_a"].iloc[0].strip().lower(), grp["text_b"].iloc[0].strip().lower()
        out.append(f"{pair}: *{a}* gets the higher MWLR than *{b}* in {wins} of {len(grp)} variants")
    return "; ".join(out) + "."


def describe_anova(anova: pd.DataFrame) -> str:
    """The model terms of the ANOVA in words."""
    if anova.empty:
        return "The ANOVA needs at least two models."
    out = []
    for corpus, grp in anova.groupby("corpus", sort=False):
        row = grp[grp["term"] == "C(category):C(framing):C(model)"]
        row2 = grp[grp["term"] == "C(category):C(model)"]
        bits = []
        for name, r in (("category x model", row2), ("category x framing x model", row)):
            if len(r):
                bits.append(f"{name} F = {r['F'].iloc[0]:.2f}, p = {r['p'].iloc[0]:.3g}")
        out.append(f"{corpus}: " + "; ".join(bits))
    return ". ".join(out) + "."
