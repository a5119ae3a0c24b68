"""The RM-scoring stage: parameters, the grid, resumability, failures, kill-and-resume, sharding.

Every model here is a tiny RANDOM model of the real classes (Llama, Gemma 3, Gemma 2) with the real chat-template
formats (ChatML, Llama 3, Gemma), built in-process: no hub, no downloads.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tinymodels as T

from rmvalues import models, scores, scoring
from rmvalues.scoring_engine import (
    RewardScorer,
    split_template,
    word_candidates,
)

ROOT = Path(__file__).resolve().parents[1]


PROMPT = "What, in one word, is the best thing in the world?"


WORDS = ["honest", "nurse", "friendly", "kindness", "peace", "war", "competent", "lazy", "selfish", "loyal",
         "joy", "freedom", "x", "self-confidence", "ambition"]  # fmt: skip


@pytest.fixture
def tiny_registry(tmp_path, monkeypatch):
    entries = {}
    for fam in ("llama", "gemma"):
        folder = T.save_tiny_model(tmp_path / f"tiny-{fam}-rm", fam, "reward-model")
        entries[f"tiny-{fam}-rm"] = T.registry_entry(folder, fam, "reward-model")
    entries["broken-rm"] = T.registry_entry(tmp_path / "nowhere", "llama", "reward-model")
    reg = T.write_registry(tmp_path / "models.yaml", entries)
    monkeypatch.setenv(models.ENV_EXTRA_REGISTRY, str(reg))
    return reg


def _params(**kw):
    base = dict(models=["tiny-llama-rm", "tiny-gemma-rm"], corpora=["big2_nouns"],
                prompts=["best_ever_one", "worst_world_please"], max_words=6, batch_size=4)  # fmt: skip
    return {**base, **kw}


def test_check_parameters_messages(tiny_registry, shared_mirror):
    scoring.check_parameters(_params())
    cases = {
        "models": (["nope"], "registered reward models: .*tiny-llama-rm"),
        "corpora": (["nope"], "unknown corpus.*big2_nouns"),
        "prompts": (["best_of_all"], "unknown prompt id"),
        "candidates": ("letters", "valid: words, vocab"),
        "dtype": ("int8", "valid: auto, float32"),
        "device": ("tpu", "valid: auto, cpu, cuda"),
        "method": ("magic", "valid: auto, full"),
        "batch_size": (-1, "positive integer, or 'auto'"),
    }
    for key, (value, pattern) in cases.items():
        with pytest.raises(ValueError, match=pattern):
            scoring.check_parameters(_params(**{key: value}))
    with pytest.raises(ValueError, match="not a reward model|unknown reward model"):
        scoring.check_parameters(_params(models=["smollm2-135m-instruct"]))


def test_select_words_is_balanced_and_deterministic(shared_mirror):
    labels = scores.corpus_labels("big2_nouns")
    sel = scoring.select_words(labels, 6)
    assert sel["word"].nunique() == 6
    assert sel.drop_duplicates("word")["category"].value_counts().to_dict() == {"Agency": 3, "Communion": 3}
    assert sel.equals(scoring.select_words(labels, 6))


def test_shards_cover_the_grid_once():
    units = scoring.plan_units(["a", "b"], ["p1", "p2", "p3"], {"b": 2})
    assert len(units) == 1 * 3 + 2 * 3
    shards = [scoring.shard(units, r, 3) for r in range(3)]
    assert sorted(map(repr, sum(shards, []))) == sorted(map(repr, units))


def test_run_scoring_writes_the_long_table_and_resumes(tiny_registry, shared_mirror, tmp_path):
    out = tmp_path / "results" / "scoring" / "t"
    res = scoring.run_scoring(_params(), out, progress=False)
    assert res.ok and res.scored_units == 4 and res.skipped_units == 0
    df = pd.read_parquet(out / "scores.parquet")
    assert list(df.columns) == list(scores.SCORE_COLUMNS)
    pd.testing.assert_frame_equal(scores.load_live_scores("t", results_root=tmp_path / "results"), df)
    labels = scoring.select_words(scores.corpus_labels("big2_nouns"), 6)
    assert len(df) == 2 * 2 * len(labels)
    assert set(df["source"]) == {"live"} and set(df["framing"]) == {"positive", "negative"}
    assert not df.duplicated(["model", "prompt_id", "corpus", "word", "category"]).any()
    tokens = pd.read_parquet(out / "tokens.parquet")
    assert set(tokens["how"]) == {"in-context"}
    # the scores are the engine's (uncached reference) scores
    model, tok, _ = scoring.load_reward_model("tiny-gemma-rm")
    split = split_template(tok, scores.load_prompts().set_index("prompt_id").loc["best_ever_one", "text"])
    words = sorted(labels["word"].unique())
    ref = RewardScorer(model, tok, method="full").score(
        split, [c.ids for c in word_candidates(tok, split, words)]
    )
    got = df[(df["model"] == "tiny-gemma-rm") & (df["prompt_id"] == "best_ever_one")].drop_duplicates("word")
    assert np.allclose(got.set_index("word").loc[words, "score"].to_numpy(), ref, atol=1e-4)
    # a rerun skips every unit and yields the same table
    again = scoring.run_scoring(_params(), out, progress=False)
    assert again.scored_units == 0 and again.skipped_units == 4
    pd.testing.assert_frame_equal(pd.read_parquet(out / "scores.parquet"), df)
    # a changed parameter (the word list) discards the parts of every model
    third = scoring.run_scoring(_params(max_words=4), out, progress=False)
    assert third.scored_units == 4


def test_a_failing_model_is_reported_and_the_others_scored(tiny_registry, shared_mirror, tmp_path, capsys):
    out = tmp_path / "run"
    code = scoring.main(
        [
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
        ]  # fmt: skip
    )
    assert code == 1
    assert "FAILED broken-rm" in capsys.readouterr().err
    df = pd.read_parquet(out / "scores.parquet")
    assert set(df["model"]) == {"tiny-llama-rm"} and len(df) > 0
    assert (out / "manifest.json").is_file()


VOCAB_ARGS = ["--models", "tiny-llama-rm", "tiny-gemma-rm", "--candidates", "vocab", "--prompts", "best_ever_one",
              "worst_ever_one", "good_time_please", "--chunk-size", "100", "--batch-size", "16"]  # fmt: skip


def _cli(out: Path, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "rmvalues.scoring", *args, "--output-dir", str(out), "--no-progress"]


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
    proc = subprocess.Popen(
        _cli(killed, VOCAB_ARGS), env=_env(RMVALUES_SCORING_UNIT_DELAY="0.3"), cwd=ROOT,
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
    assert scoring.main([*VOCAB_ARGS, "--output-dir", str(killed), "--no-progress"]) == 0  # resume
    assert scoring.main([*VOCAB_ARGS, "--output-dir", str(clean), "--no-progress"]) == 0  # uninterrupted
    a, b = pd.read_parquet(killed / "scores.parquet"), pd.read_parquet(clean / "scores.parquet")
    assert not a.duplicated(["model", "prompt_id", "word"]).any()
    pd.testing.assert_frame_equal(a, b)
    assert set(a["corpus"]) == {"vocab"} and a["model"].nunique() == 2


@pytest.mark.slow  # two launched processes, each importing torch + transformers (about 30 s here)
def test_two_process_sharding_with_accelerate(tiny_registry, shared_mirror, tmp_path):
    sharded, single = tmp_path / "sharded", tmp_path / "single"
    args = ["--models", "tiny-llama-rm", "tiny-gemma-rm", "--prompts", "best_ever_one", "worst_ever_one",
            "--max-words", "4"]  # fmt: skip
    # accelerate 1.15: `--cpu` starts ONE process unless MPI is set up; the torchrun-based launcher
    # (`--multi_gpu`) starts two, which run on the CPU with gloo here
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--multi_gpu",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", "29517", "-m", "rmvalues.scoring"]  # fmt: skip
    run = subprocess.run(
        [*launch, *_cli(sharded, args)[3:]], env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=240
    )
    assert run.returncode == 0, run.stderr[-3000:]
    timings = pd.read_parquet(sharded / "timings.parquet")
    assert set(timings["rank"]) == {0, 1}  # both processes scored units
    assert scoring.main([*args, "--output-dir", str(single), "--no-progress"]) == 0
    pd.testing.assert_frame_equal(
        pd.read_parquet(sharded / "scores.parquet"), pd.read_parquet(single / "scores.parquet")
    )
