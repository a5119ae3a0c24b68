"""Tiny RANDOM models and tokenizers built in-process (no downloads), shaped like the real families.

Two families, each with a causal LM and a one-logit sequence classifier (a reward model):

* ``"llama"``: ``LlamaForCausalLM`` / ``LlamaForSequenceClassification`` with a byte-level BPE tokenizer and
  ChatML special tokens in SmolLM2's ids (``<|endoftext|>`` 0 = unk = pad, ``<|im_start|>`` 1 = bos,
  ``<|im_end|>`` 2 = eos; no BOS added when encoding), chat template: plain ChatML.
* ``"gemma"``: ``Gemma3ForCausalLM`` / ``Gemma3TextForSequenceClassification`` with a Metaspace BPE tokenizer
  and Gemma's special tokens in Gemma's ids (``<pad>`` 0, ``<eos>`` 1, ``<bos>`` 2, ``<unk>`` 3, ``<mask>`` 4,
  ``<start_of_turn>``, ``<end_of_turn>``), ``<bos>`` added when encoding, chat template: the official Gemma
  turn format (``rmvalues.models.GEMMA_CHAT_TEMPLATE``).

Same seed, same weights. Use :func:`save_tiny_model` + :func:`registry_entry` / :func:`write_registry` to
register a tiny model as a ``local`` model of the registry::

    folder = save_tiny_model(tmp_path / "tiny-gemma", "gemma")
    reg = write_registry(tmp_path / "models.yaml", {"tiny-gemma": registry_entry(folder, "gemma")})
    spec = rmvalues.models.get_spec("tiny-gemma", extra=[reg])   # extra registries are passed explicitly
    model, tok = rmvalues.models.load_causal_lm(spec)
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import yaml
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    Gemma3TextForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from rmvalues.models import CHATML_CHAT_TEMPLATE, GEMMA_CHAT_TEMPLATE

FAMILIES = ("llama", "gemma")
KINDS = ("causal-lm", "reward-model")

#: Text the tiny tokenizers are trained on: chat words plus corpus-like words (Big Two, values, emotions).
TRAINING_TEXT = [
    "The honest nurse helped the friendly neighbour with a warm smile.",
    "A cruel, greedy thief lied to the lonely child and stole her freedom.",
    "What is the best thing in the world? Love, family, kindness and peace.",
    "What is the worst thing in the world? War, hatred, violence and fear.",
    "Answer with one word. The single best word is: joy.",
    "competent intelligent skilled capable efficient clever confident ambitious",
    "warm kind trustworthy sincere caring generous loyal fair moral helpful",
    "lazy incompetent stupid weak cold rude selfish dishonest unfair immoral",
    "system user assistant model response prompt reward chosen rejected",
    "You are a helpful assistant. Please answer the question briefly and honestly.",
]

CHATML_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"]


def _check(family: str, kind: str = "causal-lm") -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown tiny family {family!r}; valid: {', '.join(FAMILIES)}")
    if kind not in KINDS:
        raise ValueError(f"unknown tiny kind {kind!r}; valid: {', '.join(KINDS)}")


@lru_cache(maxsize=4)
def _backend_json(family: str, vocab_size: int) -> str:
    """The trained ``tokenizers`` model as JSON (cached: training is deterministic, ~10 ms)."""
    if family == "llama":
        tok = Tokenizer(models.BPE(unk_token=None))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=CHATML_SPECIALS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(TRAINING_TEXT, trainer=trainer)
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    else:
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=GEMMA_SPECIALS, show_progress=False
        )
        tok.train_from_iterator(TRAINING_TEXT, trainer=trainer)
        bos = tok.token_to_id("<bos>")
        tok.post_processor = processors.TemplateProcessing(
            single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", bos)]
        )
    return tok.to_str()


def tiny_tokenizer(family: str, vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """A small trained BPE tokenizer with the family's special tokens and chat template."""
    _check(family)
    backend = Tokenizer.from_str(_backend_json(family, vocab_size))
    if family == "llama":
        tok = PreTrainedTokenizerFast(
            tokenizer_object=backend,
            bos_token="<|im_start|>",
            eos_token="<|im_end|>",
            unk_token="<|endoftext|>",
            pad_token="<|endoftext|>",
        )
        tok.chat_template = CHATML_CHAT_TEMPLATE
    else:
        tok = PreTrainedTokenizerFast(
            tokenizer_object=backend,
            bos_token="<bos>",
            eos_token="<eos>",
            unk_token="<unk>",
            pad_token="<pad>",
            mask_token="<mask>",
            additional_special_tokens=["<start_of_turn>", "<end_of_turn>"],
        )
        tok.chat_template = GEMMA_CHAT_TEMPLATE
    tok.padding_side = "right"
    return tok


