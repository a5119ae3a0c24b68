"""The book's table of contents, from the run configuration: one chapter per stage (its default run's page),
and under it a glob over the stage's folder of other pages (``book/generated/<stage>/*``: forks and named
runs, :func:`rmvalues.core.paths.page_name`).

``_toc.yml`` is committed: it covers the default book (every stage's default page, in the parts of
``config/run.yaml``), and a named run or fork gets its page in its chapter through the glob, without editing
the file. ``python -m rmvalues toc`` writes it again after a stage is added to or removed from the
configuration (a test compares the committed file with the configuration); an empty glob is no warning
(``etoc.glob`` in ``suppress_warnings`` of ``_config.yml``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..core import paths
from ..core.files import atomic_write_text
from .config import GENERATED, RunConfig, load_config, page_name

TOC_HEADER = (
    "# Written by `python -m rmvalues toc` from config/run.yaml (do not edit; committed): each stage's default\n"
    "# page, and under it its other runs' pages (book/generated/<stage>/*: forks and named runs).\n"
)
#: The book's parts after the overview, in order: the stages' ``part`` and the part's caption.
PART_CAPTIONS = {"chapters": "Chapters", "audits": "Audits"}


def _exists(page: str) -> bool:
    return (paths.project_root() / f"{page}.ipynb").is_file()


def _first_page(sname: str, runs: list[str]) -> str:
    """A stage's chapter page: its default run's page, else its first run's."""
    return str(GENERATED / page_name(sname, "default" if "default" in runs else runs[0]))


def chapters(config: RunConfig, only_existing: bool = True, part: str | None = None) -> list[dict[str, Any]]:
    """One TOC entry per stage (only the stages of ``part`` when it is given): its default run's page, with a
    glob over the stage's folder of other runs' pages as its sections. ``only_existing``: only stages whose
    chapter page exists."""
    out = []
    for sname, st in config.stages.items():  # reading order = the order of config/run.yaml
        if part is not None and st.part != part:
            continue
        configured = [r for r in st.runs if r not in st.named] or list(st.runs)
        page = _first_page(sname, configured)
        if only_existing and not _exists(page):
            continue
        out.append({"file": page, "sections": [{"glob": f"{GENERATED / sname}/*"}]})
    return out


def toc(config: RunConfig | None = None, only_existing: bool = True) -> dict[str, Any]:
    """The book's table of contents: the overview (the stages of part ``overview``, i.e. the findings page,
    then the methods) right after the introduction, the numbered chapters (numbered at chapter level only, so
    a fork is a page of its chapter, not a numbered section after the default page's sections), the audits,
    and the reference pages."""
    config = config or load_config()
    overview = [*chapters(config, only_existing, "overview"), {"file": "book/methods"}]
    parts: list[dict[str, Any]] = [{"caption": "Overview", "chapters": overview}]
    for part, caption in PART_CAPTIONS.items():
        found = chapters(config, only_existing, part)
        if found:
            parts.append(
                {"caption": caption, **({"numbered": 1} if part == "chapters" else {}), "chapters": found}
            )
    parts.append(
        {
            "caption": "Reference",
            "chapters": [
                {"file": "book/reproducibility"},
                {"file": "book/cite"},
                {"file": "book/references"},
            ],
        }
    )
    return {"format": "jb-book", "root": "book/intro", "parts": parts}


def toc_text(config: RunConfig | None = None, only_existing: bool = False) -> str:
    """The text of ``_toc.yml``: every stage of the configuration (``only_existing=False``), whatever has run."""
    return TOC_HEADER + yaml.safe_dump(toc(config, only_existing), sort_keys=False)


def move_legacy_pages(config: RunConfig) -> list[str]:
    """Pages of forks and named runs executed before they had their stage's folder
    (``book/generated/<stage>--<run>.ipynb``) moved to it (``<stage>/<run>.ipynb``, their download links made
    relative to the book's root), so an up-to-date run keeps its page; returns the pages moved."""
    root = paths.project_root()
    moved = []
    for sname, st in config.stages.items():
        for run in st.runs:
            old = root / GENERATED / f"{sname}--{run}.ipynb"
            new = root / GENERATED / f"{page_name(sname, run)}.ipynb"
            if run != "default" and old.is_file() and not new.is_file():
                new.parent.mkdir(parents=True, exist_ok=True)
                # its downloads were relative to book/generated/ ("../../results/..."): from the book's root now
                atomic_write_text(new, old.read_text(encoding="utf-8").replace("<../../", "</"))
                old.unlink()
                moved.append(str(new.relative_to(root)))
    return moved


def write_toc(config: RunConfig | None = None) -> Path:
    """Write ``_toc.yml`` when its text differs from the configuration's (:func:`toc_text`; a named run never
    changes it), after moving legacy run pages into their stage's folder."""
    config = config or load_config()
    move_legacy_pages(config)
    path = paths.project_root() / "_toc.yml"
    text = toc_text(load_config(config.path, named=False))
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)
    return path


def missing_pages(config: RunConfig | None = None) -> list[str]:
    """The chapter pages ``_toc.yml`` lists that have not been executed (the book cannot build without them)."""
    found = chapters(config or load_config(), only_existing=False)
    return [c["file"] for c in found if not _exists(c["file"])]


def chapter_pages(config: RunConfig | None = None) -> list[str]:
    """Every executed chapter page: each stage's chapter page, then its other runs' pages (configured and named
    runs whose page exists)."""
    config = config or load_config()
    pages: list[str] = []
    for chapter in chapters(config):
        pages.append(chapter["file"])
    for sname, st in config.stages.items():
        for run in st.runs:
            page = str(GENERATED / page_name(sname, run))
            if page not in pages and _exists(page):
                pages.append(page)
    return pages
