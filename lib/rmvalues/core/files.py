"""Files written atomically, and their checksums.

Nothing the project writes is ever half-written: every writer goes through a temporary file in the target's
folder that is moved into place with ``os.replace`` (:func:`publish`), so a killed process leaves either the
old file or the new one.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _umask_mode() -> int:
    """Permissions a plainly created file would get (mkstemp's temporary files are 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def publish(tmp: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Give a finished temporary file normal permissions and move it into place atomically."""
    os.chmod(tmp, _umask_mode())
    os.replace(tmp, path)


def temporary_path(path: Path) -> str:
    """A new empty temporary file beside ``path`` (same folder, so :func:`publish` is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    return tmp


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        publish(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_parquet(df: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    path = Path(path)
    tmp = temporary_path(path)
    try:
        df.to_parquet(tmp, index=False)
        publish(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_csv(df: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    atomic_write_bytes(path, df.to_csv(index=False).encode("utf-8"))


def atomic_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Copy ``src`` to ``dst`` atomically."""
    dst = Path(dst)
    tmp = temporary_path(dst)
    try:
        shutil.copyfile(src, tmp)
        publish(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
