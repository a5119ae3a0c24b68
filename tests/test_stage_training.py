"""Training ablations (``rmvalues.stages.training``) on tiny random models: determinism, pad handling,
subsampling, resume, bad input, the chapter's analyses and its run. Hermetic: extra model registries are passed
explicitly and the words come from the ``corpora_results`` fixture."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from pydantic import ValidationError
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
    return config.TrainSettings.model_validate({**base, **kw})


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
    # the floor: >= 3 quantities spanning an order of magnitude up to >= 400 pairs, >= 5 seeds that
    # draw their own subsets from a larger pool, >= 300 held-out pairs, no pair dropped for length
    q, d = default.quantities, default.settings
    assert len(default.models) >= 2 and len(q) >= 3 and max(q) >= 400 and max(q) >= 10 * min(q)
    assert len(default.seeds) >= 5 and d.eval_pairs >= 300 and d.train_pool > max(q)
    assert (d.method, d.truncation, d.feature_cache) == ("head", "left", True)
    # the scoring stage's defaults name these cells
    names = {c.name for c in default.cells()}
    assert {"gemma3-270m-hh-head-n128-s0", "smollm2-135m-instruct-hh-head-n128-s0"} <= names
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
        (
            {"settings": {"learning_rat": 1}},
            r"settings\.learning_rat: unknown key of settings; valid keys: method,",
        ),
        (
            {"settings": {"method": "qlora"}},
            r"settings\.method='qlora': Input should be 'head', 'lora' or 'full'",
        ),
        ({"quantities": [0]}, r"quantities must be positive integers"),
        ({"sources": ["wiki"]}, r"unknown source\(s\) \['wiki'\]; sources: hh"),
        ({"prompts": ["greatest_thing"]}, r"unknown prompt id"),
        ({"corpus": "nope"}, r"corpus: unknown corpus name\(s\) 'nope'. Valid corpora: big2_nouns"),
        ({"epochs": 3}, r"unknown parameter 'epochs'; valid parameters of the training stage"),
        ({"settings": {"batch_size": 10, "per_device_batch_size": 4}}, r"multiple of per_device_batch_size"),
        # the settings' schema: a bool is not an int, a string not a number, bounds and list items checked
        ({"settings": {"batch_size": True}}, r"settings\.batch_size=True: Input should be a valid integer"),
        (
            {"settings": {"learning_rate": "1e-3"}},
            r"settings\.learning_rate='1e-3': not one of the accepted forms \(int \| float\): learning rate",
        ),
        ({"settings": {"warmup_ratio": 1}}, r"settings\.warmup_ratio=1: Input should be less than 1"),
        (
            {"settings": {"depths": [1, 0]}},
            r"settings\.depths\[1\]=0: Input should be greater than or equal to 1",
        ),
        ({"settings": {"feature_cache": 1}}, r"settings\.feature_cache=1: Input should be a valid boolean"),
        (
            {"settings": ["method", "head"]},
            r"settings=\['method', 'head'\]: Input should be a valid dictionary",
        ),
        # the rules between settings, on the merged settings (the grid's and the override)
        (
            {"settings": {"method": "lora"}},
            r"grid 'default' with overrides: settings: feature_scaling standardize needs method head with "
            r"feature_cache true \(here method lora, feature_cache true\); or set feature_scaling none; depths "
            r"\(the depth-of-adaptation arm\) need method head",
        ),
        (
            {"settings": {"depths": [2, 2]}},
            r"settings: depths must be distinct \(blocks adapted\), got \[2, 2\]",
        ),
        ({"settings": {"max_length": None}}, r"settings: truncation left needs a max_length"),
    ],
)
def test_check_parameters_rejects_bad_input(params, message):
    with pytest.raises(ParameterError, match=message):
        training.Params.build(params)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"batch_size": True}, r"settings\.batch_size=True"),
        ({"learning_rate": "1e-3"}, r"settings\.learning_rate='1e-3'"),
        ({"learning_rat": 1}, r"settings\.learning_rat: unknown key"),
        ({"epochs": None}, r"settings\.epochs=None"),
        ({"method": "lora"}, r"settings: feature_scaling standardize needs method head"),
    ],
)
def test_a_wrong_setting_fails_when_the_parameters_are_parsed(settings, message):
    """Types, choices and names of the settings, and the rules between them on the merged settings, fail when
    the parameters are parsed: the runner's planning step, before any work and before any planned upstream
    run (the corpora run) executes."""
    with pytest.raises(ParameterError, match=message):
        training.Params.parse({"settings": settings})
    from rmvalues.book import runner
    from rmvalues.book.config import load_config

    with pytest.raises(ParameterError, match=message):
        runner.plan(load_config(), stages=["training"], overrides={"settings": settings})


def test_a_settings_override_merges_over_the_grid_and_is_recorded_as_given():
    assert training.Params.defaults()["settings"] == {}
    assert "settings = {}" in training.Params.notebook_cell().splitlines()
    assert training.Params().as_dict()["settings"] == {}
    # as the notebook, the runner (PARAMS="settings={learning_rate: 1e-3, depths: [1, 2]}") and the CLI give it
    from rmvalues.book.cli import parse_overrides

    given = parse_overrides(["settings={learning_rate: 1e-3, depths: [1, 2], epochs: 3}"])
    params = training.Params.build(given)
    assert params.as_dict()["settings"] == {"learning_rate": 1e-3, "depths": [1, 2], "epochs": 3}
    s = params.grid_spec().settings
    assert (s.learning_rate, s.depths, s.epochs, type(s.epochs)) == (1e-3, (1, 2), 3, int)
    grid = config.grid_spec("default").settings
    assert s.as_dict() == grid.as_dict() | {"learning_rate": 1e-3, "depths": [1, 2], "epochs": 3}
    # None is a value where the setting allows it (no token limit), not "unset"
    unlimited = training.Params.build(settings={"max_length": None, "truncation": "drop"})
    assert unlimited.as_dict()["settings"] == {"max_length": None, "truncation": "drop"}
    assert unlimited.grid_spec().settings.max_length is None
    import argparse

    parser = argparse.ArgumentParser()
    training.Params.add_arguments(parser)
    args = parser.parse_args(["--settings", "{'head_l2': 0, 'depth_seeds': [0]}"])
    cli = training.Params.build(training.Params.from_arguments(args))
    assert cli.grid_spec().settings.as_dict() == grid.as_dict() | {"head_l2": 0, "depth_seeds": [0]}


def test_the_settings_override_is_derived_from_the_settings_schema():
    override, settings = config.SettingsOverride.model_fields, config.TrainSettings.model_fields
    assert list(override) == list(settings)
    assert all(override[k].description == settings[k].description for k in settings)
    assert all(not f.is_required() for f in override.values())
    from transformers.trainer_utils import SchedulerType

    assert set(config.LR_SCHEDULERS) <= {s.value for s in SchedulerType}


#: The default grid's settings as cell and cache keys hash them: values and types as written in
#: config/training.yaml (an int must stay an int: ``epochs: 200`` hashed as 200.0 would retrain every cell).
DEFAULT_GRID_SETTINGS = {
    "method": "head",
    "learning_rate": 0.05,
    "epochs": 200,
    "batch_size": 400,
    "per_device_batch_size": 400,
    "max_length": 64,
    "truncation": "left",
    "eval_pairs": 300,
    "train_pool": 500,
    "warmup_ratio": 0.03,
    "weight_decay": 0.0,
    "lora_target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "feature_cache": True,
    "gradient_checkpointing": None,
    "head_l2": 0.1,
    "depths": [1],
    "depth_quantities": [],
    "depth_seeds": [0, 1, 2],
    "depth_learning_rate": 1e-4,
    "depth_epochs": 1,
}


def test_the_settings_keep_their_values_and_types_as_written():
    d = config.grid_spec("default").settings.as_dict()
    assert len(d) == len(config.TrainSettings.model_fields) == 30
    for key, value in DEFAULT_GRID_SETTINGS.items():
        assert d[key] == value and type(d[key]) is type(value), key
    assert config.grid_spec("default").settings.probe_dict() == {
        k: v for k, v in d.items() if not k.startswith("depth")
    }
    # the other grids: ints as ints (epochs: 1, 2), floats as floats (learning_rate: 1.0e-5)
    for name, epochs in (("tiny", 30), ("lora-short", 1), ("full", 2)):
        s = config.grid_spec(name).settings.as_dict()
        assert (s["epochs"], type(s["epochs"]), type(s["learning_rate"])) == (epochs, int, float), name


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
    # trajectories: every checkpoint after the random head (1, 2) of every cell scored on the corpus words
    traj = first.trajectories
    assert sorted(traj["step"].unique()) == [1, 2]
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
    assert sorted(traj["step"].unique()) == [1, 2]  # checkpoint-0 (the drawn head) is not scored
    # the registered (merged) RM scores exactly like the last checkpoint
    spec0 = get_spec(out.cells["cell"].iloc[0], extra=[out.registry])
    model, tok, _ = load_reward_model(spec0)
    words = sorted(traj["word"].unique())
    live = features.score_model_words(model, tok, prompt_table(["greatest_ever_one"]), words)[
        "greatest_ever_one"
    ]
    last = traj[traj["step"] == 2].drop_duplicates("word").set_index("word").loc[words, "score"].to_numpy()
    np.testing.assert_allclose(live, last, atol=1e-4)
    first = traj[traj["step"] == 1].drop_duplicates("word").set_index("word").loc[words, "score"].to_numpy()
    assert not np.allclose(first, last)
    assert out.eval_pairs.empty and out.null.empty  # per-pair margins and the null: head-only cells


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
        "bases",
        "accuracy",
        "eval_pairs",
        "train_subsets",
        "history",
        "trajectories",
        "category_trajectories",
        "seed_summary",
        "gaps",
        "null_gaps",
        "final_gaps",
        "accuracy_comparison",
        "depth_gaps",
        "depth_accuracy",
        "word_movers",
        "paper_files",
        "paper_training_gaps",
        "paper_vs_ours",
    }
    tables = {f"tables/{n}.csv" for n in training.READER_TABLES}
    outputs = {f"{n}.parquet" for n in expected} | {"registry.yaml", "findings.json"} | tables
    assert set(manifest["outputs"]) == outputs
    for name in training.READER_TABLES:  # the book's CSV downloads, one per reader table
        assert res.csv(name) == out / "tables" / f"{name}.csv" and res.csv(name).is_file()
    assert len(pd.read_csv(res.csv("cells"))) == len(res.cells)
    assert res.comparison is None  # one base model
    # the scoring stage reads the registry through a verified hand-off and finds the trained RM by name
    inp = StageInput("training", params.run_name, ("registry.yaml",))
    assert verify(inp, params.results_root) == {
        "training/default/registry.yaml": manifest["outputs"]["registry.yaml"]
    }
    name = "tiny-llama-hh-head-n8-s0"
    deep = "tiny-llama-hh-head-top1-n8-s0"  # the tiny grid's depth cell: trained, not registered
    assert res.cells["cell"].tolist() == [name, deep] and res.registry == out / "registry.yaml"
    assert res.cells["depth"].tolist() == [0, 1] and res.cells["method"].tolist() == ["head", "top1+head"]
    assert get_spec(name, extra=[res.registry]).kind == "reward-model"
    assert list(yaml.safe_load(res.registry.read_text(encoding="utf-8"))["models"]) == [name]
    assert set(res.trajectories["depth"]) == {0, 1}
    # the words are the corpora run's, the prompts in the design's order; the RM loaded by name agrees
    assert manifest["inputs"]["corpora/default/corpora.parquet"]
    assert res.words_origin == "corpora/default/corpora.parquet" and res.n_words > 200
    assert res.consistency["rm"] == name and res.consistency["prompt_id"] == "best_ever_one"
    assert res.consistency["max_abs_difference"] < 1e-4
    assert sorted(manifest["seeds"]) == ["data_seed", name]
    assert {"grid: data", "grid: load tiny-llama", f"grid: train {name}"} <= set(manifest["timings_s"])
    assert set(res.timing_table["work"]) >= {"data", "load base model", "word features", "train"}
    assert f"grid: train {deep}" in manifest["timings_s"]


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
                        "depth": 0,
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
    # the byte-identical copy is not counted as a run of its own: only uf_27 stays
    assert not info.loc["uf_13", "used"] and info.loc["uf_27", "used"] and info["used"].sum() == len(info) - 1
    assert "uf_13" not in set(results["dataset"]) and "uf_27" in set(results["dataset"])
    glued = training.readings.paper_values(None, files)
    assert "uf_13 (Unified-Feedback 13K) is byte-identical to uf_27" in glued["paper_copies"]
    assert glued["paper_repeats"].startswith("uf_100 repeats ")
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


# -- the length rule, per-seed subsets, intervals, the feature cache (issue 10) ----------------------------


def test_truncate_left_keeps_the_bos_and_the_end():
    assert prefs.truncate_left([9, 1, 2, 3, 4, 5], 4, bos_id=9) == [9, 3, 4, 5]
    assert prefs.truncate_left([7, 1, 2, 3, 4, 5], 4, bos_id=9) == [2, 3, 4, 5]  # no BOS: the last 4
    assert prefs.truncate_left([7, 1, 2, 3, 4, 5], 4) == [2, 3, 4, 5]
    assert prefs.truncate_left([9, 1, 2], 4, bos_id=9) == [9, 1, 2]  # short enough: unchanged
    assert prefs.truncate_left([9, 1, 2, 3], 4, bos_id=9) == [9, 1, 2, 3]
    with pytest.raises(ValueError, match="max_length must be >= 2"):
        prefs.truncate_left([1, 2, 3], 1)


def test_left_truncation_drops_no_pair_for_length_and_keeps_the_end():
    tok_a, tok_b = tiny_tokenizer("llama"), tiny_tokenizer("gemma")
    pairs = _pairs(40)
    full = {
        m: {
            pid: (prefs.tokenize_messages(t, c), prefs.tokenize_messages(t, r))
            for pid, c, r in zip(pairs["pair_id"], pairs["chosen"], pairs["rejected"], strict=True)
        }
        for m, t in (("a", tok_a), ("b", tok_b))
    }
    limit = int(min(np.median([len(c) for c, _ in full[m].values()]) for m in full))
    kw = dict(n_eval=5, n_train=30, max_length=limit, source="t")
    sel = prefs.select_pairs(pairs, {"a": tok_a, "b": tok_b}, truncation="left", **kw)
    assert not any(k.startswith("longer than") for k in sel.reasons)  # nothing dropped for length
    n_cut = {"a": 0, "b": 0}
    for m, tok in (("a", tok_a), ("b", tok_b)):
        for pid in sel.eval_ids + sel.train_ids:
            for got, whole in zip(sel.tokens[m][pid], full[m][pid], strict=True):
                assert len(got) == min(len(whole), limit)
                if len(whole) > limit:
                    assert got[-(limit - 1) :] == whole[-(limit - 1) :]  # the end of the conversation
                    keep_bos = whole[0] == tok.bos_token_id
                    assert got[0] == (whole[0] if keep_bos else whole[-limit])
                else:
                    assert got == whole
            n_cut[m] += any(len(w) > limit for w in full[m][pid])
    assert sel.n_truncated == n_cut and n_cut["a"] > 0 and n_cut["b"] > 0
    assert sel.summary()["left-truncated: a"] == n_cut["a"] and sel.summary()["truncation"] == "left"
    # with the drop rule the same limit drops pairs (here: every one)
    with pytest.raises(prefs.PreferenceDataError, match=r"\(\d+ longer than max_length="):
        prefs.select_pairs(pairs, {"a": tok_a}, n_eval=5, n_train=5, max_length=limit, source="t")
    with pytest.raises(prefs.PreferenceDataError, match="truncation is 'right'"):
        prefs.select_pairs(pairs, {"a": tok_a}, truncation="right", **kw)


def test_per_seed_subsets_differ_between_seeds_and_nest_within_a_seed():
    tok = tiny_tokenizer("llama")
    sel = prefs.select_pairs(_pairs(40), {"a": tok}, n_eval=5, n_train=30, max_length=200, source="t")
    pool = set(sel.train_ids)
    subsets = {s: sel.subset(20, s) for s in range(5)}
    for s, ids in subsets.items():
        assert len(set(ids)) == 20 and set(ids) <= pool and not set(ids) & set(sel.eval_ids)
        assert sel.subset(8, s) == ids[:8]  # nested within a seed
        assert sel.subset(20, s) == ids  # deterministic
        assert sorted(sel.seed_order(s)) == sorted(sel.train_ids)
    assert len({tuple(sorted(v)) for v in subsets.values()}) == 5  # every seed trains on other pairs
    assert sel.subset(8) == sel.train_ids[:8]  # without a seed: the pool's own order
    # the grid: each cell's key names its seed's pairs; the subset table lists them
    spec = config.grid_spec(
        "tiny", {"quantities": [4, 8], "seeds": [0, 1], "models": ["smollm2-135m-instruct"]}
    )
    table = grid.subset_table(spec, {"hh": sel})
    assert len(table) == 2 * (4 + 8)
    for (q, s), g in table.groupby(["quantity", "seed"]):
        assert g.sort_values("position")["pair_id"].tolist() == sel.subset(q, s)
    data = trainer.cell_data(sel, "a", 8, seed=1)
    assert data.train_ids == sel.subset(8, 1) and data.eval_ids == sel.eval_ids


def test_train_pool_and_truncation_settings_are_validated():
    with pytest.raises(
        config.TrainingConfigError, match=r"train_pool \(100\) is smaller than the largest quantity"
    ):
        config.grid_spec("default", {"settings": {"train_pool": 100}})
    with pytest.raises(
        config.TrainingConfigError, match=r"truncation='middle': Input should be 'drop' or 'left'"
    ):
        config.make_settings({"truncation": "middle"})
    with pytest.raises(config.TrainingConfigError, match=r"truncation left needs a max_length"):
        config.make_settings({"truncation": "left", "max_length": None})
    with pytest.raises(config.TrainingConfigError, match=r"feature_scaling standardize needs method head"):
        config.make_settings({"feature_scaling": "standardize", "method": "lora"})
    with pytest.raises(ValidationError, match=r"depths \(the depth-of-adaptation arm\) need method head"):
        config.TrainSettings(depths=[1], method="head", feature_cache=False)


def test_wilson_interval_and_pair_bootstrap_by_hand():
    from rmvalues.stages.training import metrics

    # Wilson, 18 of 30, z = 1.959964: centre (p + z^2/2n) / (1 + z^2/n), half z sqrt(p(1-p)/n + z^2/4n^2) / (...)
    z, n, p = 1.959963984540054, 30, 0.6
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    lo, hi = metrics.wilson_ci(18, 30)
    assert lo == pytest.approx(centre - half, abs=1e-12) and hi == pytest.approx(centre + half, abs=1e-12)
    assert all(np.isnan(metrics.wilson_ci(0, 0)))
    # every seed right on every pair: the bootstrap cannot move; half right on every pair: neither
    assert metrics.pair_bootstrap_ci(np.ones((5, 50), bool)) == (1.0, 1.0)
    half_right = np.tile(np.array([True, False] * 5)[:, None], (1, 40))
    assert metrics.pair_bootstrap_ci(half_right) == (0.5, 0.5)
    # pairs either always right or always wrong (60 %): the interval is the binomial bootstrap's, around 0.6
    c = np.zeros((5, 300), bool)
    c[:, :180] = True
    lo, hi = metrics.pair_bootstrap_ci(c, n_bootstrap=4000, seed=1)
    se = math.sqrt(0.6 * 0.4 / 300)
    assert lo == pytest.approx(0.6 - 1.96 * se, abs=0.01) and hi == pytest.approx(0.6 + 1.96 * se, abs=0.01)


def _cells_table(acc: dict[str, list[float]], n_eval: int = 300) -> pd.DataFrame:
    rows = []
    for base, values in acc.items():
        for seed, a in enumerate(values):
            rows.append(
                {
                    "cell": f"{base}-s{seed}",
                    "base_model": base,
                    "family": base,
                    "data": "hh",
                    "method": "head",
                    "quantity": 400,
                    "seed": seed,
                    "n_eval_used": n_eval,
                    "eval_accuracy_start": 0.5,
                    "eval_accuracy_end": a,
                    "train_accuracy_end": 0.7,
                    "train_accuracy_final": 0.9,
                }
            )
    return pd.DataFrame(rows)


def test_accuracy_summary_t_interval_over_seeds_and_the_learning_verdict():
    from rmvalues.stages.training import metrics

    cells = _cells_table({"good": [0.60, 0.62, 0.61, 0.63, 0.59], "flat": [0.52, 0.47, 0.50, 0.55, 0.46]})
    summ = metrics.accuracy_summary(cells, None).set_index("base_model")
    x = np.array([0.60, 0.62, 0.61, 0.63, 0.59])
    half = 2.7764451051977987 * x.std(ddof=1) / math.sqrt(5)  # t(0.975, 4)
    assert summ.loc["good", "accuracy"] == pytest.approx(x.mean())
    assert summ.loc["good", "seed_ci_low"] == pytest.approx(x.mean() - half)
    assert summ.loc["good", "learns"] and not summ.loc["flat", "learns"]
    assert np.isnan(summ.loc["good", "pair_ci_low"])  # no per-pair margins given
    # per-pair correctness: the pair interval joins the verdict (here it is wide: 60 of 100 pairs, 1 pattern)
    pairs = []
    for cell in cells[cells["base_model"] == "good"]["cell"]:
        pairs += [{"cell": cell, "pair_id": j, "correct": j < 56} for j in range(100)]
    summ = metrics.accuracy_summary(cells[cells["base_model"] == "good"], pd.DataFrame(pairs))
    assert summ["pair_ci_low"].iloc[0] < 0.5 < summ["pair_ci_high"].iloc[0] and not summ["learns"].iloc[0]
    # cells get Wilson intervals over their held-out pairs
    with_ci = metrics.add_cell_intervals(cells)
    assert with_ci["eval_correct"].iloc[0] == 180
    assert (with_ci["eval_ci_low"].iloc[0], with_ci["eval_ci_high"].iloc[0]) == metrics.wilson_ci(180, 300)
    text = training.readings.accuracy_reading(metrics.accuracy_summary(cells, None))
    assert "good's probe learns" in text and "flat's probe does not reach" in text
    assert "rank 90.0% of their own training pairs" in text  # the final head on all its training pairs
    assert "fits its training pairs, but what it fits does not carry over" in text


def test_compare_bases_is_exact_with_five_seeds():
    rows = []
    for base, values in (("a", [5.0, 6, 7, 8, 9]), ("b", [0.0, 1, 2, 3, 4])):
        for seed, v in enumerate(values):
            rows.append(
                {
                    "cell": f"{base}{seed}",
                    "base_model": base,
                    "family": base,
                    "data": "hh",
                    "method": "head",
                    "quantity": 40,
                    "seed": seed,
                    "step": 10,
                    "framing": "positive",
                    "gap": v,
                }
            )
    comp = analysis.compare_bases(pd.DataFrame(rows))
    r = comp.iloc[0]
    assert r["checkpoint"] == "last" and r["difference"] == 5.0 and r["n_relabellings"] == 252
    # fully separated groups: only the observed split and its mirror are as extreme
    assert r["p_perm"] == pytest.approx(2 / 252) and r["p_min"] == pytest.approx(2 / 252)


def test_pair_feature_cache_is_keyed_and_computes_only_missing_pairs(tmp_path, monkeypatch):
    base = save_tiny_model(tmp_path / "tiny-base", "llama")
    reg = write_registry(tmp_path / "models.yaml", {"tiny-base": registry_entry(base, "llama")})
    spec = get_spec("tiny-base", extra=[reg])
    tok = trainer.training_tokenizer(spec)
    model = load_sequence_classifier(spec, tok)
    pairs = _pairs(40)
    pairs.attrs["sha256"] = "abc"
    sel = prefs.select_pairs(
        pairs, {"tiny-base": tok}, n_eval=4, n_train=12, max_length=40, truncation="left", source="t"
    )
    key = features.pair_feature_key(spec, sel)
    assert key["data_sha256"] == "abc" and key["length_rule"] == {"max_length": 40, "truncation": "left"}
    assert key["model"]["chat_template"] == spec.chat_template and "notes" not in key["model"]
    # the key changes with the base entry, the data and the length rule
    import dataclasses

    other = [
        features.pair_feature_key(dataclasses.replace(spec, chat_template="builtin:gemma"), sel),
        features.pair_feature_key(spec, dataclasses.replace(sel, sha256="abd")),
        features.pair_feature_key(spec, dataclasses.replace(sel, max_length=41)),
        features.pair_feature_key(spec, dataclasses.replace(sel, truncation="drop")),
    ]
    assert len({features.digest(k) for k in [key, *other]}) == 5
    assert features.digest(features.pair_feature_key(dataclasses.replace(spec, notes="x"), sel)) == (
        features.digest(key)
    )
    calls: list[int] = []
    real = RewardScorer.last_hidden

    def counting(self, sequences, batch_size=None, progress=None):
        calls.append(len(sequences))
        return real(self, sequences, batch_size=batch_size, progress=progress)

    monkeypatch.setattr(RewardScorer, "last_hidden", counting)
    ids = sel.eval_ids + sel.train_ids[:6]
    first = features.pair_features(model, tok, spec, sel, ids, tmp_path, 4)
    assert calls == [2 * len(ids)]
    # more pairs later: only the new ones run through the base; the cached ones come back unchanged
    more = features.pair_features(model, tok, spec, sel, sel.eval_ids + sel.train_ids, tmp_path, 4)
    assert calls == [2 * len(ids), 2 * 6]
    for i in ids:
        np.testing.assert_array_equal(more[i][0], first[i][0])
    # the features are the hidden states the head reads of the (truncated) token ids
    i = sel.train_ids[7]
    alone = real(RewardScorer(model, tok), [sel.tokens["tiny-base"][i][0]])
    np.testing.assert_allclose(more[i][0], alone[0], atol=1e-5)
    # nothing new: no forward pass; a pair whose tokens changed is computed again
    features.pair_features(model, tok, spec, sel, ids, tmp_path, 4)
    assert len(calls) == 2
    changed = dataclasses.replace(sel, tokens={"tiny-base": dict(sel.tokens["tiny-base"])})
    c, r = changed.tokens["tiny-base"][ids[0]]
    changed.tokens["tiny-base"][ids[0]] = (c[:-1], r)
    features.pair_features(model, tok, spec, changed, ids, tmp_path, 4)
    assert calls[-1] == 2
    files = list((tmp_path / "features" / "tiny-base").glob("pairs-t-*.npz"))
    assert len(files) == 1  # one file per key, extended


def test_standardized_probe_saves_a_head_on_the_raw_features(tmp_path):
    tok, data = _data(n_train=12, n_eval=6)
    model = _fresh_model(tok)
    seqs = [c for c, _ in data.train] + [r for _, r in data.train] + [c for c, _ in data.eval]
    seqs += [r for _, r in data.eval]
    f = RewardScorer(model, tok).last_hidden(seqs, batch_size=4).astype(np.float64)
    f[:, 0] *= 1000.0  # one outlier dimension, as in LM hidden states
    n, m = len(data.train), len(data.eval)
    t = torch.from_numpy(f.astype(np.float32))
    feats = {"train": (t[:n], t[n : 2 * n]), "eval": (t[2 * n : 2 * n + m], t[2 * n + m :])}
    s = _settings(feature_cache=True, feature_scaling="standardize", epochs=3)
    out = trainer.train_reward_model(model, tok, data, s, 0, tmp_path / "std", feats)
    mean, sd = trainer.standardizer(f[: 2 * n])
    np.testing.assert_allclose(out.scale, sd)
    # the raw head gives the trained model's margins: chosen - rejected on the raw features
    last = out.heads[max(out.heads)]
    raw = (f[2 * n : 2 * n + m] - f[2 * n + m :]) @ last.astype(np.float64)
    std = ((f[2 * n : 2 * n + m] - mean) / sd - (f[2 * n + m :] - mean) / sd) @ (last * sd)
    np.testing.assert_allclose(raw, std, rtol=1e-4, atol=1e-6)
    hist = trainer.tidy_history(out.log_history)
    ev = hist[hist["split"] == "eval"].sort_values("step").iloc[-1]
    assert ev["accuracy"] == pytest.approx(np.mean(raw > 0))
    assert ev["margin"] == pytest.approx(np.mean(raw), rel=1e-4, abs=1e-6)
    idx = {i: (f[k], f[n + k]) for k, i in enumerate(data.train_ids)}
    idx |= {i: (f[2 * n + k], f[2 * n + m + k]) for k, i in enumerate(data.eval_ids)}
    margins = grid.eval_margins(last, data.eval_ids, idx)
    np.testing.assert_allclose(margins["margin"], raw, rtol=1e-5, atol=1e-6)


def test_null_gaps_are_deterministic_random_readouts():
    words = ["a1", "a2", "a3", "c1", "c2", "c3"]
    labels = pd.DataFrame(
        {
            "corpus": "toy",
            "word": words,
            "category": ["Agency"] * 3 + ["Communion"] * 3,
            "subcategory": None,
        }
    )
    rng = np.random.default_rng(0)
    wf = features.WordFeatures(
        "m",
        ["greatest_ever_one", "worst_ever_one"],
        words,
        {"greatest_ever_one": [1] * 6, "worst_ever_one": [1] * 6},
        {p: rng.normal(size=(6, 5)) for p in ("greatest_ever_one", "worst_ever_one")},
    )
    cell = config.Cell("m", "hh", "head", 40, 0)
    a = analysis.null_gaps(cell, "fam", wf, None, labels, n_heads=7)
    b = analysis.null_gaps(cell, "fam", wf, None, labels, n_heads=7)
    pd.testing.assert_frame_equal(a, b)
    assert sorted(a["head"].unique()) == list(range(1, 8)) and set(a["framing"]) == {"positive", "negative"}
    # a scale only rescales dimensions of the draw: with scale 1 it is the same draw
    c = analysis.null_gaps(cell, "fam", wf, np.ones(5), labels, n_heads=7)
    pd.testing.assert_frame_equal(a, c)
    # gaps of 3 vs 3 words lie in [-3, 3]; the summary places a trained gap against them
    assert a["gap"].abs().max() <= 3
    trained = a.assign(step=10, head=None).drop(columns="head").iloc[:2].assign(gap=[2.9, 2.9])
    final = analysis.final_gaps(trained, a)
    row = final[final["framing"] == trained["framing"].iloc[0]].iloc[0]
    sub = a[a["framing"] == row["framing"]]["gap"]
    # one cell (one seed): a random mean is one random head of that cell, drawn with replacement
    assert row["null_unit"] == 1 and row["n_null"] == analysis.NULL_MEANS
    assert row["null_share_beyond"] == pytest.approx(np.mean(sub.abs() >= 2.9), abs=0.03)
    assert sub.min() <= row["null_low"] <= row["null_high"] <= sub.max()


def test_base_differences_name_every_difference():
    bases = pd.DataFrame(
        [
            {
                "base_model": "g",
                "family": "gemma",
                "type": "pretrained",
                "size": "270M",
                "quantization": "Q4_K_M",
                "weights": "g.gguf",
                "hub_id": "google/gemma-3-270m",
                "tokenizer_vocab": 262145,
                "hidden_size": 640,
                "layers": 18,
                "chat_template": "builtin:gemma",
            },
            {
                "base_model": "s",
                "family": "smollm",
                "type": "instruction-tuned",
                "size": "135M",
                "quantization": "Q4_1",
                "weights": "s.gguf",
                "hub_id": "HuggingFaceTB/SmolLM2-135M-Instruct",
                "tokenizer_vocab": 49152,
                "hidden_size": 576,
                "layers": 30,
                "chat_template": "tokenizer",
            },
        ]
    )
    text = "; ".join(training.findings.differences(bases))
    for part in (
        "training type (pretrained vs instruction-tuned)",
        "size (270M vs 135M)",
        "quantization of the GGUF weight file (Q4_K_M vs Q4_1)",
        "tokenizer (262,145 tokens vs 49,152 tokens)",
        "architecture (18 layers vs 30 layers, hidden size 640 vs 576)",
        "g: a chat template supplied by the project (builtin:gemma), on a pretrained model never tuned on a chat",
        "s: its own chat template",
        "model cards google/gemma-3-270m vs HuggingFaceTB/SmolLM2-135M-Instruct",
    ):
        assert part in text
    assert training.findings.differences(bases.iloc[:1]) == []


def _hand_results(two_bases: bool = True) -> training.Results:
    """A Results built by hand: two base models (or one), one quantity, five seeds each."""
    params = training.Params()
    spec = params.grid_spec()
    bases = ["gemma3-270m", "smollm2-135m-instruct"] if two_bases else ["gemma3-270m"]
    cells = pd.DataFrame(
        [
            {
                "cell": f"{b}-s{s}",
                "base_model": b,
                "quantity": 400,
                "n_train_used": 400,
                "seed": s,
                "status": st,
                "steps": st_n,
            }
            for b in bases
            for s, st, st_n in zip(
                range(5), ["trained now"] * 2 + ["reused"] * 3, [25, 80, 250, 250, 250], strict=True
            )
        ]
    )
    accuracy = pd.DataFrame(
        [
            {
                "base_model": "gemma3-270m",
                "quantity": 400,
                "accuracy": 0.612,
                "seed_ci_low": 0.6,
                "seed_ci_high": 0.624,
                "pair_ci_low": 0.55,
                "pair_ci_high": 0.67,
                "learns": True,
            },
            {
                "base_model": "gemma3-270m",
                "quantity": 40,
                "accuracy": 0.5,
                "seed_ci_low": 0.45,
                "seed_ci_high": 0.55,
                "pair_ci_low": np.nan,
                "pair_ci_high": np.nan,
                "learns": False,
            },
        ]
    )
    final = pd.DataFrame(
        [
            {
                "base_model": "gemma3-270m",
                "quantity": 400,
                "framing": "positive",
                "gap": 2.5,
                "ci_low": 1.0,
                "ci_high": 4.0,
                "null_low": -1.0,
                "null_high": 1.0,
            },
            {
                "base_model": "gemma3-270m",
                "quantity": 400,
                "framing": "negative",
                "gap": 0.5,
                "ci_low": -1.0,
                "ci_high": 2.0,
                "null_low": -1.0,
                "null_high": 1.0,
            },
        ]
    )
    comparison = (
        pd.DataFrame(
            [
                {
                    "quantity": q,
                    "framing": "positive",
                    "checkpoint": "last",
                    "base_a": bases[0],
                    "base_b": bases[-1],
                    "difference": d,
                    "ci_low": lo,
                    "ci_high": hi,
                    "p_perm": p,
                    "p_min": 0.0079365,
                }
                for q, d, lo, hi, p in ((40, 0.4, -1.0, 1.8, 0.5), (400, -3.25, -5.0, -1.5, 0.0079365))
            ]
        )
        if two_bases
        else None
    )
    return training.Results(
        params=params,
        spec=spec,
        data=pd.DataFrame(
            [
                {
                    "source": "hh",
                    "n_rows": 2312,
                    "n_examined": 820,
                    "n_eligible": 800,
                    "data_seed": 0,
                    "dropped: too long": 20,
                    "left-truncated: gemma3-270m": 7.0,
                    "n_eval": 300,
                    "n_train_pool": 500,
                }
            ]
        ),
        cells=cells,
        history=pd.DataFrame(),
        trajectories=pd.DataFrame({"word": ["a", "b", "c"]}),
        registry=Path("results/training/x/registry.yaml"),
        timings={
            "grid: pair features gemma3-270m": 100.4,
            "grid: train gemma3-270m-s0": 2.0,
            "grid: train x": 3.0,
        },
        words_origin="corpora/default/corpora.parquet",
        accuracy=accuracy,
        final=final,
        comparison=comparison,
        paper_files=pd.DataFrame(
            {
                "dataset": ["a", "b"],
                "label": ["A 13K", "B 27K"],
                "used": [True, False],
                "identical_to": ["b", "a"],
                "sha256": ["0" * 64, "0" * 64],
                "rows": [10, 10],
                "duplicate_rows_dropped": [2, 0],
            }
        ),
        consistency={
            "rm": "gemma3-270m-s4",
            "prompt_id": "best_ever_one",
            "words": 3,
            "max_abs_difference": 2.5e-7,
            "tolerance": 1e-3,
        },
        seconds=1234.4,
    )


def test_key_numbers_from_a_hand_made_run():
    res = _hand_results()
    k = training.text.key_numbers(res)
    assert all(isinstance(v, str) and v for v in k.values())
    assert k["n_cells"] == "10" and k["n_trained_now"] == "4" and k["steps_range"] == "25 to 250"
    assert k["n_eval"] == "300" and k["n_pool"] == "500" and k["n_words"] == "3"
    assert k["cells_train_seconds"] == "n/a"  # the hand-made cells record no training time
    assert k["seconds"] == "1,234 s" and k["feature_seconds"] == "100 s" and k["train_seconds"] == "5 s"
    assert k["accuracy_top"] == "gemma3-270m 61.2% (seeds [60.0%, 62.4%], pairs [55.0%, 67.0%])"
    assert k["n_learning"] == "1 of 2"
    assert (
        k["gap_top_positive"] == "gemma3-270m 2.5, 95% CI [1.0, 4.0]; means of random heads [\u22121.0, 1.0]"
    )
    assert k["outside_null_positive"] == "1 of 1" and k["outside_null_negative"] == "0 of 1"
    assert k["difference_top_positive"] == (
        "gemma3-270m minus smollm2-135m-instruct \u22123.2 (Welch 95% CI [\u22125.0, \u22121.5], exact permutation "
        "p = 0.008)"
    )
    assert k["separated_positive"] == "1 of 2" and k["separated_negative"] == "n/a"  # no negative rows
    assert k["difference_top_negative"] == "n/a" and k["p_min"] == "0.0079"
    assert k["paper_files"] == "2" and k["paper_files_used"] == "1"
    assert k["consistency_difference"] == "2.5e-07" and k["consistency_tolerance"] == "0.001"
    assert k["data_visited"] == "hh: 820 of its 2,312 pairs (data seed 0) until 800 were eligible"
    assert k["data_dropped"] == "hh: 20 too long"
    assert k["data_truncated"] == "hh: of its 800 eligible pairs, 7 under gemma3-270m"
    assert k["paper_copies"] == "b (B 27K) is byte-identical to a (sha256 000000000000...)"
    assert k["paper_repeats"] == "a repeats 2 of its 10 rows"


def test_key_numbers_has_every_key_without_a_comparison_or_gaps():
    full = training.text.key_numbers(_hand_results())
    res = _hand_results(two_bases=False)
    res.final, res.accuracy, res.consistency = pd.DataFrame(), pd.DataFrame(), {}
    k = training.text.key_numbers(res)
    assert set(k) == set(full)
    for key in (
        "gap_top_positive",
        "difference_top_positive",
        "p_min",
        "accuracy_top",
        "n_learning",
        "outside_null_negative",
        "consistency_rm",
        "consistency_difference",
    ):
        assert k[key] == "n/a", key
    assert k["registry_path"].endswith("registry.yaml")
    assert k["consistency_check"] == "not run in this run (no trained RM)"
    assert k["learned_top"] == "no base model" and k["null_inside_top"] == "no base model"
    assert k["gap_lean_positive"] == "n/a"
    # one base model: the comparisons between bases say why they are missing
    assert k["separated_positive"] == k["comparison_change_positive"] == "n/a (one base model)"


def test_figures_always_draw_one_figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rmvalues.stages.training import figures

    for fig in (
        figures.plot_final_gaps(pd.DataFrame(), pd.DataFrame()),
        figures.plot_trajectories(pd.DataFrame()),
        figures.plot_paper_trajectories(pd.DataFrame()),
    ):
        assert fig.get_size_inches()[0] <= figures.MAX_WIDTH
        plt.close(fig)


def test_reader_tables_write_intervals_in_one_column():
    from rmvalues.stages.training import tables

    res = _hand_results()
    res.accuracy["n_seeds"], res.accuracy["untrained_accuracy"], res.accuracy["train_accuracy"] = 5, 0.5, 0.8
    res.accuracy["joint_ci_low"], res.accuracy["joint_ci_high"] = [0.55, np.nan], [0.65, np.nan]
    acc = tables.accuracy_table(res.accuracy)
    assert acc.loc[0, "over seeds"] == "[0.600, 0.624]" and acc.loc[1, "over pairs"] == "n/a"
    assert acc.loc[0, "over seeds and pairs"] == "[0.550, 0.650]"
    assert acc["learns"].tolist() == ["yes", "no"]
    res.final["null_share_beyond"], res.final["null_unit"] = 0.25, 5
    gaps = tables.gap_table(res.final)
    assert gaps.loc[0, "95% CI"] == "[1.0, 4.0]" and gaps.loc[0, "random means"] == "[\u22121.0, 1.0]"
    assert gaps.loc[0, "heads per mean"] == "5"
    res.comparison["gap_a"], res.comparison["gap_b"], res.comparison["d"] = 1.0, 2.0, -0.5
    cmp = tables.comparison_table(res.comparison)
    assert cmp.loc[1, "Welch 95% CI"] == "[\u22125.0, \u22121.5]" and cmp.loc[1, "permutation p"] == "0.008"
    assert "A vs B" not in cmp.columns  # one pair of base models: named in the caption
