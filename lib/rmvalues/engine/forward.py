"""The one forward engine: batches of token rows, a prompt prefix encoded once, and forwards after it.

Every model call of the project that scores candidates or computes log-probabilities goes through here:

* :func:`pad_rows` pads token rows into a batch (left or right) with an attention mask; :func:`last_real`
  finds each row's last real token from the mask (never from the pad id); :func:`positions_after` gives the
  true positions of a padded batch that continues after ``offset`` prefix tokens.
* :func:`encode_prefix` runs a prompt prefix once (batch 1): the keys and values of every layer (each layer
  keeps all prefix tokens, sliding layers too) and, for a causal LM, the log-probabilities of the first
  answer token. Gradients follow the caller's context (``torch.inference_mode()`` for scoring, enabled for
  the planted-word fine-tune).
* :func:`forward_after_prefix` runs a padded batch of continuations after a cached prefix (the prefix expanded
  along the batch, not copied; explicit position-based masks, so sliding-window layers stay exact);
  :func:`forward_whole` runs whole sequences with the same masks and positions.

:class:`Layout` holds what the masks need from a model: its sliding window, layer types and dtype.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .attention import explicit_masks, layer_layout, prefix_cache

if TYPE_CHECKING:  # pragma: no cover
    import torch

PADDING_SIDES = ("right", "left")


@dataclass(frozen=True)
class Layout:
    """What attention masks need from a model: sliding window, layer types (None without sliding layers)
    and the dtype of the additive masks."""

    window: int | None
    layer_types: list[str] | None
    dtype: Any

    @classmethod
    def of(cls, model: Any) -> Layout:
        window, layer_types = layer_layout(model.config)
        return cls(window, layer_types, next(model.parameters()).dtype)


@dataclass
class Prefix:
    """A prompt prefix run once: per-layer ``(keys, values)`` of shape (1, heads, length, dim), and for a
    causal LM the log-probabilities of the first answer token (float32, ``(vocab,)``)."""

    kv: list[tuple[Any, Any]]
    first_logprobs: Any = None

    @property
    def length(self) -> int:
        return int(self.kv[0][0].shape[-2])


def pad_rows(
    rows: Sequence[Sequence[int]], pad_id: int, padding_side: str = "right", device: Any = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, mask)`` long tensors of a padded batch (mask 1 for real tokens) on ``device``."""
    import torch

    if padding_side not in PADDING_SIDES:
        raise ValueError(f"padding_side {padding_side!r}; valid: {', '.join(PADDING_SIDES)}")
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    width = int(lengths.max())
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    cols = np.arange(width)
    if padding_side == "right":
        mask = cols[None, :] < lengths[:, None]
    else:
        mask = cols[None, :] >= (width - lengths)[:, None]
    ids[mask] = np.fromiter((t for r in rows for t in r), dtype=np.int64, count=int(lengths.sum()))
    ids_t = torch.from_numpy(ids).to(device, non_blocking=True)
    mask_t = torch.from_numpy(mask.astype(np.int64)).to(device, non_blocking=True)
    return ids_t, mask_t


def last_real(mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last real token (from the attention mask; any padding side)."""
    import torch

    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return torch.where(mask.bool(), positions, -1).max(dim=1).values


def positions_after(mask: torch.Tensor, offset: int) -> torch.Tensor:
    """True positions of a padded batch whose first real token follows ``offset`` prefix tokens."""
    return (offset + mask.cumsum(dim=1) - 1).clamp(min=offset)


def encode_prefix(
    module: Any, prefix_ids: Sequence[int], device: Any, next_token_logprobs: bool = False
) -> Prefix:
    """Run ``prefix_ids`` once (batch 1) through ``module``: a base model, or a causal LM when
    ``next_token_logprobs`` (then the LM head runs at the last position only)."""
    import torch
    from transformers.cache_utils import DynamicCache

    ids = torch.tensor([list(prefix_ids)], dtype=torch.long, device=device)
    cache = DynamicCache()  # no config: every layer keeps all prefix tokens (also sliding layers)
    if next_token_logprobs:
        out = module(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
        first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
    else:
        module(ids, cache=cache, use_cache=True)
        first = None
    return Prefix([(layer.keys, layer.values) for layer in cache.layers], first)


def continuation_inputs(mask: torch.Tensor, p_len: int, layout: Layout) -> tuple[torch.Tensor, Any]:
    """What a padded batch of continuations after a prefix of ``p_len`` tokens needs besides its tokens:
    position ids that continue after the prefix, and the explicit masks over prefix + continuation."""
    import torch

    positions = positions_after(mask, p_len)
    prefix_pos = torch.arange(p_len, device=mask.device).expand(mask.shape[0], p_len)
    masks = explicit_masks(
        positions,
        torch.cat([prefix_pos, positions], dim=1),
        torch.cat([torch.ones_like(prefix_pos), mask], dim=1),
        p_len,
        layout.window,
        layout.layer_types,
        layout.dtype,
    )
    return positions, masks


def forward_after_prefix(
    module: Any, ids: torch.Tensor, mask: torch.Tensor, prefix: Prefix, layout: Layout, **extra: Any
) -> Any:
    """``module``'s output for a padded batch of continuations after ``prefix`` (position ids continue
    after it; explicit masks over prefix + continuation); ``extra`` goes to the module (e.g.
    ``output_hidden_states=True``)."""
    positions, masks = continuation_inputs(mask, prefix.length, layout)
    return module(
        input_ids=ids,
        attention_mask=masks,
        position_ids=positions,
        cache=prefix_cache(prefix.kv),
        use_cache=True,
        **extra,
    )


def forward_whole(module: Any, ids: torch.Tensor, mask: torch.Tensor, layout: Layout) -> Any:
    """``module``'s output for a padded batch of whole sequences (explicit masks and true positions, so any
    padding side gives the same result)."""
    positions = positions_after(mask, 0)
    masks = explicit_masks(positions, positions, mask, 0, layout.window, layout.layer_types, layout.dtype)
    return module(input_ids=ids, attention_mask=masks, position_ids=positions, use_cache=False)
