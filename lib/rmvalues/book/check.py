"""Checks of the built HTML book: pages, figures, tables, internal links, no CDN, and a headless-Chromium pass.

A chapter reads as a publication: at least one numbered figure with a caption, no code input visible unless
the reader opens it (inputs are removed or inside a collapsed ``<details>``), and no table in the reading
flow longer than :data:`MAX_TABLE_ROWS` rows (longer ones are downloads or collapsed). Used by the test suite
and by ``python -m rmvalues check-book`` after the main job's build.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..core.formats import bad_pvalues

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    "--hide-scrollbars",
    # no request leaves the machine: every host name resolves to nothing and every proxied request goes to a
    # closed local port (a page that tried to load from the network would render without it and fail checks)
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--proxy-server=http://127.0.0.1:9",
    "--proxy-bypass-list=<-loopback>",
)


#: Rows a table may show in the reading flow (outside collapsed sections).
MAX_TABLE_ROWS = 15
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclass
class PageInfo:
    path: Path
    ids: set[str] = field(default_factory=set)
    links: list[str] = field(default_factory=list)  # href of <a>
    images: list[str] = field(default_factory=list)  # src of <img>
    tables: int = 0
    external_assets: list[str] = field(default_factory=list)  # scripts/stylesheets/images loaded from http(s)
    h1: list[str] = field(default_factory=list)
    numbered_figures: list[str] = field(default_factory=list)  # caption numbers of <figure>s ("Fig. 3.1")
    visible_code_inputs: int = 0  # code inputs not inside a collapsed <details>
    long_tables: list[int] = field(default_factory=list)  # row counts of tables over the limit in the flow
    downloads: list[str] = field(default_factory=list)  # href of download links
    glued: int = 0  # values pasted by myst-nb's glue (``{glue:text}`` roles)
    hidden_inputs: int = 0  # code cells whose input is collapsed (tag hide-input)
    unresolved_glue: int = 0  # glue roles left as text (a key the page never glued)
    text: list[str] = field(default_factory=list)  # the page's visible text (outside scripts and styles)


class _Parser(HTMLParser):
    def __init__(self, info: PageInfo) -> None:
        super().__init__(convert_charrefs=True)
        self.info = info
        self._in_h1 = False
        self._h1_text: list[str] = []
        self._article_depth = 0  # headings count only inside the page's <article> (not the print-only header)
        self._stack: list[tuple[str, set[str]]] = []  # open elements: (tag, classes)
        self._rows: list[int] = []  # rows of the open tables (outside <details>)
        self._caption: list[str] | None = None  # text of an open <figcaption>'s caption number

    def _inside(self, tag: str, cls: str | None = None) -> bool:
        return any(t == tag and (cls is None or cls in c) for t, c in self._stack)

    def _publication(self, tag: str, a: dict[str, str], classes: set[str]) -> None:
        if tag == "div" and "cell_input" in classes and not self._inside("details"):
            self.info.visible_code_inputs += 1
        elif tag == "table" and not self._inside("details"):
            self._rows.append(0)
        elif tag == "tr" and self._rows and self._inside("tbody"):
            self._rows[-1] += 1
        elif tag == "span" and "caption-number" in classes and self._inside("figcaption"):
            self._caption = []
        elif tag == "a" and "download" in classes:
            self.info.downloads.append(a.get("href", ""))
        elif tag == "span" and "pasted-text" in classes:
            self.info.glued += 1
        elif tag == "div" and "cell" in classes and "tag_hide-input" in classes:
            self.info.hidden_inputs += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "span" and self._caption is not None:
            self.info.numbered_figures.append("".join(self._caption).strip())
            self._caption = None
        if tag == "table" and self._rows and not self._inside("details"):
            rows = self._rows.pop()
            if rows > MAX_TABLE_ROWS:
                self.info.long_tables.append(rows)
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i][0] == tag:
                del self._stack[i:]
                break
        self._end(tag)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        classes = set(a.get("class", "").split())
        self._publication(tag, a, classes)
        if tag not in VOID:
            self._stack.append((tag, classes))
        if "id" in a:
            self.info.ids.add(a["id"])
        if tag == "a" and "href" in a:
            self.info.links.append(a["href"])
        elif tag == "img":
            self.info.images.append(a.get("src", ""))
            if a.get("src", "").startswith(("http://", "https://", "//")):
                self.info.external_assets.append(a["src"])
        elif tag == "table":
            self.info.tables += 1
        elif tag == "script" and (
            a.get("src", "").startswith(("http://", "https://", "//"))
            or "mathjax" in a.get("src", "").lower()
        ):  # MathJax is not shipped (see _config.yml): a page that loads it would render math as raw TeX
            self.info.external_assets.append(a["src"])
        elif (
            tag == "link"
            and "stylesheet" in a.get("rel", "")
            and a.get("href", "").startswith(("http://", "https://", "//"))
        ):
            self.info.external_assets.append(a["href"])
        elif tag == "article":
            self._article_depth += 1
        elif tag == "h1" and self._article_depth:
            self._in_h1 = True
            self._h1_text = []

    def _end(self, tag: str) -> None:
        if tag == "article" and self._article_depth:
            self._article_depth -= 1
        elif tag == "h1" and self._in_h1:
            self._in_h1 = False
            self.info.h1.append("".join(self._h1_text).strip().rstrip("#").strip())

    def handle_data(self, data: str) -> None:
        if self._in_h1:
            self._h1_text.append(data)
        if self._caption is not None:
            self._caption.append(data)
        if "{glue" in data:
            self.info.unresolved_glue += data.count("{glue")
        if not self._inside("script") and not self._inside("style"):
            self.info.text.append(data)


def parse_page(path: Path) -> PageInfo:
    info = PageInfo(path=path)
    _Parser(info).feed(path.read_text(encoding="utf-8"))
    return info


def broken_links(html_dir: Path) -> list[str]:
    """Internal links (and images) whose target file or anchor does not exist, as 'page -> href'."""
    pages = {p.resolve(): parse_page(p) for p in html_dir.rglob("*.html") if "_static" not in p.parts}
    problems: list[str] = []
    for path, info in pages.items():
        for href in info.links + info.images:
            parts = urlsplit(href)
            if parts.scheme or href.startswith(("//", "mailto:", "javascript:")):
                continue
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                problems.append(f"{path.relative_to(html_dir.resolve())} -> {href} (missing file)")
                continue
            if parts.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else parse_page(target).ids
                if unquote(parts.fragment) not in ids:
                    problems.append(f"{path.relative_to(html_dir.resolve())} -> {href} (missing anchor)")
    return problems


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def screenshot(
    page: Path, out_png: Path, *, width: int = 1280, height: int = 1600, timeout: float = 120
) -> None:
    """Render a local page in headless Chromium (fresh profile, no network services) and save a PNG."""
    chromium = find_chromium()
    if chromium is None:
        raise FileNotFoundError("headless Chromium not found: install Debian's `chromium` (make browser)")
    with tempfile.TemporaryDirectory(prefix="rmvalues-chromium-") as profile:
        cmd = [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            f"--screenshot={out_png}",
            page.resolve().as_uri(),
        ]
        subprocess.run(
            cmd, check=True, capture_output=True, timeout=timeout, env={**os.environ, "HOME": profile}
        )
    if not out_png.is_file() or out_png.stat().st_size == 0:
        raise RuntimeError(f"Chromium wrote no screenshot for {page}")


def dump_dom(page: Path, *, timeout: float = 120) -> str:
    """The DOM after Chromium has loaded the page and run its scripts."""
    chromium = find_chromium()
    if chromium is None:
        raise FileNotFoundError("headless Chromium not found: install Debian's `chromium` (make browser)")
    with tempfile.TemporaryDirectory(prefix="rmvalues-chromium-") as profile:
        cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.resolve().as_uri()]
        done = subprocess.run(
            cmd,
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "HOME": profile},
        )
    return done.stdout


def png_is_blank(png: Path) -> bool:
    """True when every pixel of the screenshot has the same colour."""
    from PIL import Image

    with Image.open(png) as img:
        extrema = img.convert("L").getextrema()
    return extrema[0] == extrema[1]


def publication_problems(entry: str, info: PageInfo) -> list[str]:
    """A chapter page that does not read as a publication: no numbered, captioned figure; code visible
    without opening it; tables longer than :data:`MAX_TABLE_ROWS` rows in the reading flow."""
    out = []
    if not info.numbered_figures:
        out.append(f"{entry}: no numbered figure with a caption")
    if info.visible_code_inputs:
        out.append(
            f"{entry}: {info.visible_code_inputs} code input(s) visible by default (tag them hide-input)"
        )
    if info.long_tables:
        out.append(
            f"{entry}: tables of {info.long_tables} rows in the reading flow (at most {MAX_TABLE_ROWS})"
        )
    if info.unresolved_glue:
        out.append(f"{entry}: {info.unresolved_glue} glue reference(s) left unresolved in the text")
    bad = bad_pvalues(" ".join(" ".join(info.text).split()))
    if bad:
        out.append(
            f"{entry}: {len(bad)} p-value(s) not in the book's one format (p = 0.012, p < 0.001; "
            f"rmvalues.core.formats.p_clause): {sorted(set(bad))[:5]}"
        )
    return out


def page_counts(entry: str, info: PageInfo) -> dict[str, object]:
    """What a chapter page shows, for the check's report: numbered figures, glued values, collapsed inputs,
    tables, downloads."""
    return {
        "page": entry,
        "numbered_figures": len(info.numbered_figures),
        "glued_values": info.glued,
        "hidden_inputs": info.hidden_inputs,
        "visible_inputs": info.visible_code_inputs,
        "tables": info.tables,
        "downloads": len(info.downloads),
    }


def check_book(
    html_dir: Path,
    chapter_pages: list[str],
    *,
    screenshots: Path | None = None,
    require_browser: bool = True,
    browse: set[str] | None = None,
) -> list[str]:
    """All problems found in a built book ([] when it is fine).

    ``chapter_pages`` are TOC entries (e.g. ``book/generated/corpora``); each must exist, have exactly one H1,
    show at least one figure and one table, and render in headless Chromium to a non-blank screenshot
    (``browse``: only these entries are rendered, e.g. the pages whose HTML changed since the last passing
    check; None = every chapter page). Every page's internal links must resolve and no page may load
    scripts, styles or images from the network.
    """
    problems: list[str] = []
    index = html_dir / "index.html"
    if not index.is_file():
        return [f"{index} does not exist: build the book first (make book)"]
    problems += [f"broken link: {b}" for b in broken_links(html_dir)]
    for page in html_dir.rglob("*.html"):
        if "_static" in page.parts:
            continue
        info = parse_page(page)
        if info.external_assets:
            problems.append(
                f"{page.relative_to(html_dir)} loads from the network: {info.external_assets[:3]}"
            )
    browser = find_chromium()
    if browser is None and require_browser:
        problems.append("headless Chromium not found: install Debian's `chromium` (make browser)")
    for entry in chapter_pages:
        page = html_dir / f"{entry}.html"
        if not page.is_file():
            problems.append(f"chapter page {entry}.html is missing")
            continue
        info = parse_page(page)
        if len(info.h1) != 1:
            problems.append(f"{entry}: expected one H1, found {len(info.h1)}: {info.h1}")
        if not any(
            src.endswith((".png", ".svg", ".jpg")) or src.startswith("data:image") for src in info.images
        ):
            problems.append(f"{entry}: no figure rendered")
        if info.tables == 0:
            problems.append(f"{entry}: no table rendered")
        problems += publication_problems(entry, info)
        if browser is not None and screenshots is not None and (browse is None or entry in browse):
            screenshots.mkdir(parents=True, exist_ok=True)
            png = screenshots / (entry.replace("/", "_") + ".png")
            try:
                screenshot(page, png)
            except (subprocess.SubprocessError, RuntimeError, OSError) as exc:
                problems.append(f"{entry}: Chromium failed: {exc}")
                continue
            if png_is_blank(png):
                problems.append(f"{entry}: Chromium rendered a blank page")
            dom = dump_dom(page)
            if "<img" not in dom or "<table" not in dom:
                problems.append(f"{entry}: figures or tables missing from the DOM Chromium rendered")
    return problems


def book_report(
    html_dir: Path, chapter_pages: list[str], screenshots: Path | None = None
) -> dict[str, object]:
    """Counts per chapter page (:func:`page_counts`), their totals and the screenshots taken."""
    pages = [
        page_counts(entry, parse_page(html_dir / f"{entry}.html"))
        for entry in chapter_pages
        if (html_dir / f"{entry}.html").is_file()
    ]
    keys = [k for k in (pages[0] if pages else {}) if k != "page"]
    shots = sorted(p.name for p in screenshots.glob("*.png")) if screenshots and screenshots.is_dir() else []
    return {
        "pages": pages,
        "totals": {k: sum(int(p[k]) for p in pages) for k in keys},
        "screenshots": shots,
    }
