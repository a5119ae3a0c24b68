"""The implicit-reward metrics and the alignment of two vocabularies (the paper's Section 4).

At the optimum of KL-regularised RL a tuned policy is ``pi_r(y|x) ∝ pi_ref(y|x) exp(r(x, y) / beta)``, so
``r(x, y) = c(x) + beta log pi_r(y|x) / pi_ref(y|x)``: a log-probability ratio between two models is itself a
reward model. ``p`` is the reference (the first model of a pair), ``q`` the second.

* :func:`log_ratio`: DPO-style ``log q - log p``;
* :func:`mwlr`: the paper's mixture-weighted log ratio ``1/2 (p + q) (log q - log p)`` (raw ratios are
  dominated by improbable tail tokens; the mixture weight damps them).

Token-level metrics across tokenizers compare the *shared vocabulary*: tokens are aligned by their decoded
string (:func:`align_vocabularies`; ``Ġ``/``▁`` read as a space, special and partial-byte tokens left out);
when several ids of one tokenizer decode to the same string (a collision), the string gets the *maximum* of
their log-probabilities (``duplicates="max"``, the paper's rule) or the sum of their probabilities
(``duplicates="sum"``; :func:`collapse_logprobs`), and every collision is reported. ``token_logratio`` needs
one shared tokenizer (:func:`require_same_tokenizer`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ...core.errors import RmvaluesError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "DUPLICATE_RULES",
    "TokenizerMismatchError",
    "VocabAlignment",
    "align_vocabularies",
    "collapse_logprobs",
    "log_ratio",
    "mwlr",
    "require_same_tokenizer",
    "same_tokenizer",
    "token_strings",
]


#: How the log-probabilities of several token ids with the same decoded string are combined: ``max`` (the
#: paper's rule: the most probable id stands for the string) or ``sum`` (the string's total probability).
DUPLICATE_RULES = ("max", "sum")


class TokenizerMismatchError(RmvaluesError, ValueError):
    """A token-level metric that needs one shared tokenizer was asked of two models with different ones."""


def log_ratio(logp: Any, logq: Any) -> Any:
    """``log q - log p`` (elementwise; numpy arrays, tensors or floats)."""
    return logq - logp


def mwlr(logp: Any, logq: Any) -> Any:
    """Mixture-weighted log ratio ``1/2 (p + q) (log q - log p)`` from log-probabilities (elementwise)."""
    if hasattr(logp, "exp") and not isinstance(logp, np.ndarray):  # torch tensors
        return 0.5 * (logp.exp() + logq.exp()) * (logq - logp)
    logp, logq = np.asarray(logp, dtype=float), np.asarray(logq, dtype=float)
    return 0.5 * (np.exp(logp) + np.exp(logq)) * (logq - logp)


def collapse_logprobs(
    logprobs: torch.Tensor, group: torch.Tensor, n_groups: int, rule: str = "max"
) -> torch.Tensor:
    """Log-probabilities ``(n, vocab)`` combined into ``n_groups`` strings: ``group[i]`` is the string of id
    ``i`` (``-1`` = none). ``rule="max"``: a string's log-prob is the maximum over its ids; ``"sum"``: the log of
    the summed probabilities. Returns float64 ``(n, n_groups)`` (``-inf`` for a string without ids)."""
    import torch

    if rule not in DUPLICATE_RULES:
        raise ValueError(f"duplicates={rule!r}; valid: {', '.join(DUPLICATE_RULES)}")
    keep = group >= 0
    idx = group[keep]
    src = logprobs[:, keep].double()
    if rule == "max":
        out = torch.full((logprobs.shape[0], n_groups), -torch.inf, dtype=torch.float64)
        return out.scatter_reduce(1, idx.expand(src.shape[0], -1), src, reduce="amax", include_self=True)
    out = torch.zeros((logprobs.shape[0], n_groups), dtype=torch.float64)
    out.index_add_(1, idx, src.exp())
    return out.log()


def _bytes_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet read backwards: character -> byte."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {v: k for k, v in bytes_to_unicode().items()}


def _is_byte_level(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the tokenizer is byte-level BPE (its decoder or pre-tokenizer is ``ByteLevel``)."""
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
    several ids of one tokenizer decode to; ``duplicates`` says how their log-probabilities are combined
    (:func:`collapse_logprobs`: ``max``, the paper's rule, or ``sum``).
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
    duplicates: str = "max"

    @property
    def n_shared(self) -> int:
        """Number of shared strings."""
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
            "duplicates": self.duplicates,
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
        """Log-probabilities ``(n, vocab)`` of one side combined into the shared strings by the
        ``duplicates`` rule: ``(n, n_shared)``."""
        import torch

        group = torch.as_tensor(self.group_p if side == "p" else self.group_q, dtype=torch.long)
        if logprobs.shape[-1] < len(group):
            group = group[: logprobs.shape[-1]]
        elif logprobs.shape[-1] > len(
            group
        ):  # model vocab padded beyond the tokenizer: those ids never align
            group = torch.cat([group, torch.full((logprobs.shape[-1] - len(group),), -1, dtype=torch.long)])
        return collapse_logprobs(logprobs, group, self.n_shared, self.duplicates)


def same_tokenizer(tok_p: PreTrainedTokenizerBase, tok_q: PreTrainedTokenizerBase) -> bool:
    """Whether two tokenizers are one (the same object, or the same vocabulary id for id)."""
    return tok_p is tok_q or (len(tok_p) == len(tok_q) and tok_p.get_vocab() == tok_q.get_vocab())


def align_vocabularies(
    tok_p: PreTrainedTokenizerBase,
    tok_q: PreTrainedTokenizerBase,
    model_p: str = "p",
    model_q: str = "q",
    duplicates: str = "max",
) -> VocabAlignment:
    """Align two vocabularies by decoded token string (:func:`token_strings`).

    Identical tokenizers are aligned id by id (no collisions). Otherwise every string both tokenizers can
    produce is shared; ids of one tokenizer that decode to the same string are a collision (reported; their
    log-probabilities combined by ``duplicates``: ``max``, the paper's rule, or ``sum``). Raises
    ``ValueError`` when nothing is shared.
    """
    if duplicates not in DUPLICATE_RULES:
        raise ValueError(f"duplicates={duplicates!r}; valid: {', '.join(DUPLICATE_RULES)}")
    if same_tokenizer(tok_p, tok_q):
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
            model_p=model_p,
            model_q=model_q,
            strings=labels,
            group_p=group,
            group_q=group.copy(),
            identical=True,
            collisions=empty,
            n_vocab_p=len(tok_p),
            n_vocab_q=len(tok_q),
            n_alignable_p=len(ids),
            n_alignable_q=len(ids),
            duplicates=duplicates,
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
        model_p=model_p,
        model_q=model_q,
        strings=shared,
        group_p=groups[0],
        group_q=groups[1],
        identical=False,
        collisions=coll,
        n_vocab_p=len(tok_p),
        n_vocab_q=len(tok_q),
        n_alignable_p=sum(s is not None for s in strings_p),
        n_alignable_q=sum(s is not None for s in strings_q),
        duplicates=duplicates,
    )


def require_same_tokenizer(
    tok_p: PreTrainedTokenizerBase, tok_q: PreTrainedTokenizerBase, model_p: str, model_q: str
) -> None:
    """Raise :class:`TokenizerMismatchError` (explaining the alternatives) unless the tokenizers are the same."""
    if not same_tokenizer(tok_p, tok_q):
        raise TokenizerMismatchError(
            f"token_logratio compares the probabilities two models give the SAME token ids, but {model_p!r} "
            f"({len(tok_p)} tokens) and {model_q!r} ({len(tok_q)} tokens) have different tokenizers, so a token "
            "id means different text in each. Use word_logratio (the same log ratio on whole words, any "
            "tokenizers) or token_mwlr (aligns the shared vocabulary by decoded string)"
        )
