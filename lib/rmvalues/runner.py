"""The stage runner: executes parameterized stage notebooks with papermill, in dependency order, into the book.

The run configuration (``config/run.yaml``) lists stages (one notebook each), their runs (parameter sets; each run
is one book page) and profiles (parameter overrides: ``default``, ``tiny``, ``full``). For every selected run the
runner

1. merges parameters: notebook defaults < run parameters < profile overrides < command-line overrides, plus the
   injected ``output_dir``, ``results_root`` and ``run_name``;
2. validates them **before any work**: unknown names and wrong types against the notebook's ``parameters`` cell
   (``papermill.inspect_notebook``), then the stage's own ``validator`` (unknown model, corpus, ...);
3. skips the run when it is up to date: a key over the notebook, the parameters, the library source, the
   configuration files and the outputs of the runs it depends on equals the key of its last successful run;
4. otherwise executes the notebook with papermill (working directory = project root) into
   ``book/generated/<page>.ipynb``, where the book picks it up, and records the key in ``<output_dir>/run.json``.

A failed run leaves no page in the book and no ``run.json``; its executed notebook is kept under
``_build/failed/`` for debugging, and the runner goes on with runs that do not depend on it, then exits non-zero.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import Any

import yaml

from . import paths
from .manifest import MANIFEST, atomic_write_bytes

#: Parameters the runner injects into every notebook.
INJECTED = ("output_dir", "results_root", "run_name")
#: Configuration files whose content is part of every run's key.
CONFIG_FILES = ("datasets.yaml", "models.yaml", "corpora.yaml", "published_rms.yaml")
RUN_RECORD = "run.json"
GENERATED = Path("book") / "generated"


class ConfigError(ValueError):
    """The run configuration or the requested parameters are invalid (raised before any work starts)."""


@dataclass
class StageSpec:
    name: str
    notebook: Path
    title: str
    depends_on: list[str] = field(default_factory=list)
    validator: str | None = None
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # run name -> {"title", "parameters"}


@dataclass
class RunSpec:
    stage: str
    run: str
    notebook: Path
    title: str
    parameters: dict[str, Any]
    depends_on: list[str]
    validator: str | None

    @property
    def page(self) -> str:
        """Book page (without suffix), relative to the project root."""
        return str(GENERATED / page_name(self.stage, self.run, self.is_only_run))

    is_only_run: bool = True

    @property
    def output_dir(self) -> Path:
        return paths.resolve(self.parameters["output_dir"])

    @property
    def label(self) -> str:
        return f"{self.stage}/{self.run}"


def page_name(stage: str, run: str, only_run: bool) -> str:
    return stage if only_run and run == "default" else f"{stage}--{run}"


@dataclass
class RunConfig:
    stages: dict[str, StageSpec]
    profiles: dict[str, dict[str, Any]]
    path: Path

    def profile(self, name: str) -> dict[str, Any]:
        if name not in self.profiles:
            raise ConfigError(
                f"unknown profile {name!r}; valid profiles: {', '.join(sorted(self.profiles))} (see {self.path})"
            )
        return self.profiles[name] or {}


def config_path() -> Path:
    return paths.config_dir() / "run.yaml"


def load_config(path: str | os.PathLike[str] | None = None) -> RunConfig:
    """Read and check ``config/run.yaml``: notebooks exist, dependencies are known and acyclic."""
    path = Path(path) if path else config_path()
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    stages: dict[str, StageSpec] = {}
    for name, entry in (raw.get("stages") or {}).items():
        unknown = set(entry) - {"notebook", "title", "depends_on", "validator", "runs"}
        if unknown:
            raise ConfigError(f"{path}: stage {name!r} has unknown keys {sorted(unknown)}")
        notebook = paths.resolve(entry["notebook"])
        if not notebook.is_file():
            raise ConfigError(
                f"{path}: stage {name!r} names notebook {entry['notebook']}, which does not exist"
            )
        runs = entry.get("runs") or {"default": {}}
        runs = {r: (v or {}) for r, v in runs.items()}
        for r, v in runs.items():
            bad = set(v) - {"title", "parameters"}
            if bad:
                raise ConfigError(
                    f"{path}: run {name}/{r} has unknown keys {sorted(bad)}; use title, parameters"
                )
        stages[name] = StageSpec(
            name=name,
            notebook=notebook,
            title=entry.get("title", name),
            depends_on=list(entry.get("depends_on") or []),
            validator=entry.get("validator"),
            runs=runs,
        )
    for st in stages.values():
        for dep in st.depends_on:
            if dep not in stages:
                raise ConfigError(
                    f"{path}: stage {st.name!r} depends on unknown stage {dep!r}; stages: {', '.join(stages)}"
                )
    try:
        tuple(TopologicalSorter({s.name: s.depends_on for s in stages.values()}).static_order())
    except CycleError as exc:
        raise ConfigError(f"{path}: stage dependencies form a cycle: {exc.args[1]}") from exc
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
    """Stages in dependency order, ties broken by their order in the config file."""
    position = {name: i for i, name in enumerate(config.stages)}
    sorter = TopologicalSorter({s.name: s.depends_on for s in config.stages.values()})
    sorter.prepare()
    order: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=position.__getitem__)
        order.extend(ready)
        sorter.done(*ready)
    return order


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(paths.project_root()))
    except ValueError:
        return str(path)


def plan(
    config: RunConfig,
    *,
    profile: str = "default",
    stages: list[str] | None = None,
    runs: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    with_dependencies: bool = True,
) -> list[RunSpec]:
    """The runs to execute, in dependency order, with merged (not yet validated) parameters."""
    prof = config.profile(profile)
    wanted = list(stages or config.stages)
    for s in wanted:
        if s not in config.stages:
            raise ConfigError(f"unknown stage {s!r}; valid stages: {', '.join(config.stages)}")
    if overrides and len(wanted) != 1:
        raise ConfigError("parameter overrides (-p) apply to one stage at a time: name exactly one stage")
    selected = set(wanted)
    if with_dependencies:
        stack = list(wanted)
        while stack:
            for dep in config.stages[stack.pop()].depends_on:
                if dep not in selected:
                    selected.add(dep)
                    stack.append(dep)
    results = paths.results_root()
    out: list[RunSpec] = []
    for sname in stage_order(config):
        if sname not in selected:
            continue
        st = config.stages[sname]
        run_names = list(st.runs)
        if runs and sname in wanted:
            for r in runs:
                if r not in st.runs:
                    raise ConfigError(f"unknown run {sname}/{r}; runs of {sname}: {', '.join(st.runs)}")
            run_names = [r for r in run_names if r in runs]
        for rname in run_names:
            params = dict(st.runs[rname].get("parameters") or {})
            prof_stage = prof.get(sname) or {}
            params.update((prof_stage.get("*") or {}).get("parameters") or {})
            params.update((prof_stage.get(rname) or {}).get("parameters") or {})
            if overrides and sname in wanted:
                params.update(overrides)
            for key in INJECTED:
                if key in params:
                    raise ConfigError(f"{key!r} is set by the runner; do not pass it (run {sname}/{rname})")
            params["output_dir"] = _relative(results / sname / rname)
            params["results_root"] = _relative(results)
            params["run_name"] = rname
            title = st.runs[rname].get("title") or st.title
            out.append(
                RunSpec(
                    stage=sname,
                    run=rname,
                    notebook=st.notebook,
                    title=title,
                    parameters=params,
                    depends_on=st.depends_on,
                    validator=st.validator,
                    is_only_run=len(st.runs) == 1,
                )
            )
    return out


# -- validation -----------------------------------------------------------------------------------------------
_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "bool": (bool,),
    "list": (list, tuple),
    "dict": (dict,),
}


def notebook_parameters(notebook: Path) -> dict[str, dict[str, Any]]:
    """The parameters declared in a notebook's ``parameters`` cell (name -> papermill's description)."""
    import papermill

    declared = papermill.inspect_notebook(str(notebook))
    if not declared:
        raise ConfigError(f"{notebook} has no cell tagged 'parameters'; papermill cannot parameterize it")
    return declared


def validate(spec: RunSpec) -> None:
    """Check names and types against the notebook, then the stage's own validator. Raises ConfigError."""
    check_declared(spec)
    check_stage(spec)


