"""Runner safety on the miniature project of ``test_runner.py``: one writer per run (an OS lock per (stage, run)),
bounded parameters refused before any work, run names that cannot break a path or a page, one line on Ctrl-C,
and no empty folder after a failed new run.

The miniature producer gets two hooks here: ``n=-2`` raises KeyboardInterrupt inside the notebook, and
``n >= 90`` touches the file ``$MINI_MARK`` (so a test knows the run is executing, holding its lock) and sleeps
``$MINI_SLEEP`` seconds before writing its table.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any, ClassVar

import nbformat
import pandas as pd
import pytest
import yaml
from test_runner import _notebook, _package

from rmvalues.book import cli, runner
from rmvalues.book.execution import RunBusy, hold_lock, lock_path
from rmvalues.core import params as core_params
from rmvalues.core.errors import ConfigError, ParameterError
from rmvalues.core.params import (
    RUN_NAME,
    RUN_NAME_MAX,
    CountBound,
    StageParams,
    Threads,
    param,
    run_name_problem,
)
from rmvalues.stages.implicit.params import Params as ImplicitParams
from rmvalues.stages.rm_statistics.params import Params as StatisticsParams
from rmvalues.stages.scoring.params import Params as ScoringParams

HOOKS = """

import os as _os
import time as _time

_produce = run_producer


def run_producer(params):
    if params.n == -2:
        raise KeyboardInterrupt
    if params.n >= 90:
        if _os.environ.get("MINI_MARK"):
            open(_os.environ["MINI_MARK"], "w").close()
        _time.sleep(float(_os.environ.get("MINI_SLEEP", "0")))
    _produce(params)
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    """The miniature project of ``test_runner.py`` (a producer and a consumer stage), with the hooks above."""
    root = tmp_path / "proj"
    (root / "config").mkdir(parents=True)
    (root / "_config.yml").write_text("title: t\n")
    _package(tmp_path / "pkgs")
    init = tmp_path / "pkgs" / "mini_stages" / "__init__.py"
    init.write_text(init.read_text() + HOOKS)
    monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(tmp_path / "pkgs"), os.environ.get("PYTHONPATH", "")])
    )
    for mod in [m for m in sys.modules if m.startswith("mini_stages")]:
        sys.modules.pop(mod)
    _notebook(root / "notebooks" / "producer.ipynb", "producer", "Producer")
    _notebook(root / "notebooks" / "consumer.ipynb", "consumer", "Consumer")
    stages = {
        name: {
            "notebook": f"notebooks/{name}.ipynb",
            "package": f"mini_stages.{name}",
            "title": name.title(),
            "runs": {"default": {"parameters": {"n": 4} if name == "producer" else {}}},
        }
        for name in ("consumer", "producer")
    }
    config = {"stages": stages, "profiles": {"default": {}}}
    (root / "config" / "run.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    monkeypatch.setenv("RMVALUES_ROOT", str(root))
    monkeypatch.delenv("RMVALUES_RESULTS", raising=False)
    monkeypatch.delenv("MINI_MARK", raising=False)
    monkeypatch.delenv("MINI_SLEEP", raising=False)
    return root


def _quiet(*_: Any) -> None:
    return None


def _default_sigint() -> None:
    """In the child, before Python starts: SIGINT to its default, as in a terminal. A test suite started in
    the background (``make test &``, some CI runners) inherits SIGINT ignored, and Python then keeps it
    ignored: Ctrl-C could not be simulated."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(args: list[str], **env: str) -> subprocess.Popen[str]:
    """``python -m rmvalues <args>`` in its own session (Ctrl-C in a terminal reaches the whole group)."""
    return subprocess.Popen(
        [sys.executable, "-m", "rmvalues", *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_default_sigint,
    )


@pytest.fixture
def python_sigint() -> Any:
    """Python's own SIGINT handler (KeyboardInterrupt) for the test, whatever the suite inherited (a
    background job inherits SIGINT ignored); the previous handler afterwards."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 120.0) -> None:
    """Until ``path`` exists (the producer is executing), failing early when the process ended."""
    t0 = time.monotonic()
    while not path.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended before it started executing:\n{out}\n{err}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            pytest.fail(f"the run did not start executing within {timeout} s")
        time.sleep(0.1)


