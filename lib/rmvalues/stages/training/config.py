"""The training configuration (``config/training.yaml``): preference sources, training settings, named grids.

A grid trains one reward model per (base model x source x quantity x seed) cell, all with the same settings
(:class:`TrainSettings`; defaults = the paper's LoRA recipe). :func:`grid_spec` resolves a named grid with the
chapter's overrides and validates it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import numpy as np
import yaml
from pydantic import (
    AllowInfNan,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    create_model,
    model_serializer,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic.types import Strict

from ...core import paths
from ...core.errors import RmvaluesError
from ...core.params import describe_errors
from ...data import preferences
from ...data.preferences import TRUNCATIONS, PreferenceSource
from ...models.registry import RegistryError, registry

#: The choices of the settings of that name (:class:`TrainSettings`; ``truncation``: :data:`TRUNCATIONS`).
METHODS = ("head", "lora", "full")
PRECISIONS = ("auto", "float32", "bfloat16")
FEATURE_SCALINGS = ("none", "standardize")
#: Learning-rate schedules of ``transformers`` that need no arguments besides the warmup.
LR_SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
)
#: The grid's axes: one trained RM per combination; the chapter's parameters of the same names replace them.
AXES = ("models", "sources", "quantities", "seeds")


def _is_int(x: Any) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


class TrainingConfigError(RmvaluesError, ValueError):
    """The training configuration or the chapter's parameters are invalid (the message says how to fix it)."""


#: A number as written: an int stays an int, a float a float (the settings are hashed into cell and cache keys,
#: so ``epochs: 2`` must not become ``2.0``); a bool or a string is refused, and so are nan and infinity.
Number = StrictInt | Annotated[float, Strict(), AllowInfNan(False)]
PositiveInt = Annotated[int, Strict(), Field(ge=1)]
NonNegativeInt = Annotated[int, Strict(), Field(ge=0)]


def _setting(default: Any, description: str, **constraints: Any) -> Any:
    return Field(default, description=description, **constraints)


def _list(default: tuple[Any, ...], description: str) -> Any:
    """A list setting (a tuple inside; a YAML or Python list is accepted, its items checked strictly)."""
    return Field(default, description=description, strict=False)


