"""Command line: ``python -m rmvalues <command>`` (also installed as ``rmvalues``).

Commands:
  run [STAGE ...] [--profile P] [--run R ...] [-p key=value ...] [--force] [--no-deps]
      execute stage notebooks with papermill into the book (dependency order, up-to-date runs skipped)
  list [--profile P]     stages, runs and their parameters
  toc [--check]          write (or check) _toc.yml from config/run.yaml
  book                   build the HTML book (Jupyter Book, warnings as errors, offline)
  check-book             check the built book: chapters, figures, tables, links, no CDN, headless Chromium
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from ..core import paths
from ..core.errors import ConfigError, RmvaluesError
from . import runner
from .config import load_config, relative
from .toc import chapter_pages, toc_text, write_toc


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are parsed as YAML (``n=5``, ``x=0.1``, ``models=[a,b]``, ``flag=true``)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"parameter {item!r} is not of the form key=value (e.g. -p seed=1)")
        try:
            out[key.strip()] = yaml.safe_load(value) if value != "" else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"parameter {item!r}: cannot parse value ({exc})") from exc
    return out


def build_book(root: str | None = None, builder: str = "html") -> int:
    """Build the book with warnings as errors, nitpicky, offline; returns the exit code."""
    root = root or str(paths.project_root())
    write_toc()
    # jupyter-book 1.x has no `python -m jupyter_book`; use the console script next to this interpreter
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jupyter_book), "build", root, "--builder", builder, "-W", "-n", "--keep-going"]
    print("$", " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=root)


def check_built_book(browser: bool = True) -> int:
    from . import check as bookcheck

    root = paths.project_root()
    html = root / "_build" / "html"
    problems = bookcheck.check_book(
        html,
        chapter_pages(),
        screenshots=root / "_build" / "screenshots" if browser else None,
        require_browser=browser,
    )
    for p in problems:
        print(f"book check: {p}", file=sys.stderr)
    if not problems:
        print(f"book check: OK ({html / 'index.html'}; screenshots in _build/screenshots)")
    return 1 if problems else 0


def list_stages(profile: str = "default") -> int:
    """Print every stage's parameters (name, type, default, help; from its schema), then the planned runs
    with their merged parameters."""
    config = load_config()
    for sname, st in config.stages.items():
        schema = st.schema()
        print(f"stage {sname}  ({relative(st.notebook)}; {st.package})")
        for row in schema.describe():
            print(f"    {row['name']}: {row['type']} = {row['default']!r}\n        {row['help']}")
    print()
    for spec in runner.plan(config, profile=profile):
        print(f"run {spec.label}  -> {spec.page}")
        for k, v in spec.parameters.items():
            print(f"    {k} = {v!r}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rmvalues", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="execute stage notebooks into the book")
    p_run.add_argument("stages", nargs="*", help="stages to run (default: all)")
    p_run.add_argument("--profile", default="default", help="parameter profile from config/run.yaml")
    p_run.add_argument("--run", dest="runs", action="append", help="only this run of the stage (repeatable)")
    p_run.add_argument("-p", "--param", dest="params", action="append", default=[], metavar="KEY=VALUE")
    p_run.add_argument("--force", action="store_true", help="re-execute even if up to date")
    p_run.add_argument("--no-deps", action="store_true", help="do not (re)run the stages this one depends on")
    p_list = sub.add_parser("list", help="stages, runs and parameters")
    p_list.add_argument("--profile", default="default")
    p_toc = sub.add_parser("toc", help="write _toc.yml from config/run.yaml")
    p_toc.add_argument("--check", action="store_true", help="exit 1 if _toc.yml is out of date")
    sub.add_parser("book", help="build the HTML book into _build/html")
    p_check = sub.add_parser("check-book", help="check _build/html (links, figures, tables, Chromium)")
    p_check.add_argument("--no-browser", action="store_true", help="skip the headless-Chromium pass")
    args = parser.parse_args(argv)

    try:
        if args.command == "run":
            status = runner.run(
                args.stages or None,
                profile=args.profile,
                runs=args.runs,
                overrides=parse_overrides(args.params),
                force=args.force,
                with_dependencies=not args.no_deps,
            )
            write_toc()
            print(json.dumps(status, indent=2))
            return 0
        if args.command == "list":
            return list_stages(args.profile)
        if args.command == "toc":
            if args.check:
                current = (paths.project_root() / "_toc.yml").read_text(encoding="utf-8")
                if current != toc_text():
                    print("_toc.yml is out of date: run `python -m rmvalues toc`", file=sys.stderr)
                    return 1
                return 0
            print(write_toc())
            return 0
        if args.command == "book":
            return build_book()
        if args.command == "check-book":
            return check_built_book(browser=not args.no_browser)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, RmvaluesError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
