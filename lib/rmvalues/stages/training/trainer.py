"""Training one reward model with TRL's ``RewardTrainer``.

* **Methods** (``settings.method``): ``lora`` (the paper's recipe: r 32, alpha 64, dropout 0.05 on q/k/v/o
  projections, score head trained and saved), ``full`` (every weight), ``head`` (frozen base, only the linear
  score head; for CPU budgets).
* **Head-only with a feature cache** (``feature_cache: true``). With a frozen base the last-token hidden state of
  every sequence is fixed, so it is computed once per base model and pair
  (:meth:`rmvalues.engine.RewardScorer.last_hidden`) and the ``RewardTrainer`` trains the head on a
  cached-feature reward model (:func:`cached_feature_model`) whose "sequences" are one index into that table.
  Everything else is TRL's: collator, Bradley-Terry loss, optimizer, schedule, batch order, metrics,
  evaluation. It is the same computation as head-only training on the full model (``feature_cache: false``),
  only without re-running the frozen base every step (a test checks that both give the same head).
* **Feature scaling** (``feature_scaling: standardize``, head-only with the feature cache). The head is trained
  on features standardized with the mean and standard deviation of the cell's own *training* sequences (never
  the held-out ones), as a linear probe usually is; every recorded head is mapped back to the raw hidden
  states (``w / sd``), so the saved RM reads the base's hidden state directly. Its rewards then differ from
  the trained model's by one constant per cell (``w . mean / sd``), which changes no preference, accuracy,
  margin or ranking.
* **L2 penalty** (``head_l2``, head only). :func:`l2_penalty` adds ``head_l2 * w`` to the head's gradient, so
  TRL minimises the Bradley-Terry loss plus ``head_l2 / 2 |w|^2`` (in the space the head is trained in): a
  strictly convex objective with one optimum, the one scikit-learn's logistic regression finds
  (:mod:`.reference`). With a batch of every training pair and enough steps, the head converges to it whatever
  its random start; the grid records the distance.
* **Seeds.** ``transformers.set_seed(seed)`` right before the score head is drawn (:func:`init_head`), and the
  trainer is seeded with the same seed (batch order, LoRA init): the same seed gives identical rewards.
* **Pad token.** A pad token equal to EOS is refused before training (:func:`check_pad_token`): the
  sequence-classification head reads the reward at the last non-pad token, and with pad = eos every
  chat-formatted sequence would be read before its own final end-of-turn token, alike for chosen and
  rejected, which stalls Bradley-Terry training.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ...data.preferences import PairSelection
from ...models.loading import load_tokenizer, quiet_transformers
from ...models.registry import ModelSpec, get_spec
from .config import TrainingConfigError, TrainSettings

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "CellData",
    "TrainOutcome",
    "cached_feature_model",
    "cell_data",
    "check_pad_token",
    "head_snapshots",
    "init_head",
    "l2_penalty",
    "on_gpu",
    "pair_dataset",
    "reward_config",
    "standardizer",
    "tidy_history",
    "train_reward_model",
    "training_tokenizer",
]


def on_gpu() -> bool:
    """Whether a CUDA device is available (training and scoring then run there)."""
    import torch

    return bool(torch.cuda.is_available())


# -- tokenizers and heads ---------------------------------------------------------------------------------------


def check_pad_token(tokenizer: PreTrainedTokenizerBase, name: str = "model") -> None:
    """Raise :class:`TrainingConfigError` unless the tokenizer has a pad token that is not its EOS token."""
    if tokenizer.pad_token_id is None:
        raise TrainingConfigError(
            f"{name}: the tokenizer has no pad token; set pad_token in the model's registry entry"
        )
    eos = tokenizer.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
    if tokenizer.pad_token_id in eos_ids:
        raise TrainingConfigError(
            f"{name}: the pad token {tokenizer.pad_token!r} is the EOS token; the reward head reads the last "
            "non-pad token, so with pad = eos chosen and rejected are read at the wrong place and Bradley-Terry "
            "training stalls. Set pad_token in the registry entry to a token distinct from EOS (e.g. '<pad>', "
            "'<|endoftext|>' or add:<|pad|>)"
        )


def training_tokenizer(base: str | ModelSpec) -> PreTrainedTokenizerBase:
    """The registry tokenizer of a base model (a :class:`ModelSpec`, or a name of ``config/models.yaml``),
    checked for training: a pad token distinct from EOS."""
    spec = get_spec(base)
    tok = load_tokenizer(spec)
    check_pad_token(tok, spec.name)
    return tok


def init_head(model: PreTrainedModel, seed: int) -> None:
    """Seed, then draw the score head afresh: ``N(0, initializer_range^2)`` (transformers' own init of
    sequence-classification heads), no bias. Same seed, same head."""
    import torch
    from transformers import set_seed

    set_seed(seed)
    head = model.score
    cfg = model.config.get_text_config()
    # transformers' default initializer_range, for a config that does not set one
    std = float(cfg.initializer_range) if hasattr(cfg, "initializer_range") else 0.02
    with torch.no_grad():
        head.weight.normal_(mean=0.0, std=std)
        if head.bias is not None:
            head.bias.zero_()


# -- the cached-feature reward model ----------------------------------------------------------------------------


def _cached_model_classes() -> tuple[type, type]:
    from transformers import PretrainedConfig, PreTrainedModel
    from transformers.modeling_outputs import SequenceClassifierOutputWithPast

    class CachedFeatureConfig(PretrainedConfig):
        model_type = "rmvalues-cached-features"

        def __init__(self, hidden_size: int = 1, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.hidden_size = hidden_size

    class CachedFeatureRewardModel(PreTrainedModel):
        """A reward model over precomputed last-token hidden states of a frozen base.

        ``input_ids[:, 0]`` indexes a row of ``features``; the reward is ``score(features[row])``. Used with
        TRL's ``RewardTrainer`` for head-only training, so the frozen base runs once per sequence instead of
        once per step and epoch.
        """

        config_class = CachedFeatureConfig
        base_model_prefix = "features_model"
        main_input_name = "input_ids"
        _supports_attention_backend = False

        def __init__(
            self, config: CachedFeatureConfig, features: torch.Tensor, score: torch.nn.Linear
        ) -> None:
            super().__init__(config)
            self.register_buffer("features", features, persistent=False)
            self.score = score

        def forward(self, input_ids: torch.Tensor, attention_mask: Any = None, **kwargs: Any) -> Any:
            rows = self.features[input_ids[:, 0]]
            return SequenceClassifierOutputWithPast(logits=self.score(rows.to(self.score.weight.dtype)))

    return CachedFeatureConfig, CachedFeatureRewardModel


def cached_feature_model(
    features: torch.Tensor, score: torch.nn.Linear, pad_token_id: int
) -> PreTrainedModel:
    """A ``CachedFeatureRewardModel`` over ``features`` with the (already drawn) ``score`` head."""
    config_cls, model_cls = _cached_model_classes()
    config = config_cls(hidden_size=int(features.shape[1]), num_labels=1, pad_token_id=pad_token_id)
    return model_cls(config, features, score)


# -- one cell's data --------------------------------------------------------------------------------------------


@dataclass
class CellData:
    """What one cell trains and evaluates on: token ids per pair (chosen, rejected)."""

    train: list[tuple[list[int], list[int]]]
    eval: list[tuple[list[int], list[int]]]
    train_ids: list[int]
    eval_ids: list[int]


def cell_data(selection: PairSelection, model: str, quantity: int, seed: int | None = None) -> CellData:
    """The ``quantity`` training pairs of ``seed`` (:meth:`PairSelection.subset`; ``None``: the first of the
    pool) and the held-out pairs of ``selection``, tokenized for ``model``."""
    ids = selection.subset(quantity, seed)
    tokens = selection.tokens[model]
    return CellData(
        train=[tokens[i] for i in ids],
        eval=[tokens[i] for i in selection.eval_ids],
        train_ids=list(ids),
        eval_ids=list(selection.eval_ids),
    )


# -- the trainer ------------------------------------------------------------------------------------------------


def head_snapshots(every: int) -> Any:
    """A ``TrainerCallback`` recording the score head (``.heads``: step -> weights) at step 0, every ``every``
    steps and at the last step."""
    from transformers import TrainerCallback

    class Snapshots(TrainerCallback):
        def __init__(self) -> None:
            self.every = every
            self.heads: dict[int, np.ndarray] = {}

        def _take(self, model: Any, step: int) -> None:
            head = _find_score(model)
            self.heads[step] = head.weight.detach().float().cpu().numpy().reshape(-1).copy()

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self._take(model, 0)

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step % self.every == 0 or state.global_step >= state.max_steps:
                self._take(model, state.global_step)

    return Snapshots()


def _find_score(model: Any) -> torch.nn.Linear:
    """The score head of a plain, cached-feature or PEFT-wrapped model."""
    import torch

    for name, module in model.named_modules():
        if name.endswith("score") and isinstance(module, torch.nn.Linear):
            return module
        if name.endswith("score.modules_to_save.default") and isinstance(module, torch.nn.Linear):
            return module
    raise RuntimeError(f"{type(model).__name__} has no score head")


def reward_config(
    settings: TrainSettings,
    seed: int,
    out_dir: Path,
    has_eval: bool,
    cached: bool,
    n_eval: int = 0,
    *,
    depth: bool = False,
) -> Any:
    """TRL's ``RewardConfig`` for one cell: the one place the settings are mapped into TRL, for every arm
    (probe, lora/full, and with ``depth`` a depth cell, which trains with the arm's own ``depth_learning_rate``,
    ``depth_epochs`` and ``depth_batch_size`` pairs per step from cached activations). bf16 and activation
    checkpointing only on a GPU; on CPU float32 and ``use_cpu=True``. A cached-feature cell takes the whole
    effective batch per device and evaluates all held-out pairs in one batch (so TRL's accuracy, a mean of
    per-batch means, is the exact share of pairs)."""
    from trl import RewardConfig

    cuda = on_gpu()
    precision = settings.precision
    bf16 = cuda and (precision == "bfloat16" or (precision == "auto" and settings.method != "head"))
    gc = settings.gradient_checkpointing
    if gc is None:
        gc = cuda and settings.method in ("lora", "full")
    if depth:
        learning_rate, epochs = settings.depth_learning_rate, settings.depth_epochs
        per_device, accumulation = settings.depth_batch_size, 1
    else:
        learning_rate, epochs = settings.learning_rate, settings.epochs
        per_device = settings.batch_size if cached else settings.per_device_batch_size
        accumulation = 1 if cached else settings.grad_accumulation
    save = settings.method in ("lora", "full")
    return RewardConfig(
        output_dir=str(out_dir),
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        per_device_eval_batch_size=max(n_eval, 1) if cached else max(per_device, 8),
        num_train_epochs=float(epochs),
        learning_rate=float(learning_rate),
        lr_scheduler_type=settings.lr_scheduler_type,
        warmup_steps=float(settings.warmup_ratio),
        weight_decay=float(settings.weight_decay),
        logging_steps=1,
        save_strategy="steps" if save else "no",
        save_steps=settings.checkpoint_every,
        save_only_model=True,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=settings.checkpoint_every,
        bf16=bool(bf16),
        fp16=False,
        activation_checkpointing=bool(gc),
        use_cpu=not cuda,
        report_to="none",
        seed=int(seed),
        max_length=settings.max_length,
        disable_tqdm=True,
        dataloader_num_workers=0,
        center_rewards_coefficient=None,
        **(
            {"optim": "adamw_torch"} if settings.method == "head" else {}
        ),  # the fused AdamW is slower for a head
    )


def pair_dataset(pairs: Sequence[tuple[Sequence[int], Sequence[int]]]) -> Any:
    from datasets import Dataset

    return Dataset.from_dict(
        {"chosen_ids": [list(c) for c, _ in pairs], "rejected_ids": [list(r) for _, r in pairs]}
    )


@dataclass
class TrainOutcome:
    """What :func:`train_reward_model` returns."""

    model: Any  # the trained model (cached-feature, plain or PEFT-wrapped)
    trainer: Any
    log_history: pd.DataFrame
    heads: dict[int, np.ndarray]  # step -> score head weights on the raw hidden states (head method)
    checkpoints: dict[int, Path]  # step -> checkpoint folder (lora/full)
    n_train_used: int
    n_eval_used: int
    seconds: float
    scale: np.ndarray | None = (
        None  # per-dimension sd the head was trained under (feature_scaling standardize)
    )


def _set_trainable(model: PreTrainedModel, settings: TrainSettings) -> Any:
    """Freeze or unfreeze the weights for the method; the LoRA configuration for ``lora`` (else None)."""
    if settings.method == "head":
        for p in model.parameters():
            p.requires_grad_(False)
        model.score.weight.requires_grad_(True)
        return None
    if settings.method == "lora":
        from peft import LoraConfig, TaskType

        return LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=settings.lora_r,
            lora_alpha=settings.lora_alpha,
            lora_dropout=settings.lora_dropout,
            target_modules=list(settings.lora_target_modules),
            modules_to_save=["score"],
        )
    for p in model.parameters():
        p.requires_grad_(True)
    return None


Pairs = list[tuple[list[int], list[int]]]


def standardizer(train_rows: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, sd)`` per dimension of the training rows (chosen and rejected sequences); an sd of 0 becomes 1."""
    x = np.asarray(train_rows, dtype=np.float64)
    mean, sd = x.mean(axis=0), x.std(axis=0)
    return mean, np.where(sd > 0, sd, 1.0)


