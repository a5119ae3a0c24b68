"""Attention over a shared prompt prefix, and masks built from true positions.

The prompt prefix is identical for every candidate answer, so its keys and values are computed once (batch 1,
:func:`rmvalues.engine.forward.encode_prefix`) and reused by every candidate. Two ways to attend to it:

``prefix-cache``
    :func:`prefix_cache`: a :class:`transformers.Cache` whose layers hand ``cat(prefix.expand(B), new)`` to
    the model's own attention (sdpa/eager), without storing the copy; masks from :func:`explicit_masks`.
``shared-prefix``
    :func:`shared_prefix_attention`, registered with transformers' attention interface: each candidate's
    queries attend to the batch-1 prefix keys directly (one GEMM per layer with the prefix as the shared
    operand; no per-candidate copy), plus a causal, padding-masked attention among the suffix tokens;
    softmax over both parts jointly (exact). Handles grouped-query attention and Gemma 2's attention-logit
    soft-capping.

Masks are built from positions, not indices, so sliding-window layers (Gemma 2/3) stay exact:
:func:`layer_layout` reads a config's window and layer types.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .inputs import ScoringError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PreTrainedModel

#: Name under which the shared-prefix attention function is registered with transformers.
SHARED_PREFIX_ATTENTION = "rmvalues_shared_prefix"


def shared_prefix_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    softcap: float | None = None,
    sliding_window: int | None = None,
    rmv_prefix: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
    rmv_suffix_mask: torch.Tensor | None = None,
    rmv_positions: torch.Tensor | None = None,
    rmv_allowed: dict[str, torch.Tensor] | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention of a batch of suffixes to one shared prefix (keys/values of batch 1) and to themselves.

    ``query``: (B, Hq, S, D), ``key``/``value``: (B, Hkv, S, D) of the suffix tokens; ``rmv_prefix[layer]``:
    the prefix keys/values (1, Hkv, P, D) at positions 0..P-1; ``rmv_suffix_mask``: (B, S), 1 for real tokens;
    ``rmv_positions``: (B, S) absolute positions of the suffix tokens (for sliding windows); ``rmv_allowed``:
    the boolean masks of :func:`shared_prefix_masks`, computed once per forward (else here, per layer). Scores
    over prefix and suffix are soft-maxed jointly in float32 (exact, like eager attention). Returns
    (B, S, Hq, D).
    """
    import torch

    if rmv_prefix is None:
        raise ScoringError("shared-prefix attention called without the prefix keys/values")
    pk, pv = rmv_prefix[module.layer_idx]
    bsz, n_q, s_len, dim = query.shape
    n_kv = key.shape[1]
    groups = n_q // n_kv
    p_len = pk.shape[-2]
    scaling = dim**-0.5 if scaling is None else scaling
    q = query.reshape(bsz, n_kv, groups, s_len, dim)
    # prefix part: one batched GEMM per kv head, the prefix being the shared operand (no per-row copy)
    q_flat = q.permute(1, 0, 2, 3, 4).reshape(n_kv, bsz * groups * s_len, dim)
    s_pre = torch.bmm(q_flat, pk[0].transpose(1, 2)).reshape(n_kv, bsz, groups, s_len, p_len)
    s_pre = s_pre.permute(1, 0, 2, 3, 4)
    s_suf = torch.matmul(q, key.unsqueeze(2).transpose(-1, -2))  # (B, Hkv, g, S, S)
    scores = torch.cat([s_pre, s_suf], dim=-1).float() * scaling
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if rmv_allowed is None:
        rmv_allowed = shared_prefix_masks(
            p_len, rmv_suffix_mask, rmv_positions, sliding_window, bsz, s_len, query.device
        )
    allowed = rmv_allowed["sliding" if sliding_window is not None and "sliding" in rmv_allowed else "full"]
    scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    probs = torch.softmax(scores, dim=-1).to(value.dtype)
    p_pre, p_suf = probs[..., :p_len], probs[..., p_len:]
    p_flat = p_pre.permute(1, 0, 2, 3, 4).reshape(n_kv, bsz * groups * s_len, p_len)
    out = torch.bmm(p_flat, pv[0]).reshape(n_kv, bsz, groups, s_len, dim).permute(1, 0, 2, 3, 4)
    out = out + torch.matmul(p_suf, value.unsqueeze(2))
    return out.reshape(bsz, n_q, s_len, dim).transpose(1, 2).contiguous(), None


