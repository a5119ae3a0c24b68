"""The implicit-rewards stage (rmvalues.stages.implicit): MWLR on toy distributions, vocabulary alignment,
analyses, planted-word recovery, parameters, and the stage on tiny models."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import tinymodels as tm
import torch

from rmvalues import engine as L
from rmvalues.core.errors import ParameterError
from rmvalues.core.manifest import RunRecord
from rmvalues.data.corpora import read_corpora_table
from rmvalues.data.scores import labels_of
from rmvalues.stages import implicit as stage
from rmvalues.stages.implicit import metrics, params, rewards, validation

# the functions under test, by the name the old flat module gave them
mwlr, log_ratio, token_strings = metrics.mwlr, metrics.log_ratio, metrics.token_strings
align_vocabularies, require_same_tokenizer = metrics.align_vocabularies, metrics.require_same_tokenizer

# -- metrics --------------------------------------------------------------------------------------------


def test_mwlr_on_a_toy_distribution():
    p = np.array([0.5, 0.3, 0.2])
    q = np.array([0.2, 0.3, 0.5])
    got = mwlr(np.log(p), np.log(q))
    expected = [0.5 * 0.7 * math.log(0.2 / 0.5), 0.0, 0.5 * 0.7 * math.log(0.5 / 0.2)]
    np.testing.assert_allclose(got, expected, atol=1e-12)
    np.testing.assert_allclose(got, [-0.320702, 0.0, 0.320702], atol=1e-6)
    np.testing.assert_allclose(log_ratio(np.log(p), np.log(q)), np.log(q / p))
    # tensors give the same numbers
    t = mwlr(torch.log(torch.tensor(p)), torch.log(torch.tensor(q)))
    np.testing.assert_allclose(t.numpy(), expected, atol=1e-12)


def test_mwlr_damps_improbable_tail_tokens():
    """A tail token with a huge ratio (1e-6 -> 1e-4) beats a head token (0.3 -> 0.4) on the raw log ratio
    but not on MWLR."""
    logp = np.log([1e-6, 0.3])
    logq = np.log([1e-4, 0.4])
    lr, mw = log_ratio(logp, logq), mwlr(logp, logq)
    assert lr[0] > lr[1]
    assert mw[1] > mw[0]
    assert mw[0] == pytest.approx(0.5 * (1e-6 + 1e-4) * math.log(100))


# -- vocabulary alignment ---------------------------------------------------------------------------------


def test_token_strings_read_the_space_markers():
    ltok, gtok = tm.tiny_tokenizer("llama"), tm.tiny_tokenizer("gemma")
    ls, gs = token_strings(ltok), token_strings(gtok)
    for tok, strings in ((ltok, ls), (gtok, gs)):
        ids = tok(" kindness", add_special_tokens=False)["input_ids"]
        assert "".join(strings[i] for i in ids) == " kindness"
        for sid in tok.all_special_ids:
            assert strings[sid] is None
    assert ltok.convert_ids_to_tokens(ltok(" the", add_special_tokens=False)["input_ids"])[0].startswith("Ġ")


class _FakeTok:
    """Just enough of a tokenizer for align_vocabularies (token strings are monkeypatched)."""

    def __init__(self, tokens):
        self.tokens = tokens

    def __len__(self):
        return len(self.tokens)

    def get_vocab(self):
        return {t: i for i, t in enumerate(self.tokens)}

    def convert_ids_to_tokens(self, ids):
        return [self.tokens[i] for i in ids]


def test_collisions_are_reported_and_pooled_by_summing_probabilities(monkeypatch):
    p_tok = _FakeTok(["a", "Ġb", "<0x41>", "A", "<s>"])
    q_tok = _FakeTok(["▁b", "A", "c"])
    strings = {id(p_tok): ["a", " b", "A", "A", None], id(q_tok): [" b", "A", "c"]}
    monkeypatch.setattr(metrics, "token_strings", lambda tok: strings[id(tok)])
    al = align_vocabularies(p_tok, q_tok, "P", "Q")
    assert al.strings == [" b", "A"] and not al.identical
    assert al.collisions[["model", "string", "n_ids"]].values.tolist() == [["P", "A", 2]]
    assert al.collisions["ids"].iloc[0] == [2, 3]
    s = al.summary()
    assert (s["shared_strings"], s["collision_strings_p"], s["collision_ids_p"], s["alignable_p"]) == (
        2,
        1,
        2,
        4,
    )
    logp = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.25, 0.15]]))
    logq = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    np.testing.assert_allclose(al.aggregate(logp, "p").exp().numpy(), [[0.2, 0.55]], atol=1e-6)
    np.testing.assert_allclose(al.aggregate(logq, "q").exp().numpy(), [[0.5, 0.3]], atol=1e-6)
    tokens = rewards.token_rewards(logp, logq, al, ["positive"])
    row = tokens[(tokens["framing"] == "all") & (tokens["token"] == "A")].iloc[0]
    assert row["mwlr"] == pytest.approx(0.5 * (0.55 + 0.3) * math.log(0.3 / 0.55))
    assert row["logratio"] == pytest.approx(math.log(0.3 / 0.55))
    assert tokens.loc[tokens["framing"] == "all", "rank_mwlr"].tolist() == [1, 2]


def test_empty_overlap_is_an_error_that_offers_the_word_metrics(monkeypatch):
    a, b = _FakeTok(["x", "y"]), _FakeTok(["z"])
    strings = {id(a): ["x", "y"], id(b): ["z"]}
    monkeypatch.setattr(metrics, "token_strings", lambda tok: strings[id(tok)])
    with pytest.raises(ValueError, match=r"share no token string.*word_mwlr, word_logratio"):
        align_vocabularies(a, b, "A", "B")


def test_tiny_llama_and_gemma_share_part_of_their_vocabulary():
    ltok, gtok = tm.tiny_tokenizer("llama"), tm.tiny_tokenizer("gemma")
    al = align_vocabularies(gtok, ltok, "g", "l")
    assert 0 < al.n_shared < min(len(ltok), len(gtok))
    gs, ls = token_strings(gtok), token_strings(ltok)
    for k in (0, al.n_shared // 2, al.n_shared - 1):
        s = al.strings[k]
        assert {gs[i] for i in np.flatnonzero(al.group_p == k)} == {s}
        assert {ls[i] for i in np.flatnonzero(al.group_q == k)} == {s}
    same = align_vocabularies(ltok, tm.tiny_tokenizer("llama"))
    assert same.identical and (same.group_p == same.group_q).all() and same.collisions.empty


def test_token_logratio_across_tokenizers_is_a_clear_error():
    with pytest.raises(
        metrics.TokenizerMismatchError, match=r"different tokenizers.*word_logratio.*token_mwlr"
    ):
        require_same_tokenizer(tm.tiny_tokenizer("llama"), tm.tiny_tokenizer("gemma"), "a", "b")
    require_same_tokenizer(tm.tiny_tokenizer("llama"), tm.tiny_tokenizer("llama"), "a", "b")


# -- word-level rewards and the analyses ---------------------------------------------------------------------


def _toy_word_lp() -> pd.DataFrame:
    rows = []
    rng = np.random.default_rng(0)
    words = ["freedom", "power", "skill", "love", "care", "trust"]
    for model, boost in (("A", "agency"), ("B", "communion")):
        for pid in ("best_ever_one", "greatest_time_please", "worst_ever_one", "terrible_time_please"):
            for i, w in enumerate(words):
                agency = i < 3
                lp = -5.0 - i * 0.1 + (1.0 if agency == (boost == "agency") else 0.0) + rng.normal(0, 0.01)
                rows.append({"model": model, "prompt_id": pid, "word": w, "n_tokens": 1, "logprob": lp})
    return pd.DataFrame(rows)


def _toy_labels() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "corpus": "big2_nouns",
            "word": ["freedom", "power", "skill", "love", "care", "trust"],
            "category": ["Agency"] * 3 + ["Communion"] * 3,
            "subcategory": None,
        }
    )


def test_word_rewards_and_ranks_and_anova():
    wlp = _toy_word_lp()
    wlp["logprob_mean"] = wlp["logprob"]
    wr = rewards.word_rewards(wlp, [("A", "B")])
    row = wr[(wr["prompt_id"] == "best_ever_one") & (wr["word"] == "love")].iloc[0]
    assert row["pair"] == "B vs A"
    assert row["mwlr"] == pytest.approx(mwlr(row["logprob_p"], row["logprob_q"]))
    assert (wr.loc[wr["word"].isin(["love", "care", "trust"]), "mwlr"] > 0).all()
    labels = _toy_labels()
    med = rewards.median_ranks(
        rewards.scores_table(wlp, labels, "logprob", family={"A": "fa", "B": "fb"}), "word_sum"
    )
    a = med[(med["model"] == "A") & (med["prompt_id"] == "best_ever_one")].set_index("category")[
        "median_rank"
    ]
    assert a["Agency"] == 2.0 and a["Communion"] == 5.0  # A's agency words are the three most probable
    assert set(med["family"]) == {"fa", "fb"}
    anova, posthocs = rewards.lm_anova(med, ["A", "B"])
    inter = anova[anova["term"] == "C(category):C(model)"].iloc[0]
    assert inter["p"] < 1e-6
    assert set(posthocs["level_a"]) == {"A"} and len(posthocs) == 4
    mw = rewards.median_ranks(rewards.scores_table(wr, labels, "mwlr", "pair"), "word_mwlr")
    assert set(mw["model"]) == {"B vs A"}
    assert (mw.loc[mw["category"] == "Communion", "median_rank"] == 2.0).all()


def test_pair_contrast_counts_prompts_where_the_first_word_wins():
    rows = []
    for model, f_lp, l_lp in (("P", -6.0, -5.0), ("Q", -4.0, -5.5)):
        for pid in ("best_ever_one", "worst_ever_one"):
            for text, lp in (("freedom", f_lp), ("love", l_lp), ("Freedom", f_lp), ("Love", l_lp)):
                for pre in ("", " "):
                    rows.append(
                        {"model": model, "prompt_id": pid, "word": pre + text, "n_tokens": 1, "logprob": lp}
                    )
    out = rewards.pair_contrasts(
        pd.DataFrame(rows), [("P", "Q")], framing={"best_ever_one": "positive", "worst_ever_one": "negative"}
    )
    allf = out[out["framing"] == "all"]
    assert len(allf) == 4 and set(allf["text_a"]) == {"freedom", " freedom", "Freedom", " Freedom"}
    expected = mwlr(-6.0, -4.0) - mwlr(-5.0, -5.5)
    np.testing.assert_allclose(allf["difference"], expected)
    assert (allf["share_a_wins"] == 1.0).all() and (allf["n_prompts"] == 2).all()
    assert set(out["framing"]) == {"all", "positive", "negative"}


def test_top_tokens_words_only():
    tokens = pd.DataFrame(
        {
            "pair": "q vs p",
            "framing": "all",
            "token": [" love", "1st", " Freedom", "!!", " a", " war"],
            "mwlr": [0.5, 0.4, 0.3, -0.1, -0.2, -0.6],
            "p": 0.1,
            "q": 0.2,
        }
    )
    top = rewards.top_tokens(tokens, k=2)
    assert top.loc[top["end"] == "top", "token"].tolist() == [" love", "1st"]
    assert top.loc[top["end"] == "bottom", "token"].tolist() == [" war", " a"]
    words = rewards.top_tokens(tokens, k=2, words_only=True)
    assert words.loc[words["end"] == "top", "token"].tolist() == [" love", " Freedom"]
    assert words.loc[words["end"] == "bottom", "token"].tolist() == [" war", " Freedom"]


def test_recovery_scores_by_hand():
    values = pd.Series([5.0, 4.0, 3.0, 2.0, 1.0], index=list("abcde"))
    r = validation.recovery_scores(values, {"a", "c"}, "word", "m")
    assert r["r_precision"] == 0.5  # top 2 = a, b
    assert r["auc"] == pytest.approx(5 / 6)  # a beats b,d,e; c beats d,e: 5 of 6
    assert r["mean_rank_planted"] == 2.0
    with pytest.raises(ValueError, match="planted and non-planted"):
        validation.recovery_scores(values, {"z"}, "word", "m")


# -- planted words ------------------------------------------------------------------------------------------


def test_plant_words_gives_the_gradient_of_plain_sft():
    """One SGD-like step (AdamW's first step is sign-like, so compare the loss and gradients instead): the
    prefix-shared loss equals the mean NLL of the answer tokens from full sequences."""
    model, tok = tm.tiny_causal_lm("llama", seed=1)
    prompts = ["What is the best thing?", "Answer with one word: the worst thing?"]
    words = ["peace", "honest nurse"]
    tuned, losses = validation.plant_words(model, tok, prompts, words, "chat", steps=1, lr=1e-3)
    eng = L.LogProbEngine(model, tok, prompt_format="chat")
    nll, n = 0.0, 0
    for text in prompts:
        sp = eng.split(text)
        end = list(L.end_of_turn_ids(tok, sp))
        for c in eng.word_candidates(sp, words):
            ref = L.reference_word_logprob(model, [*sp.prefix_ids, *c.ids, *end], len(sp.prefix_ids))
            nll -= ref.sum()
            n += len(ref)
    assert losses[0] == pytest.approx(nll / n, rel=1e-5)
    # the original model is untouched, the copy moved
    w0 = model.model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(w0, tuned.model.layers[0].self_attn.q_proj.weight)
    assert torch.equal(w0, tm.tiny_causal_lm("llama", seed=1)[0].model.layers[0].self_attn.q_proj.weight)


def test_planted_words_are_recovered_on_a_tiny_model():
    model, tok = tm.tiny_causal_lm("llama", seed=2)
    train = ["What is the best thing in the world?", "What is the worst thing ever?"]
    planted = ["peace", "honest", "nurse"]
    tuned_model, losses = validation.plant_words(model, tok, train, planted, "chat", steps=25, lr=3e-3)
    assert losses[-1] < 0.5 * losses[0]
    ref = L.LogProbEngine(model, tok, name="ref", prompt_format="chat")
    tuned = L.LogProbEngine(tuned_model, tok, name="tuned", prompt_format="chat")
    evals = {"a": "Answer with one word: what is best?", "b": "What, in one word, is the greatest thing?"}
    candidates = [
        "freedom",
        "love",
        "kindness",
        "war",
        "fear",
        "joy",
        "family",
        "smile",
        "child",
        "warm",
        "cold",
    ]
    rec, ranks = validation.planted_recovery(ref, tuned, evals, candidates, planted)
    # a reference table computed before (here: for part of the words) gives the same result
    known = ref.word_logprobs(evals, candidates[:5])
    rec2, _ = validation.planted_recovery(ref, tuned, evals, candidates, planted, reference_lp=known)
    pd.testing.assert_frame_equal(rec, rec2)
    assert set(rec["metric"]) == {
        "word_logratio",
        "word_mwlr",
        "word_sum",
        "word_mean",
        "token_logratio",
        "token_mwlr",
        "token_logprob",
    }
    by = rec.set_index("metric")
    assert by.loc["word_logratio", "r_precision"] == 1.0 and by.loc["word_mwlr", "r_precision"] == 1.0
    assert by.loc["word_logratio", "n_candidates"] == len(candidates) + len(planted)
    assert (rec["auc"] > 0.9).all()
    assert set(ranks["word"]) == set(planted)
    assert stage.text.describe_recovery(rec).startswith("At the word level, **")


# -- parameters ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"models": ["gemma3-270m", "no-such-model"]}, r"not registered causal LMs.*smollm2-135m-instruct"),
        ({"metrics": ["mwlr"]}, r"metrics\[0\]='mwlr': Input should be 'token_mwlr'"),
        ({"prompt_format": "plain"}, r"prompt_format='plain'.*auto"),
        ({"prompts": ["best_ever_one", "worst_ever_one"]}, r"at least two prompts per framing"),
        ({"prompts": ["best_thing"]}, r"unknown prompt id\(s\) \['best_thing'\]"),
        ({"pairs": [["gemma3-270m", "gemma3-270m"]]}, r"pairs a model with itself"),
        ({"pairs": [["gemma3-270m", "other"]]}, r"not in `models`"),
        ({"models": ["gemma3-270m"]}, r"compare two models; give at least two"),
        ({"corpora": ["big3"]}, r"unknown \['big3'\]; registered corpora"),
        ({"contrast": ["love", "love"]}, r"two different words"),
        ({"planted_model": "nope"}, r"planted_model='nope'.*'' = skip"),
        ({"planted_steps": 0}, r"planted_steps=0"),
        ({"threads": -1}, r"threads=-1"),
        ({"metrics": ["token_logratio"]}, r"same prompt x.*'gemma3-270m' is prompted raw"),
        ({"device": "tpu"}, r"device='tpu'"),
        ({"colour": "red"}, r"unknown parameter 'colour'"),
    ],
)
def test_bad_parameters_are_clear_errors(override, message):
    with pytest.raises(ParameterError, match=message):
        stage.Params.build(override)


def test_default_parameters_are_valid():
    stage.Params.build({})
    stage.Params.build({"pairs": ["cross-family"], "planted_model": ""})
    assert params.resolve_pairs(["a", "b", "c"], []) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert params.resolve_pairs(["a", "b", "c"], ["cross-family"], {"a": "x", "b": "x", "c": "y"}) == [
        ("a", "c"),
        ("b", "c"),
    ]


# -- the stage on tiny models ---------------------------------------------------------------------------------


def test_run_implicit_on_tiny_models(tmp_path, corpora_results):
    fl = tm.save_tiny_model(tmp_path / "tl", "llama")
    fg = tm.save_tiny_model(tmp_path / "tg", "gemma")
    reg = tm.write_registry(
        tmp_path / "models.yaml",
        {
            "tiny-llama": tm.registry_entry(fl, "llama", type="instruction-tuned"),
            "tiny-gemma": tm.registry_entry(fg, "gemma"),
        },
    )
    out = tmp_path / "implicit"
    p = stage.Params.build(
        models=["tiny-gemma", "tiny-llama"],
        corpora=["big2_nouns"],
        metrics=["token_mwlr", "word_mwlr", "word_logratio", "word_sum", "word_mean"],
        extra_registry=[str(reg)],
        planted_model="tiny-llama",
        planted_words=["peace", "nurse"],
        planted_steps=5,
        planted_lr=3e-3,
        top_k=3,
        results_root=str(corpora_results),
        output_dir=str(out),
    )
    record = RunRecord.for_params(p)
    res = stage.run(p, record)
    assert record.output_dir == out
    table, _ = read_corpora_table(p.corpora_input(), str(corpora_results), ["big2_nouns"])
    labels = labels_of(table)
    wl = pd.read_parquet(out / "word_logprobs.parquet")
    assert set(wl["model"]) == {"tiny-gemma", "tiny-llama"}
    assert set(wl["prompt_id"]) == set(params.DEFAULT_PROMPTS)
    assert dict(wl.groupby("model")["prompt_format"].first()) == {"tiny-gemma": "raw", "tiny-llama": "chat"}
    assert {"framing", "category", "n_tokens", "logprob"} <= set(wl.columns)
    assert len(wl) == 2 * len(params.DEFAULT_PROMPTS) * len(labels)
    manifest = json.loads((out / "manifest.json").read_text())
    assert [m["prompt_format"] for m in manifest["models"]] == ["raw", "chat"]
    assert "corpora/default/corpora.parquet" in manifest["inputs"]
    assert manifest["seeds"] == {"seed": 0} and len(manifest["extra"]["planted_losses"]) == 5
    for name in (
        "token_mwlr.parquet",
        "word_mwlr.parquet",
        "median_ranks.parquet",
        "anova.csv",
        "pair_contrasts.csv",
        "planted_recovery.csv",
        "top_tokens.csv",
        "token_alignment.csv",
    ):
        assert name in manifest["outputs"], name
    assert res.alignment["shared_strings"].iloc[0] > 0
    assert set(res.medians["metric"]) == {"word_sum", "word_mean", "word_mwlr", "word_logratio"}
    assert not res.anova.empty and set(res.contrasts["pair"]) == {"tiny-llama vs tiny-gemma"}
    assert len(res.recovery) == 7
    assert "planted-word validation" in res.timings


def test_token_logratio_for_different_tokenizers_fails_before_loading_models(tmp_path, corpora_results):
    fl = tm.save_tiny_model(tmp_path / "tl", "llama")
    fg = tm.save_tiny_model(tmp_path / "tg", "gemma")
    reg = tm.write_registry(
        tmp_path / "models.yaml",
        {"tl": tm.registry_entry(fl, "llama"), "tg": tm.registry_entry(fg, "gemma")},
    )
    p = stage.Params.build(
        models=["tg", "tl"],
        corpora=["big2_nouns"],
        metrics=["token_logratio"],
        extra_registry=[str(reg)],
        planted_model="",
        results_root=str(corpora_results),
        output_dir=str(tmp_path / "implicit"),
    )
    with pytest.raises(metrics.TokenizerMismatchError, match="word_logratio"):
        stage.run(p)
    assert not (tmp_path / "implicit" / "manifest.json").exists()
