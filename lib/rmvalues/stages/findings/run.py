"""The findings page's table: every chapter's findings, read from the runs the parameters name.

``run(params)`` writes ``findings.parquet`` (one row per finding: chapter, run, the finding's fields) and its
CSV download ``tables/findings.csv``, with a ``manifest.json`` whose inputs are the chapters'
``findings.json`` files (their checksums).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ...core.findings import FIELDS, FILE, read_findings
from ...core.handoff import input_path
from ...core.manifest import RunRecord
from .params import Params

__all__ = ["Results", "run"]

COLUMNS = ("chapter", "run", *FIELDS)


@dataclass
class Results:
    """The findings of the chapters' runs (see :func:`run`)."""

    params: Params
    output_dir: Path
    table: pd.DataFrame  # findings.parquet: one row per finding, chapters in reading order

    def csv(self, name: str) -> Path:
        """The CSV download of one of the page's tables."""
        return self.output_dir / "tables" / f"{name}.csv"

    def of(self, chapter: str) -> pd.DataFrame:
        """The findings of one chapter (empty when the page leaves it out)."""
        return self.table[self.table["chapter"] == chapter]


def gather(params: Params, record: RunRecord | None = None) -> pd.DataFrame:
    """Every finding of the named runs, verified against their manifests, in the page's reading order."""
    rows = []
    for inp in params.reads():
        path, digest = input_path(inp, FILE, params.results_root or None)
        if record is not None:
            record.add_input(f"{inp.label}/{FILE}", digest)
        rows += [{"chapter": inp.stage, "run": inp.run, **f.as_dict()} for f in read_findings(path)]
    return pd.DataFrame(rows, columns=list(COLUMNS)).astype(
        {c: "float64" for c in ("value", "low", "high", "reference")}
    )


def run(params: Params, record: RunRecord | None = None) -> Results:
    """Gather the chapters' findings and write the page's table."""
    record = record or RunRecord.for_params(params)
    with record.timed("gather"):
        table = gather(params, record)
    record.write_parquet(table, "findings.parquet")
    record.write_csv(table, "tables/findings.csv")
    record.finish()
    return Results(params=params, output_dir=record.output_dir, table=table)
