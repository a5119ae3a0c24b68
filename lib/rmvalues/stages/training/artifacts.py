"""Trained RMs as ordinary model folders, and the registry file that makes them loadable by name.

Trained RMs are ``local`` reward models listed in ``<output_dir>/registry.yaml`` (the schema of
``config/models.yaml``), named ``<base>-<source>-<method>-n<quantity>-s<seed>``; pass that file as an extra
registry (``rmvalues.models.get_spec(name, extra=[file])``) to load them by name, as the scoring stage does.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from ...core import paths
from ...core.files import atomic_write_bytes
from ...models.loading import ensure_local, quiet_transformers
from ...models.registry import ModelSpec, get_spec, registry
from .config import Cell, TrainSettings

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["registry_entry", "save_full_rm", "save_head_rm", "write_registry"]


def _link_or_copy(src: Path, dst: Path) -> str:
    try:
        os.link(src, dst)
        return "hardlink"
    except OSError:
        shutil.copy2(src, dst)
        return "copy"


def _base_keys(base_file: Path, model: PreTrainedModel, resized: bool) -> list[str] | None:
    """The tensor names of the base's ``model.safetensors`` when the head-only folder can share it (the file
    exists, the embeddings were not resized and it holds every base weight), else None."""
    from safetensors import safe_open

    if not base_file.is_file() or resized:
        return None
    with safe_open(str(base_file), "pt") as fh:
        keys = list(fh.keys())
    expected = {k for k, _ in model.state_dict().items() if k != "score.weight"}
    return keys if expected <= set(keys) else None  # names differ: fall back to a full save


def save_head_rm(
    base: str | ModelSpec,
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
    from safetensors.torch import save_file

    spec = get_spec(base)
    folder = Path(folder)
    tmp = folder.with_name(f".tmp-{folder.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    base_file = ensure_local(spec) / "model.safetensors"
    weight = torch.tensor(np.asarray(score_weight, dtype=np.float32).reshape(1, -1))
    resized = len(tokenizer) > int(model.config.get_text_config().vocab_size)
    keys = _base_keys(base_file, model, resized)
    if keys is not None:
        config = copy.deepcopy(model.config)
        config.architectures = [type(model).__name__]
        config.save_pretrained(str(tmp))
        how = _link_or_copy(base_file, tmp / "base.safetensors")
        save_file(
            {"score.weight": weight.contiguous()}, str(tmp / "score.safetensors"), metadata={"format": "pt"}
        )
        weight_map = {k: "base.safetensors" for k in keys}
        weight_map["score.weight"] = "score.safetensors"
        index = {"metadata": {"rmvalues_base": spec.name, "base_file": how}, "weight_map": weight_map}
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
    with quiet_transformers():
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder


def registry_entry(cell: Cell, base: ModelSpec, folder: Path, settings: TrainSettings) -> dict[str, Any]:
    """The ``config/models.yaml``-schema entry of a trained RM (a ``local`` reward model) trained from
    ``base`` (the base model's spec); its path is relative to the project root when it lies inside it."""
    arch = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("architectures", [""])[0]
    root = paths.project_root()
    try:
        where = str(folder.resolve().relative_to(root.resolve()))
    except ValueError:
        where = str(folder.resolve())
    return {
        "kind": "reward-model",
        "family": base.family,
        "architecture": arch,
        "type": base.type,
        "size": base.size,
        "hub_id": None,
        "revision": None,
        "source": {"type": "local", "path": where},
        "dtype": "float32",
        "attn_implementation": base.attn_implementation,
        "trust_remote_code": False,
        "chat_template": base.chat_template,
        "pad_token": base.pad_token,
        "padding_side": base.padding_side,
        "score_readout": "logits_squeeze",
        "notes": (
            f"trained by rmvalues.stages.training: base {cell.model}, preference source {cell.source}, method "
            f"{cell.method}, {cell.quantity} pairs, seed {cell.seed}, lr {settings.learning_rate}, "
            f"{settings.epochs} epochs, effective batch {settings.batch_size}, max_length {settings.max_length}"
        ),
    }


def write_registry(entries: Mapping[str, Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Write an extra model-registry file (``models: {name: entry}``) atomically; validated by reading it."""
    path = Path(path)
    text = "# Trained reward models (written by rmvalues.stages.training; do not edit)\n" + yaml.safe_dump(
        {"models": {k: dict(v) for k, v in entries.items()}}, sort_keys=False
    )
    atomic_write_bytes(path, text.encode("utf-8"))
    registry(extra=[path])  # raises if an entry is invalid
    return path
