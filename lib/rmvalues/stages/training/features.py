"""What the frozen base computes once, and how checkpoints are scored on the corpus words.

* **Pair features** (:func:`pair_features`): the last-token hidden states of the chosen and rejected
  sequences of the selected pairs (:meth:`rmvalues.engine.RewardScorer.last_hidden`, batched by length), the
  table a head-only cell trains on. Computed once per pair and cached in one file per base model entry,
  data checksum and length rule (:func:`pair_feature_key`); a later run computes only the pairs it lacks.
* **Word features** (:func:`word_features`): the hidden states the score head reads for every (prompt, word)
  input of the scoring engine (:meth:`rmvalues.engine.RewardScorer.features`: token-exact chat inputs, the
  prompt's keys and values reused). For a head-only cell each checkpoint's rewards are these features times its
  head (exact: the base does not change), so the base runs once per model, not once per checkpoint.
* **Checkpoints of LoRA / full cells** (:func:`checkpoint_rewards`) are loaded and scored one by one.

Features are cached on disk per base model (``<output_dir>/features/<model>/<kind>-<digest>.npz``), keyed by
everything that determines them (the model's registry entry, the data and length rule or the prompts and
words); each cached pair also stores a digest of its token ids, and a pair whose tokens changed is
recomputed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ...data.preferences import PairSelection
from ...engine.inputs import ScoringError, split_template, word_candidates
from ...engine.reward import RewardScorer
from ...models.loading import load_sequence_classifier, quiet_transformers
from ...models.registry import ModelSpec
from .trainer import on_gpu

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "CHECK_WORDS",
    "WordFeatures",
    "checkpoint_rewards",
    "digest",
    "feature_file",
    "pair_feature_key",
    "pair_features",
    "save_npz",
    "score_model_words",
    "word_features",
    "word_features_cached",
]


#: Words per prompt whose hidden states are checked against the scoring engine's rewards.
CHECK_WORDS = 32


def digest(obj: Any) -> str:
    """A short, stable hash of a JSON-able object (cache keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:16]


def feature_file(root: Path, model: str, kind: str, key: Any) -> Path:
    """The cache file of one kind of features of one base model."""
    return root / "features" / model / f"{kind}-{digest(key)}.npz"


def save_npz(file: Path, **arrays: Any) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.stem}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, file)


# -- pairs ------------------------------------------------------------------------------------------------------


def pair_feature_key(base: ModelSpec, selection: PairSelection) -> dict[str, Any]:
    """What a pair's features depend on besides its tokens: the base model's registry entry (without its
    notes), the source and its data checksum, and the length rule (``max_length``, ``truncation``)."""
    entry = {k: v for k, v in dataclasses.asdict(base).items() if k not in ("notes", "registry_file")}
    return {
        "model": entry,
        "source": selection.source,
        "data_sha256": selection.sha256,
        "length_rule": {"max_length": selection.max_length, "truncation": selection.truncation},
    }


def _read_pair_cache(file: Path) -> dict[int, tuple[str, np.ndarray, np.ndarray]]:
    if not file.is_file():
        return {}
    with np.load(file, allow_pickle=False) as npz:
        return {
            int(i): (str(d), npz["chosen"][k], npz["rejected"][k])
            for k, (i, d) in enumerate(zip(npz["ids"], npz["tokens"], strict=True))
        }