def _page_n(page: Path) -> str:
    nb = nbformat.read(page, as_version=4)
    injected = [c.source for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    return next(line for line in injected[0].splitlines() if line.startswith("n = "))


# -- one writer per run ---------------------------------------------------------------------------------------
def test_two_invocations_of_one_run_the_second_waits_and_the_results_are_one_complete_run(project):
    """Two `make chapter` of the same named run with other parameters: the second waits for the first (saying
    by whom), then runs; the table, manifest, run record, page and named-run entry are all the second's."""
    mark = project / "started"
    first = _start(["run", "producer", "--run", "x", "-p", "n=90"], MINI_MARK=str(mark), MINI_SLEEP="4")
    _wait_for(mark, first)
    second = _start(["run", "producer", "--run", "x", "-p", "n=95"])
    out1, err1 = first.communicate(timeout=300)
    out2, err2 = second.communicate(timeout=300)
    assert first.returncode == 0, err1
    assert second.returncode == 0, err2
    assert "[done] producer/x" in out1
    assert f"[wait] producer/x: being executed by pid {first.pid} (python -m rmvalues run producer" in out2
    assert out2.index("[wait]") < out2.index("[done] producer/x")
    out = project / "results" / "producer" / "x"
    assert len(pd.read_parquet(out / "table.parquet")) == 95
    assert json.loads((out / "manifest.json").read_text())["parameters"]["n"] == 95
    assert json.loads((out / "run.json").read_text())["parameters"]["n"] == 95
    assert _page_n(project / "book" / "generated" / "producer" / "x.ipynb") == "n = 95"
    named = yaml.safe_load((project / "results" / "named_runs.yaml").read_text())
    assert named["producer"]["x"]["parameters"] == {"n": 95}
    # nothing half-written or left behind: no snapshot, no lock file, no notebook still running
    assert sorted(p.name for p in out.parent.iterdir()) == ["x"]
    assert not list((project / "_build" / "running").glob("*.ipynb"))


def test_the_same_run_waits_for_its_lock_and_other_runs_do_not(project):
    logs: list[str] = []
    lock = lock_path(project / "results" / "producer", "x")
    with hold_lock(lock, "producer/x", log=_quiet):
        # another run of the same stage goes on at once
        assert runner.run(["producer"], runs=["y"], overrides={"n": 2}, log=logs.append) == {
            "producer/y": "done"
        }
        assert not any(line.startswith("[wait]") for line in logs)
        # forget refuses a run whose lock is held, naming the holder
        held = hold_lock(lock_path(project / "results" / "producer", "y"), "producer/y", log=_quiet)
        with pytest.raises(RunBusy, match=rf"producer/y is being executed by pid {os.getpid()}"), held:
            cli.forget("producer", "y")
    # the same run: waits until the holder releases its lock, then runs
    release = threading.Event()

    def holder() -> None:
        with hold_lock(lock, "producer/x", log=_quiet):
            release.set()
            time.sleep(1.5)

    thread = threading.Thread(target=holder)
    thread.start()
    release.wait(10)
    t0 = time.monotonic()
    assert runner.run(["producer"], runs=["x"], overrides={"n": 3}, log=logs.append) == {"producer/x": "done"}
    thread.join()
    assert time.monotonic() - t0 >= 1.0
    assert any(line.startswith("[wait] producer/x: being executed by pid") for line in logs)
    assert not lock.exists()


def test_ctrl_c_while_waiting_for_a_run_ends_with_one_line(project, python_sigint):
    """Ctrl-C (SIGINT to the main thread, blocked on the lock) once the runner says it waits."""
    main = threading.main_thread().ident
    assert main is not None
    logs: list[str] = []

    def log(line: str) -> None:
        logs.append(line)
        if line.startswith("[wait]"):
            threading.Timer(0.3, signal.pthread_kill, (main, signal.SIGINT)).start()

    held = hold_lock(lock_path(project / "results" / "producer", "x"), "producer/x", log=_quiet)
    with held, pytest.raises(runner.RunInterrupted) as info:
        runner.run(["producer"], runs=["x"], overrides={"n": 2}, log=log)
    line = cli.interrupted_line(info.value)
    assert line.startswith(f"interrupted while waiting for pid {os.getpid()} (")
    assert line.endswith("to finish producer/x: nothing of it was changed") and "\n" not in line
    assert not (project / "results" / "producer" / "x").exists()
    assert cli.interrupted_line(KeyboardInterrupt()) == (
        "interrupted: no run was being executed; the runs that finished are kept"
    )


# -- Ctrl-C ---------------------------------------------------------------------------------------------------
def test_ctrl_c_inside_a_run_prints_one_line_naming_what_is_kept(project, capsys):
    assert cli.main(["run", "producer", "--run", "x", "-p", "n=3"]) == 0
    out = project / "results" / "producer" / "x"
    page = project / "book" / "generated" / "producer" / "x.ipynb"
    before = {f: (out / f).read_bytes() for f in ("table.parquet", "manifest.json", "run.json")}
    page_before = page.read_bytes()
    capsys.readouterr()
    # a KeyboardInterrupt raised inside the notebook (as Ctrl-C in the kernel would)
    assert cli.main(["run", "producer", "--run", "x", "-p", "n=-2"]) == 130
    printed = capsys.readouterr()
    assert printed.err.splitlines() == [
        "interrupted: producer/x did not finish; its last good outputs and page are kept (results/producer/x, "
        "book/generated/producer/x.ipynb); the notebook as far as it ran: _build/failed/producer/x.ipynb"
    ]
    assert "Traceback" not in printed.out and "[FAIL]" not in printed.out
    assert {f: (out / f).read_bytes() for f in before} == before and page.read_bytes() == page_before
    assert yaml.safe_load((project / "results" / "named_runs.yaml").read_text())["producer"]["x"] == {
        "parameters": {"n": 3}
    }


def test_sigint_to_a_running_command_ends_with_one_line_and_exit_130(project):
    mark = project / "started"
    proc = _start(["run", "producer", "--run", "fresh", "-p", "n=99"], MINI_MARK=str(mark), MINI_SLEEP="60")
    _wait_for(mark, proc)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole foreground group
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Traceback" not in out
    assert err.strip().splitlines()[-1] == (
        "interrupted: producer/fresh did not finish; it had no earlier outputs, so none are kept; the notebook "
        "as far as it ran: _build/failed/producer/fresh.ipynb"
    )
    assert not (project / "results" / "producer" / "fresh").exists()
    assert not (project / "results" / "producer" / ".fresh.lock").exists()


# -- a failed new run -----------------------------------------------------------------------------------------
def test_a_failed_new_run_leaves_no_empty_folder(project):
    with pytest.raises(runner.RunFailed):
        runner.run(["producer"], runs=["broken"], overrides={"n": -1}, log=_quiet)
    assert not (project / "results" / "producer" / "broken").exists()
    assert not (project / "results" / "producer").exists()  # nor an empty stage folder, nor a lock file
    assert (project / "_build" / "failed" / "producer" / "broken.ipynb").is_file()
    # a failed rerun of a run that succeeded before keeps its folder and outputs
    runner.run(["producer"], runs=["good"], overrides={"n": 2}, log=_quiet)
    with pytest.raises(runner.RunFailed):
        runner.run(["producer"], runs=["good"], overrides={"n": -1}, log=_quiet)
    assert (project / "results" / "producer" / "good" / "table.parquet").is_file()


# -- bounds from the machine ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("schema", "values", "message"),
    [
        (
            StatisticsParams,
            {"n_permutations": 1_000_000_000},
            r"n_permutations=1000000000: above the bound n_permutations <= 1,000,000 \(p-values resolve to 1e-6.*"
            r"give n_permutations <= [\d,]+ \(permutations of the panel tests\)",
        ),
        (
            StatisticsParams,
            {"n_bootstrap": 10**7},
            r"n_bootstrap=10000000: above the bound n_bootstrap <= 200,000",
        ),
        (StatisticsParams, {"n_null": 10**6}, r"n_null=1000000: above the bound n_null <= 50,000 \(the null"),
        (
            StatisticsParams,
            {"n_power_sims": 10**6},
            r"n_power_sims=1000000: above the bound n_power_sims <= 100,000",
        ),
        (StatisticsParams, {"n_crossed": 10**6}, r"n_crossed=1000000: above the bound n_crossed <= 20,000"),
        (ImplicitParams, {"planted_bootstrap": 10**7}, r"planted_bootstrap=10000000: above the bound"),
        (
            ImplicitParams,
            {"batch_size": 5000},
            r"batch_size=5000: above the bound batch_size <= 1,024 \(a prompt",
        ),
        (ScoringParams, {"batch_size": 10**6}, r"batch_size=1000000: above the bound batch_size <= 16,384"),
        (
            StatisticsParams,
            {"n_permutations": 5},
            r"n_permutations=5: Input should be greater than or equal to 9",
        ),
    ],
)
def test_counts_beyond_their_bound_are_refused_with_the_bound_and_why(schema, values, message):
    with pytest.raises(ParameterError, match=message):
        schema.parse(values)


