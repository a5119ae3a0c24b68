"""The book's table of contents, generated from the run configuration (one chapter per stage, one page per
run), and the list of chapter pages the book check visits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..core import paths
from ..core.files import atomic_write_text
from .config import GENERATED, RunConfig, load_config, page_name

TOC_HEADER = "# Generated from config/run.yaml by `python -m rmvalues toc` (the runner keeps it in sync; do not edit).\n"


def toc(config: RunConfig | None = None) -> dict[str, Any]:
    """The book's table of contents: prose pages around one chapter per stage (one page per run)."""
    config = config or load_config()
    chapters = []
    for sname, st in config.stages.items():  # reading order = the order of config/run.yaml
        names = list(st.runs)
        pages = [str(GENERATED / page_name(sname, r, len(names) == 1)) for r in names]
        entry: dict[str, Any] = {"file": pages[0]}
        if len(pages) > 1:
            entry["sections"] = [{"file": p} for p in pages[1:]]
        chapters.append(entry)
    return {
        "format": "jb-book",
        "root": "book/intro",
        "parts": [
            {"caption": "Background", "chapters": [{"file": "book/methods"}]},
            {"caption": "Chapters", "numbered": True, "chapters": chapters},
            {
                "caption": "Reference",
                "chapters": [{"file": "book/reproducibility"}, {"file": "book/references"}],
            },
        ],
    }


def toc_text(config: RunConfig | None = None) -> str:
    return TOC_HEADER + yaml.safe_dump(toc(config), sort_keys=False)


def write_toc(config: RunConfig | None = None) -> Path:
    path = paths.project_root() / "_toc.yml"
    text = toc_text(config)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)
    return path


def chapter_pages(config: RunConfig | None = None) -> list[str]:
    """TOC entries of the chapter pages (every run of every stage)."""
    pages: list[str] = []
    for part in toc(config)["parts"]:
        if part.get("caption") != "Chapters":
            continue
        for chapter in part["chapters"]:
            pages.append(chapter["file"])
            pages.extend(s["file"] for s in chapter.get("sections", []))
    return pages
