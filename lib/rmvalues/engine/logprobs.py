"""Log-probabilities of causal language models: whole words and full next-token distributions.

:class:`LogProbEngine` answers two questions for a causal LM and a set of prompts:

* :meth:`LogProbEngine.next_token_logprobs`: the full-vocabulary distribution of the first answer token,
  ``log p(. | prompt)``, for many prompts in one batched pass (prompts sorted by length and batched, the LM
  head applied only at each prompt's last real position).
* :meth:`LogProbEngine.word_logprobs`: ``log p(word | prompt)`` of whole words, the sum of the log-probs of
  the word's tokens, optionally followed by the end-of-turn token (``include_end_of_turn``).

Prompts and words are built token-exactly (:mod:`rmvalues.engine.inputs`): the chat format renders the
prompt as the user turn of the model's chat template and the word as the assistant's answer; the raw format
uses the prompt text itself, the word after a single space. The end-of-turn token is the first token the
template writes after the answer (``<|im_end|>``, ``<end_of_turn>``, ``<|eot_id|>``); in the raw format it is
the EOS token.

**Prefix cache.** The prompt prefix is encoded once per prompt (:func:`rmvalues.engine.forward.encode_prefix`);
its keys and values are reused for every word (:func:`rmvalues.engine.forward.forward_after_prefix`). Only the
word tokens that *predict* a further token go through the model: a one-token word needs no forward pass at
all (its log-prob is read from the prefix's next-token distribution), and words sharing a token prefix share
the forward pass of their longest common continuation (:func:`rmvalues.engine.inputs.covering_inputs`).
Continuations are sorted by length and batched, so a batch carries almost no padding.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..core.params import AUTOMATIC_BATCH, resolve_batch_size
from ..models.loading import load_causal_lm
from ..models.registry import ModelSpec, get_spec
from .forward import Layout, Prefix, encode_prefix, forward_after_prefix, pad_rows
from .inputs import (
    RAW_SEPARATOR,
    Candidate,
    PromptFormatError,
    TemplateSplit,
    build_split,
    covering_inputs,
    end_of_turn_ids,
    resolve_prompt_format,
    word_candidates,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

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
        continuations (or prompts) per forward pass, or 0 for automatic (64; one meaning everywhere,
        :func:`rmvalues.core.params.resolve_batch_size`).
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
        batch_size: int = AUTOMATIC_BATCH,
        max_batch_positions: int = 512,
    ) -> None:
        if prompt_format not in ("chat", "raw"):
            raise PromptFormatError(
                f"prompt_format={prompt_format!r}; the engine takes chat or raw (resolve auto with "
                "resolve_prompt_format)"
            )
        device = next(model.parameters()).device
        batch_size = resolve_batch_size(batch_size, device.type, cpu=64, cuda=64)
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
        self.layout = Layout.of(model)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.stats = EngineStats()
        self._splits: dict[tuple[str, str], TemplateSplit] = {}

    @classmethod
    def from_registry(
        cls,
        name: str | ModelSpec,
        prompt_format: str = "auto",
        dtype: str | None = None,
        device: str = "cpu",
        **kwargs: Any,
    ) -> LogProbEngine:
        """Load a registered causal LM (:func:`rmvalues.models.load_causal_lm`) with its resolved format."""
        spec = get_spec(name)
        fmt = resolve_prompt_format(spec, prompt_format)
        model, tok = load_causal_lm(spec, dtype=dtype, device=device)
        return cls(model, tok, name=spec.name, prompt_format=fmt, **kwargs)

    # -- prompts ----------------------------------------------------------------------------------------------
    def split(self, prompt: str, prompt_id: str = "") -> TemplateSplit:
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
                ids, mask = pad_rows([rows[i] for i in idx], self.pad_id, "right")
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

    # -- prefix and continuations ----------------------------------------------------------------------------
    def prefix(self, prefix_ids: Sequence[int]) -> Prefix:
        """The prefix's keys/values (batch 1, every layer keeps all tokens) and its next-token log-probs.
        Gradients follow the caller's context (the planted-word fine-tune runs it with gradients)."""
        return encode_prefix(self.model, prefix_ids, self.device, next_token_logprobs=True)

    def continuation_logits(
        self, prefix: Prefix, rows: Sequence[Sequence[int]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and their logsumexp at every position of right-padded ``rows`` after the cached prefix."""
        import torch

        ids, mask = pad_rows(rows, self.pad_id, "right", self.device)
        logits = forward_after_prefix(self.model, ids, mask, prefix, self.layout).logits.float()
        return logits, torch.logsumexp(logits, dim=-1)

    def sequence_logprobs(
        self, split: TemplateSplit, targets: Sequence[Sequence[int]]
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
            prefix = self.prefix(split.prefix_ids)
            first_np = prefix.first_logprobs.cpu().numpy().astype(np.float64)
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
                logits, lse = self.continuation_logits(prefix, [covers[c] for c in batch])
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
        self, split: TemplateSplit, words: Sequence[str], separator: str | None = None
    ) -> list[Candidate]:
        """Token ids of each word where it stands after the prompt (in-context tokenization). ``separator``
        precedes the word: default ``""`` (chat: the answer starts the assistant turn) or ``" "`` (raw)."""
        sep = ("" if self.prompt_format == "chat" else RAW_SEPARATOR) if separator is None else separator
        cands = word_candidates(self.tokenizer, split, [sep + w for w in words])
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
