"""The stage runner: plans runs from the configuration, validates them all before any work, executes them.

The run configuration (``config/run.yaml``, :mod:`rmvalues.book.config`) lists stages (a notebook and the
stage package whose parameter schema and ``run`` it calls), their runs (parameter sets; each run is one book
page) and profiles (parameter overrides); named runs created from the command line join them. For every
selected run the runner

1. merges parameters: schema defaults < run parameters < profile overrides < command-line overrides, plus the
   injected ``output_dir``, ``results_root`` and ``run_name``; command-line overrides apply to the default run
   of the named stage, or to the run named with ``--run`` (a run that does not exist yet becomes a *named
   run* with these parameters, saved for later runs and the book; a named run's parameters override the
   profile whenever it is planned);
2. parses them with the stage's schema (:class:`rmvalues.core.params.StageParams`) and asks it what the run
   reads from upstream runs (:meth:`~rmvalues.core.params.StageParams.reads`). An upstream run that the user
   did not choose explicitly and that does not hold what the run needs (e.g. a corpora run without the
   requested corpus) is replaced by one that does, created as a named run when none exists: a run is never
   silently re-run with other parameters. A new or changed named run is saved once it has run (a failed one
   is not, so the next full run does not repeat the failure; its last good version, if any, stays). The
   upstream runs are planned first (when configured or named);
3. validates every run **before any work**: the schema's own checks, and every read that no planned run
   produces must already exist and match its manifest; a run is checked against what its planned upstream
   runs promise (:meth:`~rmvalues.core.params.StageParams.promises`, e.g. the families a scoring run will
   score). A check that fails only because a planned upstream run has not produced its output yet is
   repeated right before the run;
4. executes each run unless it is up to date (:mod:`rmvalues.book.execution`: keys, integrity, failures that
   keep the last good outputs and page, errors that surface), holding the run's lock
   (:func:`~rmvalues.book.execution.run_lock`) from its up-to-date check to its saved named-run entry: a
   second invocation of the same run waits for the first; other runs go on at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from ..core import paths
from ..core.errors import ConfigError, ParameterError
from ..core.handoff import MANIFEST, StageInput, verify
from ..core.manifest import changed_artefacts
from ..core.params import INJECTED, run_name_problem
from .config import RunConfig, RunSpec, load_config, read_named_runs, relative, stage_order, write_named_runs
from .execution import (
    RUN_RECORD,
    RunFailed,
    RunInterrupted,
    execute,
    hold_lock,
    library_digest,
    run_key,
    run_lock,
)
from .execution import is_up_to_date as outputs_up_to_date

Log = Callable[[str], Any]

__all__ = [
    "RUN_RECORD",
    "RunFailed",
    "RunInterrupted",
    "artefacts_changed",
    "check_run",
    "execute",
    "is_up_to_date",
    "library_digest",
    "named_runs_lock",
    "plan",
    "run",
    "run_key",
    "save_named_runs",
    "validate_plan",
]


# -- staleness: the execution layer's key and outputs, plus the artefact folders (trained models) --------------
def artefacts_changed(spec: RunSpec, log: Log = print) -> bool:
    """Whether a file of a folder the run's manifest lists among its artefacts (a trained model's weights,
    config or tokenizer) is missing, changed or not recorded: the run is stale (and it is said)."""
    bad = changed_artefacts(spec.output_dir)
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        log(f"[redo] {spec.label}: {shown} changed after the run (checksum mismatch); re-executing")
    return bool(bad)


def is_up_to_date(spec: RunSpec, config: RunConfig, log: Log = print) -> bool:
    """Up to date (:func:`rmvalues.book.execution.is_up_to_date`: key and outputs) with every artefact file
    unchanged (:func:`artefacts_changed`)."""
    return outputs_up_to_date(spec, config, log) and not artefacts_changed(spec, log)


# -- planning -------------------------------------------------------------------------------------------------
def _merged_parameters(
    config: RunConfig, profile: dict[str, Any], stage: str, run_name: str, overrides: dict[str, Any] | None
) -> tuple[dict[str, Any], set[str]]:
    """The run's merged parameters (with the injected ones) and the names given explicitly. A named run's own
    parameters came from a command line (or from what a downstream run needs of it), so they override the
    profile as the command line does, however often the run is planned again."""
    st = config.stages[stage]
    own = dict(st.runs[run_name].get("parameters") or {})
    params = {} if run_name in st.named else dict(own)
    prof_stage = profile.get(stage) or {}
    params.update((prof_stage.get("*") or {}).get("parameters") or {})
    params.update((prof_stage.get(run_name) or {}).get("parameters") or {})
    if run_name in st.named:
        params.update(own)
    params.update(overrides or {})
    for key in INJECTED:
        if key in params:
            raise ConfigError(f"{key!r} is set by the runner; do not pass it (run {stage}/{run_name})")
    explicit = set(params)
    results = paths.results_root()
    params["output_dir"] = relative(results / stage / run_name)
    params["results_root"] = relative(results)
    params["run_name"] = run_name
    return params, explicit


def _spec(
    config: RunConfig, profile: dict[str, Any], stage: str, run_name: str, overrides: dict[str, Any] | None
) -> RunSpec:
    st = config.stages[stage]
    parameters, explicit = _merged_parameters(config, profile, stage, run_name, overrides)
    params = st.schema().parse(parameters)  # field-level problems: ParameterError (a ConfigError)
    return RunSpec(
        stage=stage,
        run=run_name,
        notebook=st.notebook,
        title=st.runs[run_name].get("title") or st.title,
        parameters=parameters,
        params=params,
        is_only_run=len(st.runs) == 1,
        explicit=explicit,
    )


def _add_named_run(config: RunConfig, stage: str, run_name: str, parameters: dict[str, Any]) -> None:
    problem = run_name_problem("run", run_name)
    if problem:
        raise ConfigError(f"{stage}: {problem}")
    st = config.stages[stage]
    st.runs[run_name] = {"title": None, "parameters": dict(parameters)}
    st.named.add(run_name)
    config.changed_named.add((stage, run_name))


def _requested(config: RunConfig, stage: str, runs: list[str] | None, overrides: Any) -> list[str]:
    """The runs of ``stage`` a command asks for; a ``--run`` name that does not exist becomes a named run with
    the overrides as its parameters (an existing named run takes the overrides as its new parameters)."""
    st = config.stages[stage]
    if not runs:
        return ["default"] if overrides else list(st.runs)
    names = []
    for r in runs:
        if r not in st.runs:
            _add_named_run(config, stage, r, overrides or {})
        elif r in st.named and overrides:
            _add_named_run(config, stage, r, {**(st.runs[r].get("parameters") or {}), **overrides})
        names.append(r)
    return names


def _upstream_for(config: RunConfig, profile: dict[str, Any], spec: RunSpec, inp: StageInput) -> str | None:
    """A run of the upstream stage whose parameters hold what ``inp`` needs, creating a named one when none
    does; None when the current one does (or ``inp`` cannot be re-pointed)."""
    if not inp.param or not inp.requires or inp.param in spec.explicit or inp.stage not in config.stages:
        return None
    st = config.stages[inp.stage]

    def params_of(run_name: str) -> dict[str, Any]:
        return _spec(config, profile, inp.stage, run_name, None).params.as_dict()

    if inp.run in st.runs and inp.satisfied_by(params_of(inp.run)):
        return None
    for candidate in st.runs:
        if inp.satisfied_by(params_of(candidate)):
            return candidate
    name = spec.run if spec.run not in st.runs else f"{spec.run}-for-{spec.stage}"
    _add_named_run(config, inp.stage, name, inp.required_parameters())
    return name


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

    A run's dependencies are the runs its parameters say it reads; with ``with_dependencies`` those among the
    configured and named runs are planned too (recursively). See the module docstring for named runs and the
    resolution of upstream runs.
    """
    prof = config.profile(profile)
    wanted = list(stages or config.stages)
    for s in wanted:
        if s not in config.stages:
            raise ConfigError(f"unknown stage {s!r}; valid stages: {', '.join(config.stages)}")
    if (overrides or runs) and len(wanted) != 1:
        raise ConfigError(
            "parameter overrides (-p) and --run apply to one stage at a time: name exactly one stage"
        )
    selected: dict[tuple[str, str], RunSpec] = {}
    queue: list[tuple[str, str]] = []
    for sname in wanted:
        for rname in _requested(config, sname, runs, overrides):
            key = (sname, rname)
            given = overrides if (stages and rname not in config.stages[sname].named) else None
            selected[key] = _spec(config, prof, sname, rname, given)
            queue.append(key)
    while queue:
        key = queue.pop()
        spec = selected[key]
        for inp in spec.reads:
            other = _upstream_for(config, prof, spec, inp)
            if other is not None:
                spec = selected[key] = _spec(config, prof, key[0], key[1], {**_given(spec), inp.param: other})
        if not with_dependencies:
            continue
        for inp in spec.reads:
            dep = (inp.stage, inp.run)
            if dep not in selected and config.has_run(*dep):
                selected[dep] = _spec(config, prof, inp.stage, inp.run, None)
                queue.append(dep)
    return _ordered(config, selected)


