"""The depth-of-adaptation arm: reward models that adapt the top k transformer blocks of the base with the head.

The probe (k = 0) adapts nothing of the base; the paper's LoRA adapts the whole network. In between, a depth
cell trains the top ``k`` blocks plus the head on the same pairs and seeds as the probe of the same (base,
source, quantity, seed), from the hidden states entering those blocks, computed once per pair by the frozen
layers below (:class:`rmvalues.engine.TopBlocks`) and cached on disk like the pair features: one file per base
model entry, data checksum, length rule and block (:func:`activation_key`).

* **Start.** The head starts at the probe's converged L2 logistic reference (linear probing, then fine-tuning:
  the cell begins where the probe ended, so what changes is what adapting the blocks adds). The objective is
  the probe's (Bradley-Terry loss plus the same L2 penalty on the head, in the probe's standardized space);
  the blocks are not penalised.
* **Training.** TRL's ``RewardTrainer`` on a model whose "sequences" are row indices into the cached table
  (:class:`DepthRewardModel`), as the probe's cached-feature model: TRL's collator, loss, optimizer (AdamW,
  ``depth_learning_rate``, ``depth_batch_size`` pairs per step, ``depth_epochs``), schedule and batch order.
* **Checkpoints.** The adapted weights (top blocks and head) are kept every ``checkpoint_every`` steps and at
  the last; each is scored on the corpus words x prompts from the words' cached hidden states below the blocks
  (the same token-exact inputs as the scoring engine's), and the held-out pairs are scored at the last.
* The base model is shared by every cell: its top blocks are restored after each cell.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ...data.preferences import PairSelection
from ...engine.inputs import split_template, word_candidates
from ...engine.topblocks import TopBlocks
from ...models.loading import quiet_transformers
from ...models.registry import ModelSpec
from .config import Cell, TrainSettings
from .features import digest, feature_file, pair_feature_key, save_npz
from .trainer import pair_dataset, reward_config, tidy_history

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "DepthOutcome",
    "activation_key",
    "block_state",
    "depth_key",
    "depth_marker",
    "depth_model",
    "pair_activations",
    "restore_blocks",
    "train_depth",
    "word_activations",
    "word_rewards",
]

#: Sequences per forward pass of the top blocks when scoring (held-out pairs, words).
SCORE_BATCH = 64


def activation_key(base: ModelSpec, selection: PairSelection, block: int) -> dict[str, Any]:
    """The cache key of the hidden states entering ``block``: the pair-feature key plus the block."""
    return pair_feature_key(base, selection) | {"block": int(block)}


def _read(file: Path) -> dict[int, tuple[str, np.ndarray, np.ndarray]]:
    if not file.is_file():
        return {}
    with np.load(file, allow_pickle=False) as z:  # each z[name] reads the whole array: read each once
        ids, tokens, chosen, rejected = z["ids"], z["tokens"], z["chosen"], z["rejected"]
        offs_c, offs_r = np.r_[0, np.cumsum(z["len_c"])], np.r_[0, np.cumsum(z["len_r"])]
    return {
        int(i): (str(d), chosen[offs_c[k] : offs_c[k + 1]], rejected[offs_r[k] : offs_r[k + 1]])
        for k, (i, d) in enumerate(zip(ids, tokens, strict=True))
    }


def pair_activations(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    base: ModelSpec,
    selection: PairSelection,
    ids: Sequence[int],
    root: Path,
    depths: Sequence[int],
    batch_size: int,
) -> tuple[dict[int, dict[int, tuple[np.ndarray, np.ndarray]]], dict[int, tuple[np.ndarray, np.ndarray]]]:
    """``(activations, features)``: depth k -> pair id -> (chosen, rejected) hidden states entering block
    ``L - k`` (``(tokens, hidden)``), and pair id -> (chosen, rejected) last-token features of the pairs
    computed now (the probe's features, from the same pass: :func:`.features.pair_features` takes them as
    ``computed``, so the arm costs no second pass over the pairs). Cached per :func:`activation_key`; missing
    pairs (or pairs whose tokens changed) are computed in one pass of the frozen base for every depth."""
    tokens = selection.tokens[base.name]
    want = {int(i): digest(tokens[i]) for i in ids}
    tops = {k: TopBlocks(model, k) for k in depths}
    files = {
        k: feature_file(
            root, base.name, f"below-{selection.source}", activation_key(base, selection, t.first)
        )
        for k, t in tops.items()
    }
    caches = {k: _read(f) for k, f in files.items()}
    todo = sorted({i for k in depths for i, d in want.items() if i not in caches[k] or caches[k][i][0] != d})
    features: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    if todo:
        seqs = [tokens[i][0] for i in todo] + [tokens[i][1] for i in todo]
        firsts = [t.first for t in tops.values()]
        top = next(iter(tops.values()))
        below, last = top.hidden_below_and_last(seqs, tokenizer.pad_token_id, batch_size, firsts)
        n = len(todo)
        features = {i: (last[j], last[n + j]) for j, i in enumerate(todo)}
        for k, t in tops.items():
            got = below[t.first]
            caches[k].update({i: (want[i], got[j], got[n + j]) for j, i in enumerate(todo)})
            keep = sorted(caches[k])
            c = caches[k]
            save_npz(
                files[k],
                ids=np.asarray(keep, dtype=np.int64),
                tokens=np.asarray([c[i][0] for i in keep]),
                len_c=np.asarray([len(c[i][1]) for i in keep], dtype=np.int64),
                len_r=np.asarray([len(c[i][2]) for i in keep], dtype=np.int64),
                chosen=np.concatenate([c[i][1] for i in keep]),
                rejected=np.concatenate([c[i][2] for i in keep]),
            )
    return {k: {i: (caches[k][i][1], caches[k][i][2]) for i in want} for k in depths}, features


def word_activations(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    base: ModelSpec,
    prompts: pd.DataFrame,
    words: Sequence[str],
    root: Path,
    depths: Sequence[int],
    batch_size: int,
) -> tuple[dict[int, dict[str, list[np.ndarray]]], dict[str, int]]:
    """``(activations, prefix lengths)``: depth k -> prompt -> the hidden states entering block ``L - k`` of
    every word's input (the scoring engine's token-exact ``prefix + word + suffix``; the prompt's prefix run
    once and its keys and values reused, as the engine does), cached per base model, prompts, words and block;
    and prompt -> tokens of its shared prefix (:func:`word_rewards` runs the top blocks on it once)."""
    splits, conts, seqs = {}, {}, []
    for pid, text in zip(prompts["prompt_id"], prompts["text"], strict=True):
        split = split_template(tokenizer, text, pid)
        splits[pid] = split
        conts[pid] = [[*c.ids, *split.suffix_ids] for c in word_candidates(tokenizer, split, list(words))]
        seqs += [[*split.prefix_ids, *c] for c in conts[pid]]  # the cache key's sequences
    tops = {k: TopBlocks(model, k) for k in depths}
    out: dict[int, dict[str, list[np.ndarray]]] = {}
    files = {}
    for k, t in tops.items():
        key = {"model": dataclasses.asdict(base.source), "seqs": digest(seqs), "block": t.first, "prefix": 1}
        files[k] = feature_file(root, base.name, "below-words", key)
        if files[k].is_file():
            with np.load(files[k], allow_pickle=False) as z:  # read the array once, not once per row
                offs, hidden = np.r_[0, np.cumsum(z["lengths"])], z["hidden"]
            rows = [hidden[offs[j] : offs[j + 1]] for j in range(len(seqs))]
            starts = np.r_[0, np.cumsum([len(conts[p]) for p in splits])]
            out[k] = {p: rows[starts[j] : starts[j + 1]] for j, p in enumerate(splits)}
    missing = [k for k in tops if k not in out]
    if missing:
        firsts = [tops[k].first for k in missing]
        top = tops[missing[0]]
        got = {
            p: top.hidden_below_after_prefix(
                splits[p].prefix_ids, conts[p], tokenizer.pad_token_id, batch_size, firsts
            )
            for p in splits
        }
        for k in missing:
            out[k] = {p: got[p][tops[k].first] for p in splits}
            rows = [r for p in splits for r in out[k][p]]
            lengths = np.asarray([len(r) for r in rows], dtype=np.int64)
            save_npz(files[k], lengths=lengths, hidden=np.concatenate(rows))
    return out, {p: len(split.prefix_ids) for p, split in splits.items()}


# -- the model TRL trains -----------------------------------------------------------------------------------------


def _pad(rows: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    width = max(len(r) for r in rows)
    hidden = torch.zeros((len(rows), width, rows[0].shape[1]), dtype=torch.float32)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for j, r in enumerate(rows):
        hidden[j, : len(r)] = torch.from_numpy(np.asarray(r, dtype=np.float32))
        mask[j, : len(r)] = 1
    return hidden, mask


def _model_classes() -> tuple[type, type]:
    import torch
    from transformers import PretrainedConfig, PreTrainedModel
    from transformers.modeling_outputs import SequenceClassifierOutputWithPast

    class DepthConfig(PretrainedConfig):
        model_type = "rmvalues-top-blocks"

        def __init__(self, hidden_size: int = 1, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.hidden_size = hidden_size

    class DepthRewardModel(PreTrainedModel):
        """A reward model over a table of cached hidden states below the top blocks: row ``input_ids[:, 0]``
        runs through the top blocks, the final norm and the head. Only ``blocks`` and ``score`` train."""

        config_class = DepthConfig
        base_model_prefix = "depth_model"
        main_input_name = "input_ids"
        _supports_attention_backend = False

        def __init__(
            self,
            config: DepthConfig,
            rows: Sequence[np.ndarray],
            top: TopBlocks,
            score: torch.nn.Linear,
        ) -> None:
            super().__init__(config)
            self.rows = list(rows)
            self.top = top  # a plain object: the frozen decoder is not a submodule
            self.blocks = torch.nn.ModuleList(top.blocks)
            self.score = score

        def forward(self, input_ids: torch.Tensor, attention_mask: Any = None, **kwargs: Any) -> Any:
            hidden, mask = _pad([self.rows[int(i)] for i in input_ids[:, 0]])
            device = self.score.weight.device
            last = self.top.last_hidden(hidden.to(device), mask.to(device))
            return SequenceClassifierOutputWithPast(logits=self.score(last))

    return DepthConfig, DepthRewardModel


def depth_model(
    rows: Sequence[np.ndarray], top: TopBlocks, head: np.ndarray, pad_token_id: int
) -> PreTrainedModel:
    """A :class:`DepthRewardModel` over ``rows`` whose head starts at ``head`` (raw hidden states); the top
    blocks and the head train, nothing else."""
    import torch

    config_cls, model_cls = _model_classes()
    hidden = int(rows[0].shape[1])
    score = torch.nn.Linear(hidden, 1, bias=False)
    with torch.no_grad():
        score.weight.copy_(torch.as_tensor(np.asarray(head, dtype=np.float32)).reshape(1, -1))
    for p in top.decoder.parameters():
        p.requires_grad_(False)
    for block in top.blocks:
        for p in block.parameters():
            p.requires_grad_(True)
    config = config_cls(hidden_size=hidden, num_labels=1, pad_token_id=pad_token_id)
    return model_cls(config, rows, top, score)


def _snapshots(every: int) -> Any:
    from transformers import TrainerCallback

    class Snapshots(TrainerCallback):
        """The trainable weights (top blocks, head) at every ``every`` steps and the last."""

        def __init__(self) -> None:
            self.states: dict[int, dict[str, Any]] = {}

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step % every == 0 or state.global_step >= state.max_steps:
                self.states[state.global_step] = {
                    n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad
                }

    return Snapshots()


@dataclasses.dataclass
class DepthOutcome:
    """What :func:`train_depth` returns."""

    history: pd.DataFrame  # tidy_history rows (train loss per step)
    states: dict[int, dict[str, Any]]  # step -> trainable weights
    eval: pd.DataFrame  # pair_id, margin, correct at the last step
    steps: int
    seconds: float


def _rewards(model: PreTrainedModel, rows: Sequence[np.ndarray]) -> np.ndarray:
    import torch

    out = []
    with torch.no_grad():
        for s in range(0, len(rows), SCORE_BATCH):
            hidden, mask = _pad(rows[s : s + SCORE_BATCH])
            dev = model.score.weight.device
            out.append(model.score(model.top.last_hidden(hidden.to(dev), mask.to(dev)))[:, 0].double().cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)


def train_depth(
    cell: Cell,
    settings: TrainSettings,
    top: TopBlocks,
    acts: Mapping[int, tuple[np.ndarray, np.ndarray]],
    train_ids: Sequence[int],
    eval_ids: Sequence[int],
    head: np.ndarray,
    penalty: np.ndarray | None,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: Path,
) -> DepthOutcome:
    """Train one depth cell with TRL's ``RewardTrainer`` from the cached ``acts`` (pair id -> chosen,
    rejected hidden states below the blocks), the head starting at ``head``; ``penalty``: per-dimension
    weights of the head's L2 penalty (``head_l2 * sd**2``: the probe's penalty in its standardized space), or
    None. The top blocks are left trained: the caller restores them."""
    import torch
    from transformers import PrinterCallback, ProgressCallback
    from trl import RewardTrainer

    n = len(train_ids)
    rows = [acts[i][0] for i in train_ids] + [acts[i][1] for i in train_ids]
    model = depth_model(rows, top, head, tokenizer.pad_token_id)
    hook = None
    if penalty is not None:
        weights = torch.as_tensor(np.asarray(penalty, dtype=np.float32)).reshape(1, -1)
        w = model.score.weight
        hook = w.register_hook(lambda grad: grad + weights * w.detach())
    args = reward_config(settings, cell.seed, out_dir / "trainer", False, True, depth=True)
    snaps = _snapshots(settings.checkpoint_every)
    with quiet_transformers():
        trainer = RewardTrainer(
            model=model,
            args=args,
            train_dataset=pair_dataset([([i], [n + i]) for i in range(n)]),
            processing_class=tokenizer,
            callbacks=[snaps],
        )
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    start = time.perf_counter()
    try:
        with quiet_transformers():
            trainer.train()
    finally:
        if hook is not None:
            hook.remove()
    seconds = time.perf_counter() - start
    model.eval()
    m = len(eval_ids)
    r = _rewards(model, [acts[i][0] for i in eval_ids] + [acts[i][1] for i in eval_ids])
    margin = r[:m] - r[m:]
    ev = pd.DataFrame({"pair_id": list(eval_ids), "margin": margin, "correct": margin > 0})
    history = tidy_history(pd.DataFrame(trainer.state.log_history))
    return DepthOutcome(history, snaps.states, ev, int(trainer.state.global_step), seconds)


def word_rewards(
    top: TopBlocks,
    states: Mapping[int, Mapping[str, Any]],
    words: Mapping[str, Sequence[np.ndarray]],
    pad_token_id: int,
    prefix_lengths: Mapping[str, int] | None = None,
) -> tuple[list[int], dict[str, np.ndarray]]:
    """Rewards of the words under every kept state: ``(steps, prompt -> (n_words, n_steps))``. With
    ``prefix_lengths`` (prompt -> tokens every word's input shares at its start) the top blocks run once on
    that prefix per state and prompt and reuse its keys and values (:meth:`TopBlocks.last_hidden_after_prefix`,
    the same rewards). The top blocks are left in the last state: the caller restores them."""
    import torch

    steps = sorted(states)
    hidden = int(next(iter(next(iter(words.values())))).shape[1])
    model = depth_model([np.zeros((1, hidden), np.float32)], top, np.zeros(hidden), pad_token_id)
    out: dict[str, list[np.ndarray]] = {p: [] for p in words}
    for step in steps:
        model.load_state_dict(dict(states[step]), strict=False)
        model.eval()
        for pid, rows in words.items():
            if prefix_lengths is None:
                out[pid].append(_rewards(model, rows))
                continue
            p = prefix_lengths[pid]
            dev = model.score.weight.device
            with torch.no_grad():
                prefix = torch.as_tensor(np.asarray(rows[0][:p], dtype=np.float32), device=dev)
                last = top.last_hidden_after_prefix(prefix, [r[p:] for r in rows], SCORE_BATCH)
                out[pid].append(model.score(last)[:, 0].double().cpu().numpy())
    return steps, {p: np.stack(v, axis=1) for p, v in out.items()}


def block_state(top: TopBlocks) -> list[dict[str, Any]]:
    """A copy of the top blocks' weights (to restore the shared base after a cell)."""
    return [{n: t.detach().clone() for n, t in b.state_dict().items()} for b in top.blocks]


def restore_blocks(top: TopBlocks, saved: Sequence[Mapping[str, Any]]) -> None:
    """Put the saved weights back into the top blocks and freeze them."""
    for block, state in zip(top.blocks, saved, strict=True):
        block.load_state_dict(dict(state))
        for p in block.parameters():
            p.requires_grad_(False)


def depth_key(probe_key: Mapping[str, Any], cell: Cell, settings: TrainSettings) -> dict[str, Any]:
    """A depth cell's key: its probe's key, the depth and the depth arm's settings."""
    depth = {k: v for k, v in settings.as_dict().items() if k.startswith("depth") and k != "depths"}
    return json.loads(json.dumps(dict(probe_key) | {"depth": cell.depth, "depth_settings": depth}))


def depth_marker(
    out: DepthOutcome, key: Mapping[str, Any], cell: Cell, n_train: int, n_eval: int
) -> dict[str, Any]:
    """A depth cell's ``cell.json`` marker: its key, the cell, steps, time and final metrics (held-out
    accuracy and margin at the last step; no random start to compare with: the head starts at the probe's
    reference)."""
    train = out.history[out.history["split"] == "train"]
    has_eval = n_eval > 0
    metrics = {
        "eval_accuracy_start": np.nan,
        "eval_accuracy_end": float(out.eval["correct"].mean()) if has_eval else np.nan,
        "eval_margin_end": float(out.eval["margin"].mean()) if has_eval else np.nan,
        "train_loss_end": float(train["loss"].iloc[-1]) if len(train) else np.nan,
        "train_accuracy_end": float(train["accuracy"].iloc[-1]) if len(train) else np.nan,
        "train_accuracy_final": np.nan,
    }
    return {
        "key": json.loads(json.dumps(dict(key))),
        "cell": dataclasses.asdict(cell),
        "registry_name": "",
        "n_pairs_requested": cell.quantity,
        "n_train_used": n_train,
        "n_eval_used": n_eval,
        "steps": out.steps,
        "train_seconds": round(out.seconds, 3),
        "metrics": metrics,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
