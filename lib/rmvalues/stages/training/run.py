"""Training ablations: reward models trained from different base models on identical preference data.

The paper's causal evidence (Christian et al. 2026, Sec. 5, Figs. 4-5): RMs trained from different base models
with identical data and settings still differ in agency vs communion. This module runs that experiment as a
grid, **base models x preference sources x quantities x seeds** (``config/training.yaml``), for any registered
causal LM and any preference data, through TRL's ``RewardTrainer``:

* **Methods** (``settings.method``): ``lora`` (the paper's recipe: r 32, alpha 64, dropout 0.05 on
  q/k/v/o projections, score head trained and saved, lr 1e-5 cosine, warmup 3 %, effective batch 16,
  2 epochs, max length 1024), ``full`` (every weight), ``head`` (frozen base, only the linear score head;
  for CPU budgets).
* **Head-only with a feature cache** (``feature_cache: true``). With a frozen base the last-token hidden
  state of every sequence is fixed, so it is computed once per base model and pair
  (:func:`sequence_features`) and the ``RewardTrainer`` trains the head on a
  :class:`CachedFeatureRewardModel`, whose "sequences" are one index into that table. Everything else is
  TRL's: collator, Bradley-Terry loss, optimizer, schedule, batch order, metrics, evaluation. It is the same
  computation as head-only training on the full model (``feature_cache: false``), only without re-running
  the frozen base every step; ``tests/test_training.py`` checks that both give the same head.
* **Seeds.** ``transformers.set_seed(seed)`` right before the score head is drawn (:func:`init_head`), and
  the trainer is seeded with the same seed (batch order, LoRA init): the same seed gives identical rewards.
  The data subset does not depend on the seed (it depends on ``data_seed``; see :mod:`rmvalues.preferences`).
* **Pad token.** The registry's pad rule is applied (Gemma ``<pad>``, SmolLM2 ``<|endoftext|>``); a pad
  token equal to EOS is refused before training: the sequence-classification head reads the reward at the
  last non-pad token, and with pad = eos every chat-formatted sequence would be read before its own final
  end-of-turn token, alike for chosen and rejected, which stalls Bradley-Terry training.
* **Resume.** Each cell (one trained RM) writes its artifacts into ``<output_dir>/cells/<cell>/`` and its
  model folder into ``<output_dir>/models/<cell>/``, then a ``cell.json`` marker with a key of everything that
  determines it (model, data ids, settings, seed). A rerun skips cells whose marker matches; a cell without
  marker (interrupted) or with another key is trained again.
* **Registry.** Trained RMs are ``local`` reward models listed in ``<output_dir>/registry.yaml`` (the schema
  of ``config/models.yaml``), named ``<base>-<source>-<method>-n<quantity>-s<seed>``; pass that file to
  :func:`rmvalues.models.registry` (``extra=``) or ``$RMVALUES_MODEL_REGISTRY`` to load them by name.
* **Trajectories.** Every checkpoint (step 0 included) is scored on the corpus words x prompts with the
  scoring engine's token-exact inputs (:mod:`rmvalues.scoring_engine`); for head-only cells the words' last-
  token hidden states are computed once per base model and each checkpoint's head applied to them (exact:
  the base does not change). :func:`category_trajectories` gives the median rank of each category per
  checkpoint (paper Fig. 4), :func:`seed_summary` the mean across seeds with t confidence intervals (the
  paper had one seed), :func:`word_movers` the words that rose or fell most (paper Fig. 5).

Entry point of the chapter: :func:`run_training`; parameters are validated by :func:`check_parameters`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import yaml

from . import models as models_mod
from . import paths, preferences
from . import scores as scores_mod
from .manifest import atomic_write_bytes, atomic_write_parquet
from .preferences import PairSelection, PreferenceSource

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from matplotlib.figure import Figure
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from .manifest import RunRecord

log = logging.getLogger(__name__)

STAGE = "training"
METHODS = ("head", "lora", "full")
PRECISIONS = ("auto", "float32", "bfloat16")
CELL_MARKER = "cell.json"
REGISTRY_FILE = "registry.yaml"

#: Parameters of the chapter notebook and their defaults.


# =========================================================================================================
# Configuration: settings, grids, cells
# =========================================================================================================


# =========================================================================================================
# Devices, seeds, tokenizers
# =========================================================================================================


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports (the new score head is *meant* to be missing from a base LM) and
    the progress bars of ``datasets`` (TRL filters the pre-tokenized pairs once per cell)."""
    import datasets
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = datasets.is_progress_bar_enabled()
    hf_bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    try:
        with warnings.catch_warnings():
            # transformers 5 renamed gradient -> activation checkpointing; TRL/PEFT still call the old names
            warnings.filterwarnings("ignore", message=r".*gradient_checkpointing.*", category=FutureWarning)
            yield
    finally:
        hf_logging.set_verbosity(level)
        if hf_bars:
            hf_logging.enable_progress_bar()
        if bars:
            datasets.enable_progress_bars()


def use_registries(files: Sequence[str]) -> None:
    """Make extra registry files visible to every registry lookup of this process (``$RMVALUES_MODEL_REGISTRY``),
    e.g. ``config/paper_models.yaml`` for the paper's base models."""
    current = [f for f in os.environ.get(models_mod.ENV_EXTRA_REGISTRY, "").split(os.pathsep) if f]
    new = [str(paths.resolve(f)) for f in files]
    if new:
        os.environ[models_mod.ENV_EXTRA_REGISTRY] = os.pathsep.join(dict.fromkeys([*new, *current]))


def training_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """The registry tokenizer of a base model, checked for training: a pad token distinct from EOS."""
    tok = models_mod.load_tokenizer(name)
    check_pad_token(tok, name)
    return tok


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


def init_head(model: PreTrainedModel, seed: int) -> None:
    """Seed, then draw the score head afresh: ``N(0, initializer_range^2)`` (transformers' own init of
    sequence-classification heads), no bias. Same seed, same head."""
    import torch
    from transformers import set_seed

    set_seed(seed)
    head = model.score
    std = float(getattr(model.config.get_text_config(), "initializer_range", 0.02))
    with torch.no_grad():
        head.weight.normal_(mean=0.0, std=std)
        if head.bias is not None:
            head.bias.zero_()


def load_classifier(name: str, tokenizer: PreTrainedTokenizerBase, dtype: str = "float32") -> PreTrainedModel:
    """A base model as a one-label ``AutoModelForSequenceClassification`` (head still to be drawn with
    :func:`init_head`), pad id synced with ``tokenizer``, in eval mode, on CPU."""
    import torch
    from transformers import AutoModelForSequenceClassification

    spec = models_mod.get_spec(name)
    folder = models_mod.ensure_local(spec)
    with _quiet_transformers():
        model = AutoModelForSequenceClassification.from_pretrained(
            str(folder),
            num_labels=1,
            dtype=getattr(torch, dtype),
            attn_implementation=spec.attn_implementation,
            trust_remote_code=spec.trust_remote_code,
            local_files_only=True,
        )
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model


def _base(model: PreTrainedModel) -> torch.nn.Module:
    return getattr(model, model.base_model_prefix)


# =========================================================================================================
# Features (frozen base) and the cached-feature reward model
# =========================================================================================================


def sequence_features(
    model: PreTrainedModel,
    sequences: Sequence[Sequence[int]],
    batch_size: int = 16,
    pad_id: int = 0,
    progress: Any = None,
) -> torch.Tensor:
    """Last-token final hidden states of ``sequences`` (the vector a sequence-classification head reads).

    Sequences are sorted by length and right-padded in batches; the last real token is found from the
    attention mask. Returns a float32 tensor ``(len(sequences), hidden)`` in input order.
    """
    import torch

    base = _base(model)
    device = next(model.parameters()).device
    n = len(sequences)
    hidden = int(model.config.get_text_config().hidden_size)
    out = torch.empty((n, hidden), dtype=torch.float32)
    order = sorted(range(n), key=lambda i: (len(sequences[i]), i))
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            width = max(len(sequences[i]) for i in idx)
            ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for j, i in enumerate(idx):
                ids[j, : len(sequences[i])] = torch.tensor(list(sequences[i]), dtype=torch.long)
                mask[j, : len(sequences[i])] = 1
            h = base(
                input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False
            ).last_hidden_state
            last = mask.sum(dim=1) - 1
            out[idx] = h[torch.arange(len(idx)), last.to(h.device)].float().cpu()
            if progress is not None:
                progress(len(idx))
    return out


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
    """A :class:`CachedFeatureRewardModel` over ``features`` with the (already drawn) ``score`` head."""
    config_cls, model_cls = _cached_model_classes()
    config = config_cls(hidden_size=int(features.shape[1]), num_labels=1, pad_token_id=pad_token_id)
    return model_cls(config, features, score)


# =========================================================================================================
# Training one cell
# =========================================================================================================


@dataclass
class CellData:
    """What one cell trains and evaluates on: token ids per pair (chosen, rejected)."""

    train: list[tuple[list[int], list[int]]]
    eval: list[tuple[list[int], list[int]]]
    train_ids: list[int]
    eval_ids: list[int]


def cell_data(selection: PairSelection, model: str, quantity: int) -> CellData:
    ids = selection.subset(quantity)
    tokens = selection.tokens[model]
    return CellData(
        train=[tokens[i] for i in ids],
        eval=[tokens[i] for i in selection.eval_ids],
        train_ids=list(ids),
        eval_ids=list(selection.eval_ids),
    )


