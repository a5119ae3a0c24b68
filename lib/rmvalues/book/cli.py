"""Command line: ``python -m rmvalues <command>`` (also installed as ``rmvalues``).

Commands:
  run [STAGE ...] [--profile P] [--run R ...] [--params "k=v k2=[a, b]"] [-p k=v ...] [--force [--with-deps]]
      [--no-deps]
      execute stage notebooks with papermill into the book (hand-off order, up-to-date runs skipped);
      with one STAGE, --params/-p override the default run's parameters, or, with --run NAME, those of the
      run NAME (a new name creates a named run with these parameters)
  list [--profile P] [--runs]   every stage's parameters (type, default, help) and the planned runs;
                                --runs: every existing run and whether it is up to date
  promote STAGE RUN             write a named run into config/run.yaml
  forget STAGE RUN [--results]  drop a named run: its entry and page (--results: its results folder too)
  toc                           write the committed _toc.yml from config/run.yaml (after adding a stage)
  book                          build the HTML book (Jupyter Book, warnings as errors, offline)
  check-book                    check the built book: chapters, figures, tables, links, no CDN, Chromium

Ctrl-C ends a command with one line saying which run was interrupted and what of it is kept (exit status 130).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from ..core import paths
from ..core.errors import ConfigError, RmvaluesError
from ..core.files import atomic_write_text
from ..core.params import run_name_problem
from ..core.paths import GENERATED, page_name
from . import incremental, runner
from .config import config_path, load_config, read_named_runs, relative, write_named_runs
from .execution import RunInterrupted, hold_lock, lock_path, relabel_pages
from .toc import chapter_pages, missing_pages, write_toc

OPENERS, CLOSERS = "[{(", "]})"


def split_params(text: str) -> list[str]:
    """``key=value`` items of a PARAMS string, split on whitespace outside brackets and quotes, so that
    ``families=[gemma, llama]`` and ``note="it's fine"`` stay whole."""
    items, current, depth, quote = [], [], 0, ""
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"" and (i == 0 or text[i - 1] in "=[{(,: \t"):
            quote = ch
        elif ch in OPENERS:
            depth += 1
        elif ch in CLOSERS:
            depth = max(0, depth - 1)
        elif ch.isspace() and depth == 0:
            if current:
                items.append("".join(current))
                current = []
            continue
        current.append(ch)
    if quote or depth:
        raise ConfigError(
            f"PARAMS {text!r}: an unclosed {'quote' if quote else 'bracket'}; write values as YAML, e.g. "
            "PARAMS=\"corpora=[big2_nouns, mfd2] note='a text'\""
        )
    if current:
        items.append("".join(current))
    return items


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are parsed as YAML (``n=5``, ``x=0.1``, ``models=[a,b]``, ``flag=true``);
    a float written like ``1e-3`` is read as a number (:func:`yaml_floats`)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"parameter {item!r} is not of the form key=value (e.g. -p seed=1)")
        try:
            parsed = yaml.safe_load(value) if value != "" else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"parameter {item!r}: cannot parse the value as YAML ({exc})") from exc
        out[key.strip()] = yaml_floats(parsed)
    return out


def yaml_floats(value: Any) -> Any:
    """``value`` with every string written like a float (``1e-3``, which YAML 1.1 reads as a string) read as a
    number, also inside lists and mappings (``strengths=[1e-6, 3e-4]``)."""
    if isinstance(value, list):
        return [yaml_floats(v) for v in value]
    if isinstance(value, dict):
        return {k: yaml_floats(v) for k, v in value.items()}
    if isinstance(value, str) and any(c in value.lower() for c in ".e"):
        with contextlib.suppress(ValueError):
            return float(value)
    return value


def build_book(root: str | None = None, builder: str = "html", full: bool = False) -> int:
    """Build the book with warnings as errors, nitpicky, offline; returns the exit code. Only what changed
    is rebuilt (:func:`rmvalues.book.incremental.build_plan`: nothing, the changed executed pages, or every
    page); ``full`` re-reads every page whatever changed."""
    root = root or str(paths.project_root())
    write_toc()
    missing = missing_pages()
    if missing:
        print(
            f"[book] the book lists chapter pages that have not been executed: {', '.join(missing)}; run their "
            "stages first (`make run`, or `python -m rmvalues run <stage>`)",
            file=sys.stderr,
        )
        return 2
    for page in relabel_pages(load_config()):
        print(f"[label] {page}: its figure and table labels made its own (a page executed before they were)")
    inputs = incremental.book_inputs(Path(root))
    plan = incremental.build_plan(Path(root), inputs)
    mode = "full" if full and builder == "html" else plan.mode
    if builder != "html":
        mode = "full"
    if mode == "skip":
        print(f"[book] up to date: {plan.reason}; not rebuilt (`python -m rmvalues book --all` rebuilds it)")
        return 0
    print(
        f"[book] {'every page re-read' if mode == 'full' else 'incremental build'}: {plan.reason}", flush=True
    )
    # jupyter-book 1.x has no `python -m jupyter_book`; use the console script next to this interpreter
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    flags = ["--all"] if mode == "full" else []
    cmd = [str(jupyter_book), "build", root, *flags, "--builder", builder, "-W", "-n", "--keep-going"]
    print("$", " ".join(cmd), flush=True)
    code = subprocess.call(cmd, cwd=root)
    if code == 0 and builder == "html":
        incremental.record_build(Path(root), inputs)
    return code


def check_built_book(browser: bool = True) -> int:
    """Check the built book (:func:`rmvalues.book.check.check_book`); Chromium renders only the chapter pages
    whose HTML changed since the last passing check (``_build/book-check.json``)."""
    from . import check as bookcheck

    root = paths.project_root()
    html = root / "_build" / "html"
    report_path = root / "_build" / "book-check.json"
    pages = chapter_pages()
    digests = incremental.html_digests(html, pages)
    browse = incremental.pages_to_screenshot(report_path, digests)
    problems = bookcheck.check_book(
        html,
        pages,
        screenshots=root / "_build" / "screenshots" if browser else None,
        require_browser=browser,
        browse=browse,
    )
    for p in problems:
        print(f"book check: {p}", file=sys.stderr)
    shots = root / "_build" / "screenshots"
    report = bookcheck.book_report(html, pages, shots if browser else None)
    report |= {"ok": not problems and browser, "html": digests, "rendered": sorted(browse)}
    if html.is_dir():
        atomic_write_text(report_path, json.dumps(report, indent=2) + "\n")
    for page in report["pages"]:
        print("book check: " + ", ".join(f"{k} {v}" for k, v in page.items()))
    if report["pages"]:
        print("book check: totals " + ", ".join(f"{k} {v}" for k, v in report["totals"].items()))
    if browser:
        kept = len(pages) - len(browse)
        print(
            f"book check: Chromium rendered {len(browse)} page(s)"
            + (f"; {kept} unchanged since the last passing check" if kept else "")
        )
    if not problems:
        print(
            f"book check: OK ({html / 'index.html'}; screenshots in _build/screenshots; _build/book-check.json)"
        )
    return 1 if problems else 0


def list_stages(profile: str = "default", runs: bool = False) -> int:
    """Print every stage's parameters (name, type, default, help; from its schema), then the planned runs
    with their merged parameters, or (``runs``) every run and whether it is up to date."""
    config = load_config()
    if runs:
        for spec in runner.plan(config, profile=profile):
            exists = (spec.output_dir / "manifest.json").is_file()
            state = (
                "up to date"
                if runner.is_up_to_date(spec, config, log=lambda *_: None)
                else ("stale" if exists else "not run")
            )
            named = " (named)" if spec.run in config.stages[spec.stage].named else ""
            print(f"{spec.label}{named}: {state}  [{relative(spec.output_dir)}; page {spec.page}]")
        return 0
    for sname, st in config.stages.items():
        print(f"stage {sname}  ({relative(st.notebook)}; {st.package})")
        for row in st.schema().describe():
            print(f"    {row['name']}: {row['type']} = {row['default']!r}\n        {row['help']}")
    print()
    for spec in runner.plan(config, profile=profile):
        print(f"run {spec.label}  -> {spec.page}")
        for k, v in spec.parameters.items():
            print(f"    {k} = {v!r}")
    return 0


def promote(stage: str, run_name: str) -> int:
    """Move a named run into ``config/run.yaml`` (its comments and layout kept: the run is appended to the
    stage's ``runs:`` block), then drop it from the named runs."""
    named = read_named_runs()
    entry = (named.get(stage) or {}).get(run_name)
    if entry is None:
        known = [f"{s}/{r}" for s, rs in named.items() for r in rs]
        raise ConfigError(f"no named run {stage}/{run_name}; named runs: {', '.join(known) or 'none'}")
    path = config_path()
    lines = path.read_text(encoding="utf-8").splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.rstrip() == f"  {stage}:"), None)
    runs_at = next((i for i in range(start or 0, len(lines)) if lines[i].rstrip() == "    runs:"), None)
    if start is None or runs_at is None:
        raise ConfigError(f"{path}: cannot find the runs: block of stage {stage!r}; add the run by hand")
    end = runs_at + 1
    while end < len(lines) and (lines[end].startswith("      ") or not lines[end].strip()):
        end += 1
    while lines[end - 1].strip() == "":
        end -= 1
    params = json.dumps(entry.get("parameters") or {})
    lines[end:end] = [f"      {run_name}:", f"        parameters: {params}"]
    text = "\n".join(lines) + "\n"
    if yaml.safe_load(text)["stages"][stage]["runs"][run_name]["parameters"] != (
        entry.get("parameters") or {}
    ):
        raise ConfigError(f"{path}: promoting {stage}/{run_name} would not round-trip; add the run by hand")
    with runner.named_runs_lock():
        named = read_named_runs()  # again, under the lock: a run may have saved its entry meanwhile
        named.get(stage, {}).pop(run_name, None)
        write_named_runs(named)  # first, so that the config never holds a run twice
    path.write_text(text, encoding="utf-8")
    print(f"{stage}/{run_name} is now a run of {relative(path)}")
    return 0


