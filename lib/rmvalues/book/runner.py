"""The stage runner: executes parameterized stage notebooks with papermill, in dependency order, into the book.

The run configuration (``config/run.yaml``, :mod:`rmvalues.book.config`) lists stages (a notebook and the
stage package whose parameter schema and ``run`` it calls), their runs (parameter sets; each run is one book
page) and profiles (parameter overrides). For every selected run the runner

1. merges parameters: schema defaults < run parameters < profile overrides < command-line overrides, plus the
   injected ``output_dir``, ``results_root`` and ``run_name``;
2. parses them with the stage's schema (:class:`rmvalues.core.params.StageParams`) and asks it what the run
   reads from upstream runs (:meth:`~rmvalues.core.params.StageParams.reads`); those runs are planned first
   (when configured) and the runs are ordered by these hand-offs;
3. validates every run **before any work**: the schema's own checks, and every read that no planned run
   produces must already exist and match its manifest. A check that fails only because a planned upstream run
   has not produced its output yet (scoring the RMs that the training run will register) is repeated right
   before the run;
4. skips a run when it is up to date: a key over the notebook, the parameters, the library source, the
   configuration files and the manifests of the runs it reads equals the key of its last successful run;
5. otherwise executes the notebook with papermill (working directory = project root) into
   ``book/generated/<page>.ipynb``, where the book picks it up, and records the key in ``<output_dir>/run.json``.

A failed run leaves no page in the book and no ``run.json``; its executed notebook is kept under
``_build/failed/`` for debugging, and the runner goes on with runs that do not depend on it, then exits non-zero.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core import paths
from ..core.errors import ConfigError, MissingInputError, RmvaluesError
from ..core.files import atomic_write_bytes
from ..core.handoff import MANIFEST, verify
from ..core.params import INJECTED
from .config import GENERATED, RunConfig, RunSpec, load_config, relative, stage_order

#: Configuration files whose content is part of every run's key.
CONFIG_FILES = ("datasets.yaml", "models.yaml", "corpora.yaml", "published_rms.yaml", "training.yaml")
RUN_RECORD = "run.json"

Log = Callable[[str], Any]

__all__ = [
    "CONFIG_FILES",
    "GENERATED",
    "RUN_RECORD",
    "execute",
    "is_up_to_date",
    "library_digest",
    "plan",
    "run",
    "run_key",
    "validate_plan",
]


# -- planning -------------------------------------------------------------------------------------------------
def _merged_parameters(
    config: RunConfig, profile: dict[str, Any], stage: str, run_name: str, overrides: dict[str, Any] | None
) -> dict[str, Any]:
    st = config.stages[stage]
    params = dict(st.runs[run_name].get("parameters") or {})
    prof_stage = profile.get(stage) or {}
    params.update((prof_stage.get("*") or {}).get("parameters") or {})
    params.update((prof_stage.get(run_name) or {}).get("parameters") or {})
    params.update(overrides or {})
    for key in INJECTED:
        if key in params:
            raise ConfigError(f"{key!r} is set by the runner; do not pass it (run {stage}/{run_name})")
    results = paths.results_root()
    params["output_dir"] = relative(results / stage / run_name)
    params["results_root"] = relative(results)
    params["run_name"] = run_name
    return params


def _spec(config: RunConfig, profile: dict[str, Any], stage: str, run_name: str, overrides: Any) -> RunSpec:
    st = config.stages[stage]
    parameters = _merged_parameters(config, profile, stage, run_name, overrides)
    schema = st.schema()
    params = schema.parse(parameters)  # field-level problems: ParameterError (a ConfigError), before any work
    return RunSpec(
        stage=stage,
        run=run_name,
        notebook=st.notebook,
        title=st.runs[run_name].get("title") or st.title,
        parameters=parameters,
        params=params,
        is_only_run=len(st.runs) == 1,
    )


def plan(
    config: RunConfig,
    *,
    profile: str = "default",
    stages: list[str] | None = None,
    runs: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    with_dependencies: bool = True,
) -> list[RunSpec]:
    """The runs to execute, ordered by their hand-offs, with parsed parameters (stage checks not yet run).

    A run's dependencies are the runs its parameters say it reads (``reads()``); with ``with_dependencies``
    the configured ones among them are planned too (recursively).
    """
    prof = config.profile(profile)
    wanted = list(stages or config.stages)
    for s in wanted:
        if s not in config.stages:
            raise ConfigError(f"unknown stage {s!r}; valid stages: {', '.join(config.stages)}")
    if overrides and len(wanted) != 1:
        raise ConfigError("parameter overrides (-p) apply to one stage at a time: name exactly one stage")
    selected: dict[tuple[str, str], RunSpec] = {}
    queue: list[tuple[str, str]] = []
    for sname in wanted:
        st = config.stages[sname]
        names = list(st.runs)
        if runs:
            unknown = [r for r in runs if r not in st.runs]
            if unknown:
                raise ConfigError(f"unknown run {sname}/{unknown[0]}; runs of {sname}: {', '.join(st.runs)}")
            names = [r for r in names if r in runs]
        for rname in names:
            selected[(sname, rname)] = _spec(config, prof, sname, rname, overrides if stages else None)
            queue.append((sname, rname))
    while queue and with_dependencies:
        key = queue.pop()
        for inp in selected[key].reads:
            dep = (inp.stage, inp.run)
            if dep in selected or not config.has_run(*dep):
                continue
            selected[dep] = _spec(config, prof, inp.stage, inp.run, None)
            queue.append(dep)
    return _ordered(config, selected)


def _ordered(config: RunConfig, selected: dict[tuple[str, str], RunSpec]) -> list[RunSpec]:
    """Topological order of the planned runs by their reads; ties in config order (stage, then run)."""
    from graphlib import CycleError, TopologicalSorter

    position = {}
    for i, sname in enumerate(stage_order(config)):
        for j, rname in enumerate(config.stages[sname].runs):
            position[(sname, rname)] = (i, j)
    graph = {
        key: [(r.stage, r.run) for r in spec.reads if (r.stage, r.run) in selected]
        for key, spec in selected.items()
    }
    sorter = TopologicalSorter(graph)
    try:
        sorter.prepare()
    except CycleError as exc:
        raise ConfigError(f"the runs' declared inputs form a cycle: {exc.args[1]}") from exc
    order: list[RunSpec] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=lambda k: position.get(k, (99, 99)))
        order.extend(selected[k] for k in ready)
        sorter.done(*ready)
    return order


# -- validation -----------------------------------------------------------------------------------------------
def _produced_by_plan(spec: RunSpec, planned: set[tuple[str, str]]) -> list[str]:
    """Reads of ``spec`` that a planned run produces and that do not exist yet."""
    out = []
    for inp in spec.reads:
        if (inp.stage, inp.run) in planned and not (inp.folder() / MANIFEST).is_file():
            out.append(inp.label)
    return out


def check_run(spec: RunSpec) -> None:
    """The stage's own checks of one run (raises :class:`ConfigError` listing every problem)."""
    from ..core.errors import ParameterError

    problems = spec.params.check()
    if problems:
        raise ParameterError(f"{spec.stage} (run {spec.label})", problems)


