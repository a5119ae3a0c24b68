"""The log-prob engine: hand-computed bigram model, full-forward reference, prefix cache, prompt formats."""

from __future__ import annotations

import numpy as np
import pytest
import tinymodels as tm
import torch

from rmvalues import engine as L
from rmvalues import models

PROMPT = "What is the best thing in the world? Answer with one word."
WORDS = ["freedom", "love", "kindness", "competent", "warm", "trustworthy", "x", "honest nurse"]


@pytest.fixture(scope="module")
def llama():
    return tm.tiny_causal_lm("llama")


@pytest.fixture(scope="module")
def gemma():
    return tm.tiny_causal_lm("gemma")


def _bigram_llama():
    """A tiny Llama whose attention and MLP outputs are zeroed: the logits at a position depend on that
    position's token only, logits = E @ (rmsnorm(E[token]) * w) (tied embeddings), hand-computable."""
    model, tok = tm.tiny_causal_lm("llama", seed=3)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.norm.weight.copy_(torch.linspace(0.5, 1.5, model.config.hidden_size))
    return model, tok


def _hand_logprobs(model, ids: list[int]) -> np.ndarray:
    """log-softmax of the bigram logits for each context token, in float64 with numpy."""
    emb = model.model.embed_tokens.weight.detach().double().numpy()
    w = model.model.norm.weight.detach().double().numpy()
    eps = model.config.rms_norm_eps
    x = emb[ids]
    h = x / np.sqrt((x**2).mean(-1, keepdims=True) + eps) * w
    logits = h @ emb.T
    logits -= logits.max(-1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(-1, keepdims=True))


@pytest.mark.parametrize("eot", [False, True])
def test_word_logprob_matches_a_hand_computed_bigram_model(eot):
    model, tok = _bigram_llama()
    eng = L.LogProbEngine(model, tok, prompt_format="chat", batch_size=3, max_batch_positions=6)
    df = eng.word_logprobs({"p": PROMPT}, WORDS, include_end_of_turn=eot).set_index("word")
    split = eng.split(PROMPT, "p")
    end = list(L.end_of_turn_ids(tok, split)) if eot else []
    for cand in eng.word_candidates(split, WORDS):
        seq = [split.prefix_ids[-1], *cand.ids, *end]  # context token of each target, then the targets
        table = _hand_logprobs(model, seq[:-1])
        expected = sum(table[j, seq[j + 1]] for j in range(len(seq) - 1))
        assert df.loc[cand.text, "logprob"] == pytest.approx(expected, abs=2e-4)
        assert df.loc[cand.text, "n_tokens"] == len(cand.ids)
        assert df.loc[cand.text, "first_logprob"] == pytest.approx(table[0, seq[1]], abs=2e-4)


@pytest.mark.parametrize("family", ["llama", "gemma"])
@pytest.mark.parametrize("fmt", ["chat", "raw"])
@pytest.mark.parametrize("eot", [False, True])
def test_engine_equals_a_plain_full_forward(family, fmt, eot, llama, gemma):
    """Prefix cache, shared continuations and batching change nothing (Gemma: sliding window 8 < prefix)."""
    model, tok = llama if family == "llama" else gemma
    eng = L.LogProbEngine(model, tok, prompt_format=fmt, batch_size=3, max_batch_positions=8)
    df = eng.word_logprobs({"p": PROMPT}, WORDS, include_end_of_turn=eot)
    split = eng.split(PROMPT, "p")
    if family == "gemma":
        assert len(split.prefix_ids) > model.config.sliding_window
    end = list(L.end_of_turn_ids(tok, split)) if eot else []
    for cand, (_, row) in zip(eng.word_candidates(split, WORDS), df.iterrows(), strict=True):
        ref = L.reference_word_logprob(model, [*split.prefix_ids, *cand.ids, *end], len(split.prefix_ids))
        assert row["logprob"] == pytest.approx(ref.sum(), abs=1e-4)
        assert row["logprob_mean"] == pytest.approx(ref.mean(), abs=1e-4)
        if eot:
            assert row["end_logprob"] == pytest.approx(ref[-1], abs=1e-4)
        else:
            assert np.isnan(row["end_logprob"])