def test_a_count_that_would_not_fit_in_this_machines_memory_is_refused(monkeypatch):
    monkeypatch.setattr(core_params, "machine_memory", lambda: 4 * 2**30)
    limit = 2 * 2**30 // 22_000
    with pytest.raises(
        ParameterError,
        match=rf"n_permutations=200000: would hold about 4.1 GiB at once \(about 22,000 bytes per permutation of a "
        rf"panel of 540 points.*more than 50% of this machine's 4.0 GiB of memory; give n_permutations <= {limit:,}",
    ):
        StatisticsParams.parse({"n_permutations": 200_000})
    assert StatisticsParams.parse({"n_permutations": limit}).n_permutations == limit
    # the listing shows the bound as it stands here
    row = next(r for r in StatisticsParams.describe() if r["name"] == "n_permutations")
    assert f"[at most {limit:,} here:" in row["help"]


@pytest.mark.parametrize("schema", [ImplicitParams, ScoringParams])
def test_threads_are_at_most_the_cores_available(schema, monkeypatch):
    monkeypatch.setattr(core_params, "cpu_cores", lambda: 2)
    assert schema.parse({"threads": 2}).threads == 2
    assert schema.parse({"threads": 0}).threads == 0
    with pytest.raises(
        ParameterError,
        match=r"threads=999: more than the 2 CPU core\(s\) this process may use; threads beyond the cores only "
        r"wait on each other .*give threads between 0 \(torch's default\) and 2",
    ):
        schema.parse({"threads": 999})
    with pytest.raises(ParameterError, match=r"threads=-1: Input should be greater than or equal to 0"):
        schema.parse({"threads": -1})
    assert core_params.cpu_cores() == 2
    monkeypatch.undo()
    assert 1 <= core_params.cpu_cores() <= (os.cpu_count() or 1)


