"""The run configuration (``config/run.yaml``): stages, their runs and profiles; and the named runs.

Each stage names its notebook and the stage package (``rmvalues.stages.<x>``) that holds its parameter schema
(``Params``, a :class:`~rmvalues.core.params.StageParams`) and its ``run``. Each run of a stage is one book
page with its own parameters; profiles override parameters per stage and run (``"*"`` = every run).

**Named runs** are runs created from the command line (``make chapter NAME=<stage> RUN=<name> PARAMS=...``):
they are saved in ``<results root>/named_runs.yaml`` (local state, like the results themselves), become book
pages like configured runs, and are written into ``config/run.yaml`` by ``python -m rmvalues promote``.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..core import paths
from ..core.errors import ConfigError
from ..core.files import atomic_write_text
from ..core.handoff import StageInput
from ..core.params import StageParams
from ..core.paths import GENERATED, page_name

NAMED_RUNS = "named_runs.yaml"
STAGE_KEYS = {"notebook", "package", "title", "runs", "part"}
#: Where a stage's pages stand in the book: ``overview`` (right after the introduction, unnumbered),
#: ``chapters`` (the numbered chapters, the default) or ``audits`` (the Audits part after the chapters).
PARTS = ("overview", "chapters", "audits")
RUN_KEYS = {"title", "parameters"}


@dataclass
class StageSpec:
    name: str
    notebook: Path
    package: str
    title: str
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # run name -> {"title", "parameters"}
    named: set[str] = field(default_factory=set)  # runs that come from named_runs.yaml
    part: str = "chapters"  # where its pages stand in the book (see PARTS)

    def module(self) -> Any:
        try:
            return importlib.import_module(self.package)
        except ImportError as exc:
            raise ConfigError(f"stage {self.name}: package {self.package} cannot be imported: {exc}") from exc

    def schema(self) -> type[StageParams]:
        """The stage's parameter schema (``Params`` of its package)."""
        schema = getattr(self.module(), "Params", None)
        if not (isinstance(schema, type) and issubclass(schema, StageParams)):
            raise ConfigError(f"stage {self.name}: {self.package} defines no Params (a StageParams subclass)")
        if self.name != schema.STAGE:
            raise ConfigError(
                f"stage {self.name}: {self.package}.Params belongs to stage {schema.STAGE!r}; a stage's name in "
                "config/run.yaml must be its schema's STAGE (it names the results folder)"
            )
        return schema


@dataclass
class RunSpec:
    """One planned run: its merged parameters, parsed by the stage's schema."""

    stage: str
    run: str
    notebook: Path
    title: str
    parameters: dict[str, Any]
    params: StageParams
    is_only_run: bool = True
    explicit: set[str] = field(default_factory=set)  # parameters given by the config, profile or command line

    @property
    def reads(self) -> list[StageInput]:
        return self.params.reads()

    @property
    def page(self) -> str:
        """Book page (without suffix), relative to the project root."""
        return str(GENERATED / page_name(self.stage, self.run))

    @property
    def output_dir(self) -> Path:
        return paths.resolve(self.parameters["output_dir"])

    @property
    def label(self) -> str:
        return f"{self.stage}/{self.run}"


@dataclass
class RunConfig:
    stages: dict[str, StageSpec]
    profiles: dict[str, dict[str, Any]]
    path: Path
    changed_named: set[tuple[str, str]] = field(default_factory=set)  # named runs to save

    def profile(self, name: str) -> dict[str, Any]:
        if name not in self.profiles:
            raise ConfigError(
                f"unknown profile {name!r}; valid profiles: {', '.join(sorted(self.profiles))} (see {self.path})"
            )
        return self.profiles[name] or {}

    def has_run(self, stage: str, run: str) -> bool:
        return stage in self.stages and run in self.stages[stage].runs


def config_path() -> Path:
    return paths.config_dir() / "run.yaml"


def relative(path: Path) -> str:
    """``path`` relative to the project root when it lies inside it, else absolute."""
    try:
        return str(Path(path).relative_to(paths.project_root()))
    except ValueError:
        return str(path)


