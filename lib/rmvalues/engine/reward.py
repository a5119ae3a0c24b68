"""Reward models scored exactly and fast: :class:`RewardScorer` (a prefix-cached, batched reward read-out).

**Speed.** The prefix is identical for every candidate of a prompt, so it is encoded once (batch 1,
:func:`rmvalues.engine.forward.encode_prefix`) and its keys and values are reused for all candidates; only
``candidate + suffix`` tokens go through the model, with position ids continuing after the prefix.
Candidates are bucketed by length (sorted, then batched) so a batch carries almost no padding. Three methods:

``full``
    the reference: the whole sequence for every candidate (no cache).
``prefix-cache``
    the model's own attention over the expanded prefix (:func:`rmvalues.engine.attention.prefix_cache`).
``shared-prefix``
    :func:`rmvalues.engine.attention.shared_prefix_attention`: the prefix as a shared GEMM operand.

``auto`` picks ``shared-prefix`` for stock transformers sequence-classification models (a ``score`` linear head
on a base model that dispatches through transformers' attention interface), else ``full``.

**Readout** (:meth:`RewardScorer.readout`). The base model's last hidden state is taken at the last *real*
token of each row (from the attention mask, never from the pad id, so a candidate that happens to be the pad
token is still read correctly and the padding side does not matter), and the registry's readout is applied:
``logits_squeeze`` (one-label head), ``logits_0`` (first logit of a multi-output head) or ``custom_score``
(the ``.score`` of a custom remote-code model; ``full`` method only). :meth:`RewardScorer.features` returns
the hidden states the head reads (same batches, same arithmetic), :meth:`RewardScorer.last_hidden` those of
whole sequences (to train heads on frozen features).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.params import AUTOMATIC_BATCH, resolve_batch_size
from .attention import (
    SHARED_PREFIX_ATTENTION,
    is_stock_classifier,
    register_shared_prefix_attention,
    shared_prefix_masks,
)
from .forward import (
    PADDING_SIDES,
    Layout,
    Prefix,
    encode_prefix,
    forward_after_prefix,
    forward_whole,
    last_real,
    pad_rows,
    positions_after,
)
from .inputs import ScoringError, TemplateSplit

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

METHODS = ("auto", "full", "prefix-cache", "shared-prefix")
READOUTS = ("logits_squeeze", "logits_0", "custom_score")


@dataclass
class ScoreStats:
    """Counters of one :meth:`RewardScorer.score` call (for manifests and benchmarks)."""

    candidates: int = 0
    batches: int = 0
    tokens: int = 0
    padded_tokens: int = 0
    prefix_tokens: int = 0
    seconds: float = 0.0
    method: str = ""
    batch_sizes: list[int] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.candidates / self.seconds if self.seconds > 0 else float("nan")


class RewardScorer:
    """Scores candidates for one RM: ``scorer.score(split, [ids, ...]) -> np.ndarray`` (float64).

    Parameters
    ----------
    model, tokenizer:
        A sequence-classification RM (``AutoModelForSequenceClassification``) and its configured tokenizer.
    readout:
        ``logits_squeeze`` | ``logits_0`` | ``custom_score`` (registry data).
    method:
        ``auto`` | ``full`` | ``prefix-cache`` | ``shared-prefix`` (see the module docstring).
    batch_size:
        candidates per forward pass, or 0 for automatic (64 on CPU; on CUDA the largest power of two that
        fits, found by halving after out-of-memory errors, starting at 4096); one meaning everywhere
        (:func:`rmvalues.core.params.resolve_batch_size`).
    padding_side:
        ``right`` | ``left``; the readout does not depend on it (tested).
    compile:
        run the shared-prefix suffix forward through ``torch.compile(base model, dynamic=True)`` (for GPUs).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        readout: str = "logits_squeeze",
        method: str = "auto",
        batch_size: int = AUTOMATIC_BATCH,
        padding_side: str = "right",
        compile: bool = False,
    ) -> None:
        import torch

        if readout not in READOUTS:
            raise ValueError(f"readout {readout!r}; valid: {', '.join(READOUTS)}")
        if method not in METHODS:
            raise ValueError(f"method {method!r}; valid: {', '.join(METHODS)}")
        if padding_side not in PADDING_SIDES:
            raise ValueError(f"padding_side {padding_side!r}; valid: {', '.join(PADDING_SIDES)}")
        self.model = model
        self.tokenizer = tokenizer
        self.readout_name = readout
        self.padding_side = padding_side
        self.device = next(model.parameters()).device
        stock = is_stock_classifier(model)
        if method == "auto":
            method = "shared-prefix" if stock and readout != "custom_score" else "full"
        if method != "full" and (not stock or readout == "custom_score"):
            raise ScoringError(
                f"method {method!r} needs a stock transformers sequence-classification model with a linear "
                f"`score` head (got {type(model).__name__}, readout {readout}); use method='full'"
            )
        self.method = method
        self.batch_size = resolve_batch_size(batch_size, self.device.type, cpu=64, cuda=4096)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.base = getattr(model, getattr(model, "base_model_prefix", "model"), model) if stock else None
        self.head = getattr(model, "score", None) if stock else None
        self.layout = Layout.of(model)
        self._attn = model.config._attn_implementation
        if method == "shared-prefix":
            register_shared_prefix_attention()
        self._forward = self.base
        if compile and self.base is not None:
            self._forward = torch.compile(self.base, dynamic=True)
        self._prefix_cache: dict[tuple[int, ...], Prefix] = {}
        self.last_stats = ScoreStats()

    # -- readout ----------------------------------------------------------------------------------------------
    def readout(self, hidden_last: torch.Tensor) -> torch.Tensor:
        """The reward from the hidden states at the last real tokens ``(n, hidden)``: the registry's
        readout of the linear ``score`` head (``logits_squeeze`` or ``logits_0``)."""
        logits = self.head(hidden_last.to(self.head.weight.dtype))
        if self.readout_name == "logits_squeeze" and logits.shape[-1] != 1:
            raise ScoringError(
                f"readout logits_squeeze needs a one-label head; this head has {logits.shape[-1]} outputs "
                "(use logits_0 for the first one)"
            )
        return logits[:, 0]

    # -- batches ----------------------------------------------------------------------------------------------
    def prefix(self, prefix_ids: tuple[int, ...]) -> Prefix:
        """The prefix's keys/values (the last prefix is kept: every candidate of a prompt reuses it)."""
        if prefix_ids not in self._prefix_cache:
            self._prefix_cache = {prefix_ids: encode_prefix(self.base, prefix_ids, self.device)}
        return self._prefix_cache[prefix_ids]

    def _suffix_hidden(self, ids: torch.Tensor, mask: torch.Tensor, prefix: Prefix) -> torch.Tensor:
        if self.method == "prefix-cache":
            return forward_after_prefix(self.base, ids, mask, prefix, self.layout).last_hidden_state
        p_len = prefix.length
        positions = positions_after(mask, p_len)
        config = self.model.config
        config._attn_implementation = SHARED_PREFIX_ATTENTION
        try:
            out = self._forward(
                ids,
                position_ids=positions,
                use_cache=False,
                rmv_prefix=prefix.kv,
                rmv_suffix_mask=mask,
                rmv_positions=positions,
                rmv_allowed=shared_prefix_masks(
                    p_len, mask, positions, self.layout.window, mask.shape[0], mask.shape[1], mask.device
                ),
            )
        finally:
            config._attn_implementation = self._attn
        return out.last_hidden_state

    def _score_batch(
        self, split: TemplateSplit, rows: Sequence[Sequence[int]], hidden_only: bool = False
    ) -> torch.Tensor:
        import torch

        if self.method == "full":
            ids, mask = pad_rows(
                [split.input_ids(r) for r in rows], self.pad_id, self.padding_side, self.device
            )
            if self.readout_name == "custom_score" or self.head is None:
                if hidden_only:
                    raise ScoringError("hidden states need a stock sequence-classification model")
                out = self.model(input_ids=ids, attention_mask=mask)
                if self.readout_name == "custom_score":
                    if not hasattr(out, "score"):
                        raise ScoringError(
                            f"readout custom_score: {type(self.model).__name__} output has no `.score` "
                            "(it needs the model's remote code: trust_remote_code: true and the hub files)"
                        )
                    return out.score.reshape(len(rows), -1)[:, 0].float()
                logits = out.logits
                return (logits[:, 0] if logits.ndim == 2 else logits.reshape(-1)).float()
            hidden = forward_whole(self.base, ids, mask, self.layout).last_hidden_state
        else:
            prefix = self.prefix(split.prefix_ids)
            ids, mask = pad_rows(
                [[*r, *split.suffix_ids] for r in rows], self.pad_id, self.padding_side, self.device
            )
            hidden = self._suffix_hidden(ids, mask, prefix)
        picked = hidden[torch.arange(hidden.shape[0], device=hidden.device), last_real(mask)]
        if hidden_only:
            return picked.float()
        return self.readout(picked).float()

    def score(
        self,
        split: TemplateSplit,
        candidates: Sequence[Sequence[int]],
        progress: Callable[[int], Any] | None = None,
    ) -> np.ndarray:
        """Rewards of ``candidates`` (token-id sequences) answering ``split``'s prompt, in input order."""
        return self._run(split, candidates, progress, hidden_only=False)

    def features(
        self,
        split: TemplateSplit,
        candidates: Sequence[Sequence[int]],
        progress: Callable[[int], Any] | None = None,
    ) -> np.ndarray:
        """The hidden states the head reads (last real token of each input), ``(n, hidden)`` float32, in input
        order: the same batches and the same arithmetic as :meth:`score`, without the head."""
        return self._run(split, candidates, progress, hidden_only=True)

    def _run(
        self,
        split: TemplateSplit,
        candidates: Sequence[Sequence[int]],
        progress: Callable[[int], Any] | None,
        hidden_only: bool,
    ) -> np.ndarray:
        import torch

        n = len(candidates)
        out: np.ndarray | None = None if hidden_only else np.empty(n, dtype=np.float64)
        stats = ScoreStats(candidates=n, method=self.method)
        if n == 0:
            self.last_stats = stats
            return out if out is not None else np.empty((0, 0), dtype=np.float32)
        order = sorted(range(n), key=lambda i: (len(candidates[i]), i))
        start = time.perf_counter()
        i = 0
        with torch.inference_mode():
            if self.method != "full":
                self.prefix(split.prefix_ids)
                stats.prefix_tokens = len(split.prefix_ids)
            while i < n:
                idx = order[i : i + self.batch_size]
                rows = [candidates[j] for j in idx]
                try:
                    values = self._score_batch(split, rows, hidden_only).cpu().numpy()
                except torch.OutOfMemoryError:
                    if self.batch_size == 1:
                        raise
                    self.batch_size = max(1, self.batch_size // 2)
                    log.warning("out of memory: batch size -> %d", self.batch_size)
                    if self.device.type == "cuda":
                        torch.cuda.empty_cache()
                    continue
                if out is None:
                    out = np.empty((n, values.shape[1]), dtype=np.float32)
                out[idx] = values
                extra = len(split.suffix_ids) + (len(split.prefix_ids) if self.method == "full" else 0)
                stats.batches += 1
                stats.batch_sizes.append(len(rows))
                stats.tokens += sum(len(r) for r in rows)
                stats.padded_tokens += (max(len(r) for r in rows) + extra) * len(rows)
                i += len(idx)
                if progress is not None:
                    progress(len(idx))
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        stats.seconds = time.perf_counter() - start
        self.last_stats = stats
        return out

    def last_hidden(
        self,
        sequences: Sequence[Sequence[int]],
        batch_size: int | None = None,
        progress: Callable[[int], Any] | None = None,
    ) -> np.ndarray:
        """The base model's last hidden state at the last token of each whole sequence (no head), float32,
        in input order. Batched by length like :meth:`score` (``batch_size`` overrides the scorer's); used to
        train reward heads on frozen features. ``progress(n)`` is called after each batch."""
        import torch

        if self.base is None:
            raise ScoringError("last_hidden needs a stock sequence-classification model")
        size = batch_size or self.batch_size
        order = sorted(range(len(sequences)), key=lambda i: (len(sequences[i]), i))
        out: np.ndarray | None = None
        with torch.inference_mode():
            for start in range(0, len(order), size):
                idx = order[start : start + size]
                ids, mask = pad_rows([sequences[j] for j in idx], self.pad_id, self.padding_side, self.device)
                hidden = forward_whole(self.base, ids, mask, self.layout).last_hidden_state
                picked = hidden[torch.arange(hidden.shape[0], device=hidden.device), last_real(mask)]
                values = picked.float().cpu().numpy()
                if out is None:
                    out = np.empty((len(sequences), values.shape[1]), dtype=np.float32)
                out[idx] = values
                if progress is not None:
                    progress(len(idx))
        return out if out is not None else np.empty((0, 0), dtype=np.float32)

    def clear(self) -> None:
        """Drop the cached prefix keys/values."""
        self._prefix_cache = {}


def rank_correlation(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation of two score vectors (NaN when either is constant)."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return math.nan
    return float(spearmanr(a, b).statistic)