class _HeadSnapshots:
    """TrainerCallback recording the score head at step 0, every ``every`` steps and at the last step."""

    def __new__(cls, every: int) -> Any:
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


def _reward_config(
    settings: TrainSettings,
    seed: int,
    out_dir: Path,
    n_train: int,
    has_eval: bool,
    cached: bool,
) -> Any:
    from trl import RewardConfig

    cuda = _cuda()
    precision = settings.precision
    bf16 = cuda and (precision == "bfloat16" or (precision == "auto" and settings.method != "head"))
    gc = settings.gradient_checkpointing
    if gc is None:
        gc = cuda and settings.method in ("lora", "full")
    per_device = settings.batch_size if cached else settings.per_device_batch_size
    accumulation = 1 if cached else settings.grad_accumulation
    save = settings.method in ("lora", "full")
    return RewardConfig(
        output_dir=str(out_dir),
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        per_device_eval_batch_size=max(per_device, 8),
        num_train_epochs=float(settings.epochs),
        learning_rate=float(settings.learning_rate),
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
    )


def _dataset(pairs: Sequence[tuple[Sequence[int], Sequence[int]]]) -> Any:
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
    heads: dict[int, np.ndarray]  # step -> score head weights (head method)
    checkpoints: dict[int, Path]  # step -> checkpoint folder (lora/full)
    n_train_used: int
    n_eval_used: int
    seconds: float


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

    ``model`` is a one-label sequence classifier from :func:`load_classifier`; its score head is drawn
    here after seeding (:func:`init_head`). For ``head`` with ``settings.feature_cache``, ``features`` maps
    ``"train"`` / ``"eval"`` to ``(chosen, rejected)`` feature tensors aligned with ``data`` (from
    :func:`sequence_features`); the trainer then trains a :class:`CachedFeatureRewardModel`. On CPU: float32,
    no gradient checkpointing, ``use_cpu=True``.
    """
    import torch
    from transformers import PrinterCallback, ProgressCallback
    from trl import RewardTrainer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_pad_token(tokenizer)
    method = settings.method
    cached = method == "head" and settings.feature_cache
    init_head(model, seed)
    peft_config = None
    if method == "head":
        for p in model.parameters():
            p.requires_grad_(False)
        model.score.weight.requires_grad_(True)
    elif method == "lora":
        from peft import LoraConfig, TaskType

        peft_config = LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=settings.lora_r,
            lora_alpha=settings.lora_alpha,
            lora_dropout=settings.lora_dropout,
            target_modules=list(settings.lora_target_modules),
            modules_to_save=["score"],
        )
    else:
        for p in model.parameters():
            p.requires_grad_(True)

    if cached:
        if features is None:
            raise ValueError("head-only training with feature_cache needs the features of the pairs")
        ftr_c, ftr_r = features["train"]
        rows = [ftr_c, ftr_r]
        n_tr = len(data.train)
        train_pairs = [([i], [n_tr + i]) for i in range(n_tr)]
        eval_pairs: list[tuple[list[int], list[int]]] = []
        if data.eval:
            fev_c, fev_r = features["eval"]
            rows += [fev_c, fev_r]
            n_ev = len(data.eval)
            eval_pairs = [([2 * n_tr + i], [2 * n_tr + n_ev + i]) for i in range(n_ev)]
        table = torch.cat(rows, dim=0)
        train_model = cached_feature_model(table, model.score, tokenizer.pad_token_id)
    else:
        train_pairs, eval_pairs = data.train, data.eval
        train_model = model

    args = _reward_config(settings, seed, out / "trainer", len(train_pairs), bool(eval_pairs), cached)
    snapshots = _HeadSnapshots(settings.checkpoint_every) if method == "head" else None
    with _quiet_transformers():
        trainer = RewardTrainer(
            model=train_model,
            args=args,
            train_dataset=_dataset(train_pairs),
            eval_dataset=_dataset(eval_pairs) if eval_pairs else None,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=[snapshots] if snapshots is not None else None,
        )
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    n_train_used = len(trainer.train_dataset)
    n_eval_used = len(trainer.eval_dataset) if trainer.eval_dataset is not None else 0
    checkpoints: dict[int, Path] = {}
    start = time.perf_counter()
    initial: dict[str, Any] = {}
    with _quiet_transformers():
        if eval_pairs:
            initial = {**trainer.evaluate(), "step": 0}  # the untrained head (train() resets the log)
        if method in ("lora", "full"):
            first = out / "trainer" / "checkpoint-0"
            trainer.save_model(str(first))
            checkpoints[0] = first
        trainer.train()
        if eval_pairs and trainer.state.global_step % settings.checkpoint_every:
            trainer.evaluate()  # the final step, when it is not an evaluation step
    seconds = time.perf_counter() - start
    if method in ("lora", "full"):
        for folder in sorted((out / "trainer").glob("checkpoint-*")):
            checkpoints[int(folder.name.split("-")[1])] = folder
    history = pd.DataFrame(([initial] if initial else []) + list(trainer.state.log_history))
    heads = snapshots.heads if snapshots is not None else {}
    return TrainOutcome(
        model=trainer.model,
        trainer=trainer,
        log_history=history,
        heads=heads,
        checkpoints=checkpoints,
        n_train_used=n_train_used,
        n_eval_used=n_eval_used,
        seconds=seconds,
    )


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


# =========================================================================================================
# Saving trained RMs (model folders) and the registry of trained RMs
# =========================================================================================================


def _link_or_copy(src: Path, dst: Path) -> str:
    try:
        os.link(src, dst)
        return "hardlink"
    except OSError:
        shutil.copy2(src, dst)
        return "copy"


def save_head_rm(
    base_name: str,
    model: PreTrainedModel,
    score_weight: np.ndarray,
    tokenizer: PreTrainedTokenizerBase,
    folder: str | os.PathLike[str],
) -> Path:
    """Save a head-only RM as an ordinary model folder without copying the frozen base.

    The folder holds the sequence-classification ``config.json``, the configured tokenizer, and a sharded
    checkpoint: the base model's own ``model.safetensors`` (hard-linked from the registry's local folder when
    on the same file system, else copied) plus ``score.safetensors`` with the head, tied together by
    ``model.safetensors.index.json``. ``AutoModelForSequenceClassification.from_pretrained`` loads it as
    usual. Falls back to a full ``save_pretrained`` when the base folder is not a single safetensors file or
    the embeddings were resized (a pad token added by the registry rule).
    """
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    folder = Path(folder)
    tmp = folder.with_name(f".tmp-{folder.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    base_folder = models_mod.ensure_local(base_name)
    base_file = base_folder / "model.safetensors"
    weight = torch.tensor(np.asarray(score_weight, dtype=np.float32).reshape(1, -1))
    resized = len(tokenizer) > int(model.config.get_text_config().vocab_size)
    if base_file.is_file() and not resized:
        with safe_open(str(base_file), "pt") as fh:
            keys = list(fh.keys())
        expected = {k for k, _ in model.state_dict().items() if k != "score.weight"}
        if not expected <= set(keys):
            resized = True  # names differ: fall back to a full save
    if base_file.is_file() and not resized:
        config = copy.deepcopy(model.config)
        config.architectures = [type(model).__name__]
        config.save_pretrained(str(tmp))
        how = _link_or_copy(base_file, tmp / "base.safetensors")
        save_file(
            {"score.weight": weight.contiguous()}, str(tmp / "score.safetensors"), metadata={"format": "pt"}
        )
        weight_map = {k: "base.safetensors" for k in keys}
        weight_map["score.weight"] = "score.safetensors"
        index = {"metadata": {"rmvalues_base": base_name, "base_file": how}, "weight_map": weight_map}
        (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=1), encoding="utf-8")
    else:
        with torch.no_grad():
            model.score.weight.copy_(weight)
        model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder


def save_full_rm(model: Any, tokenizer: PreTrainedTokenizerBase, folder: str | os.PathLike[str]) -> Path:
    """Save a LoRA (merged) or fully fine-tuned RM as an ordinary model folder, atomically."""
    folder = Path(folder)
    tmp = folder.with_name(f".tmp-{folder.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    with _quiet_transformers():
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder


def registry_entry(cell: Cell, folder: Path, settings: TrainSettings) -> dict[str, Any]:
    """The ``config/models.yaml``-schema entry of a trained RM (a ``local`` reward model)."""
    spec = models_mod.get_spec(cell.model)
    arch = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("architectures", [""])[0]
    root = paths.project_root()
    try:
        where = str(folder.resolve().relative_to(root.resolve()))
    except ValueError:
        where = str(folder.resolve())
    return {
        "kind": "reward-model",
        "family": spec.family,
        "architecture": arch,
        "type": spec.type,
        "size": spec.size,
        "hub_id": None,
        "revision": None,
        "source": {"type": "local", "path": where},
        "dtype": "float32",
        "attn_implementation": spec.attn_implementation,
        "trust_remote_code": False,
        "chat_template": spec.chat_template,
        "pad_token": spec.pad_token,
        "padding_side": spec.padding_side,
        "score_readout": "logits_squeeze",
        "notes": (
            f"trained by rmvalues.training: base {cell.model}, preference source {cell.source}, method "
            f"{cell.method}, {cell.quantity} pairs, seed {cell.seed}, lr {settings.learning_rate}, "
            f"{settings.epochs} epochs, effective batch {settings.batch_size}, max_length {settings.max_length}"
        ),
    }


def write_registry(entries: Mapping[str, Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Write an extra model-registry file (``models: {name: entry}``) atomically; validated by reading it."""
    path = Path(path)
    text = "# Trained reward models (written by rmvalues.training; do not edit)\n" + yaml.safe_dump(
        {"models": {k: dict(v) for k, v in entries.items()}}, sort_keys=False
    )
    atomic_write_bytes(path, text.encode("utf-8"))
    models_mod.registry(extra=[path])  # raises if an entry is invalid
    return path