def check_declared(spec: RunSpec) -> None:
    """Parameter names and types against the notebook's ``parameters`` cell. Raises ConfigError."""
    declared = notebook_parameters(spec.notebook)
    unknown = [k for k in spec.parameters if k not in declared]
    if unknown:
        raise ConfigError(
            f"run {spec.label}: unknown parameter(s) {', '.join(unknown)}. "
            f"Valid parameters of {_relative(spec.notebook)}: {', '.join(declared)}"
        )
    for key, value in spec.parameters.items():
        tname = _declared_type(declared[key])
        allowed = _TYPES.get(tname)
        if allowed is None or value is None:
            continue
        ok = isinstance(value, allowed) and not (isinstance(value, bool) and tname in ("int", "float"))
        if not ok:
            raise ConfigError(
                f"run {spec.label}: parameter {key}={value!r} has type {type(value).__name__}, but the notebook "
                f"declares {key} = {declared[key].get('default')} ({tname})"
            )


def check_stage(spec: RunSpec) -> None:
    """The stage's own validator (known models, corpora, prompts, ...). Raises ConfigError."""
    declared = notebook_parameters(spec.notebook)
    if spec.validator:
        module, _, func = spec.validator.partition(":")
        try:
            check = getattr(importlib.import_module(module), func)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(
                f"stage {spec.stage}: validator {spec.validator} cannot be imported: {exc}"
            ) from exc
        full = {k: _default_value(v) for k, v in declared.items()}
        full.update(spec.parameters)
        try:
            check(full)
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"run {spec.label}: {exc}") from exc