class TrainSettings(BaseModel):
    """How one RM is trained (``settings`` in ``config/training.yaml``, merged over by a grid's and the chapter's
    ``settings``; defaults = the paper's LoRA recipe). The one schema of the settings: types, choices and bounds
    per field, the rules between fields in :meth:`_rules`. :meth:`as_dict` is what cell and cache keys hash."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    method: Literal[METHODS] = _setting(
        "lora", "what is trained: head (frozen base, the linear score head only) | lora | full (every weight)"
    )
    learning_rate: Number = _setting(1e-5, "learning rate of AdamW (> 0)", gt=0)
    lr_scheduler_type: Literal[LR_SCHEDULERS] = _setting("cosine", "learning-rate schedule (transformers')")
    warmup_ratio: Number = _setting(0.03, "share of the steps spent warming up, in [0, 1)", ge=0, lt=1)
    batch_size: PositiveInt = _setting(16, "effective batch: pairs per optimizer step")
    per_device_batch_size: PositiveInt = _setting(
        4, "micro-batch; gradient accumulation = batch_size / per_device_batch_size"
    )
    epochs: Number = _setting(2.0, "passes over the training pairs (> 0)", gt=0)
    max_length: Annotated[int, Strict(), Field(ge=8)] | None = _setting(
        1024, "token limit for chosen and rejected (>= 8; null: no limit)"
    )
    truncation: Literal[TRUNCATIONS] = _setting(
        "drop", "drop: longer pairs are not eligible | left: sequences are left-truncated to max_length"
    )
    eval_pairs: NonNegativeInt = _setting(500, "held-out pairs (never trained on)")
    train_pool: PositiveInt | None = _setting(
        None, "training pairs the seeds draw their subsets from (null: the largest quantity)"
    )
    checkpoint_every: PositiveInt = _setting(1000, "steps between checkpoints")
    data_seed: NonNegativeInt = _setting(
        0, "order in which pairs are visited (which are held out and in the pool)"
    )
    weight_decay: Number = _setting(0.0, "AdamW weight decay (>= 0)", ge=0)
    lora_r: PositiveInt = _setting(32, "LoRA rank (method lora)")
    lora_alpha: PositiveInt = _setting(64, "LoRA alpha (method lora)")
    lora_dropout: Number = _setting(0.05, "LoRA dropout, in [0, 1) (method lora)", ge=0, lt=1)
    lora_target_modules: tuple[StrictStr, ...] = _list(
        ("q_proj", "k_proj", "v_proj", "o_proj"), "modules LoRA adapts (method lora)"
    )
    feature_cache: StrictBool = _setting(
        True, "head only: train the head on the frozen base's cached last-token hidden states"
    )
    feature_batch_size: PositiveInt = _setting(16, "sequences per forward pass when computing features")
    feature_scaling: Literal[FEATURE_SCALINGS] = _setting(
        "none", "head only with feature_cache: none | standardize (features standardized per cell)"
    )
    precision: Literal[PRECISIONS] = _setting(
        "auto", "auto (bf16 on a GPU for lora/full, float32 otherwise) | float32 | bfloat16"
    )
    gradient_checkpointing: StrictBool | None = _setting(
        None, "activation checkpointing (null: on a GPU for lora/full, never on CPU)"
    )
    head_l2: Number = _setting(0.0, "head only: L2 penalty lambda/2 |w|^2 on the head (>= 0)", ge=0)
    depths: tuple[PositiveInt, ...] = _list(
        (),
        "head only, feature_cache: distinct numbers k >= 1 of top blocks adapted with the head ([]: no arm)",
    )
    depth_quantities: tuple[PositiveInt, ...] = _list(
        (), "quantities of the depth arm, among the grid's ([]: the largest)"
    )
    depth_seeds: tuple[NonNegativeInt, ...] = _list(
        (), "seeds of the depth arm, among the grid's ([]: every seed)"
    )
    depth_learning_rate: Number = _setting(5e-5, "the depth arm's AdamW learning rate (> 0)", gt=0)
    depth_epochs: Number = _setting(1.0, "the depth arm's passes over the training pairs (> 0)", gt=0)
    depth_batch_size: PositiveInt = _setting(16, "the depth arm's pairs per optimizer step")

    @model_validator(mode="after")
    def _rules(self) -> Self:
        """The rules between settings, all problems in one message."""
        problems = []
        if self.truncation == "left" and self.max_length is None:
            problems.append(
                "truncation left needs a max_length (the token budget sequences are cut to): give max_length "
                "(e.g. 64) or truncation drop"
            )
        if self.batch_size % self.per_device_batch_size:
            problems.append(
                f"batch_size ({self.batch_size}) must be a positive multiple of per_device_batch_size "
                f"({self.per_device_batch_size}): gradient accumulation = batch_size / per_device_batch_size"
            )
        head_cached = self.method == "head" and self.feature_cache
        if self.feature_scaling != "none" and not head_cached:
            problems.append(
                f"feature_scaling standardize needs method head with feature_cache true (here method "
                f"{self.method}, feature_cache {str(self.feature_cache).lower()}); or set feature_scaling none"
            )
        if len(set(self.depths)) != len(self.depths):
            problems.append(f"depths must be distinct (blocks adapted), got {list(self.depths)}")
        elif self.depths and not head_cached:
            problems.append(
                f"depths (the depth-of-adaptation arm) need method head with feature_cache true (here method "
                f"{self.method}, feature_cache {str(self.feature_cache).lower()}); or set depths []"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def grad_accumulation(self) -> int:
        return self.batch_size // self.per_device_batch_size

    def as_dict(self) -> dict[str, Any]:
        """Every setting as plain data (lists for the list settings), values as written: what keys hash."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.model_dump().items()}

    def probe_dict(self) -> dict[str, Any]:
        """The settings a probe (k = 0) depends on: all but the depth arm's."""
        return {k: v for k, v in self.as_dict().items() if not k.startswith("depth")}


