"""Executing one run: up-to-date keys, integrity checks, papermill, and a failure that breaks nothing.

**Up to date.** A run is skipped when the key of its last successful execution (``run.json``) equals its key
now: the notebook, the merged parameters, the title, the source of the layers it runs on (core, data, models,
engine, stats and its own stage package: another stage's code does not make it stale), the configuration it
uses (:meth:`~rmvalues.core.params.StageParams.config_used`: the registry entries of its models, its corpora,
its grid, ...) and the outputs of the upstream runs it reads. Before a run is skipped, its outputs are checked
against the checksums in its manifest; a changed or truncated file makes it run again (and is said).

**Nothing breaks on failure.** The previous run's page, ``run.json`` and manifest are never removed before a
run; its tables (the outputs its manifest lists) are kept as hard links in a snapshot folder beside the
output folder. The notebook is executed into ``_build/running/``; only on success does it replace the page,
and the new ``run.json`` is written. On failure the snapshot's tables are put back, so the last good page,
tables and manifest stay in place (work a stage can resume from, such as scoring parts or trained cells, is
kept). A snapshot left by a killed runner is restored before the next execution of that run.

A failed run that had no earlier outputs leaves no empty ``results/<stage>/<run>/`` folder behind.

**Errors surface.** A failure inside a notebook is raised as :class:`RunFailed` with the exception type and
message the notebook raised and the path of the failed notebook. Ctrl-C (in the runner or in the notebook)
is raised as :class:`RunInterrupted`, whose message is the one line the command line prints: which run was
interrupted and what of it is kept.

**One writer per run.** :func:`run_lock` holds an OS file lock (``fcntl.flock`` on
``results/<stage>/.<run>.lock``) for the whole execution of a run, from restoring an interrupted run's snapshot
to its page, ``run.json`` and named-run entry. A second invocation of the same (stage, run) **waits** with a
message naming the process that holds it, rather than refusing: ``make all`` and a ``make chapter`` started
beside it often share an upstream run, and the one that waits then finds it up to date (or re-executes it with
its own parameters, as one command after the other would) instead of failing the whole command; two different
runs still run at once, and a run holds one lock at a time, so waits cannot deadlock. The lock dies with its
process (no stale locks); the lock file is removed on release.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..core import paths
from ..core.errors import RmvaluesError
from ..core.files import atomic_write_bytes, atomic_write_text, sha256_file
from ..core.handoff import MANIFEST
from ..core.manifest import read_manifest
from ..core.paths import GENERATED, page_name
from .config import RunConfig, RunSpec, relative

RUN_RECORD = "run.json"
#: The layers every stage runs on (their source is part of every run's key; the stage's own package too).
BASE_LAYERS = ("core", "data", "models", "engine", "stats")

Log = Callable[[str], Any]


class RunFailed(RmvaluesError, RuntimeError):
    """A run's notebook raised an exception (the message holds its type, message and the failed notebook)."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run, or while waiting for its lock; the message is one line: the run and what is kept."""


class RunBusy(RmvaluesError, RuntimeError):
    """Another process holds the lock of a run that a command will not wait for (e.g. ``forget``)."""


# -- one writer per run ---------------------------------------------------------------------------------------
def lock_path(stage_dir: Path, run: str) -> Path:
    """The lock file of a run: ``<results root>/<stage>/.<run>.lock`` (``stage_dir``: ``<results root>/<stage>``)."""
    return stage_dir / f".{run}.lock"