_UNPARSEABLE = object()


def _declared_type(description: dict[str, Any]) -> str:
    """Type name of a notebook parameter: its annotation if any, else the type of its literal default."""
    tname = description.get("inferred_type_name") or "None"
    if tname != "None":
        return tname.split("[")[0].lower()
    default = _literal(description.get("default"))
    names = {bool: "bool", int: "int", float: "float", str: "str", list: "list", tuple: "list", dict: "dict"}
    return names.get(type(default), "None")  # None default or a non-literal expression: any type


def _literal(text: Any) -> Any:
    import ast

    if not isinstance(text, str):
        return text
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return _UNPARSEABLE


def _default_value(description: dict[str, Any]) -> Any:
    value = _literal(description.get("default"))
    return description.get("default") if value is _UNPARSEABLE else value


# -- up-to-date keys ------------------------------------------------------------------------------------------
def library_digest() -> str:
    """Digest of the library's source files (a code change makes every run stale)."""
    h = hashlib.sha256()
    pkg = Path(__file__).resolve().parent
    for f in sorted(pkg.rglob("*.py")):
        h.update(f.relative_to(pkg).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def run_key(spec: RunSpec, config: RunConfig) -> str:
    h = hashlib.sha256()
    h.update(spec.notebook.read_bytes())
    h.update(json.dumps(spec.parameters, sort_keys=True, default=str).encode())
    h.update(spec.title.encode())
    h.update(library_digest().encode())
    for name in CONFIG_FILES:
        f = paths.config_dir() / name
        if f.is_file():
            h.update(f.read_bytes())
    results = paths.results_root()
    for dep in spec.depends_on:
        for rname in sorted(config.stages[dep].runs):
            record = results / dep / rname / MANIFEST
            h.update(f"{dep}/{rname}".encode())
            h.update(record.read_bytes() if record.is_file() else b"missing")
    return h.hexdigest()


def is_up_to_date(spec: RunSpec, config: RunConfig) -> bool:
    record = spec.output_dir / RUN_RECORD
    page = paths.project_root() / f"{spec.page}.ipynb"
    if not (record.is_file() and page.is_file() and (spec.output_dir / MANIFEST).is_file()):
        return False
    try:
        return json.loads(record.read_text())["key"] == run_key(spec, config)
    except (ValueError, KeyError):
        return False


# -- execution ------------------------------------------------------------------------------------------------
def _retitle(nb_path: Path, suffix: str) -> None:
    """Append a run title to the notebook's H1 (so forked runs get distinct page titles)."""
    import nbformat

    nb = nbformat.read(nb_path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown" and cell.source.lstrip().startswith("# "):
            first, _, rest = cell.source.lstrip().partition("\n")
            cell.source = f"{first} — {suffix}\n{rest}".rstrip("\n")
            break
    nbformat.write(nb, nb_path)


def execute(spec: RunSpec, config: RunConfig, *, force: bool = False, log=print) -> str:
    """Execute one run unless up to date. Returns 'skipped' or 'done'; raises on failure."""
    import papermill

    if not force and is_up_to_date(spec, config):
        log(f"[skip] {spec.label}: up to date ({_relative(spec.output_dir)})")
        return "skipped"
    root = paths.project_root()
    page = root / f"{spec.page}.ipynb"
    page.parent.mkdir(parents=True, exist_ok=True)
    spec.output_dir.mkdir(parents=True, exist_ok=True)
    for stale in (RUN_RECORD, MANIFEST):
        (spec.output_dir / stale).unlink(missing_ok=True)
    # executed outside book/: a run killed mid-way must leave nothing the book build would pick up
    running = root / "_build" / "running"
    running.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=running, prefix=f"{page.stem}.", suffix=".ipynb")
    os.close(fd)
    log(f"[run ] {spec.label}: {_relative(spec.notebook)} -> {_relative(page)}")
    t0 = time.perf_counter()
    kernel_env = {
        paths.ENV_ROOT: str(root),  # kernels inherit it: the library resolves paths from here
        # figures inline in the executed notebook, whatever MPLBACKEND the caller has (Agg would hide them)
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    }
    env_before = {k: os.environ.get(k) for k in kernel_env}
    os.environ.update(kernel_env)
    try:
        papermill.execute_notebook(
            str(spec.notebook),
            tmp,
            parameters=spec.parameters,
            kernel_name="python3",
            cwd=str(root),
            progress_bar=sys.stderr.isatty(),
            log_output=False,
        )
    except Exception:
        failed = root / "_build" / "failed" / f"{page.stem}.ipynb"
        failed.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(tmp, failed)
        page.unlink(missing_ok=True)
        log(f"[FAIL] {spec.label}: executed notebook kept at {_relative(failed)}")
        raise
    finally:
        for key, value in env_before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    if not spec.is_only_run:  # forks of one chapter: distinct page titles
        run_title = config.stages[spec.stage].runs[spec.run].get("title") or spec.run
        _retitle(Path(tmp), run_title)
    os.replace(tmp, page)
    if not (spec.output_dir / MANIFEST).is_file():
        raise RuntimeError(
            f"run {spec.label} finished but wrote no {MANIFEST} in {spec.output_dir}: every stage notebook must "
            "record its outputs with rmvalues.manifest.RunRecord(...).finish()"
        )
    elapsed = round(time.perf_counter() - t0, 1)
    record = {
        "key": run_key(spec, config),
        "page": spec.page,
        "seconds": elapsed,
        "parameters": spec.parameters,
    }
    atomic_write_bytes(spec.output_dir / RUN_RECORD, json.dumps(record, indent=2, default=str).encode())
    log(f"[done] {spec.label}: {elapsed} s")
    return "done"


def validate_plan(specs: list[RunSpec], config: RunConfig, *, log=print) -> dict[str, ConfigError]:
    """Validate every run before any work; return the runs whose check must wait for a dependency.

    A stage validator that fails while a stage this run depends on (and that is part of the plan) has not yet
    produced its outputs, e.g. scoring the RMs that the training stage will register, is deferred: it is checked
    again right before the run. Every other failure raises here, before anything runs.
    """
    for spec in specs:
        check_declared(spec)
    planned = {s.stage for s in specs}
    deferred: dict[str, ConfigError] = {}
    for spec in specs:
        try:
            check_stage(spec)
        except ConfigError as exc:
            pending = [
                d
                for d in spec.depends_on
                if d in planned
                and any(
                    not (paths.results_root() / d / r / MANIFEST).is_file() for r in config.stages[d].runs
                )
            ]
            if not pending:
                raise
            deferred[spec.label] = exc
            log(f"[wait] {spec.label}: parameters checked again after {', '.join(pending)} ({exc})")
    return deferred


def run(
    stages: list[str] | None = None,
    *,
    profile: str = "default",
    runs: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    force: bool = False,
    with_dependencies: bool = True,
    log=print,
) -> dict[str, str]:
    """Validate every selected run, then execute them in order. Returns {label: status}; raises if any failed."""
    config = load_config()
    specs = plan(
        config,
        profile=profile,
        stages=stages,
        runs=runs,
        overrides=overrides,
        with_dependencies=with_dependencies,
    )
    deferred = validate_plan(specs, config, log=log)
    status: dict[str, str] = {}
    for spec in specs:
        blocked = [
            d
            for d in spec.depends_on
            if any(k.startswith(f"{d}/") and v == "failed" for k, v in status.items())
        ]
        if blocked:
            status[spec.label] = "blocked"
            log(f"[skip] {spec.label}: blocked by failed dependency {', '.join(blocked)}")
            continue
        try:
            if spec.label in deferred:
                check_stage(spec)
            status[spec.label] = execute(spec, config, force=force, log=log)
        except Exception as exc:  # report, go on with independent runs, fail at the end
            status[spec.label] = "failed"
            log(f"[FAIL] {spec.label}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    failed = [k for k, v in status.items() if v in ("failed", "blocked")]
    if failed:
        raise RuntimeError(f"{len(failed)} run(s) did not complete: {', '.join(failed)}")
    return status


# -- table of contents ----------------------------------------------------------------------------------------
def toc(config: RunConfig | None = None) -> dict[str, Any]:
    """The book's table of contents: prose pages around one chapter per stage (one page per run)."""
    config = config or load_config()
    chapters = []
    for sname in config.stages:  # reading order = the order of config/run.yaml (runs follow dependencies)
        st = config.stages[sname]
        names = list(st.runs)
        pages = [str(GENERATED / page_name(sname, r, len(names) == 1)) for r in names]
        entry: dict[str, Any] = {"file": pages[0]}
        if len(pages) > 1:
            entry["sections"] = [{"file": p} for p in pages[1:]]
        chapters.append(entry)
    return {
        "format": "jb-book",
        "root": "book/intro",
        "parts": [
            {"caption": "Background", "chapters": [{"file": "book/methods"}]},
            {"caption": "Chapters", "numbered": True, "chapters": chapters},
            {
                "caption": "Reference",
                "chapters": [{"file": "book/reproducibility"}, {"file": "book/references"}],
            },
        ],
    }


TOC_HEADER = "# Generated from config/run.yaml by `python -m rmvalues toc` (the runner keeps it in sync; do not edit).\n"


def toc_text(config: RunConfig | None = None) -> str:
    return TOC_HEADER + yaml.safe_dump(toc(config), sort_keys=False)


def write_toc(config: RunConfig | None = None) -> Path:
    path = paths.project_root() / "_toc.yml"
    text = toc_text(config)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        atomic_write_bytes(path, text.encode("utf-8"))
    return path
