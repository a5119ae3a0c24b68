"""Log-probabilities of causal language models: whole words and full next-token distributions.

The engine answers two questions for a causal LM and a set of prompts:

* :meth:`LogProbEngine.next_token_logprobs`: the full-vocabulary distribution of the first answer token,
  ``log p(. | prompt)``, for many prompts in one batched pass (prompts sorted by length and batched, the LM
  head applied only at each prompt's last real position).
* :meth:`LogProbEngine.word_logprobs`: ``log p(word | prompt)`` of whole words, the sum of the log-probs of
  the word's tokens, optionally followed by the end-of-turn token (``include_end_of_turn``).

**Prompt format.** ``chat``: the prompt is the user turn of the model's chat template and the word is the
assistant's answer; ``raw``: the prompt text itself (after the tokenizer's BOS, if it adds one), the word
follows after a single space. :func:`resolve_prompt_format` maps ``auto`` to ``chat`` for instruction-tuned
models and ``raw`` for pretrained ones (the paper's choice). A chat format for a model whose tokenizer has no
chat template is an error naming the fix.

**Token-exact construction (shared with the RM scoring engine).** The chat is rendered with a sentinel as the
assistant's answer and split there (:func:`rmvalues.scoring_engine.split_template`); a word's token ids are
the ids it has *in context* (:func:`rmvalues.scoring_engine.word_candidates`: the middle part of the
tokenized ``prefix + word + suffix``), so the leading-space question is settled as the model would see a typed
answer. The raw format is the same construction with the prompt as prefix and an empty suffix
(:func:`raw_split`). The end-of-turn token is the first token the template writes after the answer
(``<|im_end|>``, ``<end_of_turn>``, ``<|eot_id|>``); in the raw format it is the EOS token.

**Prefix cache.** The prompt prefix is encoded once per prompt (batch 1); its keys and values are reused for
every word through the scoring engine's prefix cache (prefix expanded along the batch, not copied per word,
explicit position-based masks so sliding-window layers stay exact). Only the word tokens that *predict* a
further token go through the model: a one-token word needs no forward pass at all (its log-prob is read from
the prefix's next-token distribution), and words sharing a token prefix share the forward pass of their
longest common continuation (:func:`covering_inputs`). Continuations are sorted by length and batched, so a
batch carries almost no padding.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from . import models as models_mod
from . import scoring_engine as engine

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

PROMPT_FORMATS = ("auto", "chat", "raw")
#: Separator between prompt and word in the raw format (the word is a continuation of the prompt's text).
RAW_SEPARATOR = " "
#: Columns of :meth:`LogProbEngine.word_logprobs`.
WORD_COLUMNS = [
    "model",
    "prompt_id",
    "prompt_format",
    "word",
    "text",
    "how",
    "n_tokens",
    "logprob",
    "logprob_mean",
    "first_logprob",
    "end_logprob",
]


class PromptFormatError(ValueError):
    """A prompt format cannot be used with a model (the message says why and what to change)."""


# -- prompt format --------------------------------------------------------------------------------------------


def resolve_prompt_format(spec: models_mod.ModelSpec | str, prompt_format: str = "auto") -> str:
    """``chat`` or ``raw`` for a registered model: ``auto`` is ``chat`` for instruction-tuned models and
    ``raw`` for pretrained ones. Raises :class:`PromptFormatError` for an unknown format or a chat format on a
    model registered without a chat template (``chat_template: none``)."""
    if prompt_format not in PROMPT_FORMATS:
        raise PromptFormatError(f"prompt_format={prompt_format!r}; valid: {', '.join(PROMPT_FORMATS)}")
    spec = models_mod.get_spec(spec)
    fmt = prompt_format
    if fmt == "auto":
        fmt = "chat" if spec.type == "instruction-tuned" else "raw"
    if fmt == "chat" and spec.chat_template == "none":
        raise PromptFormatError(
            f"model {spec.name!r} is registered without a chat template (chat_template: none), so its prompts "
            f"cannot be rendered as a chat; use prompt_format='raw' for it, or give its registry entry a "
            f"template (tokenizer, builtin:gemma, builtin:chatml)"
        )
    return fmt


def _adds_bos(tokenizer: PreTrainedTokenizerBase, text: str) -> bool:
    with_special = tokenizer(text)["input_ids"]
    plain = tokenizer(text, add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    return bool(
        bos is not None and with_special and with_special[0] == bos and (not plain or plain[0] != bos)
    )


def raw_split(tokenizer: PreTrainedTokenizerBase, prompt: str, prompt_id: str = "") -> engine.TemplateSplit:
    """The raw-format split: prefix = the tokenizer's BOS (if it adds one when encoding text) + the prompt,
    empty suffix. The same :class:`rmvalues.scoring_engine.TemplateSplit` the chat format uses."""
    prefix_text = (tokenizer.bos_token + prompt) if _adds_bos(tokenizer, prompt) else prompt
    prefix_ids = tuple(tokenizer(prefix_text, add_special_tokens=False)["input_ids"])
    if not prefix_ids:
        raise PromptFormatError(f"prompt {prompt_id!r} tokenizes to nothing")
    return engine.TemplateSplit(prompt_id, prefix_text, "", prefix_ids, (), prompt, None)


def build_split(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    prompt_format: str,
    prompt_id: str = "",
    system: str | None = None,
) -> engine.TemplateSplit:
    """The prompt's prefix/suffix split in ``prompt_format`` (``chat`` or ``raw``)."""
    if prompt_format == "chat":
        if not getattr(tokenizer, "chat_template", None):
            raise PromptFormatError(
                "prompt_format 'chat' but the tokenizer has no chat template: an instruction-tuned model needs "
                "its template to be prompted as in use; set prompt_format='raw' (the prompt as plain text) or "
                "give the model's registry entry a chat template"
            )
        try:
            return engine.split_template(tokenizer, prompt, prompt_id, system)
        except engine.ScoringError as exc:
            raise PromptFormatError(str(exc)) from None
    if prompt_format == "raw":
        if system:
            raise PromptFormatError("a system prompt needs prompt_format='chat'")
        return raw_split(tokenizer, prompt, prompt_id)
    raise PromptFormatError(f"prompt_format={prompt_format!r}; valid here: chat, raw")


