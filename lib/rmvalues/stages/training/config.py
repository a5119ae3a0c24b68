"""The training configuration (``config/training.yaml``): preference sources, training settings, named grids.

A grid trains one reward model per (base model x source x quantity x seed) cell, all with the same settings
(:class:`TrainSettings`; defaults = the paper's LoRA recipe). :func:`grid_spec` resolves a named grid with the
chapter's overrides and validates it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ...core import paths
from ...core.errors import RmvaluesError
from ...data import preferences
from ...data.preferences import TRUNCATIONS, PreferenceSource
from ...models.registry import RegistryError, registry

METHODS = ("head", "lora", "full")
PRECISIONS = ("auto", "float32", "bfloat16")
FEATURE_SCALINGS = ("none", "standardize")


def _is_int(x: Any) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


class TrainingConfigError(RmvaluesError, ValueError):
    """The training configuration or the chapter's parameters are invalid (the message says how to fix it)."""


@dataclass(frozen=True)
class TrainSettings:
    """How one RM is trained (``settings`` in ``config/training.yaml``; defaults = the paper's LoRA recipe)."""

    method: str = "lora"
    learning_rate: float = 1e-5
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.03
    batch_size: int = 16  # effective: pairs per optimizer step
    per_device_batch_size: int = 4  # gradient accumulation = batch_size / per_device_batch_size
    epochs: float = 2.0
    max_length: int | None = 1024
    truncation: str = "drop"  # drop: longer pairs are not eligible; left: sequences are left-truncated
    eval_pairs: int = 500
    train_pool: int | None = None  # training pairs the seeds draw their subsets from (None: largest quantity)
    checkpoint_every: int = 1000
    data_seed: int = 0
    weight_decay: float = 0.0
    lora_r: int = 32
    lora_alpha: int = 64
    lora_dropout: float = 0.05
    lora_target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    feature_cache: bool = True
    feature_batch_size: int = 16
    feature_scaling: str = "none"  # none | standardize (head-only with the feature cache)
    precision: str = "auto"
    gradient_checkpointing: bool | None = None  # None: on a GPU for lora/full, never on CPU
    head_l2: float = 0.0  # head only: L2 penalty lambda/2 |w|^2 on the head, in the space it is trained in
    depths: tuple[int, ...] = ()  # head only: adapted depths k >= 1 (top k blocks + head) besides the probe
    depth_quantities: tuple[int, ...] = ()  # quantities with depth cells (empty: the largest)
    depth_seeds: tuple[int, ...] = ()  # seeds with depth cells (empty: every seed of the grid)
    depth_learning_rate: float = 5e-5
    depth_epochs: float = 1.0
    depth_batch_size: int = 16

    @property
    def grad_accumulation(self) -> int:
        return self.batch_size // self.per_device_batch_size

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["lora_target_modules"] = list(self.lora_target_modules)
        for key in ("depths", "depth_quantities", "depth_seeds"):
            out[key] = list(out[key])
        return out

    def probe_dict(self) -> dict[str, Any]:
        """The settings a probe (k = 0) depends on: all but the depth arm's."""
        return {k: v for k, v in self.as_dict().items() if not k.startswith("depth")}


_SETTING_TYPES: dict[str, tuple[type, ...]] = {
    "method": (str,),
    "learning_rate": (float, int),
    "lr_scheduler_type": (str,),
    "warmup_ratio": (float, int),
    "batch_size": (int,),
    "per_device_batch_size": (int,),
    "epochs": (float, int),
    "max_length": (int, type(None)),
    "truncation": (str,),
    "eval_pairs": (int,),
    "train_pool": (int, type(None)),
    "checkpoint_every": (int,),
    "data_seed": (int,),
    "weight_decay": (float, int),
    "lora_r": (int,),
    "lora_alpha": (int,),
    "lora_dropout": (float, int),
    "lora_target_modules": (list, tuple),
    "feature_cache": (bool,),
    "feature_batch_size": (int,),
    "feature_scaling": (str,),
    "precision": (str,),
    "gradient_checkpointing": (bool, type(None)),
    "head_l2": (float, int),
    "depths": (list, tuple),
    "depth_quantities": (list, tuple),
    "depth_seeds": (list, tuple),
    "depth_learning_rate": (float, int),
    "depth_epochs": (float, int),
    "depth_batch_size": (int,),
}