def test_end_of_turn_adds_exactly_the_end_token(llama):
    model, tok = llama
    eng = L.LogProbEngine(model, tok, prompt_format="chat")
    a = eng.word_logprobs({"p": PROMPT}, WORDS, include_end_of_turn=False)
    b = eng.word_logprobs({"p": PROMPT}, WORDS, include_end_of_turn=True)
    np.testing.assert_allclose(b["logprob"], a["logprob"] + b["end_logprob"], atol=1e-5)
    assert (b["n_tokens"] == a["n_tokens"]).all()
    assert (b["logprob"] < a["logprob"]).all()


def test_covering_inputs_shares_common_continuations():
    covers, cover_of = L.covering_inputs([(1, 2, 3), (1, 2), (1,), (4,), (), (1, 2, 3), (1, 5)])
    assert sorted(covers) == [(1, 2, 3), (1, 5), (4,)]
    assert [covers[c] if c >= 0 else None for c in cover_of] == [
        (1, 2, 3),
        (1, 2, 3),
        (1, 2, 3),
        (4,),
        None,
        (1, 2, 3),
        (1, 5),
    ]


def test_shared_continuations_cut_the_forward_positions(llama):
    model, tok = llama
    eng = L.LogProbEngine(model, tok, prompt_format="raw")
    words = ["kind", "kindness", "kindly", "kinder", "warm", "warmth"]
    eng.word_logprobs({"p": PROMPT}, words)
    assert eng.stats.forward_positions < eng.stats.naive_positions


def test_next_token_logprobs_batched_equals_each_prefix(gemma):
    model, tok = gemma
    eng = L.LogProbEngine(model, tok, prompt_format="chat", batch_size=2)
    prompts = {"long": PROMPT, "short": "Hi", "mid": "What is the worst thing ever?"}
    lp = eng.next_token_logprobs(prompts)
    assert lp.shape == (3, model.config.vocab_size)
    assert torch.allclose(lp.exp().sum(-1), torch.ones(3), atol=1e-4)
    for row, (pid, text) in enumerate(prompts.items()):
        first = eng.prefix(eng.split(text, pid).prefix_ids).first_logprobs
        assert torch.allclose(lp[row], first, atol=1e-4), pid


def test_prompt_formats_and_end_tokens(llama, gemma):
    (lm, ltok), (_, gtok) = llama, gemma
    chat = L.build_split(ltok, PROMPT, "chat")
    assert chat.prefix_text.endswith("<|im_start|>assistant\n") and chat.suffix_text == "<|im_end|>\n"
    assert ltok.convert_ids_to_tokens(list(L.end_of_turn_ids(ltok, chat))) == ["<|im_end|>"]
    graw = L.build_split(gtok, PROMPT, "raw")
    assert graw.prefix_ids[0] == gtok.bos_token_id and graw.prefix_ids.count(gtok.bos_token_id) == 1
    assert graw.suffix_ids == () and L.end_of_turn_ids(gtok, graw) == (gtok.eos_token_id,)
    lraw = L.build_split(ltok, PROMPT, "raw")  # SmolLM-like: no BOS added
    assert lraw.prefix_text == PROMPT
    gchat = L.build_split(gtok, PROMPT, "chat")
    assert gtok.convert_ids_to_tokens(list(L.end_of_turn_ids(gtok, gchat))) == ["<end_of_turn>"]
    # raw: the word follows after one space; chat: it starts the assistant turn
    eng_raw = L.LogProbEngine(lm, ltok, prompt_format="raw")
    eng_chat = L.LogProbEngine(lm, ltok, prompt_format="chat")
    raw_c = eng_raw.word_candidates(eng_raw.split(PROMPT), ["freedom"])[0]
    chat_c = eng_chat.word_candidates(eng_chat.split(PROMPT), ["freedom"])[0]
    assert raw_c.text == " freedom" and ltok.convert_ids_to_tokens(list(raw_c.ids))[0].startswith("Ġ")
    assert chat_c.text == "freedom" and not ltok.convert_ids_to_tokens(list(chat_c.ids))[0].startswith("Ġ")


def test_chat_format_without_a_template_is_a_clear_error(llama):
    model, tok = tm.tiny_causal_lm("llama")
    tok.chat_template = None
    with pytest.raises(L.PromptFormatError, match="no chat template.*prompt_format='raw'"):
        L.LogProbEngine(model, tok, name="tiny", prompt_format="chat")
    with pytest.raises(L.PromptFormatError, match="no chat template"):
        L.build_split(tok, PROMPT, "chat")
    L.LogProbEngine(model, tok, prompt_format="raw")  # raw works
    with pytest.raises(L.PromptFormatError, match="valid: auto, chat, raw"):
        L.resolve_prompt_format("smollm2-135m-instruct", "plain")


