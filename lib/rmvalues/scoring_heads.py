"""Embedded reward models: the two offline base models with a reward head fitted by a short, documented run.

Until the training chapter builds real RMs, the scoring chapter's default scores two *head-only* RMs: the
base model is frozen, and a linear reward head on its last-token hidden state is fitted with the
Bradley-Terry objective on preference pairs of Anthropic's HH-RLHF (harmless-base, test split; fetched through
:func:`rmvalues.data.fetch`). The recipe (:class:`HeadRecipe`) is data; the run is deterministic:

1. Parse the HH conversations (``\\n\\nHuman:`` / ``\\n\\nAssistant:`` turns); keep pairs whose chosen and
   rejected conversations differ only in the final assistant turn.
2. Shuffle the pairs with ``seed``; render each conversation with the base model's chat template (the same
   token-exact rendering the scoring engine uses) and keep the first ``n_pairs`` whose chosen and rejected
   sequences have at most ``max_tokens`` tokens (short pairs keep the CPU run to a few minutes).
3. Features: the base model's final (normed) hidden state at the last token of the chosen and the rejected
   sequence (the position a sequence-classification head reads), computed by the scoring engine with the
   conversation before the answers encoded once per pair.
4. Fit ``w`` by L2-regularized logistic regression on the standardized feature differences
   (``P(chosen > rejected) = sigmoid(w . (h_c - h_r) / sd)``, scipy L-BFGS), the penalty chosen by 5-fold
   cross-validation on the training pairs; a ``heldout_fraction`` of the pairs is kept out for the reported
   accuracy.
5. Save ``AutoModelForSequenceClassification`` (the base weights unchanged, ``score.weight = w / sd``; the
   head has no bias: a Bradley-Terry reward is defined up to a constant) and the configured tokenizer into the
   registry entry's local folder, atomically, with ``rmvalues-head.json`` (recipe, data checksum, metrics,
   time). A folder whose recipe differs is rebuilt.

The registry entries are ordinary ``local`` reward models (``config/models.yaml``); :data:`HEAD_RMS` maps
their names to recipes so :func:`ensure_head_rm` can (re)build them on first use.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import data, paths
from . import models as models_mod
from .scoring_engine import RewardScorer, ScoringError, split_messages, word_candidates

log = logging.getLogger(__name__)

HEAD_FILE = "rmvalues-head.json"


@dataclass(frozen=True)
class HeadRecipe:
    """How a head-only RM is made from a base model (every field is recorded with the model)."""

    base: str
    dataset: str = "hh-rlhf/harmless-base-test"
    n_pairs: int = 96
    max_tokens: int = 64
    max_chars_per_token: int = 6  # pre-filter: a pair with more characters cannot fit in max_tokens
    heldout_fraction: float = 0.25
    penalties: tuple[float, ...] = (1.0, 10.0, 100.0, 1000.0, 10000.0)
    seed: int = 0


#: Embedded head RMs: registry name -> recipe.
HEAD_RMS: dict[str, HeadRecipe] = {
    "smollm2-135m-rm-head": HeadRecipe(base="smollm2-135m-instruct"),
    "gemma3-270m-rm-head": HeadRecipe(base="gemma3-270m"),
}

_TURN = re.compile(r"\n\n(Human|Assistant): ")


def parse_hh(text: str) -> list[dict[str, str]] | None:
    """HH-RLHF conversation text -> chat messages (None when the turns do not alternate user/assistant)."""
    parts = _TURN.split(text)
    if parts[0].strip():
        return None
    messages = []
    for role, content in zip(parts[1::2], parts[2::2], strict=True):
        messages.append({"role": "user" if role == "Human" else "assistant", "content": content.strip()})
    if not messages or messages[0]["role"] != "user" or messages[-1]["role"] != "assistant":
        return None
    for a, b in zip(messages, messages[1:], strict=False):
        if a["role"] == b["role"] or not a["content"]:
            return None
    return messages


def load_pairs(dataset: str) -> list[tuple[list[dict[str, str]], str, str]]:
    """``(context messages, chosen answer, rejected answer)`` of every usable HH pair, in file order."""
    out = []
    with gzip.open(data.fetch(dataset), "rt", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            chosen, rejected = parse_hh(row["chosen"]), parse_hh(row["rejected"])
            if chosen is None or rejected is None or chosen[:-1] != rejected[:-1]:
                continue
            a, b = chosen[-1]["content"], rejected[-1]["content"]
            if a and b and a != b:
                out.append((chosen[:-1], a, b))
    return out


def _nll(w: np.ndarray, x: np.ndarray, penalty: float) -> tuple[float, np.ndarray]:
    margin = x @ w
    loss = np.logaddexp(0.0, -margin).sum() + 0.5 * penalty * w @ w
    grad = -(x.T @ (1.0 / (1.0 + np.exp(margin)))) + penalty * w
    return float(loss), grad


def fit_bt(x: np.ndarray, penalty: float) -> np.ndarray:
    """Bradley-Terry / logistic fit without intercept: ``argmin sum log(1 + exp(-x w)) + penalty/2 |w|^2``."""
    from scipy.optimize import minimize

    res = minimize(_nll, np.zeros(x.shape[1]), args=(x, penalty), jac=True, method="L-BFGS-B")
    return res.x


def choose_penalty(
    x: np.ndarray, penalties: tuple[float, ...], seed: int, folds: int = 5
) -> tuple[float, dict]:
    """The penalty with the best mean cross-validated pairwise accuracy (ties: the larger penalty)."""
    rng = np.random.default_rng(seed)
    fold = rng.permutation(len(x)) % folds
    scores = {}
    for pen in penalties:
        acc = []
        for k in range(folds):
            w = fit_bt(x[fold != k], pen)
            acc.append(float(((x[fold == k] @ w) > 0).mean()))
        scores[pen] = float(np.mean(acc))
    best = max(penalties, key=lambda p: (scores[p], p))
    return best, scores


def _recipe_dict(recipe: HeadRecipe) -> dict[str, Any]:
    d = dataclasses.asdict(recipe)
    d["penalties"] = list(recipe.penalties)
    return d


def head_folder(name: str) -> Path:
    spec = models_mod.get_spec(name)
    if spec.source.type != "local":
        raise models_mod.RegistryError(f"head RM {name!r} must be a local registry entry")
    return paths.resolve(os.path.expandvars(spec.source.path or ""))


def is_built(name: str) -> bool:
    folder = head_folder(name)
    try:
        info = json.loads((folder / HEAD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (folder / "config.json").is_file() and info.get("recipe") == _recipe_dict(HEAD_RMS[name])


def ensure_head_rm(name: str) -> Path:
    """The folder of the embedded head RM ``name``, trained first if it is missing or its recipe changed."""
    from filelock import FileLock

    if name not in HEAD_RMS:
        raise KeyError(f"{name!r} is not an embedded head RM ({', '.join(HEAD_RMS)})")
    folder = head_folder(name)
    if is_built(name):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder.parent / f".{folder.name}.lock")):
        if is_built(name):
            return folder
        return train_head_rm(name, HEAD_RMS[name], folder)


def train_head_rm(name: str, recipe: HeadRecipe, folder: Path) -> Path:
    """Fit the head of ``recipe`` and save the RM into ``folder`` (atomically). Returns ``folder``."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the new head is "missing from the checkpoint": expected here
    try:
        return _train_head_rm(name, recipe, folder)
    finally:
        hf_logging.set_verbosity(level)


