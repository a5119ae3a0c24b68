"""Training ablations (``rmvalues.stages.training``) on tiny random models: determinism, pad handling,
subsampling, resume, bad input, the chapter's analyses and its run. Hermetic: extra model registries are passed
explicitly and the words come from the ``corpora_results`` fixture."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from tinymodels import (
    TRAINING_TEXT,
    registry_entry,
    save_tiny_model,
    tiny_reward_model,
    tiny_tokenizer,
    write_registry,
)

from rmvalues.core.errors import ParameterError
from rmvalues.data import preferences as prefs
from rmvalues.data.corpora import corpora_input, read_corpora_table
from rmvalues.data.prompts import prompt_table
from rmvalues.data.scores import SCORE_COLUMNS, labels_of
from rmvalues.engine import RewardScorer
from rmvalues.models import get_spec, load_reward_model, load_sequence_classifier
from rmvalues.stages import training
from rmvalues.stages.training import analysis, artifacts, config, features, grid, paper, trainer

# -- helpers ----------------------------------------------------------------------------------------------


def _messages(i: int, chosen: bool) -> list[dict[str, str]]:
    prompt = TRAINING_TEXT[i % len(TRAINING_TEXT)]
    answer = (
        TRAINING_TEXT[(i + 1) % len(TRAINING_TEXT)] if chosen else TRAINING_TEXT[(i + 3) % 10][: 15 + i % 9]
    )
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


def _records(n: int) -> list[dict]:
    return [{"chosen": _messages(i, True), "rejected": _messages(i, False)} for i in range(n)]


def _pairs(n: int = 40) -> pd.DataFrame:
    return prefs.pairs_from_records(pd.DataFrame(_records(n)), "messages", "test data")


def _settings(**kw) -> config.TrainSettings:
    base = dict(
        method="head",
        learning_rate=1e-2,
        epochs=2,
        batch_size=4,
        per_device_batch_size=2,
        max_length=200,
        eval_pairs=4,
        checkpoint_every=2,
        feature_cache=False,
    )
    return config.make_settings({**base, **kw})


def _data(n_train: int = 8, n_eval: int = 4):
    tok = tiny_tokenizer("llama")
    sel = prefs.select_pairs(
        _pairs(), {"tiny": tok}, n_eval=n_eval, n_train=n_train, max_length=200, source="t"
    )
    return tok, trainer.cell_data(sel, "tiny", n_train)


def _fresh_model(tok, family: str = "llama"):
    model, _ = tiny_reward_model(family, seed=0)
    model.config.pad_token_id = tok.pad_token_id
    return model


def _rewards(model, seqs, pad_id: int) -> np.ndarray:
    """Rewards of sequences, one at a time (no padding at all)."""
    with torch.inference_mode():
        return np.array([float(model(input_ids=torch.tensor([s])).logits[0, 0]) for s in seqs])


# -- preference data --------------------------------------------------------------------------------------


def test_parse_hh_dialogue_turns_and_problems():
    msgs, problem = prefs.parse_hh_dialogue(
        "\n\nHuman: hi there\n\nAssistant: hello\n\nHuman: and?\n\nAssistant: bye "
    )
    assert problem is None
    assert msgs == [
        {"role": "user", "content": "hi there"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "and?"},
        {"role": "assistant", "content": "bye"},
    ]
    assert prefs.parse_hh_dialogue("\n\nHuman: a\n\nHuman: b\n\nAssistant: c")[1] == "roles do not alternate"
    assert prefs.parse_hh_dialogue("\n\nHuman: a\n\nAssistant: b\n\nHuman: c")[1] == (
        "does not end with an assistant turn"
    )
    assert prefs.parse_hh_dialogue("\n\nHuman: a\n\nAssistant:")[1] == "an empty turn"
    assert prefs.parse_hh_dialogue("hello\n\nHuman: a\n\nAssistant: b")[1] == "text before the first turn"


def test_rated_pairs_pick_the_higher_rating_and_drop_ties():
    a, b = _messages(0, True), _messages(0, False)
    raw = pd.DataFrame(
        [
            {"conv_A": a, "conv_B": b, "conv_A_rating": 1, "conv_B_rating": 5},
            {"conv_A": a, "conv_B": b, "conv_A_rating": 3, "conv_B_rating": 3},
        ]
    )
    pairs = prefs.pairs_from_records(raw, "rated-pair", "uf")
    assert pairs.loc[0, "chosen"] == b and pairs.loc[0, "rejected"] == a
    assert pairs.loc[1, "chosen"] is None and pairs.loc[1, "problem"] == "equal ratings"


def test_data_file_with_missing_column_is_a_clear_error(tmp_path):
    file = tmp_path / "pairs.jsonl"
    file.write_text("\n".join(json.dumps({"chosen": r["chosen"]}) for r in _records(3)), encoding="utf-8")
    source = prefs.parse_source("mine", {"path": str(file), "format": "messages"})
    with pytest.raises(
        prefs.PreferenceDataError, match=r"missing column\(s\) \['rejected'\].*needs \['chosen', 'rejected'\]"
    ):
        prefs.load_pairs(source)


def test_data_file_with_empty_pairs_is_a_clear_error(tmp_path):
    recs = _records(4)
    recs[2]["rejected"] = ""
    file = tmp_path / "pairs.jsonl"
    file.write_text("\n".join(json.dumps(r) for r in recs), encoding="utf-8")
    source = prefs.parse_source("mine", {"path": str(file), "format": "messages"})
    with pytest.raises(
        prefs.PreferenceDataError, match=r"1 pair\(s\) with an empty chosen or rejected \(rows \[2\]"
    ):
        prefs.load_pairs(source)


def test_subsets_are_nested_deterministic_and_disjoint_from_heldout():
    tok_a, tok_b = tiny_tokenizer("llama"), tiny_tokenizer("gemma")
    pairs = _pairs(40)
    kw = dict(n_eval=5, n_train=20, max_length=200, data_seed=3, source="t")
    sel = prefs.select_pairs(pairs, {"a": tok_a, "b": tok_b}, **kw)
    again = prefs.select_pairs(pairs, {"a": tok_a, "b": tok_b}, **kw)
    assert sel.train_ids == again.train_ids and sel.eval_ids == again.eval_ids
    assert sel.subset(8) == sel.subset(16)[:8] == sel.train_ids[:8]
    assert not set(sel.eval_ids) & set(sel.train_ids)
    # same pairs for both models, tokenized with each model's own chat template
    assert set(sel.tokens["a"]) == set(sel.tokens["b"]) == set(sel.eval_ids) | set(sel.train_ids)
    cid, rid = sel.tokens["b"][sel.train_ids[0]]
    assert cid[0] == tok_b.bos_token_id and cid.count(tok_b.bos_token_id) == 1
    other = prefs.select_pairs(pairs, {"a": tok_a}, **{**kw, "data_seed": 4})
    assert other.train_ids != sel.train_ids


def test_pairs_too_long_for_any_model_are_dropped_and_counted():
    tok_a, tok_b = tiny_tokenizer("llama"), tiny_tokenizer("gemma")
    pairs = _pairs(40)
    lengths = {
        m: {
            pid: max(len(prefs.tokenize_messages(t, c)), len(prefs.tokenize_messages(t, r)))
            for pid, c, r in zip(pairs["pair_id"], pairs["chosen"], pairs["rejected"], strict=True)
        }
        for m, t in (("a", tok_a), ("b", tok_b))
    }
    limit = int(np.median([max(lengths["a"][i], lengths["b"][i]) for i in range(40)]))
    fits = [i for i in range(40) if max(lengths["a"][i], lengths["b"][i]) <= limit]
    sel = prefs.select_pairs(
        pairs, {"a": tok_a, "b": tok_b}, n_eval=2, n_train=len(fits) - 2, max_length=limit, source="t"
    )
    assert sorted(sel.eval_ids + sel.train_ids) == fits
    assert sel.n_examined == 40
    assert sum(sel.reasons.values()) == 40 - len(fits)
    assert all(k.startswith(f"longer than max_length={limit} (") for k in sel.reasons)
    only_a = sum(1 for i in range(40) if lengths["a"][i] > limit >= lengths["b"][i])
    both = sum(1 for i in range(40) if min(lengths["a"][i], lengths["b"][i]) > limit)
    assert sel.reasons.get(f"longer than max_length={limit} (a)", 0) == only_a
    assert sel.reasons.get(f"longer than max_length={limit} (every model)", 0) == both


def test_quantity_larger_than_the_data_is_a_clear_error():
    tok = tiny_tokenizer("llama")
    with pytest.raises(prefs.PreferenceDataError, match=r"only 40 pairs; lower the quantities"):
        prefs.select_pairs(_pairs(40), {"a": tok}, n_eval=5, n_train=100, max_length=200, source="t")
    with pytest.raises(
        prefs.PreferenceDataError, match=r"quantity too large.*Lower the largest quantity to at most"
    ):
        prefs.select_pairs(_pairs(40), {"a": tok}, n_eval=5, n_train=30, max_length=40, source="t")


# -- configuration and parameters ---------------------------------------------------------------------------


def test_repository_config_and_grids_are_valid():
    cfg = config.load_config()
    assert {"default", "tiny", "full"} <= set(cfg.grids)
    default = config.grid_spec("default", config=cfg)
    assert len(default.models) >= 2 and len(default.quantities) >= 2 and len(default.seeds) >= 3
    full = config.grid_spec("full", config=cfg)
    s = full.settings
    assert (s.method, s.lora_r, s.lora_alpha, s.lora_dropout) == ("lora", 32, 64, 0.05)
    assert set(s.lora_target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert (s.learning_rate, s.lr_scheduler_type, s.warmup_ratio, s.batch_size, s.epochs, s.max_length) == (
        1e-5,
        "cosine",
        0.03,
        16,
        2,
        1024,
    )
    cells = default.cells()
    assert len(cells) == len(default.models) * len(default.quantities) * len(default.seeds)
    assert cells[0].name == f"{default.models[0]}-hh-head-n{default.quantities[0]}-s{default.seeds[0]}"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"models": ["no-such-model"]},
            r"unknown base model\(s\) \['no-such-model'\]; registered causal LMs: .*gemma3-270m",
        ),
        ({"grid": "nope"}, r"unknown grid 'nope'; grids in .*: default"),
        ({"settings": {"learning_rat": 1}}, r"unknown setting\(s\) \['learning_rat'\]"),
        ({"settings": {"method": "qlora"}}, r"method is 'qlora'; valid methods: head, lora, full"),
        ({"quantities": [0]}, r"quantities must be positive integers"),
        ({"sources": ["wiki"]}, r"unknown source\(s\) \['wiki'\]; sources: hh"),
        ({"prompts": ["greatest_thing"]}, r"unknown prompt id"),
        ({"corpus": "nope"}, r"unknown corpus 'nope'"),
        ({"epochs": 3}, r"unknown parameter 'epochs'; valid parameters of the training stage"),
        ({"settings": {"batch_size": 10, "per_device_batch_size": 4}}, r"multiple of per_device_batch_size"),
    ],
)
def test_check_parameters_rejects_bad_input(params, message):
    with pytest.raises(ParameterError, match=message):
        training.Params.build(params)


def test_check_parameters_accepts_the_defaults_and_the_full_grid_with_the_paper_models(monkeypatch):
    training.Params.build()
    with pytest.raises(
        ParameterError, match=r"unknown base model\(s\) \['gemma-2-2b-it', 'llama-3.2-3b-instruct'\]"
    ):
        training.Params.build(grid="full")
    # offline, the paper's hub models are not in the cache: an error before any work, with the fix
    with pytest.raises(ParameterError, match=r"'gemma-2-2b-it' .* is not in the local Hugging Face cache"):
        training.Params.build(grid="full", extra_registry=["config/paper_models.yaml"])
    # where the hub can be reached (HF_HUB_OFFLINE unset), the full grid is valid
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    training.Params.build(grid="full", extra_registry=["config/paper_models.yaml"])
    with pytest.raises(
        ParameterError, match=r"extra_registry: registry file\(s\) \['nope.yaml'\] do not exist"
    ):
        training.Params.build(extra_registry=["nope.yaml"])


# -- pad handling -------------------------------------------------------------------------------------------


def test_pad_equal_to_eos_is_refused():
    tok = tiny_tokenizer("llama")
    tok.pad_token = tok.eos_token
    with pytest.raises(config.TrainingConfigError, match=r"pad token '<\|im_end\|>' is the EOS token"):
        trainer.check_pad_token(tok, "tiny")


@pytest.mark.parametrize("family", ["llama", "gemma"])
def test_chosen_and_rejected_are_read_at_their_own_last_token(family):
    """The collated batch (right padding with pad != eos) gives each sequence the reward it has alone, and the
    cached features are the hidden states the head reads."""
    from trl.trainer.reward_trainer import DataCollatorForPreference

    tok = tiny_tokenizer(family)
    model = _fresh_model(tok, family)
    sel = prefs.select_pairs(_pairs(), {"m": tok}, n_eval=0, n_train=6, max_length=200, source="t")
    pairs = [sel.tokens["m"][i] for i in sel.train_ids]
    assert len({len(c) for c, _ in pairs} | {len(r) for _, r in pairs}) > 1  # padding happens
    batch = DataCollatorForPreference(pad_token_id=tok.pad_token_id)(
        [{"chosen_ids": c, "rejected_ids": r} for c, r in pairs]
    )
    with torch.inference_mode():
        batched = model(**batch).logits[:, 0].numpy()
    seqs = [c for c, _ in pairs] + [r for _, r in pairs]
    alone = _rewards(model, seqs, tok.pad_token_id)
    np.testing.assert_allclose(batched, alone, atol=1e-5)
    feats = RewardScorer(model, tok).last_hidden(seqs, batch_size=4)
    np.testing.assert_allclose(feats @ model.score.weight.detach().numpy().T, alone[:, None], atol=1e-5)
    # with pad = eos the last real token of a ChatML sequence (eos then newline) would not be found the same way
    if family == "llama":
        model.config.pad_token_id = tok.eos_token_id
        with torch.inference_mode():
            wrong = model(**batch).logits[:, 0].numpy()
        assert not np.allclose(wrong, alone, atol=1e-3)


# -- training -------------------------------------------------------------------------------------------


def test_same_seed_gives_identical_rewards_and_other_seeds_differ(tmp_path):
    tok, data = _data()
    probe = [c for c, _ in data.eval] + [r for _, r in data.eval]
    runs = {}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        model = _fresh_model(tok)
        out = trainer.train_reward_model(model, tok, data, _settings(epochs=1), seed, tmp_path / name)
        runs[name] = _rewards(out.model, probe, tok.pad_token_id)
        assert out.n_train_used == len(data.train) and out.n_eval_used == len(data.eval)
    np.testing.assert_array_equal(runs["a"], runs["b"])
    assert not np.allclose(runs["a"], runs["c"])


def test_head_on_cached_features_equals_head_on_the_full_model(tmp_path):
    tok, data = _data()
    full = trainer.train_reward_model(_fresh_model(tok), tok, data, _settings(), 3, tmp_path / "full")
    model = _fresh_model(tok)
    seqs = (
        [c for c, _ in data.train]
        + [r for _, r in data.train]
        + [c for c, _ in data.eval]
        + [r for _, r in data.eval]
    )
    f = torch.from_numpy(RewardScorer(model, tok).last_hidden(seqs, batch_size=3))
    n, m = len(data.train), len(data.eval)
    feats = {"train": (f[:n], f[n : 2 * n]), "eval": (f[2 * n : 2 * n + m], f[2 * n + m :])}
    cached = trainer.train_reward_model(
        model, tok, data, _settings(feature_cache=True), 3, tmp_path / "cached", feats
    )
    assert sorted(full.heads) == sorted(cached.heads) == [0, 2, 4]
    for step in full.heads:
        np.testing.assert_allclose(full.heads[step], cached.heads[step], atol=1e-6)
    a, b = trainer.tidy_history(full.log_history), trainer.tidy_history(cached.log_history)
    assert list(a["step"]) == list(b["step"]) and a["split"].tolist().count("eval") == 3  # steps 0, 2, 4
    np.testing.assert_allclose(a["loss"], b["loss"], atol=1e-5)
    assert a.loc[a["split"] == "eval", "step"].tolist() == [0, 2, 4]


def test_lora_trains_adapter_and_head_and_saves_a_loadable_merged_rm(tmp_path):
    from transformers import AutoModelForSequenceClassification

    tok, data = _data()
    model = _fresh_model(tok)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    s = _settings(method="lora", learning_rate=5e-3, lora_r=4, lora_alpha=8)
    out = trainer.train_reward_model(model, tok, data, s, 0, tmp_path / "cell")
    trainable = [n for n, p in out.model.named_parameters() if p.requires_grad]
    assert any("lora_A" in n for n in trainable) and any("score" in n for n in trainable)
    assert not any("embed_tokens" in n for n in trainable)
    assert sorted(out.checkpoints) == [0, 2, 4]
    folder = artifacts.save_full_rm(out.model, tok, tmp_path / "rm")
    loaded = AutoModelForSequenceClassification.from_pretrained(folder)
    probe = [c for c, _ in data.eval]
    np.testing.assert_allclose(_rewards(loaded, probe, 0), _rewards(out.model, probe, 0), atol=1e-5)
    assert not torch.equal(loaded.state_dict()["score.weight"], before["score.weight"])


def test_head_rm_folder_shares_the_base_weights_and_loads(tmp_path):
    import os

    from transformers import AutoModelForSequenceClassification

    base = save_tiny_model(tmp_path / "tiny-base", "llama")
    reg = write_registry(tmp_path / "models.yaml", {"tiny-base": registry_entry(base, "llama")})
    spec = get_spec("tiny-base", extra=[reg])
    tok = trainer.training_tokenizer(spec)
    model = load_sequence_classifier(spec, tok)
    w = np.linspace(-1, 1, model.config.hidden_size).astype(np.float32)
    folder = artifacts.save_head_rm(spec, model, w, tok, tmp_path / "rm")
    assert os.path.samefile(folder / "base.safetensors", base / "model.safetensors")
    loaded = AutoModelForSequenceClassification.from_pretrained(folder)
    assert type(loaded).__name__ == "LlamaForSequenceClassification"
    np.testing.assert_array_equal(loaded.score.weight.detach().numpy()[0], w)
    seq = prefs.tokenize_messages(tok, _messages(1, True))
    with torch.no_grad():
        model.score.weight.copy_(torch.tensor(w)[None])
    np.testing.assert_allclose(_rewards(loaded, [seq], 0), _rewards(model, [seq], 0), atol=1e-6)


# -- the grid: resume and registry --------------------------------------------------------------------------


def _words(results_root, corpus: str = "big2_nouns") -> pd.DataFrame:
    """The labels of ``corpus`` from the corpora run ``default`` under ``results_root`` (verified hand-off)."""
    table, _ = read_corpora_table(corpora_input("default"), results_root, [corpus])
    return labels_of(table, [corpus])


@pytest.fixture
def tiny_grid(tmp_path, corpora_results):
    """A training configuration with grid ``g`` on a registered tiny llama (the registry passed explicitly), and
    the keyword arguments of :func:`run_grid` for it (the words of big2_nouns, one prompt)."""
    base = save_tiny_model(tmp_path / "tiny-llama", "llama")
    reg = write_registry(tmp_path / "models.yaml", {"tiny-llama": registry_entry(base, "llama")})
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in _records(40)), encoding="utf-8")
    cfg = {
        "sources": {"toy": {"path": str(data), "format": "messages"}},
        "settings": {},
        "grids": {
            "g": {
                "models": ["tiny-llama"],
                "sources": ["toy"],
                "quantities": [8],
                "seeds": [0, 1],
                "settings": {
                    "method": "head",
                    "learning_rate": 1e-2,
                    "epochs": 1,
                    "batch_size": 4,
                    "per_device_batch_size": 4,
                    "max_length": 200,
                    "eval_pairs": 4,
                    "checkpoint_every": 1,
                },
            }
        },
    }
    file = tmp_path / "training.yaml"
    file.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    cfg = config.load_config(file)
    kw = dict(
        labels=_words(corpora_results),
        prompts=prompt_table(["greatest_ever_one"]),
        extra_registry=[reg],
        config=cfg,
        progress=False,
    )
    return cfg, tmp_path, kw


def test_grid_trains_registers_and_resumes_only_unfinished_cells(tiny_grid):
    cfg, tmp, kw = tiny_grid
    spec = config.grid_spec("g", config=cfg)
    out = tmp / "run"
    first = grid.run_grid(spec, out, **kw)
    assert first.cells["status"].tolist() == ["trained now", "trained now"]
    assert first.cells["n_train_used"].tolist() == [8, 8] and first.cells["steps"].tolist() == [2, 2]
    names = first.cells["cell"].tolist()
    assert names == ["tiny-llama-toy-head-n8-s0", "tiny-llama-toy-head-n8-s1"]
    # registered: loadable by name through the registry file
    spec0 = get_spec(names[0], extra=[first.registry])
    assert spec0.kind == "reward-model" and spec0.architecture == "LlamaForSequenceClassification"
    # trajectories: every checkpoint (0, 1, 2) of every cell scored on the corpus words
    traj = first.trajectories
    assert sorted(traj["step"].unique()) == [0, 1, 2]
    assert traj.groupby(["cell", "step"])["word"].nunique().min() == traj["word"].nunique() > 200
    # interrupt the second cell: its marker is gone; the first must not be retrained
    marker0 = (out / "cells" / names[0] / "cell.json").stat().st_mtime_ns
    (out / "cells" / names[1] / "cell.json").unlink()
    again = grid.run_grid(spec, out, **kw)
    assert again.cells["status"].tolist() == ["reused", "trained now"]
    assert (out / "cells" / names[0] / "cell.json").stat().st_mtime_ns == marker0
    pd.testing.assert_frame_equal(
        again.trajectories.sort_values(["cell", "step", "prompt_id", "word", "category"]).reset_index(
            drop=True
        ),
        first.trajectories.sort_values(["cell", "step", "prompt_id", "word", "category"]).reset_index(
            drop=True
        ),
    )
    # a changed setting retrains
    spec2 = config.grid_spec("g", {"seeds": [0], "settings": {"learning_rate": 2e-2}}, config=cfg)
    third = grid.run_grid(spec2, out, **kw)
    assert third.cells["status"].tolist() == ["trained now"]


def test_lora_grid_scores_every_saved_checkpoint(tiny_grid):
    cfg, tmp, kw = tiny_grid
    settings = {"method": "lora", "lora_r": 4, "lora_alpha": 8, "learning_rate": 5e-3}
    spec = config.grid_spec("g", {"seeds": [0], "settings": settings}, config=cfg)
    out = grid.run_grid(spec, tmp / "lora", **kw)
    traj = out.trajectories
    assert sorted(traj["step"].unique()) == [0, 1, 2]
    # the registered (merged) RM scores exactly like the last checkpoint
    spec0 = get_spec(out.cells["cell"].iloc[0], extra=[out.registry])
    model, tok, _ = load_reward_model(spec0)
    words = sorted(traj["word"].unique())
    live = features.score_model_words(model, tok, prompt_table(["greatest_ever_one"]), words)[
        "greatest_ever_one"
    ]
    last = traj[traj["step"] == 2].drop_duplicates("word").set_index("word").loc[words, "score"].to_numpy()
    np.testing.assert_allclose(live, last, atol=1e-4)
    first = traj[traj["step"] == 0].drop_duplicates("word").set_index("word").loc[words, "score"].to_numpy()
    assert not np.allclose(first, last)


def test_grid_refuses_bad_data_before_training(tiny_grid):
    cfg, tmp, kw = tiny_grid
    spec = config.grid_spec("g", {"quantities": [500]}, config=cfg)
    with pytest.raises(prefs.PreferenceDataError, match=r"lower the quantities"):
        grid.run_grid(spec, tmp / "run", **kw)
    assert not (tmp / "run" / "cells").exists()


# -- the chapter's run -------------------------------------------------------------------------------------


def _run_params(tmp_path, corpora_results, **kw) -> training.Params:
    """Grid ``tiny`` on a registered tiny llama (registry passed explicitly) with a results root of its own
    that holds the corpora run ``default``."""
    import shutil

    root = tmp_path / "results"
    shutil.copytree(corpora_results / "corpora", root / "corpora")
    base = save_tiny_model(tmp_path / "tiny-llama", "llama")
    reg = write_registry(tmp_path / "models.yaml", {"tiny-llama": registry_entry(base, "llama")})
    values = dict(
        grid="tiny",
        models=["tiny-llama"],
        extra_registry=[str(reg)],
        quantities=[8],
        settings={"max_length": 256, "eval_pairs": 4},
        prompts=["best_ever_one", "worst_ever_one"],
        results_root=str(root),
    )
    return training.Params.build({**values, **kw})


def test_run_writes_every_output_and_hands_off_the_registry(tmp_path, corpora_results):
    from rmvalues.core.handoff import StageInput, verify
    from rmvalues.core.manifest import read_manifest

    params = _run_params(tmp_path, corpora_results)
    res = training.run(params)
    out = params.output_path()
    manifest = read_manifest(out)
    expected = {
        "cells",
        "data",
        "history",
        "trajectories",
        "category_trajectories",
        "seed_summary",
        "gaps",
        "word_movers",
        "paper_training_gaps",
        "paper_vs_ours",
    }
    assert set(manifest["outputs"]) == {f"{n}.parquet" for n in expected} | {"registry.yaml"}
    assert res.comparison is None  # one base model
    # the scoring stage reads the registry through a verified hand-off and finds the trained RM by name
    inp = StageInput("training", params.run_name, ("registry.yaml",))
    assert verify(inp, params.results_root) == {
        "training/default/registry.yaml": manifest["outputs"]["registry.yaml"]
    }
    name = "tiny-llama-hh-head-n8-s0"
    assert res.cells["cell"].tolist() == [name] and res.registry == out / "registry.yaml"
    assert get_spec(name, extra=[res.registry]).kind == "reward-model"
    # the words are the corpora run's, the prompts in the design's order; the RM loaded by name agrees
    assert manifest["inputs"]["corpora/default/corpora.parquet"]
    assert res.words_origin == "corpora/default/corpora.parquet" and res.n_words > 200
    assert res.consistency["rm"] == name and res.consistency["prompt_id"] == "best_ever_one"
    assert res.consistency["max_abs_difference"] < 1e-4
    assert sorted(manifest["seeds"]) == ["data_seed", name]
    assert {"grid: data", "grid: load tiny-llama", f"grid: train {name}"} <= set(manifest["timings_s"])
    assert set(res.timing_table["work"]) >= {"data", "load base model", "word features", "train"}


def test_run_without_the_corpora_run_is_a_missing_input(tmp_path, corpora_results):
    from rmvalues.core.errors import MissingInputError

    params = _run_params(tmp_path, corpora_results, corpora_run="other")
    with pytest.raises(
        MissingInputError, match=r"corpora/other: manifest.json does not exist.*run stage 'corpora'"
    ):
        training.run(params)
    assert not (params.output_path() / "cells").exists()


# -- analysis -------------------------------------------------------------------------------------------------


def _toy_trajectories() -> pd.DataFrame:
    """Two cells of one base, 4 words (2 per category), one prompt, steps 0 and 1."""
    rows = []
    scores = {  # seed -> step -> word -> score
        0: {0: {"a1": 4, "a2": 3, "c1": 2, "c2": 1}, 1: {"a1": 1, "a2": 2, "c1": 3, "c2": 4}},
        1: {0: {"a1": 4, "a2": 1, "c1": 3, "c2": 2}, 1: {"a1": 4, "a2": 3, "c1": 2, "c2": 1}},
    }
    for seed, steps in scores.items():
        for step, words in steps.items():
            for word, score in words.items():
                rows.append(
                    {
                        "model": f"m-s{seed}@{step}",
                        "revision": None,
                        "family": "fam",
                        "source": "live",
                        "prompt_id": "greatest_ever_one",
                        "framing": "positive",
                        "corpus": "toy",
                        "category": "Agency" if word.startswith("a") else "Communion",
                        "subcategory": None,
                        "word": word,
                        "n_tokens": 1,
                        "score": float(score),
                        "cell": f"m-s{seed}",
                        "base_model": "m",
                        "data": "d",
                        "method": "head",
                        "quantity": 8,
                        "seed": seed,
                        "step": step,
                    }
                )
    df = pd.DataFrame(rows)
    df[list(SCORE_COLUMNS)] = df[list(SCORE_COLUMNS)]
    return df


def test_category_trajectories_gaps_and_seed_summary_by_hand():
    traj = _toy_trajectories()
    cats = analysis.category_trajectories(traj)
    got = cats.set_index(["seed", "step", "category"])["median_rank"]
    # seed 0, step 0: ranks a1=1, a2=2, c1=3, c2=4 -> Agency 1.5, Communion 3.5; step 1 reversed
    assert got[(0, 0, "Agency")] == 1.5 and got[(0, 0, "Communion")] == 3.5
    assert got[(0, 1, "Agency")] == 3.5 and got[(0, 1, "Communion")] == 1.5
    # seed 1, step 0: a1=1, c1=2, c2=3, a2=4 -> Agency 2.5, Communion 2.5
    assert got[(1, 0, "Agency")] == 2.5 and got[(1, 0, "Communion")] == 2.5
    gaps = analysis.category_gaps(cats).set_index(["seed", "step"])["gap"]
    assert gaps[(0, 0)] == -2.0 and gaps[(0, 1)] == 2.0 and gaps[(1, 0)] == 0.0 and gaps[(1, 1)] == -2.0
    summ = analysis.seed_summary(cats).set_index(["step", "category"])
    row = summ.loc[(0, "Agency")]
    assert row["mean"] == 2.0 and row["n_seeds"] == 2
    # t interval with 1 degree of freedom: mean +- 12.706 * sd / sqrt(2), sd = 0.7071
    half = 12.7062047 * math.sqrt(0.5) / math.sqrt(2)
    assert row["ci_low"] == pytest.approx(2.0 - half, rel=1e-6) and row["ci_high"] == pytest.approx(
        2.0 + half, rel=1e-6
    )


def test_word_movers_rank_changes_by_hand():
    movers = analysis.word_movers(_toy_trajectories(), top=1)
    rose = movers[movers["direction"] == "rose"].iloc[0]
    fell = movers[movers["direction"] == "fell"].iloc[0]
    # seed 0: c2 4->1 (-3), a1 1->4 (+3); seed 1: c2 3->4 (+1), a2 4->2 (-2), a1 1->1, c1 2->3 (+1)
    # means: a1 +1.5, a2 (2->3 = +1, 4->2 = -2) -0.5, c1 (3->2 = -1, 2->3 = +1) 0, c2 (-3, +1) -1
    assert rose["word"] == "c2" and rose["change"] == -1.0
    assert fell["word"] == "a1" and fell["change"] == 1.5 and fell["category"] == "Agency"


def test_paper_training_results(shared_mirror):
    results, files = paper.load_paper_training_results()
    info = files.set_index("dataset")
    assert info.loc["uf_13", "identical_to"] == "uf_27" and info.loc["uf_27", "identical_to"] == "uf_13"
    assert info.loc["uf_100", "duplicate_rows_dropped"] > 0
    assert set(results["category"]) == {"Agency", "Communion"}
    assert "unknown" not in set(results["base_model"])
    gaps = paper.paper_gaps(results)
    sky = gaps[(gaps["dataset"] == "sky_80k") & (gaps["base_model"] == "Gemma")].sort_values("checkpoint")
    assert sky["gap"].iloc[0] == 789.5 - 644.0 and sky["is_first"].iloc[0] and sky["is_last"].iloc[-1]


def test_timing_summary_groups_by_work_and_model():
    t = {
        "data": 2.0,
        "load m-a": 1.0,
        "pair features m-a": 3.0,
        "train m-a-x-head-n8-s0": 1.5,
        "train m-a-x-head-n8-s1": 2.5,
        "train m-x-head-n8-s0": 4.0,
    }
    got = analysis.timing_summary(t, ["m", "m-a"]).set_index(["work", "model"])
    assert got.loc[("train", "m-a"), "seconds"] == 4.0 and got.loc[("train", "m-a"), "n"] == 2
    assert got.loc[("train", "m"), "seconds"] == 4.0
    assert (
        got.loc[("pair features", "m-a"), "seconds"] == 3.0 and got.loc[("data", "(all)"), "seconds"] == 2.0
    )


def test_hub_source_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    source = prefs.parse_source(
        "sky",
        {"hub_id": "Skywork/Skywork-Reward-Preference-80K-v0.2", "split": "train", "format": "messages"},
    )
    with pytest.raises(
        prefs.PreferenceDataError, match=r"cannot load hub data set .*offline.*register it as a `path` source"
    ):
        prefs.load_pairs(source)


def test_source_needs_exactly_one_origin_and_a_known_format():
    with pytest.raises(prefs.PreferenceDataError, match=r"needs exactly one of dataset"):
        prefs.parse_source("x", {"format": "messages"})
    with pytest.raises(
        prefs.PreferenceDataError, match=r"format 'csv'; valid formats: hh-rlhf, messages, rated-pair"
    ):
        prefs.parse_source("x", {"path": "a.jsonl", "format": "csv"})