def _given(spec: RunSpec) -> dict[str, Any]:
    """The explicitly given parameters of a planned run (what re-planning it must keep)."""
    return {k: spec.parameters[k] for k in spec.explicit if k in spec.parameters}


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
def check_run(spec: RunSpec) -> None:
    """The stage's own checks of one run (raises :class:`ParameterError` listing every problem)."""
    problems = spec.params.check()
    if problems:
        raise ParameterError(f"{spec.stage} (run {spec.label})", problems)


def validate_plan(specs: list[RunSpec], config: RunConfig, *, log: Log = print) -> dict[str, ConfigError]:
    """Validate every run before any work; return the runs whose check must wait for a planned dependency.

    Reads that no planned run produces must exist and match their manifests (else one
    :class:`~rmvalues.core.errors.MissingInputError` naming the run to execute first). A run whose
    parameters contradict what a planned input promises fails here, before that input runs. A run whose check
    fails while a planned input has no outputs yet or is out of date waits: it is checked again once that
    input has run.
    """
    planned = {(s.stage, s.run): s for s in specs}
    deferred: dict[str, ConfigError] = {}
    changes: dict[str, bool] = {}

    def will_change(inp: StageInput, results_root: str) -> bool:
        """A planned input that has no outputs yet or is out of date: this plan executes it first, so a check
        against its present outputs (a quick profile's, say) would judge the wrong run."""
        if inp.label not in changes:
            changes[inp.label] = not (inp.folder(results_root) / MANIFEST).is_file() or not is_up_to_date(
                planned[(inp.stage, inp.run)], config, log=lambda _m: None
            )
        return changes[inp.label]

    for spec in specs:
        for inp in spec.reads:
            if (inp.stage, inp.run) not in planned:
                verify(inp, spec.params.results_root)
        promised = {
            inp.label: planned[(inp.stage, inp.run)].params.promises()
            for inp in spec.reads
            if (inp.stage, inp.run) in planned and will_change(inp, spec.params.results_root)
        }
        if promised and (problems := spec.params.check_planned(promised)):
            raise ParameterError(f"{spec.stage} (run {spec.label})", problems)
        try:
            check_run(spec)
        except ConfigError as exc:
            pending = [
                inp.label
                for inp in spec.reads
                if (inp.stage, inp.run) in planned and will_change(inp, spec.params.results_root)
            ]
            if not pending:
                raise
            deferred[spec.label] = exc
            log(f"[wait] {spec.label}: parameters checked again after {', '.join(pending)}")
    return deferred