def _readers(config: Any, stage: str, run_name: str) -> list[str]:
    """The runs (configured or named) whose parameters read ``stage/run_name``."""
    out = []
    for sname, st in config.stages.items():
        for other in list(st.runs):
            try:
                spec = runner.plan(config, stages=[sname], runs=[other], with_dependencies=False)[0]
            except ConfigError:
                continue  # a run whose parameters no longer parse reads nothing
            if any((i.stage, i.run) == (stage, run_name) for i in spec.reads):
                out.append(spec.label)
    return out


def forget(stage: str, run_name: str, drop_results: bool = False) -> int:
    """Drop a named run: its entry in the named runs and its page, so that neither the book nor the next full
    run has it (``drop_results``: its results folder too). A run that other runs read is kept until they are
    forgotten; a configured run is removed from ``config/run.yaml`` by hand."""
    named = read_named_runs()
    config = load_config()
    if run_name not in (named.get(stage) or {}):
        if stage in config.stages and run_name in config.stages[stage].runs:
            raise ConfigError(
                f"{stage}/{run_name} is a run of {relative(config_path())}, not a named run: remove it there"
            )
        known = [f"{s}/{r}" for s, rs in named.items() for r in rs]
        raise ConfigError(f"no named run {stage}/{run_name}; named runs: {', '.join(known) or 'none'}")
    readers = [r for r in _readers(config, stage, run_name) if r != f"{stage}/{run_name}"]
    if readers:
        raise ConfigError(
            f"{stage}/{run_name} is read by {', '.join(readers)}: forget those first "
            f"(`python -m rmvalues forget STAGE RUN`), or keep it"
        )
    stage_dir = paths.results_root() / stage
    lock = (  # refuses while the run executes (it would write its page back); a name no run can have: none
        hold_lock(lock_path(stage_dir, run_name), f"{stage}/{run_name}", wait=False, tidy=True)
        if run_name_problem("run", run_name) is None
        else contextlib.nullcontext()
    )
    with lock:
        _forget(stage, run_name, drop_results)
    return 0