def validate_plan(specs: list[RunSpec], config: RunConfig, *, log: Log = print) -> dict[str, ConfigError]:
    """Validate every run before any work; return the runs whose check must wait for a planned dependency.

    Reads that no planned run produces must exist and match their manifests (else one
    :class:`MissingInputError` naming the run to execute first).
    """
    planned = {(s.stage, s.run) for s in specs}
    deferred: dict[str, ConfigError] = {}
    for spec in specs:
        for inp in spec.reads:
            if (inp.stage, inp.run) not in planned:
                verify(inp, spec.params.results_root)
        try:
            check_run(spec)
        except ConfigError as exc:
            pending = _produced_by_plan(spec, planned)
            if not pending:
                raise
            deferred[spec.label] = exc
            log(f"[wait] {spec.label}: parameters checked again after {', '.join(pending)}")
    return deferred


# -- up-to-date keys ------------------------------------------------------------------------------------------
def library_digest() -> str:
    """Digest of the library's source files (a code change makes every run stale)."""
    h = hashlib.sha256()
    pkg = Path(__file__).resolve().parents[1]
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
    for inp in sorted(spec.reads, key=lambda r: r.label):
        record = inp.folder(spec.params.results_root) / MANIFEST
        h.update(inp.label.encode())
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


def _kernel_env(root: Path) -> dict[str, str]:
    return {
        paths.ENV_ROOT: str(root),  # kernels inherit it: the library resolves paths from here
        # figures inline in the executed notebook, whatever MPLBACKEND the caller has (Agg would hide them)
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    }


def _papermill(spec: RunSpec, out: str, root: Path) -> None:
    import papermill

    kernel_env = _kernel_env(root)
    env_before = {k: os.environ.get(k) for k in kernel_env}
    os.environ.update(kernel_env)
    try:
        papermill.execute_notebook(
            str(spec.notebook),
            out,
            parameters=spec.parameters,
            kernel_name="python3",
            cwd=str(root),
            progress_bar=sys.stderr.isatty(),
            log_output=False,
        )
    finally:
        for key, value in env_before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def execute(spec: RunSpec, config: RunConfig, *, force: bool = False, log: Log = print) -> str:
    """Execute one run unless up to date. Returns 'skipped' or 'done'; raises on failure."""
    if not force and is_up_to_date(spec, config):
        log(f"[skip] {spec.label}: up to date ({relative(spec.output_dir)})")
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
    log(f"[run ] {spec.label}: {relative(spec.notebook)} -> {relative(page)}")
    t0 = time.perf_counter()
    try:
        _papermill(spec, tmp, root)
    except Exception:
        failed = root / "_build" / "failed" / f"{page.stem}.ipynb"
        failed.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(tmp, failed)
        page.unlink(missing_ok=True)
        log(f"[FAIL] {spec.label}: executed notebook kept at {relative(failed)}")
        raise
    if not spec.is_only_run:  # forks of one chapter: distinct page titles
        run_title = config.stages[spec.stage].runs[spec.run].get("title") or spec.run
        _retitle(Path(tmp), run_title)
    os.replace(tmp, page)
    if not (spec.output_dir / MANIFEST).is_file():
        raise RuntimeError(
            f"run {spec.label} finished but wrote no {MANIFEST} in {spec.output_dir}: every stage's run() must "
            "record its outputs with rmvalues.core.manifest.RunRecord(...).finish()"
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


def run(
    stages: list[str] | None = None,
    *,
    profile: str = "default",
    runs: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    force: bool = False,
    with_dependencies: bool = True,
    log: Log = print,
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
        blocked = [r.label for r in spec.reads if status.get(r.label) in ("failed", "blocked")]
        if blocked:
            status[spec.label] = "blocked"
            log(f"[skip] {spec.label}: blocked by failed dependency {', '.join(blocked)}")
            continue
        try:
            if spec.label in deferred:
                check_run(spec)
            status[spec.label] = execute(spec, config, force=force, log=log)
        except (Exception, MissingInputError, RmvaluesError) as exc:  # report, go on, fail at the end
            status[spec.label] = "failed"
            log(f"[FAIL] {spec.label}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    failed = [k for k, v in status.items() if v in ("failed", "blocked")]
    if failed:
        raise RuntimeError(f"{len(failed)} run(s) did not complete: {', '.join(failed)}")
    return status
