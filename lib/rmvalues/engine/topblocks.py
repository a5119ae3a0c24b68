"""The top k transformer blocks of a decoder, run from hidden states cached below them.

A reward model adapts only its top ``k`` blocks (and its head) when everything below block ``L - k`` is frozen:
the hidden states entering block ``L - k`` are then fixed per sequence and can be computed once
(:meth:`TopBlocks.hidden_below`) and fed, in later passes, to the top blocks alone
(:meth:`TopBlocks.last_hidden`: the blocks, the final norm, the hidden state at each sequence's last real
token, i.e. what a sequence-classification head reads). The decoder's own forward runs the blocks (its
rotary position embeddings, causal and sliding-window masks, each block's attention type), with its block list
and per-block attention types cut to the top ``k`` for the call, so the computation is the decoder's, not a
copy of it. Sequences are right-padded; positions count from 0 at each sequence's first token.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from .attention import prefix_cache
from .forward import Layout, Prefix, continuation_inputs, forward_after_prefix, pad_rows

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PreTrainedModel

__all__ = ["TopBlocks", "decoder_of"]


def decoder_of(model: PreTrainedModel) -> Any:
    """The decoder stack (``.layers``, ``.norm``) of a causal LM or sequence classifier."""
    decoder = model.base_model
    if not (hasattr(decoder, "layers") and hasattr(decoder, "norm")):
        raise TypeError(f"{type(model).__name__} has no decoder with .layers and .norm")
    return decoder


class TopBlocks:
    """The top ``k`` blocks of ``model``'s decoder (``1 <= k <= L``); ``first = L - k`` is the block they
    start at, whose input :meth:`hidden_below` caches."""

    def __init__(self, model: PreTrainedModel, k: int) -> None:
        self.decoder = decoder_of(model)
        n = len(self.decoder.layers)
        if not 1 <= k <= n:
            raise ValueError(f"k must be between 1 and the {n} blocks of the model, got {k}")
        self.k = k
        self.first = n - k

    @property
    def blocks(self) -> list[torch.nn.Module]:
        """The top ``k`` blocks (the decoder's own modules)."""
        return list(self.decoder.layers)[self.first :]

    @contextmanager
    def _only_top(self) -> Iterator[None]:
        import torch

        decoder, cfg = self.decoder, self.decoder.config
        layers = decoder.layers
        types = cfg.layer_types if isinstance(getattr(cfg, "layer_types", None), list) else None
        decoder.layers = torch.nn.ModuleList(list(layers)[self.first :])
        if types is not None:
            cfg.layer_types = types[self.first :]
        try:
            yield
        finally:
            decoder.layers = layers
            if types is not None:
                cfg.layer_types = types

    def last_hidden(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(batch, hidden)``: the top blocks and the final norm run on ``hidden`` (``(batch, T, hidden)``,
        right-padded, the input of block ``first``), read at each sequence's last real token (``mask``:
        ``(batch, T)``, 1 for real tokens)."""
        import torch

        with self._only_top():
            out = self.decoder(inputs_embeds=hidden, attention_mask=mask, use_cache=False)
        last = mask.long().sum(dim=1) - 1
        return out.last_hidden_state[torch.arange(hidden.shape[0], device=hidden.device), last]

    def hidden_below(
        self,
        seqs: Sequence[Sequence[int]],
        pad_id: int,
        batch_size: int = 16,
        firsts: Sequence[int] | None = None,
        progress: Callable[[int], Any] | None = None,
    ) -> dict[int, list[np.ndarray]]:
        """The hidden states entering block ``first`` (and every block in ``firsts``) for each sequence:
        block -> one ``(len(seq), hidden)`` float32 array per sequence, in input order. One pass of the frozen
        decoder per batch (sequences sorted by length, right-padded)."""
        return self.hidden_below_and_last(seqs, pad_id, batch_size, firsts, progress)[0]

    def hidden_below_and_last(
        self,
        seqs: Sequence[Sequence[int]],
        pad_id: int,
        batch_size: int = 16,
        firsts: Sequence[int] | None = None,
        progress: Callable[[int], Any] | None = None,
    ) -> tuple[dict[int, list[np.ndarray]], np.ndarray]:
        """:meth:`hidden_below` and, from the same pass, the decoder's last hidden state (after the final
        norm) at each sequence's last real token, ``(n, hidden)`` float32: what a sequence-classification
        head reads, so one pass gives a probe's features and the depth arm's activations."""
        import torch

        wanted = sorted(set(firsts or [self.first]))
        out: dict[int, list[np.ndarray]] = {b: [np.empty(0)] * len(seqs) for b in wanted}
        last: np.ndarray | None = None
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        device = next(self.decoder.parameters()).device
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            ids, mask = pad_rows([seqs[i] for i in idx], pad_id, "right", device)
            with torch.no_grad():
                res = self.decoder(
                    input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False
                )
            for b in wanted:
                states = res.hidden_states[b].float().cpu().numpy()
                for row, i in enumerate(idx):
                    out[b][i] = states[row, : len(seqs[i])].copy()
            ends = mask.long().sum(dim=1) - 1
            picked = res.last_hidden_state[torch.arange(len(idx), device=device), ends].float().cpu().numpy()
            if last is None:
                last = np.empty((len(seqs), picked.shape[1]), dtype=np.float32)
            last[idx] = picked
            if progress is not None:
                progress(len(idx))
        return out, last if last is not None else np.empty((0, 0), dtype=np.float32)

    def hidden_below_after_prefix(
        self,
        prefix_ids: Sequence[int],
        continuations: Sequence[Sequence[int]],
        pad_id: int,
        batch_size: int = 16,
        firsts: Sequence[int] | None = None,
    ) -> dict[int, list[np.ndarray]]:
        """:meth:`hidden_below` of the sequences ``prefix_ids + continuation`` with the shared prefix run once
        (its keys and values reused for every continuation, as the scoring engine does): block -> one
        ``(len(prefix) + len(continuation), hidden)`` array per continuation, in input order."""
        import torch
        from transformers.cache_utils import DynamicCache

        wanted = sorted(set(firsts or [self.first]))
        device = next(self.decoder.parameters()).device
        layout = Layout.of(self.decoder)
        with torch.no_grad():  # the prefix once: its hidden states and its keys and values (encode_prefix's)
            head = torch.tensor([list(prefix_ids)], dtype=torch.long, device=device)
            cache = DynamicCache()  # no config: every layer keeps all prefix tokens (also sliding layers)
            res = self.decoder(input_ids=head, cache=cache, use_cache=True, output_hidden_states=True)
            pre = {b: res.hidden_states[b][0].float().cpu().numpy() for b in wanted}
            prefix = Prefix([(layer.keys, layer.values) for layer in cache.layers])
        out: dict[int, list[np.ndarray]] = {b: [np.empty(0)] * len(continuations) for b in wanted}
        order = sorted(range(len(continuations)), key=lambda i: len(continuations[i]))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            ids, mask = pad_rows([continuations[i] for i in idx], pad_id, "right", device)
            with torch.no_grad():
                res = forward_after_prefix(self.decoder, ids, mask, prefix, layout, output_hidden_states=True)
            for b in wanted:
                states = res.hidden_states[b].float().cpu().numpy()
                for row, i in enumerate(idx):
                    out[b][i] = np.concatenate([pre[b], states[row, : len(continuations[i])]])
        return out

    def last_hidden_after_prefix(
        self, prefix: torch.Tensor, continuations: Sequence[np.ndarray], batch_size: int = 64
    ) -> torch.Tensor:
        """:meth:`last_hidden` of the sequences ``prefix + continuation`` (hidden states entering block
        ``first``: ``prefix`` ``(P, hidden)``, each continuation ``(length, hidden)``) with the top blocks run
        once on the shared prefix and their keys and values reused for every continuation, as the scoring
        engine does for whole models: ``(n, hidden)`` in input order."""
        import torch
        from transformers.cache_utils import DynamicCache

        device = prefix.device
        out: torch.Tensor | None = None
        with self._only_top():
            cache = DynamicCache()
            self.decoder(inputs_embeds=prefix[None], cache=cache, use_cache=True)
            top_kv = [(layer.keys, layer.values) for layer in cache.layers[self.first :]]
            kv = [top_kv[0]] * self.first + top_kv  # the blocks keep their indices; below: placeholders
            p_len = int(prefix.shape[0])
            layout = Layout.of(self.decoder)
            order = sorted(range(len(continuations)), key=lambda i: len(continuations[i]))
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                rows = [continuations[i] for i in idx]
                width = max(len(r) for r in rows)
                hidden = torch.zeros((len(idx), width, prefix.shape[1]), dtype=prefix.dtype, device=device)
                mask = torch.zeros((len(idx), width), dtype=torch.long, device=device)
                for j, r in enumerate(rows):
                    hidden[j, : len(r)] = torch.as_tensor(np.asarray(r), dtype=prefix.dtype, device=device)
                    mask[j, : len(r)] = 1
                positions, masks = continuation_inputs(mask, p_len, layout)
                res = self.decoder(
                    inputs_embeds=hidden,
                    attention_mask=masks,
                    position_ids=positions,
                    cache=prefix_cache(kv),
                    use_cache=True,
                )
                ends = mask.sum(dim=1) - 1
                picked = res.last_hidden_state[torch.arange(len(idx), device=device), ends]
                if out is None:
                    out = torch.empty(
                        (len(continuations), picked.shape[1]), dtype=picked.dtype, device=device
                    )
                out[torch.as_tensor(idx, device=device)] = picked
        return out if out is not None else torch.empty((0, prefix.shape[1]), device=device)