def _cached_inputs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    data: CellData,
    features: Mapping[str, Any],
    scaling: str = "none",
) -> tuple[PreTrainedModel, Pairs, Pairs, np.ndarray | None]:
    """The cached-feature model over the pairs' features (standardized with the training rows' statistics for
    ``scaling="standardize"``), pairs of row indices into its table, and the sd used (or None)."""
    import torch

    ftr_c, ftr_r = features["train"]
    rows = [torch.as_tensor(ftr_c), torch.as_tensor(ftr_r)]
    n_tr = len(data.train)
    train_pairs = [([i], [n_tr + i]) for i in range(n_tr)]
    eval_pairs: Pairs = []
    if data.eval:
        fev_c, fev_r = features["eval"]
        rows += [torch.as_tensor(fev_c), torch.as_tensor(fev_r)]
        n_ev = len(data.eval)
        eval_pairs = [([2 * n_tr + i], [2 * n_tr + n_ev + i]) for i in range(n_ev)]
    table = torch.cat(rows, dim=0)
    scale = None
    if scaling == "standardize":
        mean, scale = standardizer(table[: 2 * n_tr].numpy())
        table = ((table.double() - torch.from_numpy(mean)) / torch.from_numpy(scale)).float()
    model_ = cached_feature_model(table, model.score, tokenizer.pad_token_id)
    return model_, train_pairs, eval_pairs, scale


