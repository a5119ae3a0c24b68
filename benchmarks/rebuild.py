"""How long an unchanged ``make all`` takes with many named runs, and with one of them changed.

Run it after ``make all`` on a checkout (it needs the default runs): ``make bench-rebuild`` (or
``.venv/bin/python benchmarks/rebuild.py --runs 25``). It creates ``--runs`` named runs of the findings page
(the cheapest stage: each is its own book page), then times, side by side in one process:

1. ``make all`` right after (every run up to date, the book already built with those pages): the runner's
   checks, a book build that has nothing to do and a book check that renders no page;
2. ``make all`` after one named run's parameters changed in ``results/named_runs.yaml`` (its page leaves the
   corpora chapter out): that run re-executed, one page rebuilt incrementally, one page rendered by Chromium;
3. for comparison, the naive path the project used before: ``python -m rmvalues book --all`` and a check
   that renders every page.

Then it forgets the named runs (their entries, pages and results) and rebuilds the book, so the checkout is as
before. The last line is ``speedup_vs_naive: X`` (the naive rebuild's seconds over the unchanged
``make all``'s). Figures go to ``benchmarks/results/rebuild.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))
from rmvalues.book.config import read_named_runs, write_named_runs  # noqa: E402

PY = ROOT / ".venv" / "bin" / "python"
STAGE = "findings"


def _run(cmd: list[str], env: dict[str, str] | None = None) -> float:
    """Seconds ``cmd`` took in the project root (its output discarded; a failure stops the benchmark)."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return seconds


def _chapter(run: str, params: str) -> list[str]:
    return ["make", "chapter", f"NAME={STAGE}", f"RUN={run}", f"PARAMS={params}"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=25, help="named runs to create (default 25)")
    ap.add_argument("--keep", action="store_true", help="keep the named runs afterwards")
    args = ap.parse_args()
    if not (ROOT / "results" / STAGE / "default" / "manifest.json").is_file():
        sys.exit("run `make all` first: the benchmark needs the default runs")
    names = [f"bench-{i:02d}" for i in range(1, args.runs + 1)]
    setup = sum(_run(_chapter(name, "")) for name in names)
    _run(["make", "all"])  # the book now holds every named run's page (a full build: pages were added)
    figures: dict[str, float] = {"create_runs_s": round(setup, 1)}
    figures["unchanged_make_all_s"] = round(_run(["make", "all"]), 1)
    # one named run changed while nothing runs (its entry edited, as a user edits results/named_runs.yaml or
    # a new `make chapter` would): the next make all re-executes it, rebuilds its page and renders it
    runs = read_named_runs()
    runs[STAGE][names[0]]["parameters"] = {"corpora_run": ""}
    write_named_runs(runs)
    figures["one_changed_make_all_s"] = round(_run(["make", "all"]), 1)
    figures["naive_book_all_s"] = round(_run([str(PY), "-m", "rmvalues", "book", "--all"]), 1)
    (ROOT / "_build" / "book-check.json").unlink(missing_ok=True)  # the naive check renders every page
    figures["naive_check_all_pages_s"] = round(_run([str(PY), "-m", "rmvalues", "check-book"]), 1)
    if not args.keep:
        for name in names:
            _run([str(PY), "-m", "rmvalues", "forget", STAGE, name, "--results"])
        _run(["make", "book"])
    naive = figures["naive_book_all_s"] + figures["naive_check_all_pages_s"]
    record = {
        "named_runs": args.runs,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        **figures,
        "speedup_vs_naive": round(naive / figures["unchanged_make_all_s"], 1),
    }
    out = ROOT / "benchmarks" / "results" / "rebuild.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print("| step | seconds |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in figures.items()))
    print(f"speedup_vs_naive: {record['speedup_vs_naive']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