class _Overrides(BaseModel):
    """Settings given over a grid's: only the ones set count (:meth:`as_dict`); see :data:`SettingsOverride`."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    def as_dict(self) -> dict[str, Any]:
        """The settings set, as plain data (lists for the list settings)."""
        return self.model_dump()

    @model_serializer(mode="wrap")
    def _set_only(self, handler: Any) -> Any:
        """Dumped (in a parameter set's record, its manifest) as the settings set only."""
        return {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in handler(self).items()
            if k in self.model_fields_set
        }

    def __bool__(self) -> bool:
        return bool(self.model_fields_set)


def _optional(field: FieldInfo) -> tuple[Any, Any]:
    """A field of :class:`TrainSettings` as an override: the same type, choices and bounds, not required."""
    annotation = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
    return annotation, Field(None, description=field.description)


#: The chapter's ``settings`` parameter: every field of :class:`TrainSettings`, each optional (unset: the
#: grid's), checked like the setting itself when the parameters are validated.
SettingsOverride = create_model(
    "SettingsOverride",
    __base__=_Overrides,
    __module__=__name__,
    **{name: _optional(f) for name, f in TrainSettings.model_fields.items()},
)


def settings_problems(exc: ValidationError) -> list[str]:
    """The problems of a :class:`TrainSettings` validation, one per setting (the rules between settings as
    one), each naming the setting, the value given, what is wrong and the setting's meaning."""
    return describe_errors(
        TrainSettings,
        exc.errors(),
        lambda name: f"unknown setting {name!r}; valid settings: {', '.join(TrainSettings.model_fields)}",
    )


def make_settings(values: Mapping[str, Any], where: str = "settings") -> TrainSettings:
    """:class:`TrainSettings` from a mapping of settings, validated; :class:`TrainingConfigError` (naming
    ``where``) if they are not valid."""
    try:
        return TrainSettings.model_validate(dict(values))
    except ValidationError as exc:
        raise TrainingConfigError(f"{where}: " + "; ".join(settings_problems(exc))) from None


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

    def axes(self) -> dict[str, list[Any]]:
        """The grid's axes (``models``, ``sources``, ``quantities``, ``seeds``) as lists."""
        return {key: list(getattr(self, key)) for key in AXES}

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


_GRID_KEYS = ("description", *AXES, "settings")


def grid_spec(
    name: str,
    overrides: Mapping[str, Any] | None = None,
    config: TrainingConfig | None = None,
) -> GridSpec:
    """The grid ``name`` of the configuration with ``overrides`` applied, validated: non-empty axes (``models``,
    ``sources``, ``quantities``, ``seeds``) replace the grid's, and ``settings`` (a mapping or a
    :data:`SettingsOverride`) are merged over them: the configuration's settings < the grid's < the override's.
    The spec is the one holder of the axes from here on."""
    cfg = config or load_config()
    if name not in cfg.grids:
        raise TrainingConfigError(f"unknown grid {name!r}; grids in {cfg.path}: {', '.join(cfg.grids)}")
    raw = dict(cfg.grids[name])
    where = f"{cfg.path}: grid {name!r}"
    unknown = sorted(set(raw) - set(_GRID_KEYS))
    if unknown:
        raise TrainingConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {', '.join(_GRID_KEYS)}")
    ov = dict(overrides or {})
    given = ov.get("settings") or {}
    if isinstance(given, _Overrides):
        given = given.as_dict()
    if given or any(ov.get(key) for key in AXES):
        where = f"grid {name!r} with overrides"
    axes = {key: tuple(ov.get(key) or raw.get(key) or ()) for key in AXES}
    spec = GridSpec(
        name=name,
        **axes,
        settings=make_settings(
            {**cfg.settings, **(raw.get("settings") or {}), **given}, f"{where}: settings"
        ),
        description=str(raw.get("description") or ""),
    )
    _check_grid(spec, cfg, where)
    return spec


def _check_grid(spec: GridSpec, cfg: TrainingConfig, where: str) -> None:
    problems: list[str] = []
    for key, values in spec.axes().items():
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