def _forget(stage: str, run_name: str, drop_results: bool) -> None:
    """Drop the named run's entry, page and (``drop_results``) results; the caller holds the run's lock."""
    with runner.named_runs_lock():
        named = read_named_runs()
        named.get(stage, {}).pop(run_name, None)
        write_named_runs(named)
    page = paths.project_root() / GENERATED / f"{page_name(stage, run_name)}.ipynb"
    removed = [relative(page)] if page.is_file() else []
    page.unlink(missing_ok=True)
    output = paths.results_root() / stage / run_name
    if drop_results:
        for folder in (output, output.parent / f".{run_name}.previous"):
            if folder.is_dir():
                shutil.rmtree(folder)
                removed.append(relative(folder))
    write_toc()
    kept = f"; its results stay in {relative(output)} (--results deletes them)" if output.is_dir() else ""
    print(f"{stage}/{run_name} forgotten: removed its entry{''.join(', ' + r for r in removed)}{kept}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rmvalues", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="execute stage notebooks into the book")
    p_run.add_argument("stages", nargs="*", help="stages to run (default: all)")
    p_run.add_argument("--profile", default="default", help="parameter profile from config/run.yaml")
    p_run.add_argument(
        "--run", dest="runs", action="append", help="this run of the stage (repeatable; new: named)"
    )
    p_run.add_argument("-p", "--param", dest="params", action="append", default=[], metavar="KEY=VALUE")
    p_run.add_argument(
        "--params", dest="params_text", default="", help='"key=value key2=[a, b]" in one string'
    )
    p_run.add_argument(
        "--force", action="store_true", help="re-execute the runs asked for even if up to date"
    )
    p_run.add_argument(
        "--with-deps", action="store_true", help="with --force: re-execute their dependencies too"
    )
    p_run.add_argument("--no-deps", action="store_true", help="do not (re)run the runs this one reads from")
    p_list = sub.add_parser("list", help="stages, parameters and runs")
    p_list.add_argument("--profile", default="default")
    p_list.add_argument("--runs", action="store_true", help="every run and whether it is up to date")
    p_promote = sub.add_parser("promote", help="write a named run into config/run.yaml")
    p_promote.add_argument("stage")
    p_promote.add_argument("run")
    p_forget = sub.add_parser("forget", help="drop a named run: its entry and page (--results: its results)")
    p_forget.add_argument("stage")
    p_forget.add_argument("run")
    p_forget.add_argument("--results", action="store_true", help="delete its results folder too")
    sub.add_parser("toc", help="write the committed _toc.yml from config/run.yaml (after adding a stage)")
    p_book = sub.add_parser("book", help="build the HTML book into _build/html (only what changed)")
    p_book.add_argument("--all", action="store_true", help="re-read every page, whatever changed")
    p_check = sub.add_parser("check-book", help="check _build/html (links, figures, tables, Chromium)")
    p_check.add_argument("--no-browser", action="store_true", help="skip the headless-Chromium pass")
    return parser


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "run":
        overrides = parse_overrides([*split_params(args.params_text), *args.params])
        try:
            status = runner.run(
                args.stages or None,
                profile=args.profile,
                runs=args.runs,
                overrides=overrides,
                force=args.force,
                force_dependencies=args.with_deps,
                with_dependencies=not args.no_deps,
            )
        finally:
            write_toc()
        print(json.dumps(status, indent=2))
        return 0
    if args.command == "list":
        return list_stages(args.profile, runs=args.runs)
    if args.command == "promote":
        return promote(args.stage, args.run)
    if args.command == "forget":
        return forget(args.stage, args.run, drop_results=args.results)
    if args.command == "toc":
        print(write_toc())
        return 0
    if args.command == "book":
        return build_book(full=args.all)
    return check_built_book(browser=not args.no_browser)


#: The exit status after Ctrl-C (128 + SIGINT, as a shell reports an interrupted command).
EXIT_INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, RmvaluesError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:  # Ctrl-C: one line, no traceback
        print(interrupted_line(exc), file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED


def interrupted_line(exc: KeyboardInterrupt) -> str:
    """The one line Ctrl-C ends a command with: the run interrupted and what of it is kept
    (:class:`~rmvalues.book.execution.RunInterrupted`), else that no run was being executed."""
    if isinstance(exc, RunInterrupted) and str(exc):
        return str(exc)
    return "interrupted: no run was being executed; the runs that finished are kept"


if __name__ == "__main__":
    sys.exit(main())