def pair_features(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    base: ModelSpec,
    selection: PairSelection,
    ids: Sequence[int],
    root: Path,
    batch_size: int,
    progress: bool = False,
    computed: Mapping[int, tuple[np.ndarray, np.ndarray]] | None = None,
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Features of the chosen and rejected sequences of pairs ``ids``: pair id -> (chosen, rejected)
    last-token hidden states. ``computed``: features of pairs already computed from the same token ids in
    another pass of the frozen base (the depth arm's, :func:`.depth.pair_activations`), used as they are.

    Cached on disk in one file per :func:`pair_feature_key` (base model entry, data checksum, length rule)
    holding every pair computed so far; only pairs missing from it (or whose token ids changed) are computed,
    through the scoring engine's :meth:`~rmvalues.engine.RewardScorer.last_hidden` (sorted by length, so
    batches are of similar lengths), and added to it."""
    tokens = selection.tokens[base.name]
    file = feature_file(root, base.name, f"pairs-{selection.source}", pair_feature_key(base, selection))
    cache = _read_pair_cache(file)
    want = {int(i): digest(tokens[i]) for i in ids}
    todo = [i for i, d in want.items() if i not in cache or cache[i][0] != d]
    given = {i: computed[i] for i in todo if computed is not None and i in computed}
    cache.update({i: (want[i], *given[i]) for i in given})
    todo = [i for i in todo if i not in given]
    if todo:
        from tqdm import tqdm

        scorer = RewardScorer(model, tokenizer)
        with tqdm(
            total=2 * len(todo), desc=f"features {base.name}", unit="seq", leave=False, disable=not progress
        ) as bar:
            seqs = [tokens[i][0] for i in todo] + [tokens[i][1] for i in todo]
            feats = scorer.last_hidden(seqs, batch_size=batch_size, progress=bar.update)
        n = len(todo)
        cache.update({i: (want[i], feats[k], feats[n + k]) for k, i in enumerate(todo)})
    if todo or given:
        keep = sorted(cache)
        save_npz(
            file,
            ids=np.asarray(keep, dtype=np.int64),
            tokens=np.asarray([cache[i][0] for i in keep]),
            chosen=np.stack([cache[i][1] for i in keep]),
            rejected=np.stack([cache[i][2] for i in keep]),
        )
    return {i: (cache[i][1], cache[i][2]) for i in want}


# -- words ------------------------------------------------------------------------------------------------------


@dataclass
class WordFeatures:
    """Hidden states the score head reads for (prompt, word) inputs of one base model, from the scoring engine."""

    model: str
    prompt_ids: list[str]
    words: list[str]
    n_tokens: dict[str, list[int]]  # prompt -> tokens per word
    features: dict[str, np.ndarray]  # prompt -> (n_words, hidden)

    def rewards(self, heads: np.ndarray) -> dict[str, np.ndarray]:
        """prompt -> ``(n_words, n_heads)`` rewards of each head (rows of ``heads``)."""
        w = np.atleast_2d(np.asarray(heads, dtype=np.float64))
        return {p: f.astype(np.float64) @ w.T for p, f in self.features.items()}


def word_features(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    name: str,
    prompts: pd.DataFrame,
    words: Sequence[str],
) -> WordFeatures:
    """Hidden states the score head reads for every (prompt, word), through the scoring engine.

    The engine renders ``[user: prompt, assistant: word]`` token-exactly with the model's chat template and
    reuses the prompt's keys/values (:meth:`RewardScorer.features`, rows in input order). They are checked
    against the engine's own rewards (``features @ head == scores``) on the first ``CHECK_WORDS`` words of
    every prompt, so a change in the engine's batching or order is caught, not silently misaligned (the
    rewards of all words would cost a second forward pass).
    """
    scorer = RewardScorer(model, tokenizer)
    head = model.score.weight.detach().double().cpu().numpy().reshape(-1)
    feats: dict[str, np.ndarray] = {}
    ntok: dict[str, list[int]] = {}
    for pid, text in zip(prompts["prompt_id"], prompts["text"], strict=True):
        split = split_template(tokenizer, text, pid)
        ids = [c.ids for c in word_candidates(tokenizer, split, list(words))]
        hidden = scorer.features(split, ids)
        if hidden.shape[0] != len(ids):
            raise ScoringError(
                f"the engine returned {hidden.shape[0]} hidden states for {len(ids)} candidates"
            )
        scored = scorer.score(split, ids[:CHECK_WORDS])
        check = hidden[:CHECK_WORDS].astype(np.float64) @ head
        if not np.allclose(check, scored, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(scored).max()))):
            raise ScoringError(
                "hidden states from the scoring engine do not reproduce its rewards (the engine's candidate "
                "order changed?); score head-only checkpoints one by one instead"
            )
        feats[pid] = hidden
        ntok[pid] = [len(i) for i in ids]
    return WordFeatures(name, list(prompts["prompt_id"]), list(words), ntok, feats)


def word_features_cached(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    base: ModelSpec,
    prompts: pd.DataFrame,
    words: Sequence[str],
    root: Path,
) -> WordFeatures:
    """:func:`word_features`, cached on disk per base model, prompts and words."""
    key = {
        "model": dataclasses.asdict(base.source),
        "prompts": list(zip(prompts["prompt_id"], prompts["text"], strict=True)),
        "words": list(words),
    }
    file = feature_file(root, base.name, "words", key)
    if file.is_file():
        with np.load(file, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            return WordFeatures(
                base.name,
                meta["prompt_ids"],
                meta["words"],
                meta["n_tokens"],
                {p: npz[f"f{i}"] for i, p in enumerate(meta["prompt_ids"])},
            )
    wf = word_features(model, tokenizer, base.name, prompts, words)
    meta = json.dumps({"prompt_ids": wf.prompt_ids, "words": wf.words, "n_tokens": wf.n_tokens})
    save_npz(file, meta=np.asarray(meta), **{f"f{i}": wf.features[p] for i, p in enumerate(wf.prompt_ids)})
    return wf


# -- checkpoints of LoRA / full cells --------------------------------------------------------------------------


def score_model_words(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: pd.DataFrame, words: Sequence[str]
) -> dict[str, np.ndarray]:
    """prompt -> rewards of ``words`` by ``model`` (any sequence classifier), through the scoring engine."""
    scorer = RewardScorer(model, tokenizer)
    out = {}
    for pid, text in zip(prompts["prompt_id"], prompts["text"], strict=True):
        split = split_template(tokenizer, text, pid)
        cands = word_candidates(tokenizer, split, list(words))
        out[pid] = scorer.score(split, [c.ids for c in cands])
    return out


def _load_checkpoint(base: ModelSpec, folder: Path, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """One saved checkpoint as a plain sequence classifier (a LoRA adapter merged into a fresh base)."""
    if (folder / "adapter_config.json").is_file():
        from peft import PeftModel

        fresh = load_sequence_classifier(base, tokenizer)
        with quiet_transformers():
            model = PeftModel.from_pretrained(fresh, str(folder)).merge_and_unload()
    else:
        import torch
        from transformers import AutoModelForSequenceClassification

        with quiet_transformers():
            model = AutoModelForSequenceClassification.from_pretrained(
                str(folder), dtype=torch.float32, local_files_only=True
            )
        model.config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    if on_gpu():
        model.to("cuda")
    return model


def checkpoint_rewards(
    base: ModelSpec,
    checkpoints: Mapping[int, Path],
    tokenizer: PreTrainedTokenizerBase,
    prompts: pd.DataFrame,
    words: Sequence[str],
) -> tuple[list[int], dict[str, np.ndarray]]:
    """Rewards of every saved checkpoint of a LoRA / full cell (each loaded and scored by the engine):
    ``(steps, prompt -> (n_words, n_steps))``."""
    steps = sorted(checkpoints)
    per_prompt: dict[str, list[np.ndarray]] = {p: [] for p in prompts["prompt_id"]}
    for step in steps:
        model = _load_checkpoint(base, checkpoints[step], tokenizer)
        for pid, r in score_model_words(model, tokenizer, prompts, words).items():
            per_prompt[pid].append(r)
        del model
    return steps, {p: np.stack(v, axis=1) for p, v in per_prompt.items()}
