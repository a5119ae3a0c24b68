"""What a book build and a book check must redo: nothing, some pages, or everything.

An unchanged ``make all`` with many named runs spent most of its time rebuilding the whole book and
screenshotting every page. The book's inputs are files: the configuration, the table of contents, the prose
pages and the executed chapter pages. :func:`build_plan` compares their checksums with the ones recorded after
the last successful build (``_build/book-inputs.json``):

* ``skip``: nothing changed and the HTML is there;
* ``incremental``: only executed chapter pages changed (the same pages, the same configuration, contents and
  prose): Sphinx re-reads the changed pages and keeps the rest of its environment. Labels cannot go stale:
  every page's labels are its own (``<label>--<run>``, :func:`rmvalues.book.execution.relabel_pages`), and a
  page whose labels changed is itself a changed page, re-read;
* ``full``: anything else (first build, a page added or removed, the configuration, contents or prose
  changed): every page re-read (``--all``).

The book check screenshots only the pages whose HTML changed since the last passing check
(:func:`pages_to_screenshot`); the cheap checks (links, figures, tables) always run on every page.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..core.files import atomic_write_text

__all__ = [
    "BUILD_STAMP",
    "BuildPlan",
    "book_inputs",
    "build_plan",
    "html_digests",
    "pages_to_screenshot",
    "record_build",
]

#: The checksums of the book's inputs at the last successful build (relative to the project root).
BUILD_STAMP = "_build/book-inputs.json"
#: Inputs that, when changed, make every page stale.
GLOBAL_INPUTS = ("_config.yml", "_toc.yml")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def book_inputs(root: Path) -> dict[str, str]:
    """``{path relative to root: sha256}`` of every input of the book build: the configuration, the table of
    contents and every file under ``book/`` (prose pages, references, executed chapter pages)."""
    files = [root / name for name in GLOBAL_INPUTS if (root / name).is_file()]
    files += sorted(p for p in (root / "book").rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return {str(p.relative_to(root)): _sha256(p) for p in files}


@dataclass(frozen=True)
class BuildPlan:
    """How to build: ``mode`` (skip, incremental, full), why, and the inputs that changed."""

    mode: str
    reason: str
    changed: tuple[str, ...] = ()


def _is_page(path: str) -> bool:
    return path.startswith("book/generated/") and path.endswith(".ipynb")


def build_plan(root: Path, inputs: Mapping[str, str] | None = None) -> BuildPlan:
    """The :class:`BuildPlan` for the book under ``root`` (``inputs``: :func:`book_inputs`, computed if not
    given)."""
    now = dict(inputs if inputs is not None else book_inputs(root))
    stamp = root / BUILD_STAMP
    if not (root / "_build" / "html" / "index.html").is_file() or not stamp.is_file():
        return BuildPlan("full", "no earlier build")
    try:
        before = json.loads(stamp.read_text(encoding="utf-8"))["inputs"]
    except (ValueError, KeyError, TypeError):
        return BuildPlan("full", f"{BUILD_STAMP} is unreadable")
    changed = tuple(sorted(k for k in set(now) | set(before) if now.get(k) != before.get(k)))
    if not changed:
        return BuildPlan("skip", "no input of the book changed since its last build")
    if set(now) != set(before):
        return BuildPlan("full", "pages were added or removed", changed)
    if not all(_is_page(k) for k in changed):
        others = [k for k in changed if not _is_page(k)]
        return BuildPlan("full", f"{', '.join(others[:3])} changed", changed)
    return BuildPlan("incremental", f"{len(changed)} executed page(s) changed", changed)


def record_build(root: Path, inputs: Mapping[str, str]) -> None:
    """Record ``inputs`` as the state of the last successful build."""
    atomic_write_text(root / BUILD_STAMP, json.dumps({"inputs": dict(inputs)}, indent=1) + "\n")


def html_digests(html_dir: Path, entries: Iterable[str]) -> dict[str, str]:
    """``{entry: sha256 of its HTML page}`` for the chapter entries (``book/generated/<page>``) that exist."""
    out = {}
    for entry in entries:
        page = html_dir / f"{entry}.html"
        if page.is_file():
            out[entry] = _sha256(page)
    return out


def pages_to_screenshot(report_path: Path, digests: Mapping[str, str]) -> set[str]:
    """The entries whose HTML differs from the one the last passing check screenshotted (every entry when
    there is no such check)."""
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
        checked = dict(report["html"]) if report.get("ok") else {}
    except (OSError, ValueError, KeyError, TypeError):
        checked = {}
    return {e for e, d in digests.items() if checked.get(e) != d}
