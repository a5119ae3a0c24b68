"""The scoring engine: token-exact RM inputs and a prefix-cached, batched reward readout.

**Token-exact inputs.** The conversation ``[user: prompt, assistant: SENTINEL]`` is rendered with the RM's own
chat template (``apply_chat_template``), split at the sentinel, and the two halves are tokenized *without* added
special tokens (:func:`split_template`). A candidate's token ids are inserted between them, so every input is
``prefix_ids + candidate_ids + suffix_ids``: the template's BOS exactly once (never a second one from the
tokenizer), and candidate ids that are never decoded to text and re-encoded.

Two kinds of candidates:

* **words** (:func:`word_candidates`): the ids a word has *where it stands in the rendered conversation*, i.e.
  the middle part of ``tokenizer(prefix_text + word + suffix_text)`` when that tokenization keeps the prefix
  and suffix ids intact (``how = "in-context"``; always the case for the supported templates, whose assistant
  header ends in a newline or a special token). This settles the leading-space question the way the RM would
  see a typed answer: the answer starts a new line, so BPE tokenizers (Llama 3, SmolLM) use the bare form
  (``honesty``, not ``Ġhonesty``) and SentencePiece tokenizers (Gemma) whatever their normalizer yields at the
  start of a line. Where the word would merge with the template text around it, the bare tokenization
  ``tokenizer(word)`` is used and flagged ``how = "bare"``.
* **vocab** (:func:`vocab_candidates`): every single token id of the vocabulary (exhaustive mode, as in the
  predecessor paper), inserted as one id, special tokens excluded unless asked for.

**Speed.** The prefix is identical for every candidate of a prompt, so it is encoded once (batch 1) and its
keys and values are reused for all candidates (:class:`RewardScorer`); only ``candidate + suffix`` tokens go
through the model, with position ids continuing after the prefix. Candidates are bucketed by length (sorted,
then batched) so a batch carries almost no padding. Three methods:

``full``
    the reference: the whole sequence for every candidate (no cache).
``prefix-cache``
    a :class:`transformers.Cache` whose layers hold the batch-1 prefix keys/values and hand
    ``cat(prefix.expand(B), new)`` to the model's own attention (sdpa/eager), without storing the copy.
``shared-prefix``
    a registered attention function that attends each candidate's queries to the batch-1 prefix keys
    directly (one GEMM per layer with the prefix as the shared operand; no per-candidate copy of the prefix),
    plus a causal, padding-masked attention among the suffix tokens; softmax over both parts jointly (exact).
    Handles grouped-query attention and Gemma 2's attention-logit soft-capping.

``auto`` picks ``shared-prefix`` for stock transformers sequence-classification models (a ``score`` linear head
on a base model that dispatches through transformers' attention interface), else ``full``.

**Readout.** The base model's last hidden state is taken at the last *real* token of each row (from the
attention mask, never from the pad id, so a candidate that happens to be the pad token is still read
correctly and the padding side does not matter), and the registry's readout is applied: ``logits_squeeze``
(one-label head), ``logits_0`` (first logit of a multi-output head) or ``custom_score`` (the ``.score`` of a
custom remote-code model; ``full`` method only).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

#: Placeholder rendered as the assistant's answer, then cut out of the text (never tokenized).
SENTINEL = "@@RMVALUES-CANDIDATE@@"
METHODS = ("auto", "full", "prefix-cache", "shared-prefix")
READOUTS = ("logits_squeeze", "logits_0", "custom_score")
PADDING_SIDES = ("right", "left")
#: Name under which the shared-prefix attention function is registered with transformers.
SHARED_PREFIX_ATTENTION = "rmvalues_shared_prefix"


class ScoringError(RuntimeError):
    """A model cannot be scored as configured (the message says why and what to change)."""


# -- token-exact inputs ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TemplateSplit:
    """A prompt rendered by a chat template and cut at the assistant's answer."""

    prompt_id: str
    prefix_text: str
    suffix_text: str
    prefix_ids: tuple[int, ...]
    suffix_ids: tuple[int, ...]
    prompt: str = ""
    system: str | None = None

    def input_ids(self, candidate_ids: Sequence[int]) -> list[int]:
        """The full token sequence for one candidate: prefix + candidate + suffix."""
        return [*self.prefix_ids, *candidate_ids, *self.suffix_ids]