def _stage(name: str, entry: Any, path: Path) -> StageSpec:
    if not isinstance(entry, dict):
        raise ConfigError(f"{path}: stage {name!r} must be a mapping ({', '.join(sorted(STAGE_KEYS))})")
    unknown = set(entry) - STAGE_KEYS
    if unknown:
        raise ConfigError(
            f"{path}: stage {name!r} has unknown keys {sorted(unknown)}; valid: {', '.join(sorted(STAGE_KEYS))}"
        )
    if not entry.get("notebook") or not entry.get("package"):
        raise ConfigError(f"{path}: stage {name!r} needs a notebook and a package (rmvalues.stages.<x>)")
    notebook = paths.resolve(entry["notebook"])
    if not notebook.is_file():
        raise ConfigError(f"{path}: stage {name!r} names notebook {entry['notebook']}, which does not exist")
    runs = entry.get("runs") or {"default": {}}
    runs = {str(r): (v or {}) for r, v in runs.items()}
    for r, v in runs.items():
        bad = set(v) - RUN_KEYS
        if bad:
            raise ConfigError(f"{path}: run {name}/{r} has unknown keys {sorted(bad)}; use title, parameters")
    part = entry.get("part", "chapters")
    if part not in PARTS:
        raise ConfigError(f"{path}: stage {name!r} has part {part!r}; valid: {', '.join(PARTS)}")
    return StageSpec(
        name=name,
        notebook=notebook,
        package=str(entry["package"]),
        title=entry.get("title", name),
        runs=runs,
        part=part,
    )


def named_runs_path() -> Path:
    return paths.results_root() / NAMED_RUNS


def read_named_runs() -> dict[str, dict[str, dict[str, Any]]]:
    """``{stage: {run: {"title", "parameters"}}}`` of the named runs (empty when there are none)."""
    path = named_runs_path()
    if not path.is_file():
        return {}
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return {str(s): {str(r): dict(v or {}) for r, v in (runs or {}).items()} for s, runs in raw.items()}


def write_named_runs(runs: dict[str, dict[str, dict[str, Any]]]) -> Path:
    path = named_runs_path()
    header = (
        "# Named runs created from the command line (promote one into config/run.yaml: rmvalues promote)\n"
    )
    clean = {s: r for s, r in runs.items() if r}
    atomic_write_text(path, header + yaml.safe_dump(clean, sort_keys=False))
    return path


def load_config(path: str | os.PathLike[str] | None = None, named: bool = True) -> RunConfig:
    """Read and check ``config/run.yaml`` (plus the named runs, unless ``named=False``): notebooks and packages
    exist, profiles name known stages and runs, named runs do not shadow configured ones."""
    path = Path(path) if path else config_path()
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    stages = {str(n): _stage(str(n), e, path) for n, e in (raw.get("stages") or {}).items()}
    for sname, runs in (read_named_runs() if named else {}).items():
        if sname not in stages:
            continue  # a stage removed from the configuration: its named runs are ignored
        for rname, entry in runs.items():
            if rname in stages[sname].runs:
                raise ConfigError(
                    f"{named_runs_path()}: named run {sname}/{rname} shadows a run of {path}; rename or delete it"
                )
            stages[sname].runs[rname] = {
                "title": entry.get("title"),
                "parameters": entry.get("parameters") or {},
            }
            stages[sname].named.add(rname)
    profiles = raw.get("profiles") or {}
    profiles.setdefault("default", {})
    for pname, prof in profiles.items():
        for sname, runs in (prof or {}).items():
            if sname not in stages:
                raise ConfigError(f"{path}: profile {pname!r} overrides unknown stage {sname!r}")
            for rname in runs or {}:
                if rname != "*" and rname not in stages[sname].runs:
                    raise ConfigError(
                        f"{path}: profile {pname!r} overrides unknown run {sname}/{rname}; "
                        f"runs: {', '.join(stages[sname].runs)} (or '*' for all)"
                    )
    return RunConfig(stages=stages, profiles=profiles, path=path)


def stage_order(config: RunConfig) -> list[str]:
    """Stages in the order of the configuration file (the book's reading order)."""
    return list(config.stages)