def _fit(trainer: Any, method: str, out: Path, has_eval: bool, every: int) -> tuple[dict, dict, float]:
    """Evaluate the untrained head, train, evaluate the final step: ``(initial eval, checkpoints, seconds)``."""
    checkpoints: dict[int, Path] = {}
    start = time.perf_counter()
    initial: dict[str, Any] = {}
    with quiet_transformers():
        if has_eval:
            initial = {**trainer.evaluate(), "step": 0}  # the untrained head (train() resets the log)
        if method in ("lora", "full"):
            first = out / "trainer" / "checkpoint-0"
            trainer.save_model(str(first))
            checkpoints[0] = first
        trainer.train()
        if has_eval and trainer.state.global_step % every:
            trainer.evaluate()  # the final step, when it is not an evaluation step
    seconds = time.perf_counter() - start
    if method in ("lora", "full"):
        for folder in sorted((out / "trainer").glob("checkpoint-*")):
            checkpoints[int(folder.name.split("-")[1])] = folder
    return initial, checkpoints, seconds


def train_reward_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    data: CellData,
    settings: TrainSettings,
    seed: int,
    out_dir: str | os.PathLike[str],
    features: Mapping[str, Any] | None = None,
) -> TrainOutcome:
    """Train one RM with TRL's ``RewardTrainer`` (method from ``settings``) and return its history.

    ``model`` is a one-label sequence classifier (:func:`rmvalues.models.load_sequence_classifier`); its score
    head is drawn here after seeding (:func:`init_head`). For ``head`` with ``settings.feature_cache``,
    ``features`` maps ``"train"`` / ``"eval"`` to ``(chosen, rejected)`` feature arrays aligned with ``data``
    (from :meth:`rmvalues.engine.RewardScorer.last_hidden`); the trainer then trains a cached-feature model.
    On CPU: float32, no gradient checkpointing, ``use_cpu=True``.
    """
    from transformers import PrinterCallback, ProgressCallback
    from trl import RewardTrainer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_pad_token(tokenizer)
    method = settings.method
    cached = method == "head" and settings.feature_cache
    init_head(model, seed)
    peft_config = _set_trainable(model, settings)
    if cached:
        if features is None:
            raise ValueError("head-only training with feature_cache needs the features of the pairs")
        train_model, train_pairs, eval_pairs, scale = _cached_inputs(
            model, tokenizer, data, features, settings.feature_scaling
        )
    else:
        train_model, train_pairs, eval_pairs, scale = model, data.train, data.eval, None
    args = reward_config(settings, seed, out / "trainer", bool(eval_pairs), cached, len(eval_pairs))
    snapshots = head_snapshots(settings.checkpoint_every) if method == "head" else None
    with quiet_transformers():
        trainer = RewardTrainer(
            model=train_model,
            args=args,
            train_dataset=pair_dataset(train_pairs),
            eval_dataset=pair_dataset(eval_pairs) if eval_pairs else None,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=[snapshots] if snapshots is not None else None,
        )
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    n_train_used = len(trainer.train_dataset)
    n_eval_used = len(trainer.eval_dataset) if trainer.eval_dataset is not None else 0
    penalty = l2_penalty(_find_score(train_model), settings.head_l2) if method == "head" else None
    try:
        initial, checkpoints, seconds = _fit(
            trainer, method, out, bool(eval_pairs), settings.checkpoint_every
        )
    finally:
        if penalty is not None:
            penalty.remove()  # the shared base's head must not keep the hook
    history = pd.DataFrame(([initial] if initial else []) + list(trainer.state.log_history))
    heads = snapshots.heads if snapshots is not None else {}
    if scale is not None:  # back to the raw hidden states the saved RM reads
        heads = {s: (np.asarray(w, np.float64) / scale).astype(np.float32) for s, w in heads.items()}
    return TrainOutcome(
        model=trainer.model,
        trainer=trainer,
        log_history=history,
        heads=heads,
        checkpoints=checkpoints,
        n_train_used=n_train_used,
        n_eval_used=n_eval_used,
        seconds=seconds,
        scale=scale,
    )


