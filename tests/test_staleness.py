"""Precise staleness: a run's up-to-date key holds the configuration it uses (its registry entries, corpora,
prompts, published files), so an edit elsewhere in config/ does not make it stale."""

from __future__ import annotations

import shutil

import pytest
import yaml

from rmvalues.core import paths
from rmvalues.stages import corpora, implicit, rm_statistics


@pytest.fixture
def config_copy(tmp_path, monkeypatch):
    root = tmp_path / "proj"
    shutil.copytree(paths.config_dir(), root / "config")
    (root / "_config.yml").write_text("title: t\n")
    monkeypatch.setenv("RMVALUES_ROOT", str(root))
    return root / "config"


def _edit_models(config, mutate):
    path = config / "models.yaml"
    raw = yaml.safe_load(path.read_text())
    mutate(raw["models"])
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def test_an_edit_elsewhere_in_the_registry_leaves_other_runs_alone(config_copy, shared_mirror):
    before = {
        s.STAGE: s.build({}).config_used() for s in (corpora.Params, implicit.Params, rm_statistics.Params)
    }
    # a new reward model, and a changed note of a used model: nothing these runs use
    _edit_models(
        config_copy,
        lambda m: (
            m.update({"my-rm": {**m["armorm-llama3-8b-v0.1"], "hub_id": "org/my-rm"}}),
            m["gemma3-270m"].update(notes="edited"),
        ),
    )
    after = {
        s.STAGE: s.build({}).config_used() for s in (corpora.Params, implicit.Params, rm_statistics.Params)
    }
    assert after == before
    # a quirk of a model they use (its dtype) changes the runs that load it, not statistics
    _edit_models(config_copy, lambda m: m["gemma3-270m"].update(dtype="bfloat16"))
    changed = {
        s.STAGE: s.build({}).config_used() for s in (corpora.Params, implicit.Params, rm_statistics.Params)
    }
    assert changed["implicit"] != before["implicit"] and changed["corpora"] != before["corpora"]
    assert changed["statistics"] == before["statistics"]