def _holder(fd: int) -> str:
    """Who holds a lock, as its holder wrote it into the lock file ('another process' when unreadable)."""
    with contextlib.suppress(OSError):
        text = os.pread(fd, 1000, 0).decode(errors="replace").strip()
        if text:
            return text
    return "another process"


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (a released lock file is removed, and a process that
    waited on the removed file must lock the new one)."""
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _acquire(path: Path, what: str, log: Log, wait: bool) -> int:
    """An open file descriptor holding the exclusive lock on ``path`` (see :func:`hold_lock`)."""
    said = False
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by the kernels it starts
        except FileNotFoundError:  # the folder was removed between the two calls: again
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                if not wait:
                    raise RunBusy(
                        f"{what} is being executed by {holder}: wait until it finishes (or stop it), then run "
                        "the same command again"
                    ) from None
                if not said:
                    log(
                        f"[wait] {what}: being executed by {holder}; waiting until it finishes (Ctrl-C stops)"
                    )
                    said = True
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except KeyboardInterrupt:
                    raise RunInterrupted(
                        f"interrupted while waiting for {holder} to finish {what}: nothing of it was changed"
                    ) from None
            if _same_file(fd, path):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


@contextlib.contextmanager
def hold_lock(
    path: Path, what: str, *, log: Log = print, wait: bool = True, tidy: bool = False
) -> Iterator[None]:
    """Hold the exclusive OS lock on ``path`` (``fcntl.flock``; the kernel releases it when the process dies, so
    a killed process leaves no stale lock). Held elsewhere: wait with one message (``wait``), else raise
    :class:`RunBusy` naming the holder. The lock file holds the holder's pid and command and is removed on
    release; ``tidy``: its folder too, when that is left empty."""
    fd = _acquire(path, what, log, wait)
    try:
        prog = "python -m rmvalues" if sys.argv[0].endswith("__main__.py") else Path(sys.argv[0]).name
        command = " ".join([prog, *sys.argv[1:]])[:300]
        holder = f"pid {os.getpid()} ({command}; since {time.strftime('%H:%M:%S')})"
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # while held: a process waiting on this file sees it is gone and locks a new one
        os.close(fd)
        if tidy:
            with contextlib.suppress(OSError):
                path.parent.rmdir()  # only when empty


def run_lock(spec: RunSpec, log: Log = print, wait: bool = True) -> contextlib.AbstractContextManager[None]:
    """The lock of one run (stage, run) for the whole of its execution (see the module docstring)."""
    return hold_lock(lock_path(spec.output_dir.parent, spec.run), spec.label, log=log, wait=wait, tidy=True)


# -- keys and integrity ---------------------------------------------------------------------------------------
def library_digest(package: str | None = None) -> str:
    """Digest of the source of the base layers and of ``package`` (a stage's package, e.g.
    ``rmvalues.stages.corpora``; every stage package when None)."""
    root = Path(__file__).resolve().parents[1]
    folders = [root / layer for layer in BASE_LAYERS]
    if package is None:
        folders.append(root / "stages")
    elif package.startswith("rmvalues."):
        folders.append(root.joinpath(*package.split(".")[1:]))
    h = hashlib.sha256()
    for folder in folders:
        for f in sorted(folder.rglob("*.py")) if folder.is_dir() else [folder.with_suffix(".py")]:
            if f.is_file():
                h.update(f.relative_to(root).as_posix().encode())
                h.update(f.read_bytes())
    return h.hexdigest()


def run_key(spec: RunSpec, config: RunConfig) -> str:
    """The up-to-date key of a run (see the module docstring)."""
    h = hashlib.sha256()
    h.update(spec.notebook.read_bytes())
    h.update(json.dumps(spec.parameters, sort_keys=True, default=str).encode())
    h.update(spec.title.encode())
    h.update(library_digest(config.stages[spec.stage].package).encode())
    h.update(json.dumps(spec.params.config_used(), sort_keys=True, default=str).encode())
    for inp in sorted(spec.reads, key=lambda r: r.label):
        manifest = read_manifest(inp.folder(spec.params.results_root))
        h.update(inp.label.encode())
        outputs = {f: (manifest or {}).get("outputs", {}).get(f) for f in inp.files}
        h.update(json.dumps(outputs, sort_keys=True).encode() if manifest else b"missing")
    return h.hexdigest()


def changed_outputs(output_dir: Path) -> list[str]:
    """The outputs listed in a run's manifest that are missing or no longer match their checksum."""
    manifest = read_manifest(output_dir) or {}
    bad = []
    for name, digest in (manifest.get("outputs") or {}).items():
        path = output_dir / name
        if not path.is_file() or sha256_file(path) != digest:
            bad.append(name)
    return bad


def is_up_to_date(spec: RunSpec, config: RunConfig, log: Log = print) -> bool:
    record = spec.output_dir / RUN_RECORD
    page = paths.project_root() / f"{spec.page}.ipynb"
    if not (record.is_file() and page.is_file() and (spec.output_dir / MANIFEST).is_file()):
        return False
    try:
        if json.loads(record.read_text())["key"] != run_key(spec, config):
            return False
    except (ValueError, KeyError):
        return False
    bad = changed_outputs(spec.output_dir)
    if bad:
        log(f"[redo] {spec.label}: {', '.join(bad)} changed after the run (checksum mismatch); re-executing")
        return False
    return True


# -- snapshots of the last good outputs -----------------------------------------------------------------------
def snapshot_dir(spec: RunSpec) -> Path:
    return spec.output_dir.parent / f".{spec.run}.previous"


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def take_snapshot(spec: RunSpec) -> Path | None:
    """Hard links of the outputs the current manifest lists, the manifest and run.json (None: nothing yet)."""
    manifest = read_manifest(spec.output_dir)
    if manifest is None:
        return None
    snap = snapshot_dir(spec)
    shutil.rmtree(snap, ignore_errors=True)
    for name in [*(manifest.get("outputs") or {}), MANIFEST, RUN_RECORD]:
        src = spec.output_dir / name
        if src.is_file():
            _link(src, snap / name)
    return snap