def test_auto_format_follows_the_registry_type(tmp_path):
    folder = tm.save_tiny_model(tmp_path / "tl", "llama")
    reg = tm.write_registry(
        tmp_path / "models.yaml",
        {
            "tiny-it": tm.registry_entry(folder, "llama", type="instruction-tuned"),
            "tiny-base": tm.registry_entry(folder, "llama"),
            "tiny-it-none": tm.registry_entry(
                folder, "llama", type="instruction-tuned", chat_template="none"
            ),
        },
    )
    spec = {name: models.get_spec(name, extra=[reg]) for name in ("tiny-it", "tiny-base", "tiny-it-none")}
    assert L.resolve_prompt_format(spec["tiny-it"]) == "chat"
    assert L.resolve_prompt_format(spec["tiny-base"]) == "raw"
    assert L.resolve_prompt_format(spec["tiny-it"], "raw") == "raw"
    assert L.resolve_prompt_format("gemma3-270m") == "raw"
    assert L.resolve_prompt_format("smollm2-135m-instruct") == "chat"
    with pytest.raises(
        L.PromptFormatError, match="'tiny-it-none'.*without a chat template.*prompt_format='raw'"
    ):
        L.resolve_prompt_format(spec["tiny-it-none"])
    with pytest.raises(models.RegistryError, match="unknown model 'tiny-it'"):
        models.get_spec("tiny-it")  # extra registries are passed explicitly, never through the environment
    eng = L.LogProbEngine.from_registry(spec["tiny-it"])
    assert eng.prompt_format == "chat" and eng.describe()["end_of_turn_token"] == ["<|im_end|>"]


def test_empty_word_list_is_an_error(llama):
    eng = L.LogProbEngine(*llama, prompt_format="chat")
    with pytest.raises(ValueError, match="no words"):
        eng.word_logprobs({"p": PROMPT}, [])


@pytest.mark.realmodel
def test_embedded_models_match_a_full_forward():
    for name in ("smollm2-135m-instruct", "gemma3-270m"):
        eng = L.LogProbEngine.from_registry(name)
        words = ["freedom", "love", "trustworthiness"]
        df = eng.word_logprobs({"p": "What, in one word, is the greatest thing ever?"}, words)
        split = eng.split("What, in one word, is the greatest thing ever?", "p")
        for cand, lp in zip(eng.word_candidates(split, words), df["logprob"], strict=True):
            ref = L.reference_word_logprob(eng.model, [*split.prefix_ids, *cand.ids], len(split.prefix_ids))
            assert lp == pytest.approx(ref.sum(), abs=2e-3), (name, cand.text)


def test_batch_size_has_one_meaning_in_both_engines(llama):
    """Issue 17: ``batch_size`` is items per forward pass with 0 = automatic, in the stages' schemas and in
    both engines; a string such as ``"auto"``, a negative number or a bool is refused with that meaning."""
    from rmvalues.core.params import AUTOMATIC_BATCH, resolve_batch_size
    from rmvalues.engine import RewardScorer

    assert AUTOMATIC_BATCH == 0
    assert resolve_batch_size(0, "cpu", cpu=64, cuda=4096) == 64
    assert resolve_batch_size(0, "cuda", cpu=64, cuda=4096) == 4096
    assert resolve_batch_size(7, "cuda", cpu=64, cuda=4096) == 7
    for bad in ("auto", -1, True, 2.0):
        with pytest.raises(ValueError, match=r"positive integer, or 0 for automatic"):
            resolve_batch_size(bad, "cpu", cpu=64, cuda=4096)
    model, tok = llama
    assert L.LogProbEngine(model, tok, prompt_format="raw", batch_size=0).batch_size == 64
    assert L.LogProbEngine(model, tok, prompt_format="raw", batch_size=5).batch_size == 5
    with pytest.raises(ValueError, match="0 for automatic"):
        L.LogProbEngine(model, tok, prompt_format="raw", batch_size="auto")
    rm, rm_tok = tm.tiny_reward_model("llama")
    assert RewardScorer(rm, rm_tok, batch_size=0).batch_size == 64
    assert RewardScorer(rm, rm_tok).batch_size == 64  # the default is automatic
    with pytest.raises(ValueError, match="0 for automatic"):
        RewardScorer(rm, rm_tok, batch_size="auto")