_TUPLE_SETTINGS = ("lora_target_modules", "depths", "depth_quantities", "depth_seeds")


def make_settings(values: Mapping[str, Any], where: str = "settings") -> TrainSettings:
    """:class:`TrainSettings` from a mapping, validated (raises :class:`TrainingConfigError`)."""
    unknown = sorted(set(values) - set(_SETTING_TYPES))
    if unknown:
        raise TrainingConfigError(
            f"{where}: unknown setting(s) {unknown}; valid settings: {', '.join(_SETTING_TYPES)}"
        )
    clean: dict[str, Any] = {}
    for key, value in values.items():
        types = _SETTING_TYPES[key]
        if isinstance(value, bool) and bool not in types:
            raise TrainingConfigError(
                f"{where}: {key} must be {'/'.join(t.__name__ for t in types)}, not {value!r}"
            )
        if not isinstance(value, types):
            raise TrainingConfigError(
                f"{where}: {key} must be {'/'.join(t.__name__ for t in types)}, not {value!r}"
            )
        clean[key] = tuple(value) if key in _TUPLE_SETTINGS else value
    s = TrainSettings(**clean)
    problems = []
    if s.method not in METHODS:
        problems.append(f"method is {s.method!r}; valid methods: {', '.join(METHODS)}")
    if s.truncation not in TRUNCATIONS:
        problems.append(f"truncation is {s.truncation!r}; valid: {', '.join(TRUNCATIONS)}")
    elif s.truncation == "left" and s.max_length is None:
        problems.append("truncation left needs a max_length")
    if s.train_pool is not None and s.train_pool < 1:
        problems.append("train_pool must be >= 1 (or null: the largest quantity)")
    if s.precision not in PRECISIONS:
        problems.append(f"precision is {s.precision!r}; valid: {', '.join(PRECISIONS)}")
    if s.learning_rate <= 0:
        problems.append("learning_rate must be > 0")
    if not 0 <= s.warmup_ratio < 1:
        problems.append("warmup_ratio must be in [0, 1)")
    if s.batch_size < 1 or s.per_device_batch_size < 1 or s.batch_size % s.per_device_batch_size:
        problems.append(
            f"batch_size ({s.batch_size}) must be a positive multiple of per_device_batch_size "
            f"({s.per_device_batch_size})"
        )
    if s.epochs <= 0:
        problems.append("epochs must be > 0")
    if s.max_length is not None and s.max_length < 8:
        problems.append("max_length must be >= 8 tokens (or null: no limit)")
    if s.eval_pairs < 0:
        problems.append("eval_pairs must be >= 0")
    if s.checkpoint_every < 1:
        problems.append("checkpoint_every must be >= 1 step")
    if s.lora_r < 1 or s.lora_alpha < 1 or not 0 <= s.lora_dropout < 1:
        problems.append("lora_r and lora_alpha must be >= 1 and lora_dropout in [0, 1)")
    if s.feature_batch_size < 1:
        problems.append("feature_batch_size must be >= 1")
    if s.feature_scaling not in FEATURE_SCALINGS:
        problems.append(f"feature_scaling is {s.feature_scaling!r}; valid: {', '.join(FEATURE_SCALINGS)}")
    elif s.feature_scaling != "none" and not (s.method == "head" and s.feature_cache):
        problems.append("feature_scaling standardize needs method head with feature_cache true")
    problems += _depth_problems(s)
    if problems:
        raise TrainingConfigError(f"{where}: " + "; ".join(problems))
    return s


def _depth_problems(s: TrainSettings) -> list[str]:
    problems = []
    if s.head_l2 < 0:
        problems.append("head_l2 must be >= 0")
    if not all(_is_int(k) and k >= 1 for k in s.depths) or len(set(s.depths)) != len(s.depths):
        problems.append(f"depths must be distinct integers >= 1 (blocks adapted), got {list(s.depths)}")
    elif s.depths and not (s.method == "head" and s.feature_cache):
        problems.append("depths (the depth-of-adaptation arm) need method head with feature_cache true")
    for key in ("depth_quantities", "depth_seeds"):
        if not all(_is_int(v) and v >= 0 for v in getattr(s, key)):
            problems.append(f"{key} must be non-negative integers")
    if s.depth_learning_rate <= 0 or s.depth_epochs <= 0 or s.depth_batch_size < 1:
        problems.append("depth_learning_rate and depth_epochs must be > 0, depth_batch_size >= 1")
    return problems