def registry_file(run_name: str = "default", results_root: str | os.PathLike[str] | None = None) -> Path:
    """Where the training run ``run_name`` lists its trained RMs (``<results_root>/training/<run>/registry.yaml``)."""
    root = paths.resolve(results_root) if results_root is not None else paths.results_root()
    return root / STAGE / run_name / REGISTRY_FILE


# =========================================================================================================
# Scoring checkpoints on corpus words (trajectories)
# =========================================================================================================


def corpus_words(
    corpus: str, corpora_run: str = "default", results_root: str | os.PathLike[str] | None = None
) -> tuple[pd.DataFrame, str]:
    """``(labels, origin)``: ``corpus, word, category, subcategory`` rows of ``corpus``.

    From the corpora stage's output (``<results_root>/corpora/<corpora_run>/corpora.parquet``) when it
    exists, else from the corpus files (:func:`rmvalues.scores.corpus_labels`, the same rows).
    """
    root = paths.resolve(results_root) if results_root is not None else paths.results_root()
    file = root / "corpora" / corpora_run / "corpora.parquet"
    if file.is_file():
        df = pd.read_parquet(file)
        df = df[df["corpus"] == corpus]
        if "status" in df.columns:
            df = df[df["status"] == "ok"]
        if not df.empty:
            cols = ["corpus", "word", "category", "subcategory"]
            return df[cols].drop_duplicates().reset_index(drop=True), str(file)
    return scores_mod.corpus_labels(corpus), "corpus files"


