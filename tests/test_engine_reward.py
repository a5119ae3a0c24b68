"""The reward-scoring engine: token-exact inputs, cached == uncached, batch/padding invariance, readouts.

Every model here is a tiny RANDOM model of the real classes (Llama, Gemma 3, Gemma 2) with the real chat-template
formats (ChatML, Llama 3, Gemma), built in-process: no hub, no downloads.
"""

from __future__ import annotations

import numpy as np
import pytest
import tinymodels as T
import torch

from rmvalues import models
from rmvalues.data import scores
from rmvalues.engine import (
    RewardScorer,
    ScoringError,
    check_inputs,
    rank_correlation,
    split_template,
    vocab_candidates,
    word_candidates,
)

PROMPT = "What, in one word, is the best thing in the world?"


WORDS = ["honest", "nurse", "friendly", "kindness", "peace", "war", "competent", "lazy", "selfish", "loyal",
         "joy", "freedom", "x", "self-confidence", "ambition"]  # fmt: skip


METHODS = ("full", "prefix-cache", "shared-prefix")


LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)


def llama3_reward_model():
    """Tiny Llama RM with the Llama 3 special tokens and turn format (one <|begin_of_text|>, <|eot_id|>)."""
    model, tok = T.tiny_reward_model("llama")
    tok.add_special_tokens(
        {
            "bos_token": "<|begin_of_text|>",
            "additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        }
    )
    tok.chat_template = LLAMA3_TEMPLATE
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model.resize_token_embeddings(len(tok))
    return model, tok


def gemma2_reward_model(attn: str = "eager"):
    """Tiny Gemma 2 RM: attention-logit soft-capping, alternating sliding/full layers, Gemma turn format."""
    from transformers import Gemma2Config, Gemma2ForSequenceClassification

    tok = T.tiny_tokenizer("gemma")
    cfg = Gemma2Config(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, max_position_embeddings=256, sliding_window=8,
        attn_logit_softcapping=50.0, final_logit_softcapping=30.0, query_pre_attn_scalar=8,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        num_labels=1, attn_implementation=attn,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Gemma2ForSequenceClassification(cfg)
    return model.eval(), tok


FAMILIES = {
    "llama-chatml": lambda: T.tiny_reward_model("llama"),
    "llama3-format": llama3_reward_model,
    "gemma3": lambda: T.tiny_reward_model("gemma"),
    "gemma2-softcap-eager": gemma2_reward_model,
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models are dominated by per-op overhead, which OpenMP threads multiply on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", params=list(FAMILIES))
def rm(request):
    model, tok = FAMILIES[request.param]()
    split = split_template(tok, PROMPT, "best_world_one")
    cands = word_candidates(tok, split, WORDS)
    return request.param, model, tok, split, cands


def test_inputs_are_token_exact(rm):
    name, _, tok, split, cands = rm
    for cand in cands:
        assert cand.how == "in-context", (name, cand)
        assert check_inputs(tok, split, cand) == [], (name, cand.text)
        # the candidate ids are exactly what the rendered conversation holds
        text = tok.apply_chat_template(
            [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": cand.text}], tokenize=False
        )
        assert tok(text, add_special_tokens=False)["input_ids"] == split.input_ids(cand.ids)
        if tok.unk_token_id not in cand.ids:  # the tiny Gemma vocabulary has no byte fallback
            assert tok.decode(list(cand.ids)) == cand.text


@pytest.mark.parametrize("family", ["llama3-format", "gemma3", "gemma2-softcap-eager"])
def test_one_bos_where_the_tokenizer_would_add_a_second(family):
    _, tok = FAMILIES[family]()
    split = split_template(tok, PROMPT)
    ids = split.input_ids(word_candidates(tok, split, ["peace"])[0].ids)
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    if family != "llama3-format":  # the Gemma tokenizers add <bos> when encoding: the peer bug
        text = tok.apply_chat_template(
            [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": "peace"}], tokenize=False
        )
        assert tok(text)["input_ids"][:2] == [tok.bos_token_id] * 2


def test_template_suffixes_match_the_formats():
    _, tok = llama3_reward_model()
    split = split_template(tok, PROMPT)
    assert tok.convert_ids_to_tokens(list(split.suffix_ids)) == ["<|eot_id|>"]
    assert split.prefix_text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    _, tok = T.tiny_reward_model("gemma")
    split = split_template(tok, PROMPT)
    assert split.prefix_text.startswith("<bos><start_of_turn>user\n")
    assert split.prefix_text.endswith("<start_of_turn>model\n")
    assert split.suffix_text == "<end_of_turn>\n"


def test_leading_space_convention_bare_form_after_a_newline():
    _, tok = T.tiny_reward_model("llama")  # byte-level BPE: a word after "\n" has no leading-space marker
    split = split_template(tok, PROMPT)
    for cand in word_candidates(tok, split, WORDS):
        assert cand.ids == tuple(tok(cand.text, add_special_tokens=False)["input_ids"])
        assert not tok.convert_ids_to_tokens(list(cand.ids))[0].startswith("Ġ")


def test_vocab_candidates_cover_every_non_special_id():
    _, tok = T.tiny_reward_model("gemma")
    cands = vocab_candidates(tok)
    ids = [c.ids[0] for c in cands]
    assert len(ids) == len(set(ids)) and all(len(c.ids) == 1 for c in cands)
    assert set(ids) == set(range(len(tok))) - set(tok.all_special_ids)
    assert len(vocab_candidates(tok, include_special=True)) == len(tok)


def test_template_without_the_answer_is_rejected():
    _, tok = T.tiny_reward_model("llama")
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'user' %}{{ m['content'] }}{% endif %}{% endfor %}"
    )
    with pytest.raises(ScoringError, match="0 times"):
        split_template(tok, PROMPT)


def _hf_reference(model, split, cands):
    """The model's own forward and readout, one whole sequence at a time (no padding at all)."""
    with torch.no_grad():
        return np.array([model(torch.tensor([split.input_ids(c.ids)])).logits[0, 0].item() for c in cands])


@pytest.mark.parametrize("method", METHODS)
def test_cached_equals_uncached_fp32(rm, method):
    name, model, tok, split, cands = rm
    ref = _hf_reference(model, split, cands)
    got = RewardScorer(model, tok, method=method, batch_size=64).score(split, [c.ids for c in cands])
    assert np.max(np.abs(got - ref)) <= 1e-4, (name, method)


@pytest.mark.parametrize("method", METHODS)
def test_invariant_to_batch_size_and_padding_side(rm, method):
    name, model, tok, split, cands = rm
    ids = [c.ids for c in cands]
    base = RewardScorer(model, tok, method=method, batch_size=1).score(split, ids)
    for bs in (1, 7, 64):
        for side in ("right", "left"):
            got = RewardScorer(model, tok, method=method, batch_size=bs, padding_side=side).score(split, ids)
            assert np.max(np.abs(got - base)) <= 1e-4, (name, method, bs, side)


def test_vocab_mode_cached_equals_uncached():
    model, tok = T.tiny_reward_model("gemma")
    split = split_template(tok, PROMPT)
    ids = [c.ids for c in vocab_candidates(tok)]
    full = RewardScorer(model, tok, method="full", batch_size=64).score(split, ids)
    fast = RewardScorer(model, tok, method="shared-prefix", batch_size=64).score(split, ids)
    assert np.max(np.abs(full - fast)) <= 1e-4


def test_pad_token_as_candidate_is_read_at_its_own_position():
    """The readout uses the attention mask, not the pad id (transformers' own readout would skip it)."""
    model, tok = T.tiny_reward_model("llama")
    split = split_template(tok, PROMPT)
    ids = [(tok.pad_token_id,), (5,)]
    ref = np.array([model(torch.tensor([split.input_ids(i)])).logits[0, 0].item() for i in ids])
    assert np.allclose(RewardScorer(model, tok, method="shared-prefix").score(split, ids), ref, atol=1e-5)


def test_bf16_rank_correlation_with_fp32():
    model, tok = T.tiny_reward_model("llama")
    split = split_template(tok, PROMPT)
    ids = [c.ids for c in vocab_candidates(tok)]
    ref = RewardScorer(model, tok, method="full").score(split, ids)
    fast = RewardScorer(model.to(torch.bfloat16), tok, method="shared-prefix").score(split, ids)
    rho = rank_correlation(ref, fast)
    print(f"bf16 shared-prefix vs fp32 full: Spearman {rho:.4f} over {len(ids)} tokens")
    assert rho > 0.95


def test_readouts():
    model, tok = T.tiny_reward_model("llama")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        model.score = torch.nn.Linear(model.config.hidden_size, 2, bias=False)  # a two-output head
    model.config.num_labels = 2
    split = split_template(tok, PROMPT)
    cands = word_candidates(tok, split, WORDS[:4])
    ref = np.array([model(torch.tensor([split.input_ids(c.ids)])).logits[0, 0].item() for c in cands])
    got = RewardScorer(model, tok, readout="logits_0").score(split, [c.ids for c in cands])
    assert np.allclose(got, ref, atol=1e-5)
    with pytest.raises(ScoringError, match="one-label head"):
        RewardScorer(model, tok, readout="logits_squeeze").score(split, [c.ids for c in cands])
    with pytest.raises(ScoringError, match="method='full'"):
        RewardScorer(model, tok, readout="custom_score", method="shared-prefix")
    assert RewardScorer(model, tok, readout="custom_score").method == "full"


PAPER_RMS = {r.model: r.family for r in scores.published_rms()}


def test_registry_holds_the_papers_ten_rms():
    reg = models.registry()
    by_hub = {s.hub_id: s for s in reg.values() if s.kind == "reward-model" and s.source.type == "hub"}
    assert set(PAPER_RMS) <= set(by_hub)
    for hub_id, family in PAPER_RMS.items():
        spec = by_hub[hub_id]
        assert spec.family == family
        assert spec.dtype == "bfloat16" and spec.revision and spec.size
        assert spec.score_readout in ("logits_squeeze", "logits_0", "custom_score")
        if family == "gemma":
            assert spec.attn_implementation == "eager", hub_id  # soft-capping breaks SDPA
        if spec.score_readout == "custom_score":
            assert spec.trust_remote_code


def test_features_are_what_the_head_reads():
    model, tok = T.tiny_reward_model("gemma")
    split = split_template(tok, PROMPT)
    cands = [c.ids for c in word_candidates(tok, split, WORDS)]
    scorer = RewardScorer(model, tok, method="shared-prefix", batch_size=4)
    feats = scorer.features(split, cands)
    whole = scorer.last_hidden([split.input_ids(c) for c in cands])
    assert feats.shape == (len(cands), model.config.hidden_size)
    assert np.max(np.abs(feats - whole)) <= 1e-4
    head = model.score.weight.detach().double().numpy().reshape(-1)
    assert np.allclose(feats.astype(np.float64) @ head, scorer.score(split, cands), atol=1e-5)


def test_custom_score_readout_runs_the_whole_model():
    """A remote-code RM returning ``.score`` (ArmoRM, QRM) is scored whole, its own readout kept."""
    from types import SimpleNamespace

    inner, tok = T.tiny_reward_model("llama")

    class CustomRM(torch.nn.Module):  # stands in for trust_remote_code classes (no linear `score` head)
        def __init__(self):
            super().__init__()
            self.inner, self.config = inner, inner.config

        def forward(self, input_ids, attention_mask=None):
            return SimpleNamespace(
                score=self.inner(input_ids=input_ids, attention_mask=attention_mask).logits * 2
            )

    split = split_template(tok, PROMPT)
    cands = word_candidates(tok, split, WORDS)
    scorer = RewardScorer(CustomRM(), tok, readout="custom_score", batch_size=4)
    assert scorer.method == "full"
    ref = 2 * _hf_reference(inner, split, cands)
    assert np.max(np.abs(scorer.score(split, [c.ids for c in cands]) - ref)) <= 1e-4