@dataclass(frozen=True)
class GridSpec:
    """One ablation grid: base models x sources x quantities x seeds with one set of settings."""

    name: str
    models: tuple[str, ...]
    sources: tuple[str, ...]
    quantities: tuple[int, ...]
    seeds: tuple[int, ...]
    settings: TrainSettings
    description: str = ""

    def cells(self) -> list[Cell]:
        """Every cell of the grid with nothing of the base adapted (k = 0), in a fixed order (model, source,
        quantity, seed): the RMs the run registers."""
        return [
            Cell(m, s, self.settings.method, q, seed)
            for m in self.models
            for s in self.sources
            for q in self.quantities
            for seed in self.seeds
        ]

    @property
    def depth_quantities(self) -> tuple[int, ...]:
        """Quantities of the depth arm (``depth_quantities``; default the largest)."""
        return self.settings.depth_quantities or (max(self.quantities),)

    @property
    def depth_seeds(self) -> tuple[int, ...]:
        """Seeds of the depth arm (``depth_seeds``; default every seed)."""
        return self.settings.depth_seeds or self.seeds

    def depth_cells(self) -> list[Cell]:
        """The depth arm's cells (top k blocks + head, k in ``settings.depths``), in a fixed order."""
        return [
            Cell(m, s, self.settings.method, q, seed, k)
            for m in self.models
            for s in self.sources
            for k in self.settings.depths
            for q in self.depth_quantities
            for seed in self.depth_seeds
        ]


@dataclass(frozen=True)
class Cell:
    """One trained RM of a grid."""

    model: str
    source: str
    method: str
    quantity: int
    seed: int
    depth: int = 0  # transformer blocks adapted with the head (0: the probe, nothing of the base adapted)

    @property
    def arm(self) -> str:
        """What the cell adapts: its method (``head``: the probe) or ``top<k>+<method>``."""
        return f"top{self.depth}+{self.method}" if self.depth else self.method

    @property
    def name(self) -> str:
        """Name of the trained RM: ``<base>-<source>-<method>-n<quantity>-s<seed>`` (a depth cell:
        ``<base>-<source>-<method>-top<k>-n<quantity>-s<seed>``)."""
        top = f"-top{self.depth}" if self.depth else ""
        return f"{self.model}-{self.source}-{self.method}{top}-n{self.quantity}-s{self.seed}"


@dataclass(frozen=True)
class TrainingConfig:
    """``config/training.yaml``: preference sources, default settings and named grids."""

    sources: dict[str, PreferenceSource]
    settings: dict[str, Any]
    grids: dict[str, dict[str, Any]]
    path: str = ""


def config_path() -> Path:
    return paths.config_dir() / "training.yaml"


def load_config(path: str | os.PathLike[str] | None = None) -> TrainingConfig:
    """Read and validate ``config/training.yaml`` (sources, settings and grid entries)."""
    file = paths.resolve(path) if path else config_path()
    if not file.is_file():
        raise TrainingConfigError(f"training configuration {file} does not exist")
    raw = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    extra = sorted(set(raw) - {"sources", "settings", "grids"})
    if extra:
        raise TrainingConfigError(
            f"{file}: unknown top-level key(s) {extra}; valid: sources, settings, grids"
        )
    sources = {
        str(n): preferences.parse_source(str(n), e, str(file)) for n, e in (raw.get("sources") or {}).items()
    }
    settings = dict(raw.get("settings") or {})
    make_settings(settings, f"{file}: settings")
    grids = {str(n): dict(g or {}) for n, g in (raw.get("grids") or {}).items()}
    if not grids:
        raise TrainingConfigError(f"{file}: no grids defined")
    cfg = TrainingConfig(sources, settings, grids, str(file))
    for name in grids:
        grid_spec(name, config=cfg)
    return cfg


_GRID_KEYS = ("description", "models", "sources", "quantities", "seeds", "settings")


