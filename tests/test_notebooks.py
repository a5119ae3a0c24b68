"""Source notebooks follow the book's anatomy and are committed without outputs; the TOC matches the config."""

from __future__ import annotations

import importlib
import re

import nbformat
import papermill
import pytest

from rmvalues import paths, runner

CONFIG = runner.load_config()
NOTEBOOKS = sorted({st.notebook for st in CONFIG.stages.values()})


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_anatomy(path):
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
        if re.match(r"^# \S", line)
    ]
    assert len(headings) == 1, f"{path.name}: expected one H1, found {headings}"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: needs exactly one cell tagged 'parameters'"
    declared = papermill.inspect_notebook(str(path))
    for name in runner.INJECTED:
        assert name in declared, f"{path.name}: parameters cell must declare {name}"
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "rmvalues" in code, f"{path.name}: logic belongs in lib/rmvalues; the notebook must call it"
    assert "RunRecord" in code or "record" in code.lower(), f"{path.name}: must write a manifest"


@pytest.mark.parametrize("stage", list(CONFIG.stages), ids=str)
def test_stage_validator_is_importable(stage):
    spec = CONFIG.stages[stage]
    assert spec.validator, f"stage {stage} declares no validator"
    module, _, func = spec.validator.partition(":")
    assert callable(getattr(importlib.import_module(module), func))


def test_toc_is_in_sync_with_run_config():
    committed = (paths.project_root() / "_toc.yml").read_text(encoding="utf-8")
    assert committed == runner.toc_text(CONFIG), "run `python -m rmvalues toc` and commit _toc.yml"


def test_profiles_validate_for_every_run():
    """Every profile's parameters pass the notebooks' and the stages' own checks (no work is done)."""
    for profile in CONFIG.profiles:
        runner.validate_plan(runner.plan(CONFIG, profile=profile), CONFIG, log=lambda *_: None)
