"""Every stage notebook has the book's anatomy and declares exactly its stage's parameter schema; every profile
validates (with a temporary results root: planned upstream runs have not run)."""

from __future__ import annotations

import ast
import re

import nbformat
import papermill
import pytest

from rmvalues.book import runner
from rmvalues.book.config import load_config
from rmvalues.core.params import INJECTED

CONFIG = load_config()
STAGES = list(CONFIG.stages)
#: What a display-only notebook must not do (the library writes every output).
WRITES = ("RunRecord", "write_parquet", "write_csv", ".to_parquet(", ".to_csv(", "open(", ".finish(")


def _code(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code"]


@pytest.mark.parametrize("stage", STAGES)
def test_notebook_anatomy(stage):
    path = CONFIG.stages[stage].notebook
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: committed with outputs (strip them)"
            assert cell.execution_count is None
    headings = [
        line
        for c in nb.cells
        if c.cell_type == "markdown"
        for line in c.source.splitlines()
        if re.match(r"^#{1,2} \S", line)
    ]
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), "title first"
    assert [h for h in headings if h.startswith("# ")] == [headings[0]], f"{path.name}: exactly one H1"
    assert headings[-1] == "## Summary", f"{path.name}: the last section is the Summary"
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: needs exactly one cell tagged 'parameters'"
    assert all(c.cell_type == "markdown" for c in nb.cells[: tagged[0]]), (
        "title and overview precede parameters"
    )
    run_cell = nb.cells[tagged[0] + 1].source
    package = CONFIG.stages[stage].package
    assert f"from {package.rsplit('.', 1)[0]} import {package.rsplit('.', 1)[1]} as stage" in run_cell
    assert "params = stage.Params.from_namespace(globals())" in run_cell
    assert "results = stage.run(params)" in run_cell
    later = "\n".join(_code(nb)[2:])
    assert "stage.run(" not in later and "Params" not in later, f"{path.name}: one run() call, in one cell"
    offending = [w for w in WRITES if w in "\n".join(_code(nb))]
    assert offending == [], (
        f"{path.name}: the notebook writes files itself ({offending}); the stage's run() must"
    )


@pytest.mark.parametrize("stage", STAGES)
def test_the_parameters_cell_declares_exactly_the_schema(stage):
    """Rule 4: the notebook's parameters, the runner's validation and the CLI come from one schema."""
    spec = CONFIG.stages[stage]
    schema = spec.schema()
    declared = papermill.inspect_notebook(str(spec.notebook))
    assert list(declared) == [n for n in schema.model_fields if n not in INJECTED] + list(INJECTED)
    defaults = schema.defaults()
    for name, info in declared.items():
        assert ast.literal_eval(info["default"]) == defaults[name], f"{stage}: default of {name} differs"
    for name, field in schema.model_fields.items():
        assert field.description, f"{stage}: parameter {name} has no help text"


@pytest.mark.parametrize("profile", list(CONFIG.profiles))
def test_profiles_validate_for_every_run(profile, tmp_path, monkeypatch):
    """Every profile's parameters pass their schemas before any work, from a fresh results root (the state
    of a newcomer's clone, whatever results/ holds): checks that need an upstream output are deferred to
    the planned run that produces it."""
    monkeypatch.setenv("RMVALUES_RESULTS", str(tmp_path / "results"))
    specs = runner.plan(CONFIG, profile=profile)
    assert {s.stage for s in specs} == set(STAGES)
    runner.validate_plan(specs, CONFIG, log=lambda *_: None)
