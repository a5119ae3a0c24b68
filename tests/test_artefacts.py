"""Every artefact verified before reuse: trained model folders in the training manifest, a changed or deleted
model file refused by scoring before any work and making the training run stale (the runner re-runs it, and
the grid trains the changed RM again), the real exception of a failed model on the console, and a damaged
converted-model cache that names the model, the folder and the fix.

Hermetic: tiny random models built in-process, registries passed explicitly, a results root of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import nbformat
import pytest
import yaml
from tinymodels import registry_entry, save_tiny_model, write_registry

from rmvalues.book import runner
from rmvalues.book.config import RunSpec, load_config
from rmvalues.core.errors import ParameterError
from rmvalues.core.files import sha256_file
from rmvalues.core.handoff import ArtefactError, producer, verify_folder
from rmvalues.core.manifest import (
    ARTEFACTS,
    changed_artefacts,
    folder_checksums,
    folder_digest,
    read_manifest,
)
from rmvalues.models import ModelUnavailableError, get_spec, load_causal_lm, load_tokenizer
from rmvalues.models.loading import MARKER_FILE, model_info
from rmvalues.stages import scoring, training

RM = "tiny-llama-hh-head-n8-s0"


def _flip_byte(path: Path, offset: int = -1) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


# -- a trained RM, the training manifest and scoring ---------------------------------------------------------


@pytest.fixture
def trained(tmp_path, corpora_results):
    """A finished training run ``default`` (grid ``tiny`` on a tiny llama, one RM) in a results root of its
    own that holds the corpora run ``default``: ``(training params, results root, the RM's folder)``."""
    root = tmp_path / "results"
    shutil.copytree(corpora_results / "corpora", root / "corpora")
    base = save_tiny_model(tmp_path / "tiny-llama", "llama")
    reg = write_registry(tmp_path / "models.yaml", {"tiny-llama": registry_entry(base, "llama")})
    params = training.Params.build(
        grid="tiny",
        models=["tiny-llama"],
        extra_registry=[str(reg)],
        quantities=[8],
        settings={"max_length": 256, "eval_pairs": 4},
        prompts=["best_ever_one"],
        results_root=str(root),
    )
    training.run(params)
    return params, root, params.output_path() / "models" / RM


def _scoring(root: Path, out: Path, **kw) -> scoring.Params:
    values = dict(models=[RM], training_run="default", corpora=["big2_nouns"], prompts=["best_ever_one"],
                  max_words=4, batch_size=4, results_root=str(root), output_dir=str(out))  # fmt: skip
    return scoring.Params.build({**values, **kw})


def test_training_records_every_file_of_each_trained_model(trained):
    params, _, folder = trained
    manifest = read_manifest(params.output_path())
    recorded = manifest[ARTEFACTS][f"models/{RM}"]
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert set(recorded) == files and {"config.json", "tokenizer.json", "score.safetensors"} <= files
    assert all(recorded[f] == sha256_file(folder / f) for f in files)
    assert changed_artefacts(params.output_path()) == []
    # the folder knows the run that made it; its files are inputs of a run that reads it
    made = producer(folder)
    assert (made.label, made.folder, made.command) == (
        "training/default",
        f"models/{RM}",
        "make chapter NAME=training",
    )
    assert verify_folder(folder, "model") == {f"training/default/models/{RM}/{f}": recorded[f] for f in files}
    # the tables' outputs are unchanged (the model files are artefacts, not snapshot-restored outputs)
    assert not any(name.startswith("models/") for name in manifest["outputs"])


def test_a_flipped_weight_byte_is_refused_by_scoring_before_any_work(trained, tmp_path):
    params, root, folder = trained
    good = _scoring(root, tmp_path / "early")  # parameters checked while the files still matched
    res = scoring.run(_scoring(root, tmp_path / "ok"), progress=False)
    manifest = read_manifest(tmp_path / "ok")
    # scoring records the checksums of every file of the trained RM it loaded: inputs and the model entry
    recorded = read_manifest(params.output_path())[ARTEFACTS][f"models/{RM}"]
    assert (
        manifest["inputs"][f"training/default/models/{RM}/score.safetensors"] == recorded["score.safetensors"]
    )
    assert manifest["models"][0]["files"] == recorded and res.ok

    _flip_byte(folder / "score.safetensors")
    message = (
        rf"model '{RM}' cannot be used: .*models/{RM}/score\.safetensors was changed after the run that made it, "
        r"training/default \(sha256 .*\)\. Re-run training: `make chapter NAME=training`"
    )
    with pytest.raises(ParameterError, match=message):
        _scoring(root, tmp_path / "late")
    with pytest.raises(ArtefactError, match=message):
        scoring.run(good, progress=False)
    assert not (tmp_path / "early").exists()  # refused before any work: not even an output folder
    assert changed_artefacts(params.output_path()) == [f"models/{RM}/score.safetensors (changed)"]

    # the fix the message names: training again trains the changed RM again (its marker recorded the files)
    # (and the depth cell of the tiny grid, which starts from that probe's head)
    again = training.run(params)
    assert again.cells[["method", "status"]].values.tolist() == [
        ["head", "trained now"],
        ["top1+head", "trained now"],
    ]
    assert changed_artefacts(params.output_path()) == []
    assert scoring.run(_scoring(root, tmp_path / "after"), progress=False).ok


def test_a_deleted_model_file_makes_the_training_run_stale(trained, tmp_path):
    params, root, folder = trained
    (folder / "score.safetensors").unlink()
    assert changed_artefacts(params.output_path()) == [f"models/{RM}/score.safetensors (missing)"]
    spec = RunSpec(
        stage="training", run="default", notebook=Path("notebooks/training.ipynb"), title="t",
        parameters={"output_dir": str(params.output_path())}, params=params,
    )  # fmt: skip
    logs: list[str] = []
    assert runner.artefacts_changed(spec, log=logs.append)
    assert logs == [
        f"[redo] training/default: models/{RM}/score.safetensors (missing) changed after the run "
        "(checksum mismatch); re-executing"
    ]
    with pytest.raises(
        ParameterError, match=r"score\.safetensors is missing \(the manifest of training/default"
    ):
        _scoring(root, tmp_path / "out")
    # a file added to the folder is a change too
    (folder / "model.safetensors").write_bytes(b"x")
    assert f"models/{RM}/model.safetensors (not recorded)" in changed_artefacts(params.output_path())


# -- the runner re-executes a run whose artefacts changed ----------------------------------------------------

MAKER = """
from typing import ClassVar

from rmvalues.core.manifest import RunRecord
from rmvalues.core.params import StageParams, param


class Params(StageParams):
    STAGE: ClassVar[str] = "maker"
    n: int = param(3, help="bytes of the weights")


def run(params):
    record = RunRecord.for_params(params)
    folder = record.path("models/m")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "weights.bin").write_bytes(bytes(range(params.n)))
    (folder / "config.json").write_text("{}")
    record.add_artefacts("models/m")
    record.finish()
"""


@pytest.fixture
def maker_project(tmp_path, monkeypatch):
    """A miniature project with one stage whose run keeps a model folder (an artefact)."""
    root = tmp_path / "proj"
    (root / "config").mkdir(parents=True)
    (root / "_config.yml").write_text("title: t\n")
    pkg = tmp_path / "pkgs" / "maker_stage"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(MAKER)
    monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(tmp_path / "pkgs"), os.environ.get("PYTHONPATH", "")])
    )
    sys.modules.pop("maker_stage", None)
    from maker_stage import Params

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell(Params.notebook_cell())
    cell.metadata["tags"] = ["parameters"]
    body = "import maker_stage\n\nmaker_stage.run(maker_stage.Params.from_namespace(globals()))"
    nb.cells = [nbformat.v4.new_markdown_cell("# Maker"), cell, nbformat.v4.new_code_cell(body)]
    (root / "notebooks").mkdir()
    nbformat.write(nb, root / "notebooks" / "maker.ipynb")
    config = {
        "stages": {
            "maker": {
                "notebook": "notebooks/maker.ipynb",
                "package": "maker_stage",
                "title": "Maker",
                "runs": {"default": {"parameters": {}}},
            }
        },
        "profiles": {"default": {}},
    }
    (root / "config" / "run.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    monkeypatch.setenv("RMVALUES_ROOT", str(root))
    monkeypatch.delenv("RMVALUES_RESULTS", raising=False)
    return root


def test_the_runner_re_executes_a_run_whose_model_files_changed(maker_project):
    logs: list[str] = []
    assert runner.run(log=logs.append) == {"maker/default": "done"}
    out = maker_project / "results" / "maker" / "default"
    assert set(read_manifest(out)[ARTEFACTS]["models/m"]) == {"weights.bin", "config.json"}
    assert runner.run(log=logs.append) == {"maker/default": "skipped"}
    spec = runner.plan(load_config())[0]
    assert runner.is_up_to_date(spec, load_config(), log=logs.append)
    for change in (lambda f: _flip_byte(f, 0), Path.unlink):
        change(out / "models" / "m" / "weights.bin")
        assert not runner.is_up_to_date(spec, load_config(), log=lambda _m: None)
        logs.clear()
        assert runner.run(log=logs.append) == {"maker/default": "done"}
        assert any(m.startswith("[redo] maker/default: models/m/weights.bin (") for m in logs)
        assert (out / "models" / "m" / "weights.bin").read_bytes() == bytes(range(3))
        assert runner.run(log=logs.append) == {"maker/default": "skipped"}


# -- a failed model's exception on the console ---------------------------------------------------------------


def test_a_scoring_failure_shows_the_real_exception(tmp_path, corpora_results):
    good = save_tiny_model(tmp_path / "good-rm", "llama", "reward-model")
    gone = save_tiny_model(tmp_path / "gone-rm", "llama", "reward-model")
    (gone / "model.safetensors").unlink()  # the weights deleted after the folder was registered
    reg = write_registry(
        tmp_path / "models.yaml",
        {
            "good-rm": registry_entry(good, "llama", "reward-model"),
            "gone-rm": registry_entry(gone, "llama", "reward-model"),
        },
    )
    params = scoring.Params.build(
        models=["gone-rm", "good-rm"], training_run="", extra_registry=[str(reg)], corpora=["big2_nouns"],
        prompts=["best_ever_one"], max_words=4, batch_size=4, results_root=str(corpora_results),
        output_dir=str(tmp_path / "out"),
    )  # fmt: skip
    res = scoring.run(params, progress=False)
    assert [f["model"] for f in res.failures] == ["gone-rm"]
    with pytest.raises(RuntimeError) as info:
        res.raise_for_failures()
    message = str(info.value)
    assert "scoring failed for 1 model(s)" in message
    assert "gone-rm at load: ModelUnavailableError: model 'gone-rm': its folder" in message
    assert "OSError" in message and "gone-rm" in message and "model.safetensors" in message
    assert set(res.scores["model"]) == {"good-rm"}
    # the notebook's exception is what the runner prints on the console ("[FAIL] ... failed: RuntimeError: ...")
    assert scoring.text.failure_message(res.failures) == message


# -- a damaged converted-model cache -------------------------------------------------------------------------

SHA = "ab" * 32


@pytest.fixture
def converted(tmp_path, isolated_cache):
    """A ``gguf-package`` model whose converted folder is already in the (isolated) cache: a tiny llama with a
    conversion marker that records the files' checksums."""
    entry = registry_entry(tmp_path / "unused", "llama")
    entry["source"] = {
        "type": "gguf-package", "package": "tiny-gguf-package", "version": "1.0", "gguf_file": "tiny.gguf",
        "sha256": SHA, "path": "tiny.gguf", "quantization": "Q4_K_M",
    }  # fmt: skip
    reg = write_registry(tmp_path / "models.yaml", {"tiny-gguf": entry})
    spec = get_spec("tiny-gguf", extra=[reg])
    folder = save_tiny_model(isolated_cache / "models" / spec.local_folder_name, "llama")
    marker = {"name": spec.name, "source_sha256": SHA, "files": folder_checksums(folder)}
    (folder / MARKER_FILE).write_text(json.dumps(marker), encoding="utf-8")
    return spec, folder


def test_a_corrupted_cache_names_the_model_the_folder_and_the_fix(converted):
    spec, folder = converted
    model, _ = load_causal_lm(spec)  # intact: loads
    info = model_info(spec)  # the manifest records the converted folder's files
    assert info["files"]["model.safetensors"] == sha256_file(folder / "model.safetensors")
    _flip_byte(folder / "model.safetensors", 3)  # the header's length: a safetensors header error
    with pytest.raises(ModelUnavailableError) as err:
        load_causal_lm(spec)
    message = str(err.value)
    assert f"model 'tiny-gguf': its folder {folder} cannot be loaded (SafetensorError: " in message
    assert "model.safetensors (changed) no longer match the checksums of the conversion" in message
    assert f"Fix: delete the folder (`rm -r '{folder}'`): the next use converts the model again" in message


def test_a_corrupted_cache_without_recorded_checksums_still_names_the_fix(converted):
    spec, folder = converted
    marker = json.loads((folder / MARKER_FILE).read_text(encoding="utf-8"))
    del marker["files"]  # a conversion made before markers recorded checksums
    (folder / MARKER_FILE).write_text(json.dumps(marker), encoding="utf-8")
    (folder / "tokenizer.json").write_text("{ not json", encoding="utf-8")
    with pytest.raises(
        ModelUnavailableError, match=r"model 'tiny-gguf': its folder .* cannot be loaded"
    ) as err:
        load_tokenizer(spec)
    assert "the copy is damaged. Fix: delete the folder" in str(err.value) and str(folder) in str(err.value)


def test_scoring_keys_its_parts_and_its_staleness_by_the_trained_models_files(trained, tmp_path):
    """A trained RM's parts fingerprint and the scoring run's configuration key hold the digest of its files,
    so an RM trained again with other weights is scored again (not read from old parts, not skipped)."""
    params, root, _ = trained
    scoring.run(_scoring(root, tmp_path / "run"), progress=False)
    fingerprint = json.loads((tmp_path / "run" / "parts" / RM / "fingerprint.json").read_text())
    recorded = read_manifest(params.output_path())[ARTEFACTS][f"models/{RM}"]
    assert fingerprint["files_sha256"] == folder_digest(
        producer(params.output_path() / "models" / RM).inputs()
    )
    assert _scoring(root, tmp_path / "run").config_used()["model_files"] == {RM: folder_digest(recorded)}