def restore_snapshot(spec: RunSpec, log: Log = print) -> bool:
    """Put the snapshot's files back in place of what a failed or killed run left; True when one existed."""
    snap = snapshot_dir(spec)
    if not snap.is_dir():
        return False
    for src in sorted(p for p in snap.rglob("*") if p.is_file()):
        dst = spec.output_dir / src.relative_to(snap)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
    shutil.rmtree(snap, ignore_errors=True)
    log(f"[keep] {spec.label}: the last good outputs and page are kept")
    return True


# -- execution ------------------------------------------------------------------------------------------------
#: A figure or table label of a chapter page (``fig-implicit-mwlr``, ``tbl-corpora-sizes``): every one is local to
#: its page, so the page of a fork or named run gets its own copies (:func:`own_labels`).
LABEL = re.compile(r"(?<![\w/.-])((?:tbl|fig)-[a-z0-9][a-z0-9-]*)")


def own_labels(text: str, run: str) -> str:
    """``text`` with every figure and table label suffixed by the run (``tbl-x`` -> ``tbl-x--<run>``): two
    pages executed from one notebook would otherwise define the same labels, which the book refuses. A label
    that is already the run's own is kept (relabelling is idempotent)."""
    slug = re.sub(r"[^a-z0-9]+", "-", run.lower()).strip("-")
    own = f"--{slug}"
    return LABEL.sub(lambda m: m.group(1) if m.group(1).endswith(own) else m.group(1) + own, text)