def grid_spec(
    name: str,
    overrides: Mapping[str, Any] | None = None,
    config: TrainingConfig | None = None,
) -> GridSpec:
    """The grid ``name`` of the configuration, with ``overrides`` (non-empty ``models``, ``sources``,
    ``quantities``, ``seeds``; ``settings`` merged over the grid's) applied; validated."""
    cfg = config or load_config()
    if name not in cfg.grids:
        raise TrainingConfigError(f"unknown grid {name!r}; grids in {cfg.path}: {', '.join(cfg.grids)}")
    raw = dict(cfg.grids[name])
    where = f"{cfg.path}: grid {name!r}"
    unknown = sorted(set(raw) - set(_GRID_KEYS))
    if unknown:
        raise TrainingConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {', '.join(_GRID_KEYS)}")
    ov = dict(overrides or {})
    for key in ("models", "sources", "quantities", "seeds"):
        if ov.get(key):
            raw[key] = list(ov[key])
            where = f"grid {name!r} with overrides"
    settings = {**cfg.settings, **(raw.get("settings") or {}), **(ov.get("settings") or {})}
    spec = GridSpec(
        name=name,
        models=tuple(raw.get("models") or ()),
        sources=tuple(raw.get("sources") or ()),
        quantities=tuple(raw.get("quantities") or ()),
        seeds=tuple(raw.get("seeds") or ()),
        settings=make_settings(settings, f"{where}: settings"),
        description=str(raw.get("description") or ""),
    )
    _check_grid(spec, cfg, where)
    return spec


def _check_grid(spec: GridSpec, cfg: TrainingConfig, where: str) -> None:
    problems: list[str] = []
    for key in ("models", "sources", "quantities", "seeds"):
        values = getattr(spec, key)
        if not values:
            problems.append(f"{key} is empty")
        elif len(set(values)) != len(values):
            problems.append(f"{key} lists a value twice: {list(values)}")
    bad_sources = [s for s in spec.sources if s not in cfg.sources]
    if bad_sources:
        problems.append(f"unknown source(s) {bad_sources}; sources: {', '.join(cfg.sources)}")
    if not all(_is_int(q) and q >= 1 for q in spec.quantities):
        problems.append(
            f"quantities must be positive integers (numbers of training pairs), got {list(spec.quantities)}"
        )
    pool = spec.settings.train_pool
    ints = spec.quantities and all(_is_int(q) for q in spec.quantities)
    if pool is not None and ints and pool < max(spec.quantities):
        problems.append(f"train_pool ({pool}) is smaller than the largest quantity ({max(spec.quantities)})")
    if not all(_is_int(s) and s >= 0 for s in spec.seeds):
        problems.append(f"seeds must be non-negative integers, got {list(spec.seeds)}")
    s = spec.settings
    if not set(s.depth_quantities) <= set(spec.quantities):
        problems.append(f"depth_quantities {list(s.depth_quantities)} must be among the quantities")
    if not set(s.depth_seeds) <= set(spec.seeds):
        problems.append(f"depth_seeds {list(s.depth_seeds)} must be among the seeds")
    if not all(isinstance(m, str) for m in spec.models):
        problems.append(f"models must be registry names, got {list(spec.models)}")
    if problems:
        raise TrainingConfigError(f"{where}: " + "; ".join(problems))


def check_models(names: Sequence[str], extra_registry: Sequence[str] = ()) -> None:
    """Every name is a registered causal LM (a base model to train from); :class:`TrainingConfigError` if not.

    ``extra_registry``: registry files read besides ``config/models.yaml``.
    """
    try:
        reg = registry(extra=[str(paths.resolve(f)) for f in extra_registry])
    except RegistryError as exc:
        raise TrainingConfigError(f"the model registry is invalid: {exc}") from None
    bases = sorted(n for n, s in reg.items() if s.kind == "causal-lm")
    unknown = [n for n in names if n not in reg]
    if unknown:
        raise TrainingConfigError(
            f"unknown base model(s) {unknown}; registered causal LMs: {', '.join(bases)} (register new base "
            "models in config/models.yaml or a file named in extra_registry)"
        )
    not_lm = [n for n in names if reg[n].kind != "causal-lm"]
    if not_lm:
        raise TrainingConfigError(
            f"model(s) {not_lm} are reward models, not base models; train from one of: {', '.join(bases)}"
        )