SAMPLER = """
from typing import Annotated, ClassVar

from rmvalues.core.params import StageParams, Threads, param
from rmvalues.stages.rm_statistics.params import PERMUTATIONS


class SamplerParams(StageParams):
    STAGE: ClassVar[str] = "sampler"
    n_permutations: Annotated[int, PERMUTATIONS] = param(99, help="permutations", ge=9)
    threads: Threads = param(1, help="torch CPU threads")


def run_sampler(params):
    raise AssertionError("never reached: the parameters are refused before any work")
"""


def test_the_runner_refuses_a_count_beyond_its_bound_before_any_work(project, capsys, monkeypatch):
    pkg = project.parent / "pkgs" / "mini_stages"
    (pkg / "sampler_impl.py").write_text(SAMPLER)
    (pkg / "sampler.py").write_text("from .sampler_impl import SamplerParams as Params, run_sampler as run\n")
    _notebook(project / "notebooks" / "sampler.ipynb", "sampler", "Sampler")
    cfg = yaml.safe_load((project / "config" / "run.yaml").read_text())
    cfg["stages"]["sampler"] = {
        "notebook": "notebooks/sampler.ipynb",
        "package": "mini_stages.sampler",
        "title": "Sampler",
        "runs": {"default": {"parameters": {}}},
    }
    (project / "config" / "run.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    monkeypatch.setattr(core_params, "cpu_cores", lambda: 2)
    assert cli.main(["run", "sampler", "--params", "n_permutations=1000000000 threads=999"]) == 2
    err = capsys.readouterr().err
    assert "n_permutations=1000000000: above the bound n_permutations <= 1,000,000" in err
    assert "threads=999: more than the 2 CPU core(s) this process may use" in err
    assert not (project / "results").exists() and not (project / "_build").exists()


def test_a_count_bound_without_memory_cost_is_a_plain_maximum():
    bound = CountBound(10, "ten is plenty")

    class Schema(StageParams):
        STAGE: ClassVar[str] = "schema"
        n: Annotated[int, bound] = param(1, help="a count", ge=1)
        threads: Threads = param(0, help="threads")

    assert Schema.parse({"n": 10}).n == 10
    with pytest.raises(
        ParameterError, match=r"n=11: above the bound n <= 10 \(ten is plenty\); give n <= 10"
    ):
        Schema.parse({"n": 11})
    assert Schema.notebook_cell().splitlines()[:2] == ["# a count", "n = 1"]  # the bound is not in the cell


# -- run names ------------------------------------------------------------------------------------------------
TRICKY = {
    "nl\n": "control or invisible character '\\n'",
    "\nlead": "control or invisible character",
    "a\tb": "control or invisible character '\\t'",
    "\x1b[31mred": "control or invisible character '\\x1b'",
    "nul\x00": "control or invisible character",
    "a\u200bb": "control or invisible character '\\u200b'",
    "..": "'..'",
    "a..b": "'..'",
    "../up": "path separator",
    "a/b": "path separator",
    "/abs": "path separator",
    "a\\b": "path separator",
    "\u0430bc": "U+0430 CYRILLIC SMALL LETTER A",
    "\uff41b": "U+FF41 FULLWIDTH LATIN SMALL LETTER A",
    "caf\u00e9": "U+00E9",
    "a b": "U+0020 SPACE",
    "": "the name is empty",
    "x" * (RUN_NAME_MAX + 1): f"{RUN_NAME_MAX + 1} characters long",
    ".hidden": "starts with",
    "-dash": "starts with",
}


@pytest.mark.parametrize("name", list(TRICKY))
def test_tricky_run_names_are_refused_saying_why(name):
    problem = run_name_problem("run", name)
    assert problem is not None and TRICKY[name] in problem
    assert problem.startswith(f"run={name!r}: give a run name of 1 to 64 ASCII letters")
    assert "(e.g. 'default', 'my-corpus'); this one: " in problem
    assert RUN_NAME.fullmatch(name) is None or ".." in name or len(name) > RUN_NAME_MAX


@pytest.mark.parametrize("name", ["ok", "my-corpus", "v1.2_x", "A" * RUN_NAME_MAX, "default"])
def test_ordinary_run_names_are_accepted(name):
    assert run_name_problem("run", name) is None


@pytest.mark.parametrize("name", ["nl\n", "a/b", "..", "\u0430bc", ""])
def test_the_runner_refuses_a_tricky_run_name_before_any_work(project, name):
    with pytest.raises(ConfigError, match=r"producer: run="):
        runner.run(["producer"], runs=[name], overrides={"n": 2}, log=_quiet)
    assert not (project / "results").exists()
