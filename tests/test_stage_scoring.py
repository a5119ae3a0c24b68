"""The RM-scoring stage: parameters, the grid, resumability, failures, kill-and-resume, sharding, the command
line derived from the schema, and the hand-offs (words from the corpora run, RMs from a training run).

Every model here is a tiny RANDOM model of the real classes (Llama, Gemma 3) with the real chat-template formats
(ChatML, Gemma), built in-process and registered in an extra registry file passed explicitly: no hub, no
downloads.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tinymodels as T

from rmvalues.core.errors import MissingInputError, ParameterError
from rmvalues.core.files import sha256_file
from rmvalues.data.corpora import corpora_input, read_corpora_table
from rmvalues.data.prompts import load_prompts
from rmvalues.data.scores import SCORE_COLUMNS, labels_of, read_live_scores
from rmvalues.engine import RewardScorer, split_template, word_candidates
from rmvalues.models import get_spec, load_reward_model
from rmvalues.stages import scoring
from rmvalues.stages.scoring import cli, grid
from rmvalues.stages.scoring.score import UNIT_DELAY_ENV

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny_registry(tmp_path):
    entries = {}
    for fam in ("llama", "gemma"):
        folder = T.save_tiny_model(tmp_path / f"tiny-{fam}-rm", fam, "reward-model")
        entries[f"tiny-{fam}-rm"] = T.registry_entry(folder, fam, "reward-model")
    # a model folder that exists but whose weights cannot be read: it fails only when loaded
    broken = T.save_tiny_model(tmp_path / "broken-rm", "llama", "reward-model")
    for weights in broken.glob("*.safetensors"):
        weights.write_bytes(b"not a safetensors file")
    entries["broken-rm"] = T.registry_entry(broken, "llama", "reward-model")
    entries["absent-rm"] = T.registry_entry(tmp_path / "nowhere", "llama", "reward-model")
    return T.write_registry(tmp_path / "models.yaml", entries)


def test_a_model_whose_weights_are_missing_fails_before_any_work(tiny_registry, corpora_results, tmp_path):
    with pytest.raises(ParameterError, match=r"model 'absent-rm': its local folder .*nowhere does not exist"):
        _params(tiny_registry, corpora_results, tmp_path / "out", models=["tiny-llama-rm", "absent-rm"])
    assert not (tmp_path / "out").exists()


def _params(reg: Path, results_root: Path, out: Path | None = None, **kw) -> scoring.Params:
    base = dict(models=["tiny-llama-rm", "tiny-gemma-rm"], training_run="", extra_registry=[str(reg)],
                corpora=["big2_nouns"], prompts=["best_ever_one", "worst_world_please"], max_words=6,
                batch_size=4, results_root=str(results_root), output_dir=str(out) if out else "")  # fmt: skip
    return scoring.Params.build({**base, **kw})


def _labels(results_root: Path) -> pd.DataFrame:
    table, _ = read_corpora_table(corpora_input(), results_root, ["big2_nouns"])
    return labels_of(table, ["big2_nouns"])


def test_parameter_messages(tiny_registry, corpora_results):
    _params(tiny_registry, corpora_results)
    cases = {
        "models": (["nope"], "registered: .*tiny-llama-rm"),
        "corpora": (["nope"], "unknown.*big2_nouns"),
        "prompts": (["best_of_all"], "unknown prompt id"),
        "candidates": ("letters", "'words' or 'vocab'"),
        "dtype": ("int8", "'auto', 'float32'"),
        "device": ("tpu", "'auto', 'cpu' or 'cuda'"),
        "method": ("magic", "'auto', 'full'"),
        "batch_size": (-1, "greater than or equal to 0"),
        "extra_registry": (["nowhere.yaml"], "do not exist"),
    }
    for key, (value, pattern) in cases.items():
        with pytest.raises(ParameterError, match=pattern):
            _params(tiny_registry, corpora_results, **{key: value})
    with pytest.raises(ParameterError, match="not registered reward-model"):
        _params(tiny_registry, corpora_results, models=["smollm2-135m-instruct"])
    with pytest.raises(ParameterError, match="listed twice"):
        _params(tiny_registry, corpora_results, models=["tiny-llama-rm", "tiny-llama-rm"])
    # the corpora run must hold the corpora (checked before any work)
    with pytest.raises(ParameterError, match="holds .*not \\['big2_expanded'\\]"):
        _params(tiny_registry, corpora_results, corpora=["big2_expanded"])


def test_select_words_is_balanced_and_deterministic(corpora_results):
    labels = _labels(corpora_results)
    sel = grid.select_words(labels, 6)
    assert sel["word"].nunique() == 6
    assert sel.drop_duplicates("word")["category"].value_counts().to_dict() == {"Agency": 3, "Communion": 3}
    assert sel.equals(grid.select_words(labels, 6))


def test_shards_cover_the_grid_once():
    units = grid.plan_units(["a", "b"], ["p1", "p2", "p3"], {"b": 2})
    assert len(units) == 1 * 3 + 2 * 3
    shards = [grid.shard(units, r, 3) for r in range(3)]
    assert sorted(map(repr, sum(shards, []))) == sorted(map(repr, units))


def test_run_writes_the_long_table_and_resumes(tiny_registry, corpora_results, tmp_path):
    out = tmp_path / "results" / "scoring" / "t"
    res = scoring.run(_params(tiny_registry, corpora_results, out), progress=False)
    assert res.ok and res.scored_units == 4 and res.skipped_units == 0
    df = pd.read_parquet(out / "scores.parquet")
    assert list(df.columns) == list(SCORE_COLUMNS)
    pd.testing.assert_frame_equal(read_live_scores(out / "scores.parquet"), df)
    pd.testing.assert_frame_equal(res.scores, df)
    labels = grid.select_words(_labels(corpora_results), 6)
    assert len(df) == 2 * 2 * len(labels)
    assert set(df["source"]) == {"live"} and set(df["framing"]) == {"positive", "negative"}
    assert not df.duplicated(["model", "prompt_id", "corpus", "word", "category"]).any()
    tokens = pd.read_parquet(out / "tokens.parquet")
    assert set(tokens["how"]) == {"in-context"}
    # the scores are the engine's (uncached reference) scores
    model, tok, _ = load_reward_model(get_spec("tiny-gemma-rm", extra=[tiny_registry]))
    split = split_template(tok, load_prompts().set_index("prompt_id").loc["best_ever_one", "text"])
    words = sorted(labels["word"].unique())
    ref = RewardScorer(model, tok, method="full").score(
        split, [c.ids for c in word_candidates(tok, split, words)]
    )
    got = df[(df["model"] == "tiny-gemma-rm") & (df["prompt_id"] == "best_ever_one")].drop_duplicates("word")
    assert np.allclose(got.set_index("word").loc[words, "score"].to_numpy(), ref, atol=1e-4)
    # a rerun skips every unit and yields the same table
    again = scoring.run(_params(tiny_registry, corpora_results, out), progress=False)
    assert again.scored_units == 0 and again.skipped_units == 4
    assert scoring.text.key_numbers(again)["scoring"].endswith("every unit was reused from an earlier run")
    pd.testing.assert_frame_equal(pd.read_parquet(out / "scores.parquet"), df)
    # a changed parameter (the word list) discards the parts of every model
    third = scoring.run(_params(tiny_registry, corpora_results, out, max_words=4), progress=False)
    assert third.scored_units == 4


def test_words_and_inputs_come_from_the_corpora_run(tiny_registry, corpora_results, tmp_path):
    out = tmp_path / "run"
    res = scoring.run(_params(tiny_registry, corpora_results, out, models=["tiny-llama-rm"]), progress=False)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    upstream = json.loads(
        (corpora_results / "corpora" / "default" / "manifest.json").read_text(encoding="utf-8")
    )
    assert manifest["inputs"]["corpora/default/corpora.parquet"] == upstream["outputs"]["corpora.parquet"]
    assert "paper/config/prompts" in manifest["inputs"]
    assert not any(k.startswith("paper/corpora/") for k in manifest["inputs"])  # corpus files are not read
    assert {o for o in manifest["outputs"] if "/" not in o} == {
        "scores.parquet",
        "tokens.parquet",
        "timings.parquet",
        "medians.parquet",
        "findings.json",
    }
    # the book's CSV downloads: every reader table, written even when empty (the links always resolve)
    assert {o for o in manifest["outputs"] if "/" in o} == {
        f"tables/{name}.csv" for name in scoring.READER_TABLES
    }
    assert all(res.csv(name).is_file() for name in scoring.READER_TABLES)
    assert [m["name"] for m in manifest["models"]] == ["tiny-llama-rm"]
    assert manifest["extra"]["units"] == {"total": 2, "skipped": 0, "scored": 2}
    # a results root without the corpora run: one clear error naming the run to execute first
    empty = tmp_path / "empty-results"
    with pytest.raises(MissingInputError, match="run stage 'corpora'"):
        scoring.run(_params(tiny_registry, empty, tmp_path / "x", models=["tiny-llama-rm"]), progress=False)
    assert res.ok


def test_chapter_tables(tiny_registry, corpora_results, tmp_path):
    res = scoring.run(_params(tiny_registry, corpora_results, tmp_path / "run"), progress=False)
    assert list(res.models["model"]) == ["tiny-llama-rm", "tiny-gemma-rm"]
    assert (res.inputs.checks["problems"] == 0).all() and len(res.inputs.checks) == 2
    assert set(res.inputs.examples["model"]) == {"tiny-llama-rm", "tiny-gemma-rm"}
    compact = scoring.tables.examples_by_model(res.inputs.examples)
    assert list(compact["model"]) == ["tiny-llama-rm", "tiny-gemma-rm"]
    assert compact["words as tokens [ids]"].str.count("; ").eq(3).all()  # four example words per RM
    assert set(res.medians["category"]) == {"Agency", "Communion"}
    assert list(res.median_table.columns) == ["Agency", "Communion"]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "run" / "medians.parquet"), res.medians)
    assert len(res.top_bottom) == 2 * 2  # models x framings
    assert not res.published.empty and set(res.published["source"]) == {"published"}
    assert res.comparison.empty  # no tiny RM has published scores
    registered = scoring.text.registration(res.specs, res.training_registry).set_index("model")
    assert sorted(registered.index) == ["tiny-gemma-rm", "tiny-llama-rm"]
    assert "tiny random llama" in registered.loc["tiny-llama-rm", "note"]
    # one figure: a row of live and a row of published medians for the corpus, a column per framing
    fig = scoring.figures.plot_category_medians(res.medians, res.published_medians)
    assert len(fig.axes) == 2 * 2 and fig.get_figwidth() <= 9
    assert len(scoring.figures.plot_category_medians(res.medians).axes) == 2
    numbers = scoring.text.key_numbers(res)
    assert numbers["n_rms"] == "2" and numbers["n_compared"] == "0"
    assert numbers["live_published_rho"] == "n/a" and numbers["n_problems"] == "0"
    assert numbers["live_top"].startswith("positive prompts: ")  # per framing, over the 2 RMs
    assert "; negative prompts: " in numbers["live_top"] and numbers["live_top"].count(" of 2") == 2
    assert numbers["expected_rank"] == f"{(res.scores['word'].nunique() + 1) / 2:g}"
    assert numbers["scoring"].startswith("took ") and numbers["scoring"].endswith(" candidates per second")
    assert len(res.findings) == 3  # findings.json: one per RM, then the pair
    assert numbers["framing_findings"].count("(D = ") == 2 and " minus " in numbers["framing_findings"]
    # one prompt per framing, so one adjective each: no interval, the verdict says inconclusive
    assert numbers["framing_findings"].count("inconclusive, no interval") == 3
    assert numbers["n_adjectives"] == "1 positive and 1 negative" and numbers["n_contrast_prompts"] == "2"
    assert numbers["n_splits"] == "2" and numbers["p_min"] == "1.00"
    contrasts = res.framing_contrasts
    assert set(contrasts["rm"]) == {"tiny-gemma-rm", "tiny-llama-rm", "tiny-llama-rm \u2212 tiny-gemma-rm"}
    assert set(contrasts["category"]) == {"Agency", "Communion"} and (contrasts["unit"] == "adjective").all()
    shown = scoring.tables.framing_contrast_table(contrasts, scoring.tables.BIG2_CATEGORY)
    assert len(shown) == 3 and shown.columns[3] == "D"
    assert all(isinstance(v, str) and v for v in numbers.values())


def test_trained_rms_come_from_the_training_run(tiny_registry, corpora_results, tmp_path):
    """``training_run`` registers the RMs of a training run (its registry.yaml, verified by its manifest)."""
    root = tmp_path / "results"
    shutil.copytree(corpora_results / "corpora", root / "corpora")
    run_dir = root / "training" / "t1"
    run_dir.mkdir(parents=True)
    shutil.copy(tiny_registry, run_dir / "registry.yaml")
    (run_dir / "manifest.json").write_text(json.dumps({"outputs": {}}), encoding="utf-8")
    params = _params(tiny_registry, root, tmp_path / "run", models=["tiny-llama-rm"], extra_registry=[],
                     training_run="t1", prompts=["best_ever_one"], max_words=4)  # fmt: skip
    assert params.registry_files() == [str(run_dir / "registry.yaml")]
    with pytest.raises(MissingInputError, match="registry.yaml is not among the outputs"):
        scoring.run(params, progress=False)
    digest = sha256_file(run_dir / "registry.yaml")
    (run_dir / "manifest.json").write_text(
        json.dumps({"outputs": {"registry.yaml": digest}}), encoding="utf-8"
    )
    res = scoring.run(params, progress=False)
    assert res.ok and set(res.scores["model"]) == {"tiny-llama-rm"}
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["inputs"]["training/t1/registry.yaml"] == digest
    assert res.training_registry == str(run_dir / "registry.yaml")
    registered = scoring.text.registration(res.specs, res.training_registry)
    assert registered["registered"].tolist() == ["registered by the training run"]


def _args(reg: Path, results_root: Path, *more: str) -> list[str]:
    return ["--training-run", "", "--extra-registry", str(reg), "--results-root", str(results_root), *more]


def test_cli_options_are_the_schema(tiny_registry, corpora_results, tmp_path, capsys):
    parser = cli.build_parser()
    options = set(vars(parser.parse_args([])))
    assert options == set(scoring.Params.model_fields) | {"no_progress"}
    params, args = cli.parse_params(
        _args(tiny_registry, corpora_results, "--models", "tiny-llama-rm", "--max-words", "4", "--prompts")
    )
    assert params.max_words == 4 and params.prompts == [] and params.models == ["tiny-llama-rm"]
    assert params.run_name == cli.CLI_RUN and params.training_run == "" and not args.no_progress
    assert params.output_path() == corpora_results / "scoring" / cli.CLI_RUN
    # invalid parameters and missing upstream outputs: exit status 2 before any work
    assert cli.main(_args(tiny_registry, corpora_results, "--models", "nope")) == 2
    assert "invalid scoring parameters" in capsys.readouterr().err
    assert cli.main(_args(tiny_registry, tmp_path / "nothing", "--models", "tiny-llama-rm")) == 2
    assert "run stage 'corpora'" in capsys.readouterr().err


def test_a_failing_model_is_reported_and_the_others_scored(tiny_registry, corpora_results, tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(
        _args(
            tiny_registry,
            corpora_results,
            "--models",
            "broken-rm",
            "tiny-llama-rm",
            "--prompts",
            "best_ever_one",
            "--max-words",
            "4",
            "--output-dir",
            str(out),
            "--no-progress",
        )  # fmt: skip
    )
    assert code == 1
    assert "FAILED broken-rm" in capsys.readouterr().err
    df = pd.read_parquet(out / "scores.parquet")
    assert set(df["model"]) == {"tiny-llama-rm"} and len(df) > 0
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert [f["model"] for f in manifest["extra"]["failures"]] == ["broken-rm"]


def _vocab_args(reg: Path) -> list[str]:
    return ["--models", "tiny-llama-rm", "tiny-gemma-rm", "--training-run", "", "--extra-registry", str(reg),
            "--candidates", "vocab", "--prompts", "best_ever_one", "worst_ever_one", "good_time_please",
            "--chunk-size", "100", "--batch-size", "16"]  # fmt: skip


def _cli(out: Path, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "rmvalues.stages.scoring", *args, "--output-dir", str(out), "--no-progress"]


def _env(**extra: str) -> dict[str, str]:
    # one thread per process: tiny models are all per-op overhead, which idle OpenMP threads multiply
    return {
        **os.environ,
        "PYTHONHASHSEED": "0",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        **extra,
    }


def test_kill_and_resume_gives_the_same_table(tiny_registry, shared_mirror, tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    args = _vocab_args(tiny_registry)
    proc = subprocess.Popen(
        _cli(killed, args), env=_env(**{UNIT_DELAY_ENV: "0.3"}), cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and len(list((killed / "parts").rglob("*.parquet"))) < 3:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    n_parts = len(list((killed / "parts").rglob("*.parquet")))
    assert 3 <= n_parts < 24, "the run should be killed part-way"
    assert not (killed / "scores.parquet").exists()
    assert cli.main([*args, "--output-dir", str(killed), "--no-progress"]) == 0  # resume
    assert cli.main([*args, "--output-dir", str(clean), "--no-progress"]) == 0  # uninterrupted
    a, b = pd.read_parquet(killed / "scores.parquet"), pd.read_parquet(clean / "scores.parquet")
    assert not a.duplicated(["model", "prompt_id", "word"]).any()
    pd.testing.assert_frame_equal(a, b)
    assert set(a["corpus"]) == {"vocab"} and a["model"].nunique() == 2


@pytest.mark.slow  # two launched processes, each importing torch + transformers (about 30 s here)
def test_two_process_sharding_with_accelerate(tiny_registry, corpora_results, tmp_path):
    sharded, single = tmp_path / "sharded", tmp_path / "single"
    args = _args(tiny_registry, corpora_results, "--models", "tiny-llama-rm", "tiny-gemma-rm", "--prompts",
                 "best_ever_one", "worst_ever_one", "--max-words", "4")  # fmt: skip
    # accelerate 1.15: `--cpu` starts ONE process unless MPI is set up; the torchrun-based launcher
    # (`--multi_gpu`) starts two, which run on the CPU with gloo here
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--multi_gpu",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", "29517", "-m", "rmvalues.stages.scoring"]  # fmt: skip
    run = subprocess.run(
        [*launch, *_cli(sharded, args)[3:]], env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=240
    )
    assert run.returncode == 0, run.stderr[-3000:]
    timings = pd.read_parquet(sharded / "timings.parquet")
    assert set(timings["rank"]) == {0, 1}  # both processes scored units
    assert cli.main([*args, "--output-dir", str(single), "--no-progress"]) == 0
    pd.testing.assert_frame_equal(
        pd.read_parquet(sharded / "scores.parquet"), pd.read_parquet(single / "scores.parquet")
    )