def relabel_page(nb: Any, run: str) -> None:
    """Labels in the prose, the figure cells' metadata and the Markdown and text the cells displayed."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = own_labels(cell.source, run)
            continue
        figure = cell.metadata.get("mystnb", {}).get("figure", {})
        if "name" in figure:
            figure["name"] = own_labels(figure["name"], run)
        for out in cell.get("outputs", []):
            for kind, value in out.get("data", {}).items():
                if kind in ("text/markdown", "text/plain") and isinstance(value, str):
                    out["data"][kind] = own_labels(value, run)


def relabel_pages(config: RunConfig) -> list[str]:
    """Give every existing page of a run other than the default its own labels (idempotent); returns the pages
    changed. A page executed before pages had their own labels is fixed at the next book build, without
    re-executing its run."""
    import nbformat

    changed = []
    for sname, st in config.stages.items():
        for run in st.runs:
            page = paths.project_root() / f"{GENERATED / page_name(sname, run)}.ipynb"
            if run == "default" or not page.is_file():
                continue
            before = page.read_text(encoding="utf-8")
            nb = nbformat.reads(before, as_version=4)
            relabel_page(nb, run)
            after = nbformat.writes(nb) + "\n"
            if nbformat.reads(after, as_version=4) != nbformat.reads(before, as_version=4):
                atomic_write_text(page, after)
                changed.append(relative(page))
    return changed


def _finish_page(nb_path: Path, suffix: str | None, run: str = "default") -> None:
    """The executed notebook as a book page: the parameters papermill injected are collapsed like the
    notebook's own parameters cell, and a fork's or named run's title carries its run (``suffix``) and its
    figure and table labels are its own."""
    import nbformat

    nb = nbformat.read(nb_path, as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" in tags and "hide-input" not in tags:
            cell.metadata["tags"] = [*tags, "hide-input"]
    for cell in nb.cells if suffix else []:
        if cell.cell_type == "markdown" and cell.source.lstrip().startswith("# "):
            first, _, rest = cell.source.lstrip().partition("\n")
            cell.source = f"{first} — {suffix}\n{rest}".rstrip("\n")
            break
    if run != "default":
        relabel_page(nb, run)
    nbformat.write(nb, nb_path)


def run_title(spec: RunSpec, config: RunConfig) -> str:
    """The title a fork's page carries after the chapter's: its configured title, else the run's name and
    the parameters it sets (which model, corpus, prompts)."""
    entry = config.stages[spec.stage].runs[spec.run]
    if entry.get("title"):
        return str(entry["title"])
    given = entry.get("parameters") or {}
    shown = ", ".join(f"{k}={v}" for k, v in given.items())
    return f"{spec.run}" + (f" ({shown})" if shown else "")


def _papermill(spec: RunSpec, out: str, root: Path) -> None:
    import papermill

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
            out,
            parameters=spec.parameters,
            kernel_name="python3",
            cwd=str(root),
            progress_bar=sys.stderr.isatty(),
            log_output=False,
            shutdown_kernel="immediate",
        )
    finally:
        for key, value in env_before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _failure(spec: RunSpec, exc: BaseException, failed: Path) -> RunFailed:
    ename = getattr(exc, "ename", None) or type(exc).__name__
    evalue = getattr(exc, "evalue", None)
    message = str(evalue if evalue is not None else exc).strip() or "(no message)"
    return RunFailed(
        f"{spec.label} failed: {ename}: {message}\n    (executed notebook with the traceback: {relative(failed)})"
    )


def _interrupted(exc: BaseException) -> bool:
    """Ctrl-C in the runner, or a KeyboardInterrupt the notebook raised (papermill reports it by name)."""
    return isinstance(exc, KeyboardInterrupt) or getattr(exc, "ename", None) == "KeyboardInterrupt"


@contextlib.contextmanager
def _held_interrupts() -> Iterator[list[int]]:
    """Ctrl-C held back while a run's state is written or put back, so that a second Ctrl-C cannot leave it half
    done; the list it yields records the signals that came meanwhile (only the main thread can set handlers)."""
    came: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield came
        return
    before = signal.signal(signal.SIGINT, lambda signum, _frame: came.append(signum))
    try:
        yield came
    finally:
        signal.signal(signal.SIGINT, before)


def _remove_if_empty(folder: Path) -> None:
    """Remove ``folder`` when it holds no file (empty sub-folders only): a failed new run leaves no trace."""
    if folder.is_dir() and not any(p.is_file() or p.is_symlink() for p in folder.rglob("*")):
        shutil.rmtree(folder, ignore_errors=True)


def _interruption(spec: RunSpec, kept: bool, failed: Path) -> RunInterrupted:
    """The one line Ctrl-C during a run ends with."""
    if kept:
        page = f"{spec.page}.ipynb"
        what = f"its last good outputs and page are kept ({relative(spec.output_dir)}, {page})"
    else:
        what = "it had no earlier outputs, so none are kept"
    return RunInterrupted(
        f"interrupted: {spec.label} did not finish; {what}; the notebook as far as it ran: {relative(failed)}"
    )


def execute(spec: RunSpec, config: RunConfig, *, force: bool = False, log: Log = print) -> str:
    """Execute one run unless up to date. Returns 'skipped' or 'done'; raises :class:`RunFailed` on failure
    (the last good outputs and page stay in place) and :class:`RunInterrupted` on Ctrl-C. The caller holds
    the run's lock (:func:`run_lock`)."""
    restore_snapshot(spec, log=lambda m: log(m.replace("are kept", "of an interrupted run are restored")))
    if not force and is_up_to_date(spec, config, log):
        log(f"[skip] {spec.label}: up to date ({relative(spec.output_dir)})")
        return "skipped"
    root = paths.project_root()
    page = root / f"{spec.page}.ipynb"
    spec.output_dir.mkdir(parents=True, exist_ok=True)
    before = read_manifest(spec.output_dir)
    kept = take_snapshot(spec) is not None
    running = root / "_build" / "running"
    running.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=running, prefix=f"{page.stem}.", suffix=".ipynb")
    os.close(fd)
    log(f"[run ] {spec.label}: {relative(spec.notebook)} -> {relative(page)}")
    t0 = time.perf_counter()
    try:
        _papermill(spec, tmp, root)
        after = read_manifest(spec.output_dir)
        if after is None or after == before:
            raise RunFailed(
                f"run {spec.label} finished but wrote no new {MANIFEST} in {spec.output_dir}: a stage's run() "
                "must record its outputs with rmvalues.core.manifest.RunRecord(...).finish()"
            )
    except BaseException as exc:
        interrupted = _interrupted(exc)
        failed = root / "_build" / "failed" / f"{page_name(spec.stage, spec.run)}.ipynb"
        with _held_interrupts() as came:
            failed.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(tmp, failed)
            restore_snapshot(spec, (lambda _m: None) if interrupted else log)
            if before is None:
                _remove_if_empty(spec.output_dir)
        if interrupted or came:
            raise _interruption(spec, kept, failed) from None
        if isinstance(exc, RunFailed):
            raise
        raise _failure(spec, exc, failed) from None
    with _held_interrupts():  # the page, run.json, the snapshot's removal: all or none (a late Ctrl-C: done)
        _finish_page(Path(tmp), run_title(spec, config) if spec.run != "default" else None, spec.run)
        page.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, page)
        elapsed = round(time.perf_counter() - t0, 1)
        record = {
            "key": run_key(spec, config),
            "page": spec.page,
            "seconds": elapsed,
            "parameters": spec.parameters,
        }
        atomic_write_bytes(spec.output_dir / RUN_RECORD, json.dumps(record, indent=2, default=str).encode())
        shutil.rmtree(snapshot_dir(spec), ignore_errors=True)
    log(f"[done] {spec.label}: {elapsed} s")
    return "done"