def end_of_turn_ids(tokenizer: PreTrainedTokenizerBase, split: engine.TemplateSplit) -> tuple[int, ...]:
    """The token appended by ``include_end_of_turn``: the first token of the template's suffix (chat), else
    the EOS token; ``()`` when the tokenizer has none."""
    if split.suffix_ids:
        return split.suffix_ids[:1]
    eos = tokenizer.eos_token_id
    return (int(eos),) if eos is not None else ()


# -- covering continuations -----------------------------------------------------------------------------------


def covering_inputs(inputs: Sequence[Sequence[int]]) -> tuple[list[tuple[int, ...]], list[int]]:
    """The fewest token sequences whose forward passes contain every input: ``(covers, cover_of)``.

    An input that is a prefix of another is read off the longer one's positions (causal attention: the
    logits at position ``j`` depend on tokens ``0..j`` only). ``cover_of[i]`` is the index in ``covers`` of
    the sequence that covers ``inputs[i]`` (``-1`` for an empty input).
    """
    order = sorted(range(len(inputs)), key=lambda i: -len(inputs[i]))
    covers: list[tuple[int, ...]] = []
    owner: dict[tuple[int, ...], int] = {}
    cover_of = [-1] * len(inputs)
    for i in order:
        seq = tuple(inputs[i])
        if not seq:
            continue
        if seq not in owner:
            covers.append(seq)
            for k in range(1, len(seq) + 1):
                owner.setdefault(seq[:k], len(covers) - 1)
        cover_of[i] = owner[seq]
    return covers, cover_of


# -- the engine -----------------------------------------------------------------------------------------------


@dataclass
class EngineStats:
    """Counters of the work done (for manifests and the chapter's timing table)."""

    prompts: int = 0
    words: int = 0
    forward_rows: int = 0
    forward_positions: int = 0
    naive_positions: int = 0
    seconds: float = 0.0
    batch_sizes: list[int] = field(default_factory=list)