def named_runs_lock(log: Log = print) -> contextlib.AbstractContextManager[None]:
    """The lock of ``named_runs.yaml`` (held while it is read, changed and written back)."""
    return hold_lock(paths.results_root() / ".named_runs.lock", "the named runs (named_runs.yaml)", log=log)


def save_named_runs(config: RunConfig, log: Log = print, only: set[tuple[str, str]] | None = None) -> None:
    """Persist the named runs this plan created or changed (``<results root>/named_runs.yaml``); ``only``:
    just these (stage, run) pairs."""
    todo = sorted(config.changed_named if only is None else config.changed_named & only)
    if not todo:
        return
    with named_runs_lock(log):  # runs of other stages may save theirs at the same moment
        saved = read_named_runs()
        for stage, run_name in todo:
            entry = config.stages[stage].runs[run_name]
            saved.setdefault(stage, {})[run_name] = {"parameters": entry.get("parameters") or {}}
            log(f"[name] {stage}/{run_name}: named run with parameters {entry.get('parameters') or {}}")
        write_named_runs(saved)
    config.changed_named.difference_update(todo)


# -- running --------------------------------------------------------------------------------------------------
def run(
    stages: list[str] | None = None,
    *,
    profile: str = "default",
    runs: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    force: bool = False,
    force_dependencies: bool = False,
    with_dependencies: bool = True,
    log: Log = print,
) -> dict[str, str]:
    """Validate every selected run, then execute them in order. Returns {label: status}; raises if any failed.

    ``force`` re-executes the runs asked for (not their dependencies, unless ``force_dependencies``).
    """
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
    asked = {
        (s.stage, s.run) for s in specs if (not stages or s.stage in stages) and (not runs or s.run in runs)
    }
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
            with run_lock(spec, log):  # one writer per run: a second invocation waits here
                forced = force and (force_dependencies or (spec.stage, spec.run) in asked)
                forced = forced or artefacts_changed(spec, log)
                status[spec.label] = execute(spec, config, force=forced, log=log)
                save_named_runs(config, log, only={(spec.stage, spec.run)})
        except Exception as exc:  # report, go on with independent runs, fail at the end
            status[spec.label] = "failed"
            log(
                f"[FAIL] {exc}"
                if isinstance(exc, RunFailed)
                else f"[FAIL] {spec.label}: {type(exc).__name__}: {exc}"
            )
    for stage, run_name in sorted(config.changed_named):  # a named run is saved once it has run
        log(
            f"[name] {stage}/{run_name}: not saved as a named run (it did not complete); fix the problem and "
            "run the same command again"
        )
    failed = [k for k, v in status.items() if v in ("failed", "blocked")]
    if failed:
        raise RunFailed(f"{len(failed)} run(s) did not complete: {', '.join(failed)}")
    return status
