"""Where things live: the project root, config, results and the user cache (all overridable by env vars)."""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variables understood by the project.
ENV_CACHE = "RMVALUES_CACHE"  # user cache (converted models, fetched data); default ~/.cache/rmvalues
ENV_MIRROR = "RMVALUES_DATA_MIRROR"  # offline mirror folder of the external data sets
ENV_RESULTS = "RMVALUES_RESULTS"  # results root; default <project>/results
ENV_OFFLINE = "RMVALUES_OFFLINE"  # "1": never try the network (data downloads)
ENV_ROOT = "RMVALUES_ROOT"  # project root override (the runner sets it for the kernels it starts)


def project_root() -> Path:
    """The checkout root (the folder holding ``_config.yml``), found from this file's location."""
    if os.environ.get(ENV_ROOT):
        return Path(os.environ[ENV_ROOT]).resolve()
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "_config.yml").is_file() and (parent / "config").is_dir():
            return parent
    # installed non-editable: fall back to the working directory
    return Path.cwd()


def config_dir() -> Path:
    return project_root() / "config"


def cache_dir() -> Path:
    path = Path(os.environ.get(ENV_CACHE) or Path.home() / ".cache" / "rmvalues")
    path.mkdir(parents=True, exist_ok=True)
    return path


def results_root() -> Path:
    return Path(os.environ.get(ENV_RESULTS) or project_root() / "results")


def offline() -> bool:
    return os.environ.get(ENV_OFFLINE, "") == "1"


def resolve(path: str | os.PathLike[str]) -> Path:
    """Absolute path: relative paths are taken from the project root (not the working directory)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else project_root() / p


def stage_dir(stage: str, run: str = "default") -> Path:
    """Results folder of one run of one stage: ``<results_root>/<stage>/<run>``."""
    return results_root() / stage / run


#: Folder of the executed chapter pages, relative to the project root.
GENERATED = Path("book") / "generated"


def page_name(stage: str, run: str) -> str:
    """The book page of a run: ``<stage>`` for the default run (whatever forks exist), ``<stage>/<run>``
    else (a file ``book/generated/<page>.ipynb``: the other runs of a stage in its own folder, which the
    committed ``_toc.yml`` lists with a glob, so a named run gets a page without editing that file)."""
    return stage if run == "default" else f"{stage}/{run}"
