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
        import torch

        wanted = sorted(set(firsts or [self.first]))
        out: dict[int, list[np.ndarray]] = {b: [np.empty(0)] * len(seqs) for b in wanted}
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        device = next(self.decoder.parameters()).device
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            width = max(len(seqs[i]) for i in idx)
            ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                ids[row, : len(seqs[i])] = torch.as_tensor(list(seqs[i]))
                mask[row, : len(seqs[i])] = 1
            with torch.no_grad():
                res = self.decoder(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    output_hidden_states=True,
                    use_cache=False,
                )
            for b in wanted:
                states = res.hidden_states[b].float().cpu().numpy()
                for row, i in enumerate(idx):
                    out[b][i] = states[row, : len(seqs[i])].copy()
            if progress is not None:
                progress(len(idx))
        return out