class LogProbEngine:
    """Log-probabilities of one causal LM under one prompt format.

    Parameters
    ----------
    model, tokenizer:
        a causal LM (eval mode) and its configured tokenizer (:func:`rmvalues.models.load_causal_lm`).
    name:
        the model's name in output tables.
    prompt_format:
        ``chat`` or ``raw`` (resolve ``auto`` with :func:`resolve_prompt_format`).
    system:
        optional system prompt (chat format only; ``None`` = the template's own default).
    batch_size:
        continuations (or prompts) per forward pass.
    max_batch_positions:
        cap on ``batch rows x positions`` of a continuation batch (memory: logits are ``positions x vocab``).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        name: str = "model",
        prompt_format: str = "chat",
        system: str | None = None,
        batch_size: int = 64,
        max_batch_positions: int = 512,
    ) -> None:
        if prompt_format not in ("chat", "raw"):
            raise PromptFormatError(
                f"prompt_format={prompt_format!r}; the engine takes chat or raw (resolve auto with "
                "resolve_prompt_format)"
            )
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, not {batch_size!r}")
        if prompt_format == "chat" and not getattr(tokenizer, "chat_template", None):
            raise PromptFormatError(
                f"model {name!r}: prompt_format 'chat' but its tokenizer has no chat template; use "
                "prompt_format='raw', or register the model with a chat template"
            )
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.prompt_format = prompt_format
        self.system = system
        self.batch_size = batch_size
        self.max_batch_positions = max(int(max_batch_positions), 1)
        self.device = next(model.parameters()).device
        self.window, self.layer_types = engine._layer_layout(model.config)
        self.dtype = next(model.parameters()).dtype
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.stats = EngineStats()
        self._splits: dict[tuple[str, str], engine.TemplateSplit] = {}

    @classmethod
    def from_registry(
        cls,
        name: str | models_mod.ModelSpec,
        prompt_format: str = "auto",
        dtype: str | None = None,
        device: str = "cpu",
        **kwargs: Any,
    ) -> LogProbEngine:
        """Load a registered causal LM (:func:`rmvalues.models.load_causal_lm`) with its resolved format."""
        spec = models_mod.get_spec(name)
        fmt = resolve_prompt_format(spec, prompt_format)
        model, tok = models_mod.load_causal_lm(spec, dtype=dtype, device=device)
        return cls(model, tok, name=spec.name, prompt_format=fmt, **kwargs)

    # -- prompts ----------------------------------------------------------------------------------------------
    def split(self, prompt: str, prompt_id: str = "") -> engine.TemplateSplit:
        """The prompt's token-exact prefix/suffix split (cached)."""
        key = (prompt_id, prompt)
        if key not in self._splits:
            self._splits[key] = build_split(
                self.tokenizer, prompt, self.prompt_format, prompt_id, self.system
            )
        return self._splits[key]

    def describe(self) -> dict[str, Any]:
        """How prompts are built, for the manifest: format, an example prefix/suffix, end-of-turn token."""
        ex = self.split("PROMPT", "example")
        end = end_of_turn_ids(self.tokenizer, ex)
        return {
            "prompt_format": self.prompt_format,
            "system": self.system,
            "example_prefix": ex.prefix_text,
            "example_suffix": ex.suffix_text,
            "end_of_turn_token": self.tokenizer.convert_ids_to_tokens(list(end)) if end else None,
            "word_separator": "" if self.prompt_format == "chat" else RAW_SEPARATOR,
        }

    @staticmethod
    def _items(prompts: Mapping[str, str] | Sequence[str]) -> list[tuple[str, str]]:
        if isinstance(prompts, Mapping):
            return [(str(k), str(v)) for k, v in prompts.items()]
        return [(f"p{i}", str(p)) for i, p in enumerate(prompts)]

    # -- full next-token distributions ----------------------------------------------------------------------
    def next_token_logprobs(self, prompts: Mapping[str, str] | Sequence[str]) -> torch.Tensor:
        """``log p(first answer token | prompt)`` over the full vocabulary: float32 ``(n_prompts, vocab)``, rows
        in the order of ``prompts``. Prompts are sorted by length and batched (right padding, attention mask);
        the LM head runs only at the last real position of each row."""
        import torch

        items = self._items(prompts)
        rows = [self.split(text, pid).prefix_ids for pid, text in items]
        out: torch.Tensor | None = None
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                width = max(len(rows[i]) for i in idx)
                ids = torch.full((len(idx), width), self.pad_id, dtype=torch.long)
                mask = torch.zeros((len(idx), width), dtype=torch.long)
                for r, i in enumerate(idx):
                    ids[r, : len(rows[i])] = torch.tensor(rows[i])
                    mask[r, : len(rows[i])] = 1
                last = mask.sum(1) - 1
                keep = torch.unique(last)
                logits = self.model(
                    input_ids=ids.to(self.device),
                    attention_mask=mask.to(self.device),
                    logits_to_keep=keep.to(self.device),
                    use_cache=False,
                ).logits
                col = torch.searchsorted(keep, last)
                picked = logits[torch.arange(len(idx), device=logits.device), col.to(logits.device)].float()
                lp = torch.log_softmax(picked, dim=-1).cpu()
                if out is None:
                    out = torch.empty((len(rows), lp.shape[-1]), dtype=torch.float32)
                out[torch.tensor(idx)] = lp
        assert out is not None or not rows
        return out if out is not None else torch.empty((0, 0))

    # -- prefix cache -----------------------------------------------------------------------------------------
    def _prefix(
        self, prefix_ids: Sequence[int]
    ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
        """Keys/values of the prefix (batch 1, every layer keeps all tokens) and its next-token log-probs."""
        import torch
        from transformers.cache_utils import DynamicCache

        ids = torch.tensor([list(prefix_ids)], dtype=torch.long, device=self.device)
        cache = DynamicCache()
        out = self.model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
        first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
        return [(layer.keys, layer.values) for layer in cache.layers], first

    def _continuation_logits(
        self, prefix: list[tuple[torch.Tensor, torch.Tensor]], rows: Sequence[Sequence[int]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and their logsumexp at every position of right-padded ``rows`` after the cached prefix."""
        import torch

        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(list(r))
            mask[i, : len(r)] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        p_len = prefix[0][0].shape[-2]
        positions = (p_len + mask.cumsum(dim=1) - 1).clamp(min=p_len)
        prefix_pos = torch.arange(p_len, device=self.device).expand(len(rows), p_len)
        masks = engine.explicit_masks(
            positions,
            torch.cat([prefix_pos, positions], dim=1),
            torch.cat([torch.ones_like(prefix_pos), mask], dim=1),
            p_len,
            self.window,
            self.layer_types,
            self.dtype,
        )
        logits = self.model(
            input_ids=ids,
            attention_mask=masks,
            position_ids=positions,
            cache=engine._prefix_cache(prefix),
            use_cache=True,
        ).logits.float()
        return logits, torch.logsumexp(logits, dim=-1)

    def sequence_logprobs(
        self, split: engine.TemplateSplit, targets: Sequence[Sequence[int]]
    ) -> tuple[list[np.ndarray], np.ndarray]:
        """Per-token log-probs of each target sequence after ``split``'s prefix: ``(token_logprobs,
        first_token_distribution)``; ``token_logprobs[i][j] = log p(targets[i][j] | prefix, targets[i][:j])``.
        """
        import torch

        t0 = time.perf_counter()
        if any(len(t) == 0 for t in targets):
            raise ValueError("a target sequence is empty")
        out = [np.empty(len(t), dtype=np.float64) for t in targets]
        with torch.inference_mode():
            prefix, first = self._prefix(split.prefix_ids)
            first_np = first.cpu().numpy().astype(np.float64)
            for i, t in enumerate(targets):
                out[i][0] = first_np[t[0]]
            inputs = [tuple(t[:-1]) for t in targets]
            covers, cover_of = covering_inputs(inputs)
            # which (position, target) each cover must deliver, and to whom
            needs: dict[int, list[tuple[int, int, int, int]]] = {}
            for i, t in enumerate(targets):
                c = cover_of[i]
                if c < 0:
                    continue
                for j in range(1, len(t)):
                    needs.setdefault(c, []).append((j - 1, int(t[j]), i, j))
            order = sorted(range(len(covers)), key=lambda c: len(covers[c]))
            start = 0
            while start < len(order):
                end = start + 1
                while (
                    end < len(order)
                    and end - start < self.batch_size
                    and (end - start + 1) * len(covers[order[end]]) <= self.max_batch_positions
                ):
                    end += 1
                batch = order[start:end]
                logits, lse = self._continuation_logits(prefix, [covers[c] for c in batch])
                r_idx, p_idx, t_idx, dest = [], [], [], []
                for r, c in enumerate(batch):
                    for pos, tgt, i, j in needs.get(c, []):
                        r_idx.append(r)
                        p_idx.append(pos)
                        t_idx.append(tgt)
                        dest.append((i, j))
                if r_idx:
                    dev = logits.device
                    rr, pp = torch.tensor(r_idx, device=dev), torch.tensor(p_idx, device=dev)
                    vals = (logits[rr, pp, torch.tensor(t_idx, device=dev)] - lse[rr, pp]).cpu().numpy()
                    for (i, j), v in zip(dest, vals, strict=True):
                        out[i][j] = float(v)
                self.stats.forward_rows += len(batch)
                self.stats.forward_positions += sum(len(covers[c]) for c in batch)
                self.stats.batch_sizes.append(len(batch))
                start = end
        self.stats.naive_positions += sum(len(x) for x in inputs)
        self.stats.seconds += time.perf_counter() - t0
        return out, first_np

    # -- whole words ------------------------------------------------------------------------------------------
    def word_candidates(
        self, split: engine.TemplateSplit, words: Sequence[str], separator: str | None = None
    ) -> list[engine.Candidate]:
        """Token ids of each word where it stands after the prompt (in-context tokenization). ``separator``
        precedes the word: default ``""`` (chat: the answer starts the assistant turn) or ``" "`` (raw)."""
        sep = ("" if self.prompt_format == "chat" else RAW_SEPARATOR) if separator is None else separator
        cands = engine.word_candidates(self.tokenizer, split, [sep + w for w in words])
        for w, c in zip(words, cands, strict=True):
            if not c.ids:
                raise ValueError(f"model {self.name!r}: word {w!r} tokenizes to nothing")
        return cands

    def word_logprobs(
        self,
        prompts: Mapping[str, str] | Sequence[str],
        words: Sequence[str],
        include_end_of_turn: bool = False,
        separator: str | None = None,
        progress: Callable[[int], Any] | None = None,
    ) -> pd.DataFrame:
        """``log p(word | prompt)`` for every prompt and word (:data:`WORD_COLUMNS`).

        ``logprob`` is the sum over the word's tokens (plus the end-of-turn token when
        ``include_end_of_turn``); ``logprob_mean`` the mean over the same tokens; ``n_tokens`` counts the
        word's tokens only; ``first_logprob`` is the first token's log-prob, ``end_logprob`` the end token's
        (NaN when not included). ``separator`` overrides the text before the word (see
        :meth:`word_candidates`). ``progress(n)`` is called after each prompt.
        """
        words = list(dict.fromkeys(words))  # unique, in order
        if not words:
            raise ValueError("no words to score")
        frames = []
        for pid, text in self._items(prompts):
            split = self.split(text, pid)
            cands = self.word_candidates(split, words, separator)
            end = end_of_turn_ids(self.tokenizer, split) if include_end_of_turn else ()
            if include_end_of_turn and not end:
                raise ValueError(
                    f"model {self.name!r} has no end-of-turn or EOS token; use include_end_of_turn=False"
                )
            targets = [list(c.ids) + list(end) for c in cands]
            token_lps, _ = self.sequence_logprobs(split, targets)
            n_word = np.array([len(c.ids) for c in cands])
            sums = np.array([t.sum() for t in token_lps])
            frames.append(
                pd.DataFrame(
                    {
                        "model": self.name,
                        "prompt_id": pid,
                        "prompt_format": self.prompt_format,
                        "word": words,
                        "text": [c.text for c in cands],
                        "how": [c.how for c in cands],
                        "n_tokens": n_word,
                        "logprob": sums,
                        "logprob_mean": sums / np.array([len(t) for t in token_lps]),
                        "first_logprob": [t[0] for t in token_lps],
                        "end_logprob": [t[-1] if end else np.nan for t in token_lps],
                    }
                )
            )
            self.stats.prompts += 1
            self.stats.words += len(words)
            if progress is not None:
                progress(1)
        return pd.concat(frames, ignore_index=True)[WORD_COLUMNS]


def reference_word_logprob(model: PreTrainedModel, input_ids: Sequence[int], n_prefix: int) -> np.ndarray:
    """Per-token log-probs of ``input_ids[n_prefix:]`` from one plain forward pass of the whole sequence (no
    cache, no batching): the reference the engine is tested against."""
    import torch

    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([list(input_ids)]), use_cache=False).logits[0].float()
    lp = torch.log_softmax(logits, dim=-1)
    ids = list(input_ids)
    return np.array([float(lp[k - 1, ids[k]]) for k in range(n_prefix, len(ids))])
