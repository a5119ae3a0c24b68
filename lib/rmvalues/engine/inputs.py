"""Token-exact inputs: prompts rendered by the model's chat template (or as raw text), split at the answer,
and candidate answers inserted as token ids.

**Template split.** The conversation ``[user: prompt, assistant: SENTINEL]`` is rendered with the model's own
chat template (``apply_chat_template``), split at the sentinel, and the two halves are tokenized *without*
added special tokens (:func:`split_template`). A candidate's token ids are inserted between them, so every
input is ``prefix_ids + candidate_ids + suffix_ids``: the template's BOS exactly once (never a second one from
the tokenizer), and candidate ids that are never decoded to text and re-encoded. The raw format
(:func:`raw_split`, pretrained models) is the same construction with the prompt as prefix and an empty suffix.

**Candidates.**

* **words** (:func:`word_candidates`): the ids a word has *where it stands in the rendered conversation*, i.e.
  the middle part of ``tokenizer(prefix_text + word + suffix_text)`` when that tokenization keeps the prefix
  and suffix ids intact (``how = "in-context"``). This settles the leading-space question the way the model
  would see a typed answer. Where the word would merge with the template text around it, the bare
  tokenization ``tokenizer(word)`` is used and flagged ``how = "bare"``.
* **vocab** (:func:`vocab_candidates`): every single token id of the vocabulary (exhaustive mode), inserted as
  one id, special tokens excluded unless asked for.

**Prompt formats** (:func:`resolve_prompt_format`): ``chat`` renders the prompt as the user turn of the chat
template, ``raw`` uses the prompt text itself (after the tokenizer's BOS, if it adds one); ``auto`` is
``chat`` for instruction-tuned models and ``raw`` for pretrained ones (the paper's choice).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..core.errors import RmvaluesError
from ..models.registry import ModelSpec, get_spec

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase

#: Placeholder rendered as the assistant's answer, then cut out of the text (never tokenized).
SENTINEL = "@@RMVALUES-CANDIDATE@@"
PROMPT_FORMATS = ("auto", "chat", "raw")
#: Separator between prompt and word in the raw format (the word is a continuation of the prompt's text).
RAW_SEPARATOR = " "


class ScoringError(RmvaluesError, RuntimeError):
    """A model cannot be scored as configured (the message says why and what to change)."""


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
    words = list(words)
    if not words:
        return out
    # one batched call (the tokenizer's per-call overhead dominates for short texts); same ids as one by one
    texts = [split.prefix_text + word + split.suffix_text for word in words]
    fulls = tokenizer(texts, add_special_tokens=False)["input_ids"]
    for word, full in zip(words, fulls, strict=True):
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


class PromptFormatError(RmvaluesError, ValueError):
    """A prompt format cannot be used with a model (the message says why and what to change)."""


def resolve_prompt_format(spec: ModelSpec | str, prompt_format: str = "auto") -> str:
    """``chat`` or ``raw`` for a registered model: ``auto`` is ``chat`` for instruction-tuned models and
    ``raw`` for pretrained ones. Raises :class:`PromptFormatError` for an unknown format or a chat format on a
    model registered without a chat template (``chat_template: none``)."""
    if prompt_format not in PROMPT_FORMATS:
        raise PromptFormatError(f"prompt_format={prompt_format!r}; valid: {', '.join(PROMPT_FORMATS)}")
    spec = get_spec(spec)
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


def adds_bos(tokenizer: PreTrainedTokenizerBase, text: str) -> bool:
    with_special = tokenizer(text)["input_ids"]
    plain = tokenizer(text, add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    return bool(
        bos is not None and with_special and with_special[0] == bos and (not plain or plain[0] != bos)
    )


def raw_split(tokenizer: PreTrainedTokenizerBase, prompt: str, prompt_id: str = "") -> TemplateSplit:
    """The raw-format split: prefix = the tokenizer's BOS (if it adds one when encoding text) + the prompt,
    empty suffix. The same :class:`rmvalues.scoring_TemplateSplit` the chat format uses."""
    prefix_text = (tokenizer.bos_token + prompt) if adds_bos(tokenizer, prompt) else prompt
    prefix_ids = tuple(tokenizer(prefix_text, add_special_tokens=False)["input_ids"])
    if not prefix_ids:
        raise PromptFormatError(f"prompt {prompt_id!r} tokenizes to nothing")
    return TemplateSplit(prompt_id, prefix_text, "", prefix_ids, (), prompt, None)


def build_split(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    prompt_format: str,
    prompt_id: str = "",
    system: str | None = None,
) -> TemplateSplit:
    """The prompt's prefix/suffix split in ``prompt_format`` (``chat`` or ``raw``)."""
    if prompt_format == "chat":
        if not getattr(tokenizer, "chat_template", None):
            raise PromptFormatError(
                "prompt_format 'chat' but the tokenizer has no chat template: an instruction-tuned model needs "
                "its template to be prompted as in use; set prompt_format='raw' (the prompt as plain text) or "
                "give the model's registry entry a chat template"
            )
        try:
            return split_template(tokenizer, prompt, prompt_id, system)
        except ScoringError as exc:
            raise PromptFormatError(str(exc)) from None
    if prompt_format == "raw":
        if system:
            raise PromptFormatError("a system prompt needs prompt_format='chat'")
        return raw_split(tokenizer, prompt, prompt_id)
    raise PromptFormatError(f"prompt_format={prompt_format!r}; valid here: chat, raw")


def end_of_turn_ids(tokenizer: PreTrainedTokenizerBase, split: TemplateSplit) -> tuple[int, ...]:
    """The token appended by ``include_end_of_turn``: the first token of the template's suffix (chat), else
    the EOS token; ``()`` when the tokenizer has none."""
    if split.suffix_ids:
        return split.suffix_ids[:1]
    eos = tokenizer.eos_token_id
    return (int(eos),) if eos is not None else ()


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