def _train_head_rm(name: str, recipe: HeadRecipe, folder: Path) -> Path:
    import torch
    from transformers import AutoModelForSequenceClassification

    t0 = time.perf_counter()
    base = models_mod.get_spec(recipe.base)
    tok = models_mod.load_tokenizer(base)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(models_mod.ensure_local(base)),
        num_labels=1,
        dtype=torch.float32,
        attn_implementation=base.attn_implementation,
        local_files_only=True,
    )
    model.config.pad_token_id = tok.pad_token_id
    model.eval()
    with torch.no_grad():
        model.score.weight.zero_()

    # 1-2: pairs, rendered token-exactly, short enough, seeded sample
    pairs = load_pairs(recipe.dataset)
    rng = np.random.default_rng(recipe.seed)
    pairs_used: list[tuple[Any, tuple[int, ...], tuple[int, ...]]] = []
    for i in rng.permutation(len(pairs)):
        context, chosen, rejected = pairs[int(i)]
        n_chars = sum(len(m["content"]) for m in context) + max(len(chosen), len(rejected))
        if n_chars > recipe.max_chars_per_token * recipe.max_tokens:  # cheap pre-filter
            continue
        try:
            split = split_messages(tok, context)
        except Exception:
            continue
        cands = word_candidates(tok, split, [chosen, rejected])
        if max(len(split.input_ids(c.ids)) for c in cands) <= recipe.max_tokens:
            pairs_used.append((split, cands[0].ids, cands[1].ids))
        if len(pairs_used) == recipe.n_pairs:
            break
    if len(pairs_used) < 20:
        raise ScoringError(
            f"only {len(pairs_used)} HH pairs fit in {recipe.max_tokens} tokens for {recipe.base}"
        )
    t_data = time.perf_counter() - t0

    # 3: features: the conversation before the answers is encoded once per pair (the engine's shared prefix)
    scorer = RewardScorer(model, tok, method="shared-prefix", batch_size=2)
    hidden = np.concatenate([scorer.features(split, [c, r]) for split, c, r in pairs_used]).astype(np.float64)
    h_c, h_r = hidden[0::2], hidden[1::2]
    t_feat = time.perf_counter() - t0 - t_data

    # 4: fit on standardized differences, penalty by CV, held-out accuracy
    n = len(pairs_used)
    n_held = max(1, int(round(recipe.heldout_fraction * n)))
    perm = np.random.default_rng(recipe.seed + 1).permutation(n)
    held, train = perm[:n_held], perm[n_held:]
    sd = hidden[np.concatenate([2 * train, 2 * train + 1])].std(axis=0) + 1e-6
    x = (h_c - h_r) / sd
    penalty, cv = choose_penalty(x[train], recipe.penalties, recipe.seed)
    w = fit_bt(x[train], penalty)
    train_acc = float(((x[train] @ w) > 0).mean())
    held_acc = float(((x[held] @ w) > 0).mean())

    # 5: save
    with torch.no_grad():
        model.score.weight.copy_(torch.tensor(w / sd, dtype=torch.float32).view(1, -1))
    split, c, r = pairs_used[0]
    check = RewardScorer(model, tok, method="full").score(split, [c, r])  # the saved head, whole sequences
    info = {
        "name": name,
        "recipe": _recipe_dict(recipe),
        "base": models_mod.model_info(base),
        "dataset_sha256": data.get(recipe.dataset).sha256,
        "pairs": {"total_usable": len(pairs), "used": n, "train": len(train), "heldout": len(held)},
        "penalty": penalty,
        "cv_accuracy": {str(k): v for k, v in cv.items()},
        "train_accuracy": train_acc,
        "heldout_accuracy": held_acc,
        "first_pair_rewards": [float(v) for v in check],
        "seconds": {
            "data": round(t_data, 1),
            "features": round(t_feat, 1),
            "total": round(time.perf_counter() - t0, 1),
        },
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{folder.name}-", dir=folder.parent))
    try:
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        (tmp / HEAD_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        os.rename(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info(
        "built %s in %.0f s: %d pairs, held-out accuracy %.2f (train %.2f)",
        name,
        info["seconds"]["total"],
        n,
        held_acc,
        train_acc,
    )
    return folder


def head_info(name: str) -> dict[str, Any]:
    """The ``rmvalues-head.json`` of a built head RM (recipe, metrics, timings)."""
    return json.loads((head_folder(name) / HEAD_FILE).read_text(encoding="utf-8"))