def _capture_scorer(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> Any:
    """A :class:`rmvalues.scoring_engine.RewardScorer` that also keeps the last-token hidden states."""
    from .scoring_engine import RewardScorer

    class _Capture(RewardScorer):
        captured: list[Any]

        def _readout(self, hidden_last):
            self.captured.append(hidden_last.detach().float().cpu())
            return super()._readout(hidden_last)

    scorer = _Capture(model, tokenizer)
    scorer.captured = []
    return scorer


@dataclass
class WordFeatures:
    """Last-token hidden states of (prompt, word) inputs for one base model, from the scoring engine."""

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
    reuses the prompt's keys/values; its readout is intercepted to keep the hidden states. They are checked
    against the engine's own rewards (``features @ head == scores``), so a change in the engine's batching is
    caught, not silently misaligned.
    """
    from .scoring_engine import ScoringError, split_template, word_candidates

    scorer = _capture_scorer(model, tokenizer)
    head = model.score.weight.detach().double().cpu().numpy().reshape(-1)
    feats: dict[str, np.ndarray] = {}
    ntok: dict[str, list[int]] = {}
    for pid, text in zip(prompts["prompt_id"], prompts["text"], strict=True):
        split = split_template(tokenizer, text, pid)
        cands = word_candidates(tokenizer, split, list(words))
        ids = [c.ids for c in cands]
        scorer.captured = []
        scored = scorer.score(split, ids)
        order = sorted(range(len(ids)), key=lambda i: (len(ids[i]), i))
        hidden = np.concatenate([h.numpy() for h in scorer.captured], axis=0)
        if hidden.shape[0] != len(ids):
            raise ScoringError(f"captured {hidden.shape[0]} hidden states for {len(ids)} candidates")
        aligned = np.empty_like(hidden)
        aligned[order] = hidden
        check = aligned.astype(np.float64) @ head
        if not np.allclose(check, scored, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(scored).max()))):
            raise ScoringError(
                "hidden states captured from the scoring engine do not reproduce its rewards (the engine's "
                "candidate order changed?); score head-only checkpoints one by one instead"
            )
        feats[pid] = aligned
        ntok[pid] = [len(c.ids) for c in cands]
    return WordFeatures(name, list(prompts["prompt_id"]), list(words), ntok, feats)


def score_model_words(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: pd.DataFrame, words: Sequence[str]
) -> dict[str, np.ndarray]:
    """prompt -> rewards of ``words`` by ``model`` (any sequence classifier), through the scoring engine."""
    from .scoring_engine import RewardScorer, split_template, word_candidates

    scorer = RewardScorer(model, tokenizer)
    out = {}
    for pid, text in zip(prompts["prompt_id"], prompts["text"], strict=True):
        split = split_template(tokenizer, text, pid)
        cands = word_candidates(tokenizer, split, list(words))
        out[pid] = scorer.score(split, [c.ids for c in cands])
    return out


def trajectory_table(
    cell: Cell,
    family: str,
    steps: Sequence[int],
    rewards: Mapping[str, np.ndarray],
    words: Sequence[str],
    labels: pd.DataFrame,
    n_tokens: Mapping[str, Sequence[int]] | None = None,
) -> pd.DataFrame:
    """Long scores table (:data:`rmvalues.scores.SCORE_COLUMNS` + ``cell, base_model, data, method, quantity,
    seed, step``) from ``rewards[prompt]`` of shape ``(n_words, n_steps)``. ``model`` is ``<cell>@<step>``."""
    frames = []
    for pid, r in rewards.items():
        r = np.asarray(r, dtype=np.float64).reshape(len(words), len(steps))
        for j, step in enumerate(steps):
            frames.append(
                pd.DataFrame(
                    {
                        "word": list(words),
                        "prompt_id": pid,
                        "step": int(step),
                        "score": r[:, j],
                        "n_tokens": list(n_tokens[pid]) if n_tokens else [pd.NA] * len(words),
                    }
                )
            )
    df = pd.concat(frames, ignore_index=True)
    df = df.merge(labels[["corpus", "word", "category", "subcategory"]], on="word", how="inner")
    df["model"] = cell.name + "@" + df["step"].astype(str)
    df["revision"] = None
    df["family"] = family
    df["source"] = "live"
    df["framing"] = df["prompt_id"].map(scores_mod.framing_of)
    out = scores_mod.conform(df)
    for key, value in (
        ("cell", cell.name),
        ("base_model", cell.model),
        ("data", cell.source),
        ("method", cell.method),
        ("quantity", cell.quantity),
        ("seed", cell.seed),
    ):
        out[key] = value
    out["step"] = df["step"].to_numpy()
    return out


# =========================================================================================================
# The grid: data, resume, training, trajectories
# =========================================================================================================


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:16]


def cell_key(cell: Cell, settings: TrainSettings, selection: PairSelection) -> dict[str, Any]:
    """Everything that determines a trained cell (its marker must match for a rerun to skip it)."""
    spec = models_mod.get_spec(cell.model)
    ids = selection.subset(cell.quantity)
    return {
        "cell": cell.name,
        "model": dataclasses.asdict(spec.source) | {"name": spec.name, "pad_token": spec.pad_token},
        "chat_template": spec.chat_template,
        "source": cell.source,
        "source_sha256": selection.sha256,
        "train_ids": selection.digest(ids),
        "eval_ids": selection.digest(selection.eval_ids),
        "settings": {k: v for k, v in settings.as_dict().items() if k != "feature_batch_size"},
        "seed": cell.seed,
    }


@dataclass
class CellPaths:
    root: Path
    cell: Cell

    @property
    def dir(self) -> Path:
        return self.root / "cells" / self.cell.name

    @property
    def model_dir(self) -> Path:
        return self.root / "models" / self.cell.name

    @property
    def marker(self) -> Path:
        return self.dir / CELL_MARKER


def finished(paths_: CellPaths, key: Mapping[str, Any]) -> bool:
    """Whether a cell's marker exists and matches ``key`` (and its model folder is there)."""
    try:
        marker = json.loads(paths_.marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        marker.get("key") == json.loads(json.dumps(key, default=str))
        and (paths_.model_dir / "config.json").is_file()
    )


@dataclass
class GridResult:
    """Tables of one grid run (the chapter's data)."""

    grid: GridSpec
    cells: pd.DataFrame  # one row per cell: status, times, n pairs, final metrics, registry name
    data: pd.DataFrame  # one row per source: eligibility counts
    history: pd.DataFrame  # per cell and step: train/eval loss, accuracy, margin
    trajectories: pd.DataFrame  # long scores table per cell and checkpoint
    registry: Path | None
    timings: dict[str, float] = field(default_factory=dict)
    words_origin: str = ""


def _load_sources(spec: GridSpec, cfg: TrainingConfig) -> dict[str, pd.DataFrame]:
    return {s: preferences.load_pairs(cfg.sources[s]) for s in spec.sources}


def prepare_data(
    spec: GridSpec,
    tokenizers: Mapping[str, PreTrainedTokenizerBase],
    cfg: TrainingConfig | None = None,
) -> dict[str, PairSelection]:
    """Held-out and nested training pairs per source, eligible under every base model of the grid."""
    cfg = cfg or load_config()
    out = {}
    for source, pairs in _load_sources(spec, cfg).items():
        out[source] = preferences.select_pairs(
            pairs,
            tokenizers,
            n_eval=spec.settings.eval_pairs,
            n_train=max(spec.quantities),
            max_length=spec.settings.max_length,
            data_seed=spec.settings.data_seed,
            source=source,
        )
    return out


def _timer(timings: dict[str, float], name: str) -> contextlib.AbstractContextManager[None]:
    @contextlib.contextmanager
    def cm() -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            timings[name] = round(timings.get(name, 0.0) + time.perf_counter() - t, 3)

    return cm()


def _feature_file(root: Path, model: str, kind: str, key: Any) -> Path:
    return root / "features" / model / f"{kind}-{_digest(key)}.npz"


def _pair_features(
    model_obj: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    name: str,
    selection: PairSelection,
    ids: Sequence[int],
    root: Path,
    batch_size: int,
    progress: bool = True,
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Features of the chosen and rejected sequences of pairs ``ids`` (cached on disk per model)."""
    tokens = selection.tokens[name]
    key = {"model": dataclasses.asdict(models_mod.get_spec(name).source), "tokens": [tokens[i] for i in ids]}
    file = _feature_file(root, name, f"pairs-{selection.source}", key)
    if file.is_file():
        with np.load(file) as npz:
            if list(npz["ids"]) == list(ids):
                return {int(i): (npz["chosen"][k], npz["rejected"][k]) for k, i in enumerate(ids)}
    from tqdm import tqdm

    with tqdm(
        total=2 * len(ids), desc=f"features {name}", unit="seq", leave=False, disable=not progress
    ) as bar:
        seqs = [tokens[i][0] for i in ids] + [tokens[i][1] for i in ids]
        feats = sequence_features(model_obj, seqs, batch_size, tok.pad_token_id, bar.update).numpy()
    n = len(ids)
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.stem}.tmp.npz")
    np.savez(tmp, ids=np.asarray(ids), chosen=feats[:n], rejected=feats[n:])
    os.replace(tmp, file)
    return {int(i): (feats[k], feats[n + k]) for k, i in enumerate(ids)}


def _word_features_cached(
    model_obj: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    name: str,
    prompts: pd.DataFrame,
    words: Sequence[str],
    root: Path,
) -> WordFeatures:
    key = {
        "model": dataclasses.asdict(models_mod.get_spec(name).source),
        "prompts": list(zip(prompts["prompt_id"], prompts["text"], strict=True)),
        "words": list(words),
    }
    file = _feature_file(root, name, "words", key)
    if file.is_file():
        with np.load(file, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            return WordFeatures(
                name,
                meta["prompt_ids"],
                meta["words"],
                meta["n_tokens"],
                {p: npz[f"f{i}"] for i, p in enumerate(meta["prompt_ids"])},
            )
    wf = word_features(model_obj, tok, name, prompts, words)
    file.parent.mkdir(parents=True, exist_ok=True)
    meta = json.dumps({"prompt_ids": wf.prompt_ids, "words": wf.words, "n_tokens": wf.n_tokens})
    tmp = file.with_name(f".{file.stem}.tmp.npz")
    np.savez(tmp, meta=np.asarray(meta), **{f"f{i}": wf.features[p] for i, p in enumerate(wf.prompt_ids)})
    os.replace(tmp, file)
    return wf


def _checkpoint_rewards(
    cell: Cell,
    checkpoints: Mapping[int, Path],
    tok: PreTrainedTokenizerBase,
    prompts: pd.DataFrame,
    words: Sequence[str],
) -> tuple[list[int], dict[str, np.ndarray]]:
    """Rewards of every saved checkpoint of a LoRA / full cell (each loaded and scored by the engine)."""
    steps = sorted(checkpoints)
    per_prompt: dict[str, list[np.ndarray]] = {p: [] for p in prompts["prompt_id"]}
    for step in steps:
        folder = checkpoints[step]
        if (folder / "adapter_config.json").is_file():
            from peft import PeftModel

            base = load_classifier(cell.model, tok)
            with _quiet_transformers():
                model = PeftModel.from_pretrained(base, str(folder)).merge_and_unload()
        else:
            import torch
            from transformers import AutoModelForSequenceClassification

            with _quiet_transformers():
                model = AutoModelForSequenceClassification.from_pretrained(
                    str(folder), dtype=torch.float32, local_files_only=True
                )
            model.config.pad_token_id = tok.pad_token_id
        model.eval()
        if _cuda():
            model.to("cuda")
        for pid, r in score_model_words(model, tok, prompts, words).items():
            per_prompt[pid].append(r)
        del model
    return steps, {p: np.stack(v, axis=1) for p, v in per_prompt.items()}


def _eval_curve(history: pd.DataFrame) -> dict[str, float]:
    ev = history[history["split"] == "eval"].sort_values("step")
    if ev.empty:
        return {"eval_accuracy_start": np.nan, "eval_accuracy_end": np.nan, "eval_margin_end": np.nan}
    return {
        "eval_accuracy_start": float(ev["accuracy"].iloc[0]),
        "eval_accuracy_end": float(ev["accuracy"].iloc[-1]),
        "eval_margin_end": float(ev["margin"].iloc[-1]),
    }


def run_grid(
    spec: GridSpec,
    output_dir: str | os.PathLike[str],
    *,
    corpus: str = "big2_nouns",
    prompts: Sequence[str] = (),
    corpora_run: str = "default",
    results_root: str | os.PathLike[str] | None = None,
    config: TrainingConfig | None = None,
    record: RunRecord | None = None,
    progress: bool = True,
) -> GridResult:
    """Train every unfinished cell of ``spec``, register the RMs and score all checkpoints on the words of
    ``corpus`` under ``prompts`` (prompt ids; empty: all 54).

    Bad input is refused before any training: unknown base models, pad = eos, data files with missing columns
    or empty pairs, quantities larger than the eligible data. Finished cells (marker matches) are skipped;
    their stored history and trajectories are reused.
    """
    from tqdm import tqdm

    cfg = config or load_config()
    root = Path(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    check_models(spec.models)
    with _timer(timings, "data"):
        tokenizers = {m: training_tokenizer(m) for m in spec.models}
        selections = prepare_data(spec, tokenizers, cfg)
    prompt_ids = scores_mod._check_prompts(list(prompts))  # empty: all 54
    prompt_table = scores_mod.load_prompts().set_index("prompt_id").loc[prompt_ids].reset_index()
    labels, words_origin = corpus_words(corpus, corpora_run, results_root)
    words = sorted(labels["word"].unique())
    cells = spec.cells()
    keys = {c.name: cell_key(c, spec.settings, selections[c.source]) for c in cells}
    todo = [c for c in cells if not finished(CellPaths(root, c), keys[c.name])]
    log.info("grid %s: %d cells, %d to train", spec.name, len(cells), len(todo))
    settings = spec.settings
    traj_key = {"prompts": list(prompt_table["prompt_id"]), "words_digest": _digest(words), "corpus": corpus}

    bar = tqdm(total=len(cells), desc=f"grid {spec.name}", unit="cell", disable=not progress)
    for model_name in spec.models:
        mcells = [c for c in cells if c.model == model_name]
        need_traj = [c for c in mcells if not _trajectory_ok(CellPaths(root, c), traj_key)]
        mtodo = [c for c in todo if c.model == model_name]
        bar.update(len(mcells) - len(set(mtodo) | set(need_traj)))
        if not mtodo and not need_traj:
            continue
        tok = tokenizers[model_name]
        family = models_mod.get_spec(model_name).family
        base_model = None
        if settings.method == "head":  # one frozen base serves every cell (and the word features)
            with _timer(timings, f"load {model_name}"):
                base_model = load_classifier(model_name, tok)
                if _cuda():
                    base_model.to("cuda")
        wf: WordFeatures | None = None
        if settings.method == "head":
            with _timer(timings, f"word features {model_name}"):
                wf = _word_features_cached(base_model, tok, model_name, prompt_table, words, root)
        pair_feats: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]] = {}
        if settings.method == "head" and settings.feature_cache:
            for source in sorted({c.source for c in mtodo}):
                sel = selections[source]
                ids = list(sel.eval_ids) + list(sel.subset(max(spec.quantities)))
                with _timer(timings, f"pair features {model_name}"):
                    pair_feats[source] = _pair_features(
                        base_model, tok, model_name, sel, ids, root, settings.feature_batch_size, progress
                    )
        for cell in mcells:
            cp = CellPaths(root, cell)
            selection = selections[cell.source]
            if cell in mtodo:
                with _timer(timings, f"train {cell.name}"):
                    _train_cell(
                        cell,
                        cp,
                        keys[cell.name],
                        settings,
                        selection,
                        base_model,
                        tok,
                        pair_feats.get(cell.source),
                    )
            if cell in mtodo or cell in need_traj:
                with _timer(timings, f"trajectory {cell.name}"):
                    if wf is not None:
                        heads = _load_heads(cp)
                        steps = sorted(heads)
                        rewards = wf.rewards(np.stack([heads[s] for s in steps]))
                        traj = trajectory_table(cell, family, steps, rewards, words, labels, wf.n_tokens)
                    else:
                        ckpts = {
                            int(p.name.split("-")[1]): p for p in (cp.dir / "trainer").glob("checkpoint-*")
                        }
                        steps, rewards = _checkpoint_rewards(cell, ckpts, tok, prompt_table, words)
                        traj = trajectory_table(cell, family, steps, rewards, words, labels)
                    atomic_write_parquet(traj, cp.dir / "trajectory.parquet")
                    atomic_write_bytes(cp.dir / "trajectory.json", json.dumps(traj_key).encode("utf-8"))
                bar.update(1)
        del base_model
    bar.close()

    # collect
    rows, histories, trajs, entries = [], [], [], {}
    for cell in cells:
        cp = CellPaths(root, cell)
        marker = json.loads(cp.marker.read_text(encoding="utf-8"))
        hist = pd.read_parquet(cp.dir / "history.parquet")
        hist.insert(0, "cell", cell.name)
        histories.append(hist)
        trajs.append(pd.read_parquet(cp.dir / "trajectory.parquet"))
        entries[cell.name] = registry_entry(cell, cp.model_dir, settings)
        rows.append(
            {
                "cell": cell.name,
                "base_model": cell.model,
                "family": models_mod.get_spec(cell.model).family,
                "data": cell.source,
                "method": cell.method,
                "quantity": cell.quantity,
                "seed": cell.seed,
                "status": "trained now" if cell in todo else "reused",
                **{k: marker[k] for k in ("n_train_used", "n_eval_used", "steps", "train_seconds")},
                **marker["metrics"],
            }
        )
    reg = write_registry(entries, root / REGISTRY_FILE)
    data_rows = [sel.summary() for sel in selections.values()]
    result = GridResult(
        grid=spec,
        cells=pd.DataFrame(rows),
        data=pd.DataFrame(data_rows),
        history=pd.concat(histories, ignore_index=True),
        trajectories=pd.concat(trajs, ignore_index=True),
        registry=reg,
        timings=timings,
        words_origin=words_origin,
    )
    if record is not None:
        record.timings.update({f"grid: {k}": v for k, v in timings.items()})
        for sel in selections.values():
            if sel.sha256:
                record.add_input(f"preferences:{sel.source}", sel.sha256)
        for m in spec.models:
            record.add_model(**models_mod.model_info(m))
        record.seeds.update({c.name: c.seed for c in cells})
        record.seeds["data_seed"] = settings.data_seed
    return result


def _trajectory_ok(cp: CellPaths, key: Mapping[str, Any]) -> bool:
    try:
        stored = json.loads((cp.dir / "trajectory.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return stored == json.loads(json.dumps(key)) and (cp.dir / "trajectory.parquet").is_file()


def _load_heads(cp: CellPaths) -> dict[int, np.ndarray]:
    with np.load(cp.dir / "heads.npz") as npz:
        return {int(s): npz["heads"][i] for i, s in enumerate(npz["steps"])}


def _train_cell(
    cell: Cell,
    cp: CellPaths,
    key: Mapping[str, Any],
    settings: TrainSettings,
    selection: PairSelection,
    base_model: PreTrainedModel | None,
    tok: PreTrainedTokenizerBase,
    feats: Mapping[int, tuple[np.ndarray, np.ndarray]] | None = None,
) -> None:
    """Train, save and mark one cell (everything written before the marker; the marker last).

    ``feats``: pair id -> (chosen, rejected) last-token features (head-only with the feature cache)."""
    shutil.rmtree(cp.dir, ignore_errors=True)
    shutil.rmtree(cp.model_dir, ignore_errors=True)
    cp.dir.mkdir(parents=True)
    data = cell_data(selection, cell.model, cell.quantity)
    features = None
    model = base_model
    if settings.method == "head" and settings.feature_cache:
        if feats is None:
            raise ValueError(
                f"cell {cell.name}: head-only training with feature_cache needs the pair features"
            )
        import torch

        def stack(ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
            if not ids:
                return torch.empty(0), torch.empty(0)
            return (
                torch.tensor(np.stack([feats[i][0] for i in ids])),
                torch.tensor(np.stack([feats[i][1] for i in ids])),
            )

        features = {"train": stack(data.train_ids), "eval": stack(data.eval_ids)}
    elif settings.method in ("lora", "full"):
        model = load_classifier(cell.model, tok)  # a fresh copy of the base for every cell
        if _cuda():
            model.to("cuda")
    outcome = train_reward_model(model, tok, data, settings, cell.seed, cp.dir, features)
    history = tidy_history(outcome.log_history)
    atomic_write_parquet(history, cp.dir / "history.parquet")
    if settings.method == "head":
        steps = sorted(outcome.heads)
        np.savez(
            cp.dir / "heads.npz", steps=np.asarray(steps), heads=np.stack([outcome.heads[s] for s in steps])
        )
        save_head_rm(cell.model, base_model, outcome.heads[steps[-1]], tok, cp.model_dir)
        # the shared base must stay untouched for the next cell
        base_model.score.weight.requires_grad_(False)
    else:
        save_full_rm(outcome.model, tok, cp.model_dir)
    shutil.rmtree(cp.dir / "trainer" / "runs", ignore_errors=True)
    train_hist = history[history["split"] == "train"]
    metrics = {
        **_eval_curve(history),
        "train_loss_end": float(train_hist["loss"].iloc[-1]) if len(train_hist) else np.nan,
        "train_accuracy_end": float(train_hist["accuracy"].iloc[-1]) if len(train_hist) else np.nan,
    }
    marker = {
        "key": json.loads(json.dumps(key, default=str)),
        "cell": dataclasses.asdict(cell),
        "registry_name": cell.name,
        "n_pairs_requested": cell.quantity,
        "n_train_used": outcome.n_train_used,
        "n_eval_used": outcome.n_eval_used,
        "steps": int(outcome.trainer.state.global_step),
        "train_seconds": round(outcome.seconds, 3),
        "metrics": metrics,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_bytes(cp.marker, json.dumps(marker, indent=2).encode("utf-8"))


# =========================================================================================================
# Analysis: category trajectories, seeds, word movers
# =========================================================================================================

_META = ["cell", "base_model", "data", "method", "quantity", "seed", "step"]


def category_trajectories(trajectories: pd.DataFrame) -> pd.DataFrame:
    """Median rank of each category per cell, checkpoint and prompt (the paper's Fig. 4 unit), through
    :func:`rmvalues.statistics.rank_scores` and :func:`rmvalues.statistics.median_ranks` (rank 1 = the
    highest reward; every checkpoint ranks the words anew). Returns ``cell, base_model, family, data,
    method, quantity, seed, step, prompt_id, framing, category, median_rank, n_words``."""
    from . import statistics

    ranked = statistics.rank_scores(trajectories[list(scores_mod.SCORE_COLUMNS)])
    med = statistics.median_ranks(ranked, split=False)
    meta = trajectories[["model", *_META]].drop_duplicates("model")
    out = med.merge(meta, on="model", how="left")
    cols = [*_META[:-1], "family", "step", "prompt_id", "framing", "category", "median_rank", "n_words"]
    return out[cols].sort_values(["cell", "step", "prompt_id", "category"]).reset_index(drop=True)


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float, float, int]:
    """``(mean, sd, ci_low, ci_high, n)`` with a t interval (NaN bounds for fewer than two values)."""
    from scipy import stats

    x = np.asarray([v for v in values if not pd.isna(v)], dtype=float)
    n = len(x)
    if n == 0:
        return (np.nan, np.nan, np.nan, np.nan, 0)
    mean = float(x.mean())
    if n < 2:
        return (mean, np.nan, np.nan, np.nan, n)
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return (mean, sd, mean - half, mean + half, n)


def per_cell_category(cat: pd.DataFrame) -> pd.DataFrame:
    """Median ranks averaged over the prompts of each framing: one value per cell, step, framing, category."""
    keys = [
        "cell",
        "base_model",
        "family",
        "data",
        "method",
        "quantity",
        "seed",
        "step",
        "framing",
        "category",
    ]
    return cat.groupby(keys, sort=True, observed=True)["median_rank"].mean().reset_index()


def seed_summary(cat: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Across seeds: mean median rank per base model, data, quantity, step, framing and category, with sd
    and a t confidence interval (``n_seeds`` values each)."""
    per_cell = per_cell_category(cat)
    keys = ["base_model", "family", "data", "method", "quantity", "step", "framing", "category"]
    rows = []
    for key, g in per_cell.groupby(keys, sort=True, observed=True):
        mean, sd, lo, hi, n = mean_ci(g["median_rank"], confidence)
        rows.append(
            {
                **dict(zip(keys, key, strict=True)),
                "mean": mean,
                "sd": sd,
                "ci_low": lo,
                "ci_high": hi,
                "n_seeds": n,
            }
        )
    return pd.DataFrame(rows)


def category_gaps(cat: pd.DataFrame, first: str = "Agency", second: str = "Communion") -> pd.DataFrame:
    """Per cell, step and framing: ``gap = median rank(first) - median rank(second)`` (averaged over prompts).

    Positive: the ``second`` category's words get more reward (lower ranks) than the ``first``'s.
    """
    per_cell = per_cell_category(cat)
    have = set(per_cell["category"])
    if not {first, second} <= have:
        raise ValueError(
            f"categories {first!r} and {second!r} are needed for a gap; the corpus has {sorted(have)}"
        )
    keys = ["cell", "base_model", "family", "data", "method", "quantity", "seed", "step", "framing"]
    wide = per_cell.pivot_table(
        index=keys, columns="category", values="median_rank", observed=True
    ).reset_index()
    wide["gap"] = wide[first] - wide[second]
    return wide[[*keys, "gap"]]


def compare_bases(gaps: pd.DataFrame, n_permutations: int = 9999, seed: int = 0) -> pd.DataFrame:
    """Between every two base models, per data, quantity and framing, at the first and last checkpoint: the
    difference of mean gaps across seeds, Welch's t confidence interval, a permutation Welch test and Cohen's d
    (:func:`rmvalues.statistics.permutation_welch`, :func:`rmvalues.statistics.cohens_d`). With 3 seeds per
    base the exact permutation test cannot go below p = 0.1: the seeds show spread, not significance."""
    from scipy import stats

    from . import statistics

    rows = []
    for (data, quantity, framing), g in gaps.groupby(["data", "quantity", "framing"], sort=True):
        bases = sorted(g["base_model"].unique())
        for i, a in enumerate(bases):
            for b in bases[i + 1 :]:
                for when in ("first", "last"):
                    x, y = _gaps_at(g, a, when), _gaps_at(g, b, when)
                    row = {
                        "data": data,
                        "quantity": quantity,
                        "framing": framing,
                        "checkpoint": when,
                        "base_a": a,
                        "base_b": b,
                        "gap_a": float(np.mean(x)),
                        "gap_b": float(np.mean(y)),
                        "difference": float(np.mean(x) - np.mean(y)),
                        "n_a": len(x),
                        "n_b": len(y),
                    }
                    if len(x) >= 2 and len(y) >= 2:
                        res = stats.ttest_ind(x, y, equal_var=False)
                        ci = res.confidence_interval(0.95)
                        _, p = statistics.permutation_welch(x, y, n_permutations, seed)
                        row.update(
                            ci_low=float(ci.low),
                            ci_high=float(ci.high),
                            p_perm=p,
                            d=statistics.cohens_d(x, y),
                        )
                    rows.append(row)
    return pd.DataFrame(rows)


def _gaps_at(g: pd.DataFrame, base: str, when: str) -> np.ndarray:
    """The gaps of ``base``'s cells at their first or last checkpoint."""
    sub = g[g["base_model"] == base]
    step = sub.groupby("cell")["step"].transform("min" if when == "first" else "max")
    return sub.loc[sub["step"] == step, "gap"].to_numpy(float)


def word_movers(trajectories: pd.DataFrame, top: int = 10) -> pd.DataFrame:
    """The words whose rank rose or fell most between the first and the last checkpoint (paper Fig. 5).

    Per cell: each word's rank averaged over prompts at the first and last step; ``change = rank_last -
    rank_first`` (negative: the word rose, i.e. gained reward relative to the others). Averaged over seeds
    per base model, data and quantity; the ``top`` risers and fallers of each are returned with ``direction``.
    """
    from . import statistics

    ranked = statistics.rank_scores(trajectories[list(scores_mod.SCORE_COLUMNS)])
    meta = trajectories[["model", *_META]].drop_duplicates("model")
    ranked = ranked.drop_duplicates(["model", "prompt_id", "word"]).merge(meta, on="model")
    first = ranked.groupby("cell")["step"].transform("min")
    last = ranked.groupby("cell")["step"].transform("max")
    ranked = ranked[(ranked["step"] == first) | (ranked["step"] == last)].copy()
    ranked["when"] = np.where(ranked["step"] == first[ranked.index], "first", "last")
    per = (
        ranked.groupby(["base_model", "data", "quantity", "seed", "word", "when"])["rank"]
        .mean()
        .unstack("when")
    )
    per["change"] = per["last"] - per["first"]
    per = per.reset_index()
    agg = (
        per.groupby(["base_model", "data", "quantity", "word"])
        .agg(
            rank_first=("first", "mean"),
            rank_last=("last", "mean"),
            change=("change", "mean"),
            change_sd=("change", "std"),
            n_seeds=("change", "size"),
        )
        .reset_index()
    )
    cats = trajectories.groupby("word")["category"].agg(lambda s: "/".join(sorted(set(s))))
    agg["category"] = agg["word"].map(cats)
    out = []
    for _, g in agg.groupby(["base_model", "data", "quantity"], sort=True):
        g = g.sort_values("change")
        out.append(g.head(top).assign(direction="rose"))
        out.append(g.tail(top).iloc[::-1].assign(direction="fell"))
    return pd.concat(out, ignore_index=True)


def mover_balance(movers: pd.DataFrame) -> pd.DataFrame:
    """How many of the top risers and fallers are Agency or Communion words, per base model and data."""
    return (
        movers.groupby(["base_model", "data", "quantity", "direction", "category"])
        .size()
        .rename("n_words")
        .reset_index()
    )


# =========================================================================================================
# The paper's released training results
# =========================================================================================================

PAPER_TRAINING_FILES: dict[str, str] = {
    "sky_80k": "paper/training/rank_results_sky_80k",
    "uf_13": "paper/training/rank_results_uf_13",
    "uf_27": "paper/training/rank_results_uf_27",
    "uf_54": "paper/training/rank_results_uf_54",
    "uf_100": "paper/training/rank_results_uf_100",
    "grm_80k": "paper/training/rank_results_grm_80k",
}
PAPER_TRAINING_LABELS: dict[str, str] = {
    "sky_80k": "Skywork 80K v0.2",
    "uf_13": "Unified-Feedback 13K",
    "uf_27": "Unified-Feedback 27K",
    "uf_54": "Unified-Feedback 54K",
    "uf_100": "Unified-Feedback 100K",
    "grm_80k": "GRM (off the shelf)",
}


def _paper_family(model_id: str, base: Any) -> str:
    if isinstance(base, str) and base:
        return base
    low = str(model_id).lower()
    for key, fam in (("qwen", "Qwen"), ("gemma", "Gemma"), ("llama", "Llama")):
        if key in low:
            return fam
    return "unknown"


def load_paper_training_results() -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(results, files)``: the paper's ``rank_results_*.csv`` in one tidy table, and one row per file.

    ``results``: ``dataset, label, model_id, base_model, category, checkpoint, value`` (``value`` is the
    file's ``sum_value``: the release README calls it the median rank of the category's tokens per
    checkpoint). Exact duplicate rows (``uf_100`` repeats its rows) are dropped; a missing ``base_model``
    (the Qwen runs) is filled from the model id. ``files``: rows, duplicates dropped, sha256, and which
    other file has identical bytes (``uf_13`` = ``uf_27`` in the release).
    """
    from . import data

    frames, info = [], []
    shas = {k: data.get(v).sha256 for k, v in PAPER_TRAINING_FILES.items()}
    for key, name in PAPER_TRAINING_FILES.items():
        raw = pd.read_csv(data.fetch(name))
        raw = raw.drop(columns=[c for c in raw.columns if c in ("", "X") or c.startswith("Unnamed")])
        n = len(raw)
        raw = raw.drop_duplicates()
        same = [k for k, s in shas.items() if s == shas[key] and k != key]
        info.append(
            {
                "dataset": key,
                "label": PAPER_TRAINING_LABELS[key],
                "rows": n,
                "duplicate_rows_dropped": n - len(raw),
                "sha256": shas[key],
                "identical_to": ", ".join(same),
            }
        )
        df = pd.DataFrame(
            {
                "dataset": key,
                "label": PAPER_TRAINING_LABELS[key],
                "model_id": raw["model_id"].astype(str),
                "base_model": [
                    _paper_family(m, b) for m, b in zip(raw["model_id"], raw["base_model"], strict=True)
                ],
                "category": raw["Category"].astype(str),
                "checkpoint": raw["checkpoint"].astype(int),
                "value": raw["sum_value"].astype(float),
            }
        )
        frames.append(df)
    return pd.concat(frames, ignore_index=True), pd.DataFrame(info)


def paper_gaps(results: pd.DataFrame, first: str = "Agency", second: str = "Communion") -> pd.DataFrame:
    """The paper's ``value(first) - value(second)`` per data set, model and checkpoint (same sign convention
    as :func:`category_gaps`: positive = the second category ranked higher); first/last checkpoint flagged."""
    wide = results.pivot_table(
        index=["dataset", "label", "model_id", "base_model", "checkpoint"], columns="category", values="value"
    ).reset_index()
    wide["gap"] = wide[first] - wide[second]
    g = wide.groupby(["dataset", "model_id"])["checkpoint"]
    wide["is_first"] = wide["checkpoint"] == g.transform("min")
    wide["is_last"] = wide["checkpoint"] == g.transform("max")
    return wide


def paper_vs_ours(paper: pd.DataFrame, ours: pd.DataFrame) -> pd.DataFrame:
    """Side by side: the sign and change of the Agency - Communion gap per base family, first vs last
    checkpoint, in the paper's runs (one seed) and ours (mean over seeds; positive framing)."""
    rows = []
    for (_ds, label, fam), g in paper[paper["dataset"] != "grm_80k"].groupby(
        ["dataset", "label", "base_model"]
    ):
        f, l_ = g.loc[g["is_first"], "gap"].mean(), g.loc[g["is_last"], "gap"].mean()
        rows.append(
            {"study": "paper", "data": label, "base": fam, "seeds": 1, "gap_first": f, "gap_last": l_}
        )
    pos = ours[ours["framing"] == "positive"] if "positive" in set(ours["framing"]) else ours
    for (data_, q, base), g in pos.groupby(["data", "quantity", "base_model"]):
        first = g[g["step"] == g.groupby("cell")["step"].transform("min")]["gap"]
        last = g[g["step"] == g.groupby("cell")["step"].transform("max")]["gap"]
        rows.append(
            {
                "study": "this book",
                "data": f"{data_} ({q} pairs)",
                "base": base,
                "seeds": int(g["seed"].nunique()),
                "gap_first": float(first.mean()),
                "gap_last": float(last.mean()),
            }
        )
    out = pd.DataFrame(rows)
    out["favoured_at_end"] = np.where(
        out["gap_last"] > 0, "Communion", np.where(out["gap_last"] < 0, "Agency", "neither")
    )
    out["gap_change"] = out["gap_last"] - out["gap_first"]
    return out


# =========================================================================================================
# Figures
# =========================================================================================================

_PALETTE = ["#DB4437", "#0064E0", "#0F9D58", "#F4B400", "#7B1FA2", "#00838F"]


def _colors(names: Sequence[str]) -> dict[str, str]:
    return {n: _PALETTE[i % len(_PALETTE)] for i, n in enumerate(sorted(names))}


def plot_training_curves(history: pd.DataFrame, cells: pd.DataFrame) -> Figure:
    """Loss, accuracy and margin over steps (rows) per quantity (columns): training batches (thin lines,
    mean over seeds) and held-out pairs (markers, mean over seeds), one colour per base model."""
    import matplotlib.pyplot as plt

    h = history.merge(cells[["cell", "base_model", "quantity", "seed"]], on="cell")
    quantities = sorted(h["quantity"].unique())
    metrics = ["loss", "accuracy", "margin"]
    colors = _colors(h["base_model"].unique())
    fig, axes = plt.subplots(
        len(metrics), len(quantities), figsize=(3.6 * len(quantities) + 1, 6.8), sharex="col", squeeze=False
    )
    for j, q in enumerate(quantities):
        for i, metric in enumerate(metrics):
            ax = axes[i][j]
            for base, g in h[h["quantity"] == q].groupby("base_model"):
                tr = g[g["split"] == "train"].groupby("step")[metric].mean()
                ev = g[g["split"] == "eval"].groupby("step")[metric].mean()
                ax.plot(tr.index, tr.to_numpy(), color=colors[base], lw=0.8, alpha=0.6)
                ax.plot(ev.index, ev.to_numpy(), color=colors[base], marker="o", ms=4, lw=1.5, label=base)
            if metric == "accuracy":
                ax.axhline(0.5, color="grey", lw=0.6, ls=":")
            if metric == "loss":
                ax.axhline(math.log(2), color="grey", lw=0.6, ls=":")
            ax.set_ylabel(metric if j == 0 else "")
            if i == 0:
                ax.set_title(f"{q} training pairs")
            if i == len(metrics) - 1:
                ax.set_xlabel("optimizer step")
    axes[0][-1].legend(fontsize=8, title="held-out (markers)", title_fontsize=8)
    fig.suptitle(
        "Training curves (thin: training batches; markers: held-out pairs; means over seeds)", fontsize=10
    )
    fig.tight_layout()
    return fig


def plot_heldout_accuracy(cells: pd.DataFrame) -> Figure:
    """Held-out preference accuracy of every trained RM before (step 0) and after training, per seed."""
    import matplotlib.pyplot as plt

    colors = _colors(cells["base_model"].unique())
    groups = list(cells.groupby(["base_model", "quantity"], sort=True))
    fig, ax = plt.subplots(figsize=(1.2 * len(groups) + 2.5, 3.4))
    for k, ((base, _q), g) in enumerate(groups):
        for _, r in g.iterrows():
            ax.plot(
                [k - 0.15, k + 0.15],
                [r["eval_accuracy_start"], r["eval_accuracy_end"]],
                color=colors[base],
                alpha=0.7,
            )
            ax.scatter([k + 0.15], [r["eval_accuracy_end"]], color=colors[base], s=18, zorder=3)
            ax.scatter(
                [k - 0.15],
                [r["eval_accuracy_start"]],
                facecolor="white",
                edgecolor=colors[base],
                s=18,
                zorder=3,
            )
    ax.axhline(0.5, color="grey", lw=0.6, ls=":")
    ax.set_xticks(range(len(groups)), [f"{b}\n{q} pairs" for (b, q), _ in groups], fontsize=8)
    ax.set_ylabel("held-out accuracy")
    ax.set_title(
        "Held-out preference accuracy: step 0 (open) and after training (filled), one line per seed",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def plot_trajectories(summary: pd.DataFrame) -> Figure:
    """Mean median rank of each category over training steps (lower = more reward), per base model, with the
    t confidence band across seeds; columns: quantities, rows: framings (paper Fig. 4, with seeds)."""
    import matplotlib.pyplot as plt

    quantities = sorted(summary["quantity"].unique())
    framings = [f for f in ("positive", "negative") if f in set(summary["framing"])]
    colors = _colors(summary["base_model"].unique())
    styles = {
        c: s for c, s in zip(sorted(summary["category"].unique()), ["-", "--", ":", "-."] * 4, strict=False)
    }
    fig, axes = plt.subplots(
        len(framings),
        len(quantities),
        figsize=(3.8 * len(quantities) + 1.5, 3.0 * len(framings) + 0.6),
        squeeze=False,
        sharey="row",
    )
    for i, fr in enumerate(framings):
        for j, q in enumerate(quantities):
            ax = axes[i][j]
            sub = summary[(summary["framing"] == fr) & (summary["quantity"] == q)]
            for (base, cat), g in sub.groupby(["base_model", "category"]):
                g = g.sort_values("step")
                ax.plot(
                    g["step"], g["mean"], color=colors[base], ls=styles[cat], lw=1.6, label=f"{base} · {cat}"
                )
                if g["ci_low"].notna().any():
                    ax.fill_between(
                        g["step"], g["ci_low"], g["ci_high"], color=colors[base], alpha=0.12, lw=0
                    )
            ax.invert_yaxis() if j == 0 else None
            ax.set_title(f"{fr} prompts · {q} pairs", fontsize=9)
            ax.set_xlabel("optimizer step")
            if j == 0:
                ax.set_ylabel("median rank (1 = most reward)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def plot_word_movers(movers: pd.DataFrame, data: str | None = None, quantity: int | None = None) -> Figure:
    """Top risers and fallers per base model (paper Fig. 5): mean rank change over seeds, coloured by category."""
    import matplotlib.pyplot as plt

    m = movers
    if data is not None:
        m = m[m["data"] == data]
    if quantity is not None:
        m = m[m["quantity"] == quantity]
    bases = sorted(m["base_model"].unique())
    cat_colors = _colors(m["category"].unique())
    fig, axes = plt.subplots(
        1,
        len(bases),
        figsize=(4.4 * len(bases), 0.24 * m.groupby("base_model").size().max() + 1.2),
        squeeze=False,
    )
    for ax, base in zip(axes[0], bases, strict=True):
        g = m[m["base_model"] == base].sort_values("change")
        y = np.arange(len(g))
        ax.barh(
            y,
            g["change"],
            color=[cat_colors[c] for c in g["category"]],
            xerr=g["change_sd"].fillna(0),
            ecolor="grey",
            error_kw={"lw": 0.6},
        )
        ax.set_yticks(y, g["word"], fontsize=7)
        ax.axvline(0, color="black", lw=0.6)
        ax.invert_yaxis()
        ax.set_title(base, fontsize=9)
        ax.set_xlabel("rank change, last - first checkpoint\n(negative: rose)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in cat_colors.values()]
    fig.legend(handles, list(cat_colors), loc="lower center", ncol=len(cat_colors), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def plot_paper_trajectories(gaps: pd.DataFrame) -> Figure:
    """The paper's released training runs: Agency - Communion gap of the median ranks per checkpoint."""
    import matplotlib.pyplot as plt

    g = gaps[gaps["dataset"] != "grm_80k"]
    datasets = [d for d in PAPER_TRAINING_FILES if d in set(g["dataset"])]
    colors = {"Gemma": "#DB4437", "Llama": "#0064E0", "Qwen": "#7B1FA2"}
    fig, axes = plt.subplots(1, len(datasets), figsize=(3.0 * len(datasets), 3.0), squeeze=False, sharey=True)
    for ax, ds in zip(axes[0], datasets, strict=True):
        sub = g[g["dataset"] == ds]
        for (base, _model_id), h in sub.groupby(["base_model", "model_id"]):
            h = h.sort_values("checkpoint")
            ax.plot(h["checkpoint"], h["gap"], marker="o", ms=3, color=colors.get(base, "grey"), label=base)
        ax.axhline(0, color="grey", lw=0.6, ls=":")
        ax.set_title(PAPER_TRAINING_LABELS.get(ds, ds), fontsize=9)
        ax.set_xlabel("training step")
    axes[0][0].set_ylabel("Agency - Communion\n(median rank; > 0: Communion favoured)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    uniq = dict(zip(labels, handles, strict=False))
    fig.legend(uniq.values(), uniq.keys(), loc="lower center", ncol=len(uniq), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


# =========================================================================================================
# Chapter entry point
# =========================================================================================================


@dataclass
class TrainingResults:
    """Everything the chapter shows."""

    grid: GridResult
    categories: pd.DataFrame
    summary: pd.DataFrame
    gaps: pd.DataFrame | None
    comparison: pd.DataFrame | None
    movers: pd.DataFrame
    paper: pd.DataFrame
    paper_files: pd.DataFrame
    paper_gaps: pd.DataFrame
    paper_vs_ours: pd.DataFrame | None
    consistency: dict[str, Any]
    seconds: float


def consistency_check(result: GridResult, prompts: pd.DataFrame, words: Sequence[str]) -> dict[str, Any]:
    """Load one trained RM *by registry name* through :func:`rmvalues.scoring.load_reward_model` and score it
    with the scoring engine on the first prompt: its rewards must equal the trajectory's last checkpoint."""
    from . import scoring

    cell = result.cells.iloc[-1]
    spec = models_mod.get_spec(cell["cell"], extra=[result.registry]) if result.registry else None
    model, tok, _ = scoring.load_reward_model(spec)
    pid = prompts["prompt_id"].iloc[0]
    live = score_model_words(model, tok, prompts.iloc[:1], words)[pid]
    traj = result.trajectories
    last = traj[(traj["cell"] == cell["cell"]) & (traj["prompt_id"] == pid)]
    last = last[last["step"] == last["step"].max()].drop_duplicates("word").set_index("word")["score"]
    diff = float(np.max(np.abs(last.reindex(list(words)).to_numpy() - live)))
    return {"rm": cell["cell"], "prompt_id": pid, "words": len(words), "max_abs_difference": diff}


def run_training(
    params: Mapping[str, Any], record: RunRecord | None = None, progress: bool = True
) -> TrainingResults:
    """The chapter: validate, train the grid (resuming), analyse trajectories across seeds, compare with the
    paper's released results, and check that a trained RM loads by name and scores identically."""
    start = time.perf_counter()
    p = {**DEFAULT_PARAMETERS, **params}
    check_parameters(p)
    use_registries(p["extra_registry"])
    spec = grid_spec(p["grid"], _overrides(p))
    result = run_grid(
        spec,
        paths.resolve(p["output_dir"]),
        corpus=p["corpus"],
        prompts=p["prompts"],
        corpora_run=p["corpora_run"],
        results_root=p["results_root"],
        record=record,
        progress=progress,
    )
    cats = category_trajectories(result.trajectories)
    summary = seed_summary(cats)
    try:
        gaps = category_gaps(cats)
        comparison = compare_bases(gaps) if len(spec.models) > 1 else None
    except ValueError:
        gaps, comparison = None, None
    movers = word_movers(result.trajectories)
    paper, paper_files = load_paper_training_results()
    pgaps = paper_gaps(paper)
    pvo = paper_vs_ours(pgaps, gaps) if gaps is not None else None
    prompt_ids = scores_mod._check_prompts(list(p["prompts"]))  # empty: all 54
    prompts = scores_mod.load_prompts().set_index("prompt_id").loc[prompt_ids].reset_index()
    words = sorted(result.trajectories["word"].unique())
    with _quiet_transformers():
        consistency = consistency_check(result, prompts, words)
    if record is not None:
        for name in PAPER_TRAINING_FILES.values():
            from . import data

            record.add_input(name, data.get(name).sha256)
        record.extra["consistency"] = consistency
        record.extra["registry"] = str(result.registry)
        record.extra["words_origin"] = result.words_origin
    return TrainingResults(
        grid=result,
        categories=cats,
        summary=summary,
        gaps=gaps,
        comparison=comparison,
        movers=movers,
        paper=paper,
        paper_files=paper_files,
        paper_gaps=pgaps,
        paper_vs_ours=pvo,
        consistency=consistency,
        seconds=time.perf_counter() - start,
    )


# =========================================================================================================
# Sentences from the numbers
# =========================================================================================================


def _f(x: float, digits: int = 1) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def describe_data(result: GridResult) -> str:
    """One paragraph per source: how many pairs were examined, eligible, dropped (why), held out, trained."""
    out = []
    q = ", ".join(str(x) for x in result.grid.quantities)
    for row in result.data.to_dict("records"):
        drops = {k[len("dropped: ") :]: v for k, v in row.items() if k.startswith("dropped: ") and v}
        why = "; ".join(f"{v} {k}" for k, v in sorted(drops.items(), key=lambda kv: -kv[1])) or "none"
        out.append(
            f"Source `{row['source']}`: {row['n_rows']:,} pairs; {row['n_examined']:,} were visited in the fixed "
            f"data order (data seed {row['data_seed']}) until {row['n_eligible']:,} eligible pairs were found "
            f"(dropped on the way: {why}). The first {row['n_eval']} are held out; cells train on the first "
            f"{q} of the remaining {row['n_train_pool']} pairs, the same pairs for every base model."
        )
    trained = result.cells[["quantity", "n_train_used"]].drop_duplicates()
    if (trained["quantity"] == trained["n_train_used"]).all():
        out.append("TRL kept every selected pair in every cell (none exceeded max_length).")
    else:
        out.append(f"TRL dropped pairs in some cells: {trained.to_dict('records')}.")
    return "\n\n".join(out)


def describe_accuracy(cells: pd.DataFrame) -> str:
    """Held-out accuracy before and after training, per base model and quantity (mean over seeds)."""
    parts = []
    for (base, q), g in cells.groupby(["base_model", "quantity"], sort=True):
        m0, m1 = g["eval_accuracy_start"].mean(), g["eval_accuracy_end"].mean()
        parts.append(
            f"{base} with {q} pairs: {_f(100 * m0, 0)} % at step 0, {_f(100 * m1, 0)} % after training "
            f"(seeds: {', '.join(_f(100 * x, 0) for x in g['eval_accuracy_end'])} %)"
        )
    return "Held-out preference accuracy (chance = 50 %): " + "; ".join(parts) + "."


def describe_gaps(gaps: pd.DataFrame, framing: str = "positive") -> str:
    """The Agency - Communion gap at the first and last checkpoint per base model and quantity."""
    g = gaps[gaps["framing"] == framing]
    parts = []
    for (base, q), h in g.groupby(["base_model", "quantity"], sort=True):
        first = h[h["step"] == h.groupby("cell")["step"].transform("min")]["gap"]
        last = h[h["step"] == h.groupby("cell")["step"].transform("max")]["gap"]
        m, _, lo, hi, n = mean_ci(last)
        lean = "Communion" if m > 0 else "Agency"
        spread = f"95 % CI over {n} seeds {_f(lo)} to {_f(hi)}" if n > 1 else "one seed: no interval"
        parts.append(
            f"{base}, {q} pairs: {_f(first.mean())} at step 0 -> {_f(m)} after training ({spread}; leaning {lean})"
        )
    return (
        f"Agency minus Communion median rank under {framing} prompts (positive: Communion words get more "
        "reward): " + "; ".join(parts) + "."
    )


def describe_comparison(comparison: pd.DataFrame | None) -> str:
    """The difference between base models at the last checkpoint, per quantity and framing."""
    if comparison is None or comparison.empty:
        return "Only one base model: no comparison between base models."
    c = comparison[comparison["checkpoint"] == "last"]
    parts = []
    for r in c.to_dict("records"):
        p = r.get("p_perm", np.nan)
        parts.append(
            f"{r['framing']} prompts, {r['quantity']} pairs: {r['base_a']} - {r['base_b']} = {_f(r['difference'])} "
            f"rank units (Welch 95 % CI {_f(r.get('ci_low', np.nan))} to {_f(r.get('ci_high', np.nan))}, "
            f"permutation p = {_f(p, 2)}, d = {_f(r.get('d', np.nan), 2)})"
        )
    return "Gap difference between base models after training: " + "; ".join(parts) + "."


def describe_paper(pvo: pd.DataFrame | None) -> str:
    """The paper's runs: which category each base family favoured at its last checkpoint."""
    if pvo is None or pvo.empty:
        return ""
    paper = pvo[pvo["study"] == "paper"]
    parts = []
    for base, g in paper.groupby("base", sort=True):
        fav = g["favoured_at_end"].value_counts()
        parts.append(f"{base}: {', '.join(f'{k} in {v} of {len(g)}' for k, v in fav.items())} training sets")
    return "The paper's released runs, last checkpoint, positive prompt: " + "; ".join(parts) + "."


def timing_summary(timings: Mapping[str, float], models: Sequence[str]) -> pd.DataFrame:
    """Seconds per kind of work (data, loading, features, training, trajectories) and base model, with the
    number of timed items (cells for training and trajectories)."""
    labels = {"load": "load base model", "word": "word features", "pair": "pair features"}
    rows = []
    for key, sec in timings.items():
        kind, _, rest = key.partition(" ")
        rest = rest.removeprefix("features ")
        model = next(
            (m for m in sorted(models, key=len, reverse=True) if rest == m or rest.startswith(m + "-")), ""
        )
        rows.append({"work": labels.get(kind, kind), "model": model or "(all)", "seconds": sec, "n": 1})
    df = (
        pd.DataFrame(rows)
        .groupby(["work", "model"], sort=False)
        .agg(seconds=("seconds", "sum"), n=("n", "sum"))
    )
    return df.reset_index()