def tiny_config(
    family: str, tokenizer: PreTrainedTokenizerFast, **overrides: Any
) -> LlamaConfig | Gemma3TextConfig:
    """A tiny config (hidden 32, 2 layers, 4 heads) matched to ``tokenizer``'s vocabulary and special ids."""
    _check(family)
    common: dict[str, Any] = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        head_dim=8,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    if family == "llama":
        cfg = LlamaConfig(**{**common, "num_key_value_heads": 2, **overrides})
    else:
        cfg = Gemma3TextConfig(
            **{
                **common,
                "num_key_value_heads": 1,
                "sliding_window": 8,
                "layer_types": ["sliding_attention", "full_attention"],
                "query_pre_attn_scalar": 8,
                **overrides,
            }
        )
    return cfg


_CLASSES: dict[tuple[str, str], type[PreTrainedModel]] = {
    ("llama", "causal-lm"): LlamaForCausalLM,
    ("llama", "reward-model"): LlamaForSequenceClassification,
    ("gemma", "causal-lm"): Gemma3ForCausalLM,
    ("gemma", "reward-model"): Gemma3TextForSequenceClassification,
}


def architecture(family: str, kind: str = "causal-lm") -> str:
    """The transformers class name of a tiny model (the registry's ``architecture``)."""
    _check(family, kind)
    return _CLASSES[(family, kind)].__name__


def tiny_model(
    family: str, kind: str = "causal-lm", seed: int = 0, **config_overrides: Any
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """A tiny random model of ``family`` (causal LM or one-logit reward model) and its tokenizer, eval mode.

    Same ``seed`` -> identical weights (the global torch RNG is restored afterwards).
    """
    _check(family, kind)
    tok = tiny_tokenizer(family)
    cfg = tiny_config(family, tok, **config_overrides)
    if kind == "reward-model":
        cfg.num_labels = 1
    cls = _CLASSES[(family, kind)]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(cfg)
    model.eval()
    return model, tok


def tiny_causal_lm(
    family: str, seed: int = 0, **overrides: Any
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    return tiny_model(family, "causal-lm", seed, **overrides)


def tiny_reward_model(
    family: str, seed: int = 0, **overrides: Any
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    return tiny_model(family, "reward-model", seed, **overrides)


def save_tiny_model(
    folder: str | os.PathLike[str], family: str, kind: str = "causal-lm", seed: int = 0
) -> Path:
    """Write a tiny model + tokenizer into ``folder`` (an ordinary model folder) and return it."""
    folder = Path(folder)
    model, tok = tiny_model(family, kind, seed)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def registry_entry(
    folder: str | os.PathLike[str], family: str, kind: str = "causal-lm", **fields: Any
) -> dict[str, Any]:
    """A registry entry (``config/models.yaml`` schema) for a tiny model saved in ``folder``."""
    _check(family, kind)
    entry: dict[str, Any] = {
        "kind": kind,
        "family": family,
        "architecture": architecture(family, kind),
        "type": "pretrained",
        "size": "tiny",
        "hub_id": None,
        "revision": None,
        "source": {"type": "local", "path": str(Path(folder).resolve())},
        "dtype": "float32",
        "attn_implementation": "eager" if family == "gemma" else "sdpa",
        "trust_remote_code": False,
        "chat_template": "builtin:gemma" if family == "gemma" else "tokenizer",
        "pad_token": "<pad>" if family == "gemma" else "<|endoftext|>",
        "padding_side": "right",
        "notes": f"tiny random {family} {kind} for tests",
    }
    if kind == "reward-model":
        entry["score_readout"] = "logits_squeeze"
    entry.update(fields)
    return entry


def write_registry(path: str | os.PathLike[str], entries: dict[str, dict[str, Any]]) -> Path:
    """Write an extra registry file (pass it to ``rmvalues.models.registry(extra=[path])`` / ``get_spec``)."""
    path = Path(path)
    path.write_text(yaml.safe_dump({"models": entries}, sort_keys=False), encoding="utf-8")
    return path