def conversation(prompt: str, answer: str, system: str | None = None) -> list[dict[str, str]]:
    """The chat that is scored: an optional system turn, the user's prompt, the assistant's answer."""
    messages = [{"role": "system", "content": system}] if system else []
    return [*messages, {"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


def split_template(
    tokenizer: PreTrainedTokenizerBase, prompt: str, prompt_id: str = "", system: str | None = None
) -> TemplateSplit:
    """Render ``[user: prompt, assistant: SENTINEL]`` with the tokenizer's chat template and split it there.

    Both halves are tokenized with ``add_special_tokens=False``: the special tokens are those the template
    writes (e.g. one ``<bos>``), nothing is added. Raises :class:`ScoringError` when the tokenizer has no chat
    template, or the template drops or repeats the answer.
    """
    split = split_messages(tokenizer, conversation(prompt, SENTINEL, system)[:-1], prompt_id)
    return TemplateSplit(
        prompt_id, split.prefix_text, split.suffix_text, split.prefix_ids, split.suffix_ids, prompt, system
    )


def split_messages(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[dict[str, str]], prompt_id: str = ""
) -> TemplateSplit:
    """Like :func:`split_template` for any conversation ``messages`` (ending with a user turn): the answer is
    the assistant turn appended after them."""
    if not getattr(tokenizer, "chat_template", None):
        raise ScoringError(
            "the tokenizer has no chat template; set chat_template in the model's registry entry "
            "(tokenizer, builtin:gemma, builtin:chatml)"
        )
    chat = [*messages, {"role": "assistant", "content": SENTINEL}]
    text = tokenizer.apply_chat_template(chat, tokenize=False)
    if text.count(SENTINEL) != 1:
        raise ScoringError(
            f"the chat template renders the assistant's answer {text.count(SENTINEL)} times (expected once); "
            "it cannot be split into prefix and suffix"
        )
    prefix_text, suffix_text = text.split(SENTINEL)
    prefix_ids = tuple(tokenizer(prefix_text, add_special_tokens=False)["input_ids"])
    suffix_ids = tuple(tokenizer(suffix_text, add_special_tokens=False)["input_ids"]) if suffix_text else ()
    if not prefix_ids:
        raise ScoringError("the chat template renders nothing before the answer")
    return TemplateSplit(prompt_id, prefix_text, suffix_text, prefix_ids, suffix_ids)


@dataclass(frozen=True)
class Candidate:
    """One candidate answer: its text (a word, or a token's string in vocab mode) and its token ids."""

    text: str
    ids: tuple[int, ...]
    how: str  # "in-context" | "bare" | "token"
    token_id: int | None = None


def word_candidates(
    tokenizer: PreTrainedTokenizerBase, split: TemplateSplit, words: Iterable[str]
) -> list[Candidate]:
    """Token ids of each word as it stands in the rendered conversation (see the module docstring)."""
    out: list[Candidate] = []
    n_pre, n_suf = len(split.prefix_ids), len(split.suffix_ids)
    for word in words:
        full = tokenizer(split.prefix_text + word + split.suffix_text, add_special_tokens=False)["input_ids"]
        intact = (
            tuple(full[:n_pre]) == split.prefix_ids
            and (n_suf == 0 or tuple(full[len(full) - n_suf :]) == split.suffix_ids)
            and len(full) > n_pre + n_suf
        )
        if intact:
            out.append(Candidate(word, tuple(full[n_pre : len(full) - n_suf]), "in-context"))
        else:
            bare = tuple(tokenizer(word, add_special_tokens=False)["input_ids"])
            if not bare:
                raise ScoringError(f"word {word!r} tokenizes to nothing")
            out.append(Candidate(word, bare, "bare"))
    return out


def vocab_candidates(tokenizer: PreTrainedTokenizerBase, include_special: bool = False) -> list[Candidate]:
    """Every token id of the vocabulary as a one-token candidate (text = the token's string)."""
    special = set(tokenizer.all_special_ids) if not include_special else set()
    added = (
        {i for i, t in tokenizer.added_tokens_decoder.items() if t.special} if not include_special else set()
    )
    out = []
    for token_id in range(len(tokenizer)):
        if token_id in special or token_id in added:
            continue
        token = tokenizer.convert_ids_to_tokens(token_id)
        if token is None:
            continue
        out.append(Candidate(str(token), (token_id,), "token", token_id))
    return out


def check_inputs(tokenizer: PreTrainedTokenizerBase, split: TemplateSplit, candidate: Candidate) -> list[str]:
    """Problems with one candidate's input sequence (empty list: token-exact).

    Checks: the input holds exactly the BOS tokens the template writes (one, first, for templates that start
    with ``<bos>``; never a second one added by the tokenizer); the candidate ids sit exactly between the
    template's prefix and suffix; for in-context words, the sequence equals the tokenization of the rendered
    conversation with the word as the answer.
    """
    ids = split.input_ids(candidate.ids)
    problems: list[str] = []
    bos, bos_text = tokenizer.bos_token_id, tokenizer.bos_token
    if bos is not None and bos_text:
        written = (split.prefix_text + split.suffix_text).count(bos_text)  # BOS tokens the template writes
        template_ids = [*split.prefix_ids, *split.suffix_ids]
        n_bos = sum(1 for t in template_ids if t == bos)
        if n_bos != written:
            problems.append(f"the template writes {written} BOS token(s) but the input holds {n_bos}")
        if len(ids) > 1 and ids[0] == bos and ids[1] == bos:
            problems.append("double BOS at the start")
        if written == 1 and ids[0] != bos:
            problems.append("BOS is not the first token")
    n_pre = len(split.prefix_ids)
    if tuple(ids[n_pre : n_pre + len(candidate.ids)]) != candidate.ids:
        problems.append("candidate ids are not where they belong")
    if candidate.how == "in-context":
        messages = conversation(split.prompt, candidate.text, split.system)
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        expected = tokenizer(text, add_special_tokens=False)["input_ids"]
        if list(expected) != ids:
            problems.append("sequence differs from the tokenized rendered conversation")
    return problems


# -- shared-prefix attention ----------------------------------------------------------------------------------


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


_REGISTERED = False


def register_shared_prefix_attention() -> None:
    """Register :func:`shared_prefix_attention` with transformers' attention interface (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from transformers import AttentionInterface

    AttentionInterface.register(SHARED_PREFIX_ATTENTION, shared_prefix_attention)
    _REGISTERED = True


# -- the prefix-cache layer -----------------------------------------------------------------------------------


def _prefix_cache(prefix: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> Any:
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


# -- the scorer -----------------------------------------------------------------------------------------------


def _is_stock_classifier(model: PreTrainedModel) -> bool:
    import torch

    head = getattr(model, "score", None)
    base = getattr(model, getattr(model, "base_model_prefix", "model"), None)
    return (
        isinstance(head, torch.nn.Linear)
        and base is not None
        and type(model).__module__.startswith("transformers.models.")
        and getattr(model, "_supports_attention_backend", True)
    )


def _layer_layout(config: Any) -> tuple[int | None, list[str] | None]:
    """``(sliding window, layer types)`` of a model config (``(None, None)`` without sliding layers)."""
    cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    window = getattr(cfg, "sliding_window", None)
    layer_types = getattr(cfg, "layer_types", None)
    if window and layer_types and "sliding_attention" in layer_types:
        return int(window), list(layer_types)
    return None, None


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
        candidates per forward pass, or ``"auto"`` (64 on CPU; on CUDA the largest power of two that fits,
        found by halving after out-of-memory errors, starting at 4096).
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
        batch_size: int | str = "auto",
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
        self.readout = readout
        self.padding_side = padding_side
        self.device = next(model.parameters()).device
        stock = _is_stock_classifier(model)
        if method == "auto":
            method = "shared-prefix" if stock and readout != "custom_score" else "full"
        if method != "full" and (not stock or readout == "custom_score"):
            raise ScoringError(
                f"method {method!r} needs a stock transformers sequence-classification model with a linear "
                f"`score` head (got {type(model).__name__}, readout {readout}); use method='full'"
            )
        self.method = method
        if batch_size == "auto":
            batch_size = 4096 if self.device.type == "cuda" else 64
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer or 'auto', not {batch_size!r}")
        self.batch_size = batch_size
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.base = getattr(model, getattr(model, "base_model_prefix", "model"), model) if stock else None
        self.head = getattr(model, "score", None) if stock else None
        self.window, self.layer_types = _layer_layout(model.config)
        self.dtype = next(model.parameters()).dtype
        self._attn = model.config._attn_implementation
        if method == "shared-prefix":
            register_shared_prefix_attention()
        self._forward = self.base
        if compile and self.base is not None:
            self._forward = torch.compile(self.base, dynamic=True)
        self._prefix_cache: dict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.last_stats = ScoreStats()

    # -- readout ----------------------------------------------------------------------------------------------
    def _readout(self, hidden_last: torch.Tensor) -> torch.Tensor:
        logits = self.head(hidden_last.to(self.head.weight.dtype))
        if self.readout == "logits_squeeze":
            if logits.shape[-1] != 1:
                raise ScoringError(
                    f"readout logits_squeeze needs a one-label head; this head has {logits.shape[-1]} outputs "
                    "(use logits_0 for the first one)"
                )
            return logits[:, 0]
        return logits[:, 0]

    # -- batches ----------------------------------------------------------------------------------------------
    def _pad(self, rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        width = int(lengths.max())
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        cols = np.arange(width)
        if self.padding_side == "right":
            mask = cols[None, :] < lengths[:, None]
        else:
            mask = cols[None, :] >= (width - lengths)[:, None]
        ids[mask] = np.fromiter((t for r in rows for t in r), dtype=np.int64, count=int(lengths.sum()))
        ids_t = torch.from_numpy(ids).to(self.device, non_blocking=True)
        mask_t = torch.from_numpy(mask.astype(np.int64)).to(self.device, non_blocking=True)
        return ids_t, mask_t

    @staticmethod
    def _last_real(mask: torch.Tensor) -> torch.Tensor:
        import torch

        positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
        return torch.where(mask.bool(), positions, -1).max(dim=1).values

    def _prefix(self, prefix_ids: tuple[int, ...]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        import torch

        if prefix_ids not in self._prefix_cache:
            from transformers.cache_utils import DynamicCache

            ids = torch.tensor([prefix_ids], dtype=torch.long, device=self.device)
            cache = DynamicCache()  # no config: every layer keeps all prefix tokens (also sliding layers)
            self.base(ids, cache=cache, use_cache=True)
            self._prefix_cache = {prefix_ids: [(layer.keys, layer.values) for layer in cache.layers]}
        return self._prefix_cache[prefix_ids]

    def _positions(self, mask: torch.Tensor, offset: int) -> torch.Tensor:
        return (offset + mask.cumsum(dim=1) - 1).clamp(min=offset)

    def _suffix_hidden(
        self, ids: torch.Tensor, mask: torch.Tensor, prefix: list[tuple[torch.Tensor, torch.Tensor]]
    ) -> torch.Tensor:
        import torch

        p_len = prefix[0][0].shape[-2]
        positions = self._positions(mask, p_len)
        if self.method == "prefix-cache":
            bsz = mask.shape[0]
            prefix_pos = torch.arange(p_len, device=mask.device).expand(bsz, p_len)
            masks = explicit_masks(
                positions,
                torch.cat([prefix_pos, positions], dim=1),
                torch.cat([torch.ones_like(prefix_pos), mask], dim=1),
                p_len,
                self.window,
                self.layer_types,
                self.dtype,
            )
            out = self.base(
                ids, attention_mask=masks, position_ids=positions, cache=_prefix_cache(prefix), use_cache=True
            )
            return out.last_hidden_state
        config = self.model.config
        config._attn_implementation = SHARED_PREFIX_ATTENTION
        try:
            out = self._forward(
                ids,
                position_ids=positions,
                use_cache=False,
                rmv_prefix=prefix,
                rmv_suffix_mask=mask,
                rmv_positions=positions,
                rmv_allowed=shared_prefix_masks(
                    p_len, mask, positions, self.window, mask.shape[0], mask.shape[1], mask.device
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
            ids, mask = self._pad([split.input_ids(r) for r in rows])
            if self.readout == "custom_score" or self.head is None:
                if hidden_only:
                    raise ScoringError("hidden states need a stock sequence-classification model")
                out = self.model(input_ids=ids, attention_mask=mask)
                if self.readout == "custom_score":
                    if not hasattr(out, "score"):
                        raise ScoringError(
                            f"readout custom_score: {type(self.model).__name__} output has no `.score` "
                            "(it needs the model's remote code: trust_remote_code: true and the hub files)"
                        )
                    return out.score.reshape(len(rows), -1)[:, 0].float()
                logits = out.logits
                return (logits[:, 0] if logits.ndim == 2 else logits.reshape(-1)).float()
            positions = self._positions(mask, 0)
            masks = explicit_masks(positions, positions, mask, 0, self.window, self.layer_types, self.dtype)
            hidden = self.base(
                ids, attention_mask=masks, position_ids=positions, use_cache=False
            ).last_hidden_state
        else:
            prefix = self._prefix(split.prefix_ids)
            ids, mask = self._pad([[*r, *split.suffix_ids] for r in rows])
            hidden = self._suffix_hidden(ids, mask, prefix)
        last = self._last_real(mask)
        picked = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        if hidden_only:
            return picked.float()
        return self._readout(picked).float()

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
                self._prefix(split.prefix_ids)
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

    def last_hidden(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        """The base model's last hidden state at the last token of each whole sequence (no head), float32.

        Batched by length like :meth:`score`; used to fit reward heads on frozen features.
        """
        import torch

        if self.base is None:
            raise ScoringError("last_hidden needs a stock sequence-classification model")
        order = sorted(range(len(sequences)), key=lambda i: (len(sequences[i]), i))
        out: np.ndarray | None = None
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                ids, mask = self._pad([sequences[j] for j in idx])
                positions = self._positions(mask, 0)
                masks = explicit_masks(
                    positions, positions, mask, 0, self.window, self.layer_types, self.dtype
                )
                hidden = self.base(
                    ids, attention_mask=masks, position_ids=positions, use_cache=False
                ).last_hidden_state
                picked = hidden[torch.arange(hidden.shape[0], device=hidden.device), self._last_real(mask)]
                values = picked.float().cpu().numpy()
                if out is None:
                    out = np.empty((len(sequences), values.shape[1]), dtype=np.float32)
                out[idx] = values
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