def l2_penalty(head: torch.nn.Linear, l2: float) -> Any:
    """Add the gradient of ``l2 / 2 |w|^2`` to the head's gradient (the L2-penalised Bradley-Terry
    objective of :mod:`.reference`; TRL's logged loss stays the unpenalised one). Returns the hook's handle
    (``.remove()`` it), or None for ``l2 == 0``."""
    if l2 <= 0:
        return None
    weight = head.weight
    return weight.register_hook(lambda grad: grad + l2 * weight.detach())


def tidy_history(history: pd.DataFrame) -> pd.DataFrame:
    """``step, split, loss, accuracy, margin, learning_rate`` from a trainer's ``log_history``
    (``split``: train or eval; eval rows include step 0, before training)."""
    rows: list[dict[str, Any]] = []
    for rec in history.to_dict("records"):
        step = int(rec.get("step", 0) or 0)
        if _present(rec.get("loss")) and _present(rec.get("accuracy")):
            rows.append(
                {
                    "step": step,
                    "split": "train",
                    "loss": rec["loss"],
                    "accuracy": rec["accuracy"],
                    "margin": rec.get("margin"),
                    "learning_rate": rec.get("learning_rate"),
                }
            )
        if _present(rec.get("eval_loss")):
            rows.append(
                {
                    "step": step,
                    "split": "eval",
                    "loss": rec["eval_loss"],
                    "accuracy": rec.get("eval_accuracy"),
                    "margin": rec.get("eval_margin"),
                    "learning_rate": np.nan,
                }
            )
    df = pd.DataFrame(rows, columns=["step", "split", "loss", "accuracy", "margin", "learning_rate"])
    return df.astype({"loss": float, "accuracy": float, "margin": float, "learning_rate": float})


def _present(x: Any) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))