def shared_prefix_masks(
    p_len: int,
    suffix_mask: torch.Tensor | None,
    positions: torch.Tensor | None,
    window: int | None,
    bsz: int,
    s_len: int,
    device: Any,
) -> dict[str, torch.Tensor]:
    """Boolean (B, 1, 1, S, P + S) masks of what each suffix query may attend to: every prefix token (within
    ``window`` in sliding layers), earlier real suffix tokens, and itself (padded rows stay finite)."""
    import torch

    idx = torch.arange(s_len, device=device)
    eye = torch.eye(s_len, dtype=torch.bool, device=device).view(1, s_len, s_len)
    suf = (idx.view(1, s_len, 1) >= idx.view(1, 1, s_len)).expand(bsz, s_len, s_len)
    if suffix_mask is not None:
        suf = suf & suffix_mask.bool().view(bsz, 1, s_len)
    pre = torch.ones(bsz, s_len, p_len, dtype=torch.bool, device=device)
    out = {"full": torch.cat([pre, suf | eye], dim=-1).view(bsz, 1, 1, s_len, p_len + s_len)}
    if window is not None and positions is not None:
        near = (positions.view(bsz, s_len, 1) - positions.view(bsz, 1, s_len)) < window
        p_idx = torch.arange(p_len, device=device)
        pre_w = (positions.view(bsz, s_len, 1) - p_idx.view(1, 1, p_len)) < window
        sliding = torch.cat([pre_w, (suf & near) | eye], dim=-1)
        out["sliding"] = sliding.view(bsz, 1, 1, s_len, p_len + s_len)
    return out


def register_shared_prefix_attention() -> None:
    """Register :func:`shared_prefix_attention` with transformers' attention interface (idempotent)."""
    from transformers import AttentionInterface

    AttentionInterface.register(SHARED_PREFIX_ATTENTION, shared_prefix_attention)


def prefix_cache(prefix: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> Any:
    """A transformers Cache whose layers return ``cat(prefix.expand(B), new)`` and store nothing."""
    from transformers.cache_utils import Cache, DynamicLayer

    class _PrefixLayer(DynamicLayer):
        def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
            super().__init__()
            self.keys, self.values = keys, values
            self.device = keys.device
            self.is_initialized = True

        def update(self, key_states, value_states, *args, **kwargs):  # type: ignore[override]
            import torch

            b = key_states.shape[0]
            keys = torch.cat([self.keys.expand(b, -1, -1, -1), key_states], dim=-2)
            values = torch.cat([self.values.expand(b, -1, -1, -1), value_states], dim=-2)
            return keys, values

        def get_mask_sizes(self, query_length):  # type: ignore[override]
            return self.keys.shape[-2] + query_length, 0

    return Cache(layers=[_PrefixLayer(k, v) for k, v in prefix])


def explicit_masks(
    q_pos: torch.Tensor,
    kv_pos: torch.Tensor,
    kv_real: torch.Tensor,
    q_offset: int,
    window: int | None,
    layer_types: Sequence[str] | None,
    dtype: torch.dtype,
) -> Any:
    """Additive 4D attention masks (B, 1, Q, K) built from true positions, not from indices.

    A query attends to real keys at positions <= its own (and, in sliding layers, less than ``window`` back),
    and always to itself (so padded rows stay finite). Returns one mask, or ``{layer type: mask}`` when the
    model has sliding layers (Gemma 2/3 accept such a mapping).
    """
    import torch

    q_len, k_len = q_pos.shape[1], kv_pos.shape[1]
    allowed = kv_real.bool()[:, None, :] & (kv_pos[:, None, :] <= q_pos[:, :, None])
    diag = torch.zeros(q_len, k_len, dtype=torch.bool, device=q_pos.device)
    diag[torch.arange(q_len), q_offset + torch.arange(q_len)] = True
    neg = torch.finfo(dtype).min

    def additive(ok: torch.Tensor) -> torch.Tensor:
        ok = ok | diag[None]
        zero = torch.zeros((), dtype=dtype, device=q_pos.device)
        return torch.where(ok, zero, torch.tensor(neg, dtype=dtype, device=q_pos.device))[:, None]

    full = additive(allowed)
    if window is None or not layer_types or "sliding_attention" not in layer_types:
        return full
    near = (q_pos[:, :, None] - kv_pos[:, None, :]) < window
    return {"full_attention": full, "sliding_attention": additive(allowed & near)}


def is_stock_classifier(model: PreTrainedModel) -> bool:
    import torch

    head = getattr(model, "score", None)
    base = getattr(model, getattr(model, "base_model_prefix", "model"), None)
    return (
        isinstance(head, torch.nn.Linear)
        and base is not None
        and type(model).__module__.startswith("transformers.models.")
        and getattr(model, "_supports_attention_backend", True)
    )


def layer_layout(config: Any) -> tuple[int | None, list[str] | None]:
    """``(sliding window, layer types)`` of a model config (``(None, None)`` without sliding layers)."""
    cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    window = getattr(cfg, "sliding_window", None)
    layer_types = getattr(cfg, "layer_types", None)
    if window and layer_types and "sliding_attention" in layer_types:
        return int(window), list(layer_types)
    return None, None
