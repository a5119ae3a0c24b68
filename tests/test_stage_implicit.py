"""The implicit-rewards stage (rmvalues.stages.implicit): MWLR on toy distributions, vocabulary alignment,
analyses, planted-word recovery, parameters, and the stage on tiny models."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import tinymodels as tm
import torch
from scipy import stats as sps

from rmvalues import engine as L
from rmvalues.core.errors import ParameterError
from rmvalues.core.formats import bad_pvalues
from rmvalues.core.manifest import RunRecord
from rmvalues.data.corpora import read_corpora_table
from rmvalues.data.prompts import prompt_ids
from rmvalues.data.scores import labels_of
from rmvalues.stages import implicit as stage
from rmvalues.stages.implicit import (
    metrics,
    params,
    plant_finetune,
    ranking,
    rewards,
    single_token,
    validation,
)

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


def test_collisions_are_reported_and_pooled_by_max_or_by_summing_probabilities(monkeypatch):
    p_tok = _FakeTok(["a", "Ġb", "<0x41>", "A", "<s>"])
    q_tok = _FakeTok(["▁b", "A", "c"])
    strings = {id(p_tok): ["a", " b", "A", "A", None], id(q_tok): [" b", "A", "c"]}
    monkeypatch.setattr(metrics, "token_strings", lambda tok: strings[id(tok)])
    logp = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.25, 0.15]]))
    # the default is the paper's rule: "A" (ids 2 and 3 of P) keeps the larger probability, 0.3
    by_max = align_vocabularies(p_tok, q_tok, "P", "Q")
    assert by_max.duplicates == "max" and by_max.summary()["duplicates"] == "max"
    np.testing.assert_allclose(by_max.aggregate(logp, "p").exp().numpy(), [[0.2, 0.3]], atol=1e-6)
    al = align_vocabularies(p_tok, q_tok, "P", "Q", duplicates="sum")
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
    logq = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    np.testing.assert_allclose(al.aggregate(logp, "p").exp().numpy(), [[0.2, 0.55]], atol=1e-6)
    np.testing.assert_allclose(al.aggregate(logq, "q").exp().numpy(), [[0.5, 0.3]], atol=1e-6)
    tokens = rewards.token_rewards(logp, logq, al, ["positive"])
    row = tokens[(tokens["framing"] == "all") & (tokens["token"] == "A")].iloc[0]
    assert row["mwlr"] == pytest.approx(0.5 * (0.55 + 0.3) * math.log(0.3 / 0.55))
    assert row["logratio"] == pytest.approx(math.log(0.3 / 0.55))
    assert tokens.loc[tokens["framing"] == "all", "rank_mwlr"].tolist() == [1, 2]
    with pytest.raises(ValueError, match="duplicates='mean'"):
        align_vocabularies(p_tok, q_tok, "P", "Q", duplicates="mean")


def test_collapse_logprobs_by_hand():
    lp = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]]))
    group = torch.tensor([0, 1, 1, -1])  # ids 1 and 2 decode to one string; id 3 to none
    got_max = metrics.collapse_logprobs(lp, group, 3, "max").exp().numpy()
    np.testing.assert_allclose(got_max[:, :2], [[0.1, 0.3], [0.4, 0.3]], atol=1e-7)
    assert np.isneginf(metrics.collapse_logprobs(lp, group, 3, "max")[:, 2]).all()  # no id: -inf
    got_sum = metrics.collapse_logprobs(lp, group, 2, "sum").exp().numpy()
    np.testing.assert_allclose(got_sum, [[0.1, 0.5], [0.4, 0.5]], atol=1e-7)


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
    med = ranking.metric_median_ranks(
        ranking.scores_table(wlp, labels, "logprob", family={"A": "fa", "B": "fb"}), "word_sum"
    )
    a = med[(med["model"] == "A") & (med["prompt_id"] == "best_ever_one")].set_index("category")[
        "median_rank"
    ]
    assert a["Agency"] == 2.0 and a["Communion"] == 5.0  # A's agency words are the three most probable
    assert set(med["family"]) == {"fa", "fb"}
    anova, posthocs = ranking.pair_anova(med, "A", "B", "B vs A")
    inter = anova[anova["term"] == "C(category):C(model)"].iloc[0]
    assert inter["p"] < 1e-6
    assert set(posthocs["level_a"]) == {"A"} and len(posthocs) == 4
    assert set(anova["pair"]) == {"B vs A"} and set(anova["metric"]) == {"word_sum"}
    mw = ranking.metric_median_ranks(ranking.scores_table(wr, labels, "mwlr", "pair"), "word_mwlr")
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
    tuned, losses = plant_finetune.plant_words(model, tok, prompts, words, "chat", steps=1, lr=1e-3)
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


def test_planted_words_are_recovered_on_a_tiny_model_and_beat_both_controls():
    model, tok = tm.tiny_causal_lm("llama", seed=2)
    train = ["What is the best thing in the world?", "What is the worst thing ever?"]
    planted, sham = ["peace", "honest", "nurse"], ["smile", "child", "cold"]
    tuned_model, losses = plant_finetune.plant_words(model, tok, train, planted, "chat", steps=25, lr=3e-3)
    sham_model, sham_losses = plant_finetune.plant_words(model, tok, train, sham, "chat", steps=25, lr=3e-3)
    assert losses[-1] < 0.5 * losses[0] and sham_losses[-1] < 0.5 * sham_losses[0]
    ref = L.LogProbEngine(model, tok, name="ref", prompt_format="chat")
    engines = {
        "planted": L.LogProbEngine(tuned_model, tok, name="tuned", prompt_format="chat"),
        "untuned": ref,
        "sham": L.LogProbEngine(sham_model, tok, name="sham", prompt_format="chat"),
    }
    evals = {"a": "Answer with one word: what is best?", "b": "What, in one word, is the greatest thing?"}
    candidates = ["freedom", "love", "kindness", "war", "fear", "joy", "family", "warm"]
    words = [*candidates, *planted, *sham]
    scored = {c: e.word_logprobs(evals, words) for c, e in engines.items()}
    panels = validation.word_panels(scored["untuned"], scored, list(evals), words, "word", "ref")
    rec, ranks, passes = validation.evaluate_panels(
        panels, {w: w for w in planted}, {w: w for w in sham}, n_bootstrap=200
    )
    assert set(rec["metric"]) == set(validation.WORD_METRICS)
    tuned = rec[(rec["condition"] == "planted") & (rec["target"] == "planted words")].set_index("metric")
    assert tuned.loc["word_logratio", "r_precision"] == 1.0 and tuned.loc["word_mwlr", "r_precision"] == 1.0
    assert (tuned["auc"] > 0.9).all()
    # the sham words are no candidates of the planted words: 8 candidates + 3 planted
    assert (tuned["n_candidates"] == len(candidates) + len(planted)).all()
    # the untuned control: a pair metric of the reference against itself is 0 everywhere (AUC 0.5, and the
    # tie at the cut shares out the R-precision: 3 planted of 11 candidates)
    untuned = rec[rec["condition"] == "untuned"].set_index("metric")
    assert untuned.loc["word_mwlr", "auc"] == 0.5
    assert untuned.loc["word_logratio", "r_precision"] == pytest.approx(3 / 11)
    # the sham plant took: it recovers its own words
    own = rec[rec["target"] == "sham words"].set_index("metric")
    assert own.loc["word_logratio", "r_precision"] == 1.0
    by = passes.set_index("metric")
    assert by.loc["word_logratio", "passes"] and by.loc["word_mwlr", "passes"]
    assert by.loc["word_mwlr", "auc_untuned"] == 0.5 and by.loc["word_mwlr", "ci_low_untuned"] > 0
    assert by.loc["word_mwlr", "n_prompts"] == 2 and by.loc["word_mwlr", "n_planted"] == 3
    assert set(ranks["word"]) == set(planted) and set(ranks["condition"]) == set(validation.CONDITIONS)
    # token level: the planted words' first tokens among the whole vocabulary
    nxt = {c: e.next_token_logprobs(evals) for c, e in engines.items()}
    firsts = {w: ref.word_candidates(ref.split(evals["a"], "a"), [w])[0].ids[0] for w in [*planted, *sham]}
    tok_panels = validation.token_panels(nxt["untuned"], nxt, list(range(3, len(tok))), "ref")
    trec, _, tpass = validation.evaluate_panels(
        tok_panels, {w: firsts[w] for w in planted}, {w: firsts[w] for w in sham}, n_bootstrap=50
    )
    assert set(tpass["metric"]) == set(validation.TOKEN_METRICS)
    t_auc = trec[(trec["condition"] == "planted") & (trec["target"] == "planted words")].set_index("metric")
    assert (t_auc["auc"] > 0.9).all()
    glued = stage.readings.validation_readings(passes, pd.DataFrame())
    assert "word: word_logratio, word_mwlr" in glued["validation_passing"]  # the passing panels, named


def test_paired_bootstrap_point_estimate_is_the_auc_of_recovery_scores():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(5, 9))
    planted_cols, other_cols = [1, 4, 7], [0, 2, 3, 5, 6, 8]
    point = validation.paired_auc_bootstrap({"x": v}, planted_cols, other_cols, 0)["x"]
    means = pd.Series(v.mean(0), index=range(9))
    assert point[0] == pytest.approx(validation.recovery_scores(means, {1, 4, 7}, "word", "m")["auc"])
    # ties count half: all-equal values give exactly 0.5 in every replicate
    flat = validation.paired_auc_bootstrap({"z": np.zeros((5, 9))}, planted_cols, other_cols, 30, seed=1)["z"]
    assert (flat == 0.5).all() and len(flat) == 30
    # the draws are paired: identical conditions give identical replicates
    both = validation.paired_auc_bootstrap({"a": v, "b": v.copy()}, planted_cols, other_cols, 40, seed=3)
    np.testing.assert_array_equal(both["a"], both["b"])
    # identical prompts and one planted unit: nothing to resample, every replicate is the point estimate
    rows = np.tile(v[0], (5, 1))
    one = validation.paired_auc_bootstrap({"r": rows}, [4], other_cols, 25, seed=2)["r"]
    expected = np.mean([(v[0, 4] > v[0, o]) for o in other_cols])
    np.testing.assert_allclose(one, expected)


def test_paired_bootstrap_equals_brute_force_resampling():
    """The replicates follow the documented draws (prompt rows, then planted units, from one generator) and
    the shortcut for units always below or above the planted ones changes nothing."""
    rng = np.random.default_rng(5)
    v = rng.normal(size=(6, 40))
    v[:, :3] += 4.0  # planted units near the top, most others always below them
    v[:, 3] += 9.0  # one unit always above
    planted_cols, other_cols = [0, 1, 2], list(range(3, 40))
    got = validation.paired_auc_bootstrap({"x": v}, planted_cols, other_cols, 60, seed=11)["x"]
    draw = np.random.default_rng(11)
    rows = draw.integers(0, 6, (60, 6))
    picks = draw.integers(0, 3, (60, 3))
    brute = []
    for r, pk in zip(rows, picks, strict=True):
        s = v[r].mean(0)
        share = [np.mean([(s[j] > s[o]) + 0.5 * (s[j] == s[o]) for o in other_cols]) for j in planted_cols]
        brute.append(np.mean([share[k] for k in pk]))
    np.testing.assert_allclose(got, brute, atol=1e-12)


def test_pass_criterion_needs_the_interval_above_both_controls():
    units = ["p1", "p2", "s1", "c1", "c2", "c3", "c4"]
    base = np.tile(np.array([0.0, 0.0, 0.0, 0.1, 0.2, -0.1, -0.2]), (4, 1))
    lifted = base.copy()
    lifted[:, :2] += 1.0  # the planted words go to the top under every prompt
    sham_lifted = base.copy()
    sham_lifted[:, 2] += 1.0  # the sham raises its own word only
    planted, sham = {"p1": "p1", "p2": "p2"}, {"s1": "s1"}
    good = validation.Panel(
        "word", "ref", "m", units, {"planted": lifted, "untuned": base, "sham": sham_lifted}
    )
    _, _, ok = validation.evaluate_panels([good], planted, sham, n_bootstrap=100)
    row = ok.iloc[0]
    # planted AUC 1; untuned: p1, p2 (0.0) beat c3, c4 and lose to c1, c2: AUC 0.5; sham the same as untuned
    assert (row["auc_planted"], row["auc_untuned"], row["auc_sham"]) == (1.0, 0.5, 0.5)
    assert row["ci_low_untuned"] == pytest.approx(0.5) and row["ci_low_sham"] == pytest.approx(0.5)
    assert row["passes"] and row["n_candidates"] == 6 and row["n_planted"] == 2
    # a sham that lifts the planted words as much as the plant: difference 0, the interval touches 0: fail
    same = validation.Panel("word", "ref", "m", units, {"planted": lifted, "untuned": base, "sham": lifted})
    _, _, bad = validation.evaluate_panels([same], planted, sham, n_bootstrap=100)
    assert bad.iloc[0]["diff_sham"] == 0.0 and bad.iloc[0]["ci_low_sham"] == 0.0 and not bad.iloc[0]["passes"]
    # no sham condition: the criterion cannot pass
    lone = validation.Panel("word", "ref", "m", units, {"planted": lifted, "untuned": base})
    _, _, no = validation.evaluate_panels([lone], planted, sham, n_bootstrap=20)
    assert not no.iloc[0]["passes"] and np.isnan(no.iloc[0]["ci_low_sham"])


def test_metric_contrast_compares_two_metrics_on_the_same_draws():
    units = ["p1", "p2", "s1", "c1", "c2", "c3", "c4"]
    rng = np.random.default_rng(1)
    noisy = rng.normal(size=(5, 7))
    clean = np.tile(np.array([1.0, 1.0, 0.0, 0.1, 0.2, -0.1, -0.2]), (5, 1))
    panels = [
        validation.Panel("word", "ref", "word_mwlr", units, {"planted": clean}),
        validation.Panel("word", "ref", "word_logratio", units, {"planted": noisy}),
        validation.Panel("word", "ref", "word_sum", units, {"planted": noisy}),
    ]
    out = validation.metric_contrasts(panels, {"p1": "p1", "p2": "p2"}, {"s1": "s1"}, n_bootstrap=200)
    assert len(out) == 1 and out.iloc[0][["metric_a", "metric_b"]].tolist() == ["word_mwlr", "word_logratio"]
    means = pd.Series(noisy.mean(0), index=units).drop("s1")
    auc_b = validation.recovery_scores(means, {"p1", "p2"}, "word", "m")["auc"]
    row = out.iloc[0]
    assert row["auc_a"] == 1.0 and row["auc_b"] == pytest.approx(auc_b)
    assert (
        row["difference"] == pytest.approx(1.0 - auc_b)
        and row["ci_low"] <= row["difference"] <= row["ci_high"]
    )
    # the same metric against itself: every replicate's difference is 0
    same = [panels[1], validation.Panel("word", "ref", "word_mwlr", units, {"planted": noisy})]
    zero = validation.metric_contrasts(same, {"p1": "p1", "p2": "p2"}, {"s1": "s1"}, n_bootstrap=50).iloc[0]
    assert (zero["difference"], zero["ci_low"], zero["ci_high"]) == (0.0, 0.0, 0.0)


def test_recovery_r_precision_shares_ties_at_the_cut():
    values = pd.Series([1.0, 0.0, 0.0, 0.0, -1.0], index=list("abcde"))
    # top 2 = a and one of b, c, d (tied): planted {a, b} expects 1 + 1/3 hits of 2
    r = validation.recovery_scores(values, {"a", "b"}, "word", "m")
    assert r["r_precision"] == pytest.approx((1 + 1 / 3) / 2)
    assert r["auc"] == pytest.approx((3 + 0.5 + 0.5 + 1) / 6)  # a beats c, d, e; b ties c, d, beats e


def test_sham_words_match_the_planted_words_frequency():
    pool = pd.DataFrame(
        {
            "word": ["alpha", "beta", "gamma", "delta", "eps", "zeta"],
            "zipf_frequency": [4.0, 4.1, 3.0, 5.9, 4.05, 2.0],
            "category": ["Care"] * 6,
        }
    )
    out = plant_finetune.sham_words(["duty", "order"], [4.02, 6.5], pool, exclude=["eps"], seed=0)
    assert out["role"].tolist() == ["planted", "planted", "sham", "sham"]
    sham = out[out["role"] == "sham"].set_index("matched_to")
    assert sham.loc["duty", "word"] in {"alpha", "beta"}  # within 0.25 of 4.02; eps is excluded
    assert sham.loc["order", "word"] == "delta"  # none within 0.25 of 6.5: the nearest
    assert sham.loc["order", "zipf_difference"] == pytest.approx(-0.6)
    again = plant_finetune.sham_words(["duty", "order"], [4.02, 6.5], pool, exclude=["eps"], seed=0)
    pd.testing.assert_frame_equal(out, again)  # seeded
    drawn = {plant_finetune.sham_words(["duty"], [4.02], pool, seed=s)["word"].iloc[1] for s in range(20)}
    assert drawn == {"alpha", "beta", "eps"}  # drawn among the words within the tolerance
    with pytest.raises(ValueError, match="sham pool has 1 words"):
        plant_finetune.sham_words(["duty", "order"], [4.0, 4.0], pool.head(1))


# -- the single-token analysis ---------------------------------------------------------------------------------


def test_single_token_filter_on_tiny_tokenizers():
    """By hand: in the tiny llama tokenizer (chat: the bare word) 'war' and 'honest' are one token and 'peace'
    two; in the tiny gemma tokenizer (raw: the word after a space) '▁war', '▁honest', '▁nurse' are single."""
    lt, gt = tm.tiny_tokenizer("llama"), tm.tiny_tokenizer("gemma")
    prompts = {"best_ever_one": "What is the best thing ever?", "worst_ever_one": "What is the worst thing?"}
    words = ["war", "honest", "peace", "nurse", "zzz"]
    a = single_token.single_token_words(lt, "chat", prompts, words, "tl").set_index("word")
    b = single_token.single_token_words(gt, "raw", prompts, words, "tg").set_index("word")
    assert a["single_token"].to_dict() == {
        "war": True,
        "honest": True,
        "peace": False,
        "nurse": False,
        "zzz": False,
    }
    assert b["single_token"].to_dict() == {
        "war": True,
        "honest": True,
        "peace": False,
        "nurse": True,
        "zzz": False,
    }
    assert a.loc["war", "answer"] == "war" and b.loc["war", "answer"] == " war"  # the leading space of raw
    assert b.loc["war", "token"] == "▁war" and a.loc["war", "token"] == "war"
    assert a.loc["war", "token_id"] == lt.convert_tokens_to_ids("war") and a.loc["war", "ids"] == [
        a.loc["war", "token_id"]
    ]
    assert a.loc["peace", "n_tokens"] == 2 and a.loc["peace", "token_id"] == -1
    # the other form: ' honest' is one llama token, ' war' is not
    assert a.loc["honest", "other_form_single"] and not a.loc["war", "other_form_single"]
    labels = pd.DataFrame(
        {
            "corpus": "c",
            "word": words,
            "category": ["Agency", "Communion", "Communion", "Communion", "Agency"],
            "subcategory": None,
        }
    )
    both = pd.concat([b.reset_index(), a.reset_index()])
    surv = single_token.pair_survivors(both, labels, [("tg", "tl")], rewards.pair_label)
    # checked under one prompt first, then the possible survivors (one token under both) under every prompt
    first = {"best_ever_one": prompts["best_ever_one"]}
    once = pd.concat(
        [
            single_token.single_token_words(gt, "raw", first, words, "tg"),
            single_token.single_token_words(lt, "chat", first, words, "tl"),
        ]
    )
    assert (once["n_prompts_checked"] == 1).all()
    checked = single_token.verify_survivors(
        once, {"tg": gt, "tl": lt}, {"tg": "raw", "tl": "chat"}, prompts, [("tg", "tl")]
    )
    assert checked.loc[checked["n_prompts_checked"] == 2, ["model", "word"]].values.tolist() == [
        ["tg", "war"], ["tg", "honest"], ["tl", "war"], ["tl", "honest"],
    ]  # fmt: skip
    pd.testing.assert_frame_equal(
        checked.drop(columns="n_prompts_checked"),
        both.reset_index(drop=True)[checked.columns].drop(columns="n_prompts_checked"),
    )
    assert surv.loc[surv["survives"], "word"].tolist() == ["war", "honest"]
    counts = single_token.survivor_counts(surv).set_index("category")
    assert counts.loc["Agency", ["n_words", "n_single_p", "n_single_q", "n_survive"]].tolist() == [2, 1, 1, 1]
    assert counts.loc["Communion", ["n_words", "n_single_p", "n_single_q", "n_survive"]].tolist() == [
        3,
        2,
        1,
        1,
    ]


def test_single_token_logprobs_collapse_duplicates_by_max_or_sum():
    per_model = pd.DataFrame(
        {"model": "m", "word": ["x", "y"], "single_token": True, "ids": [[1, 3], [2]], "token_id": [1, 2]}
    )
    probs = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]])
    got = single_token.single_token_logprobs(probs.log(), per_model, ["a", "b"], ["x", "y"])
    table = got.set_index(["prompt_id", "word"])["logprob"].map(math.exp)
    # max: x is the better of ids 1 and 3
    assert table.to_dict() == pytest.approx(
        {("a", "x"): 0.4, ("a", "y"): 0.3, ("b", "x"): 0.3, ("b", "y"): 0.2}
    )
    summed = single_token.single_token_logprobs(probs.log(), per_model, ["a", "b"], ["x", "y"], "sum")
    assert math.exp(summed["logprob"].iloc[0]) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="not single-token words"):
        single_token.single_token_logprobs(
            probs.log(), per_model.assign(single_token=False), ["a", "b"], ["x"]
        )


def test_pair_anova_on_54_prompts_has_the_papers_residual_df():
    """Two categories x 54 prompts (27 per framing) x two models = 216 points in 8 cells: residual df 208 as in
    the paper; each term has 1 df; in this balanced design the model term's sum of squares is
    N * sum over models (model mean - grand mean)^2 and the post-hocs are BH-corrected over the 4 cells."""
    from rmvalues.data.prompts import framing_of, prompt_ids

    rng = np.random.default_rng(0)
    rows = []
    for pid in prompt_ids():
        for model, shift in (("A", 0.0), ("B", 3.0)):
            for cat in ("Agency", "Communion"):
                rows.append(
                    {"metric": "single_token", "analysis": "pooled", "corpus": "big2_nouns", "model": model,
                     "prompt_id": pid, "framing": framing_of(pid), "category": cat,
                     "median_rank": 10 + shift * (cat == "Agency") + rng.normal()}
                )  # fmt: skip
    med = pd.DataFrame(rows)
    anova, posthocs = ranking.pair_anova(med, "A", "B", "B vs A")
    df = anova.set_index("term")["df"]
    assert df["Residual"] == 208 and (df.drop("Residual") == 1).all() and len(df) == 8
    assert (anova["n_points"] == 216).all()
    grand = med["median_rank"].mean()
    ss_model = sum(108 * (g["median_rank"].mean() - grand) ** 2 for _, g in med.groupby("model"))
    assert anova.set_index("term").loc["C(model)", "sum_sq"] == pytest.approx(ss_model)
    assert len(posthocs) == 4
    from statsmodels.stats.multitest import multipletests

    np.testing.assert_allclose(posthocs["p_corrected"], multipletests(posthocs["p"], method="fdr_bh")[1])
    agency = posthocs[posthocs["category"] == "Agency"]
    assert (agency["difference"] > 2).all() and (agency["p_corrected"] < 1e-6).all()


def test_pair_anova_clustered_on_54_prompts_tests_framing_over_six_adjectives():
    """The clustered counterpart of the same design: 6 adjective means per (category, model) cell, every term
    against its interaction with the adjectives (df 1 and 4); the three-way term's F is the square of the
    pooled t of the adjectives' category x model contrasts, positive against negative, and its exact p is
    over the 20 splits of the adjectives (smallest 0.1). The framing contrasts average per adjective too."""
    from rmvalues.data.prompts import framing_of, prompt_ids

    rng = np.random.default_rng(1)
    effect = {adj: rng.normal(0, 2) for adj in ("best", "greatest", "good", "worst", "bad", "terrible")}
    rows = []
    for pid in prompt_ids():
        adj = pid.split("_")[0]
        for model in ("A", "B"):
            for cat in ("Agency", "Communion"):
                bump = effect[adj] * (model == "B") * (cat == "Agency")
                rows.append(
                    {"metric": "single_token", "analysis": "pooled", "corpus": "big2_nouns", "model": model,
                     "rm": model, "family": model, "prompt_id": pid, "framing": framing_of(pid),
                     "category": cat, "median_rank": 10 + bump + rng.normal()}
                )  # fmt: skip
    med = pd.DataFrame(rows)
    out = ranking.pair_anova_clustered(med, "A", "B", "B vs A")
    t = out.set_index("term")
    assert (t["df"] == 1).all() and (t["df_error"] == 4).all() and (t["n_clusters"] == 6).all()
    assert (
        set(out["pair"]) == {"B vs A"} and (out["n_prompts"] == 54).all() and (out["n_points"] == 216).all()
    )
    cell = med.assign(adj=med["prompt_id"].str.split("_").str[0])
    cell = (
        cell.groupby(["adj", "framing", "category", "model"])["median_rank"]
        .mean()
        .unstack(["category", "model"])
    )
    score = (
        cell[("Agency", "B")] - cell[("Agency", "A")] - cell[("Communion", "B")] + cell[("Communion", "A")]
    ) / 2
    framing = score.index.get_level_values("framing")
    ref = sps.ttest_ind(score[framing == "positive"], score[framing == "negative"])
    cfm = t.loc["C(category):C(framing):C(model)"]
    assert cfm["F"] == pytest.approx(ref.statistic**2) and cfm["p"] == pytest.approx(ref.pvalue)
    assert (cfm["n_splits"], cfm["p_min"]) == (20, pytest.approx(0.1))
    con = ranking.pair_framing_contrasts(med, "A", "B", "B vs A")
    diff = con[(con["category"] == "Communion") & (con["rm"] == "B \u2212 A")].iloc[0]
    # the Communion gap (Agency rank - Communion rank) of B - A is twice the category x model contrast
    gap = 2 * score
    assert diff["estimate"] == pytest.approx(
        gap[framing == "positive"].mean() - gap[framing == "negative"].mean()
    )
    welch = sps.ttest_ind(gap[framing == "positive"], gap[framing == "negative"], equal_var=False)
    assert (diff["ci_low"], diff["ci_high"]) == pytest.approx(tuple(welch.confidence_interval(0.95)))
    assert (diff["n_positive"], diff["n_negative"], diff["n_prompts"]) == (3, 3, 54)
    assert set(con["rm"]) == {"A", "B", "B \u2212 A"} and set(con["category"]) == {"Agency", "Communion"}


def test_token_adjusted_scores_are_residuals_of_the_token_count_line():
    scores = pd.DataFrame(
        {
            "corpus": "c", "source": "live", "model": "m", "prompt_id": "p",
            "word": ["a", "b", "c", "d"], "score": [-2.0, -4.0, -5.0, -9.0], "n_tokens": [1, 1, 2, 3],
        }
    )  # fmt: skip
    adj = ranking.token_adjusted(scores)
    slope, icpt = np.polyfit([1, 1, 2, 3], [-2.0, -4.0, -5.0, -9.0], 1)
    expected = np.array([-2.0, -4.0, -5.0, -9.0]) - (icpt + slope * np.array([1, 1, 2, 3]))
    np.testing.assert_allclose(adj["score"], expected)
    assert adj["score"].sum() == pytest.approx(0.0)
    same = ranking.token_adjusted(scores.assign(n_tokens=2))
    np.testing.assert_allclose(same["score"], scores["score"] - scores["score"].mean())
    counts = ranking.token_counts(
        scores.assign(model="m")[["model", "word", "n_tokens"]],
        pd.DataFrame({"corpus": "c", "word": list("abcd"), "category": ["X", "X", "Y", "Y"]}),
    ).set_index("category")
    assert counts.loc["X", "mean_tokens"] == 1.0 and counts.loc["Y", "mean_tokens"] == 2.5
    assert counts.loc["X", "share_single_token"] == 1.0 and counts.loc["Y", "share_single_token"] == 0.0


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
        (
            {"word_prompts": ["best_ever_one", "worst_ever_one"]},
            r"word_prompts: the ANOVA needs at least two",
        ),
        ({"word_prompts": ["best_thing"]}, r"word_prompts: unknown prompt id\(s\) \['best_thing'\]"),
        ({"duplicates": "mean"}, r"duplicates='mean'.*'max' or 'sum'"),
        ({"planted_cross_model": "nope"}, r"planted_cross_model='nope': give one of `models`"),
        ({"planted_cross_model": "smollm2-135m-instruct"}, r"other than planted_model"),
        ({"planted_bootstrap": 5}, r"planted_bootstrap=5"),
        (
            {
                "word_prompts": ["good_world_single", "bad_world_single", "best_ever_one", "worst_ever_one"],
                "planted_train_prompts": ["good_world_single", "bad_world_single", "best_ever_one"],
            },
            r"leave 1 of the word prompts",
        ),  # fmt: skip
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


# -- the chapter's prose numbers and reader tables -------------------------------------------------------------

PAIR = "smollm2-135m-instruct vs gemma3-270m"


def _anova(metric: str, f_cm: float, p_cm: float) -> list[dict]:
    base = {"pair": PAIR, "corpus": "big2_nouns", "metric": metric, "n_points": 16, "sum_sq": 1.0}
    return [
        {**base, "term": "C(category)", "df": 1.0, "F": 3.0, "p": 0.1},
        {**base, "term": "C(category):C(model)", "df": 1.0, "F": f_cm, "p": p_cm},
        {**base, "term": "C(category):C(framing):C(model)", "df": 1.0, "F": 0.5, "p": 0.5},
        {**base, "term": "Residual", "df": 8.0, "F": np.nan, "p": np.nan},
    ]


def _anova_clustered(f_cfm: float, p_cfm: float) -> list[dict]:
    base = {"pair": PAIR, "corpus": "big2_nouns", "metric": "single_token", "sum_sq": 1.0, "df": 1.0,
            "df_error": 4.0, "n_clusters": 6, "n_points": 16, "n_prompts": 4}  # fmt: skip
    no_exact = {"p_exact": np.nan, "p_min": np.nan, "n_splits": 0}
    return [
        {**base, **no_exact, "term": "C(category):C(model)", "F": 1.5, "p": 0.29,
         "error": "C(category):C(model):C(adjective)"},
        {**base, "term": "C(category):C(framing):C(model)", "F": f_cfm, "p": p_cfm, "p_exact": 0.3,
         "p_min": 0.1, "n_splits": 20, "error": "C(category):C(model):C(adjective)"},
    ]  # fmt: skip


def _hand_results() -> stage.Results:
    from rmvalues.core.findings import Finding

    p = stage.Params.parse({"corpora": ["big2_nouns"], "top_k": 2})
    counts = pd.DataFrame(
        {
            "pair": [PAIR, PAIR],
            "corpus": ["big2_nouns"] * 2,
            "category": ["Agency", "Communion"],
            "n_words": [104, 159],
            "n_single_p": [95, 141],
            "n_single_q": [25, 42],
            "n_survive": [25, 42],
        }
    )
    contrasts = pd.DataFrame(
        {"pair": [PAIR] * 3, "framing": ["all", "all", "positive"], "difference": [0.1, -0.2, 0.3]}
    )
    tokens = pd.DataFrame(
        {
            "pair": [PAIR] * 4,
            "framing": ["all"] * 4,
            "p": [1e-6, 1e-6, 0.1, 0.2],
            "q": [1e-2, 1e-2, 0.2, 0.3],
            "logratio": [9.0, 8.0, 1.0, 0.5],
            "mwlr": [0.0, 0.0, 0.1, 0.2],
        }
    )
    finding = Finding(
        key="big2_nouns_pair", question="q?", answer="An answer.", estimate="2.0 ranks", interval=""
    )
    return stage.Results(
        params=p,
        prompts=["a", "b", "c", "d"],
        word_prompts=["a", "b"],
        pairs=[("gemma3-270m", "smollm2-135m-instruct")],
        single_counts=counts,
        single_anova=pd.DataFrame(_anova("single_token", 7.02, 0.0291)),
        single_anova_clustered=pd.DataFrame(_anova_clustered(2.5, 0.189)),
        single_contrasts=pd.DataFrame(
            [
                {
                    "corpus": "big2_nouns",
                    "category": "Communion",
                    "rm": "smollm2-135m-instruct \u2212 gemma3-270m",
                    "n_positive": 3,
                    "n_negative": 3,
                }
            ]
        ),  # fmt: skip
        anova=pd.DataFrame(_anova("word_sum", 5.12, 0.054) + _anova("word_sum_adjusted", 0.74, 0.416)),
        contrasts=contrasts,
        token_rewards=tokens,
        word_logprobs=pd.DataFrame({"word": ["kin", "kin", "peace"]}),
        findings=[finding],
    )


def test_key_numbers_of_a_hand_made_run():
    k = stage.text.key_numbers(_hand_results())
    assert (
        k["first_pair"] == PAIR
        and k["n_pairs"] == "1"
        and k["models"] == "gemma3-270m, smollm2-135m-instruct"
    )
    assert k["single_survivors"] == "big2_nouns 67 of 263" and k["big2_single_words"] == "67"
    assert k["single_category_model"] == "F(1, 8) = 7.02, p = 0.029"
    assert k["single_category_framing_model"] == "F(1, 8) = 0.50, p = 0.50"
    assert k["single_category_model_clustered"] == "F(1, 4) = 1.50, p = 0.29"
    assert k["single_category_framing_model_clustered"] == "F(1, 4) = 2.50, p = 0.19"
    assert k["single_cfm_p_exact"] == "p = 0.30" and k["p_min"] == "0.10" and k["n_splits"] == "20"
    assert k["n_clusters"] == "6" and k["n_adjectives"] == "3 positive and 3 negative"
    assert k["single_cfm_verdict"].startswith("inconclusive")  # the clustered verdict, p 0.189
    assert k["all_words_category_model_clustered"] == "n/a"  # no clustered all-words ANOVA in this table
    assert k["all_words_category_model"] == "F(1, 8) = 5.12, p = 0.054"
    assert k["adjusted_category_model"] == "F(1, 8) = 0.74, p = 0.42"
    assert k["contrast_wins"] == "1 of 2"  # the 'all' rows only
    assert k["tail_ratio"] == "4e+01"  # median (p+q)/2 of the top two by MWLR (0.2) over by log ratio (0.005)
    assert k["n_prompts"] == "4" and k["n_word_prompts"] == "2" and k["n_corpus_words"] == "2"
    assert k["pair_estimate"] == "2.0 ranks" and k["pair_interval"] == "no interval"
    assert k["pair_answer"] == "An answer." and k["planted_estimate"] == "n/a"
    assert k["validation_passes"] == "n/a" and k["sham_zipf_tolerance"] == "0.25"
    assert set(stage.text.MARKDOWN_KEYS) <= set(k)


def test_key_numbers_are_all_present_without_pairs_or_validation():
    full = stage.text.key_numbers(_hand_results())
    empty = stage.text.key_numbers(stage.Results(params=stage.Params.parse({})))
    assert set(empty) == set(full)
    for key in (
        "first_pair",
        "single_survivors",
        "single_category_model",
        "all_words_category_model",
        "single_category_framing_model_clustered",
        "single_cfm_verdict",
        "n_adjectives",
    ):
        assert empty[key] == "n/a", key
    assert all(isinstance(v, str) and v for v in empty.values())


NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "implicit.ipynb"


def notebook_glue_keys(role: str = "text|md") -> set[str]:
    """The keys the chapter's Markdown pastes with ``{glue:text}`` / ``{glue:md}`` roles."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    md = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    return {k.split(":")[0] for k in re.findall(rf"\{{glue:(?:{role})\}}`([^`]+)`", md)}


def test_every_key_the_notebook_pastes_is_glued_whatever_the_run():
    """A key the Markdown pastes but no code glues breaks the book build: every key is glued for a run with
    a pair, for one without a pair or validation, and for one without the Big Two nouns; the prose is the
    notebook's (no library paragraph is displayed) and every p-value is written as the book check wants."""
    keys = notebook_glue_keys()
    assert {"pair_differences", "survivor_totals", "single_posthocs", "validation_passing"} <= keys
    assert notebook_glue_keys("md") == set(stage.text.MARKDOWN_KEYS)
    hand = _hand_results()
    no_big2 = dataclasses.replace(
        hand,
        params=stage.Params.parse({"corpora": ["mfd2"], "top_k": 2}),
        single_counts=hand.single_counts.assign(corpus="mfd2"),
        single_anova=hand.single_anova.assign(corpus="mfd2"),
        single_anova_clustered=hand.single_anova_clustered.assign(corpus="mfd2"),
    )
    for res in (
        hand,
        stage.Results(params=stage.Params.parse({"models": ["gemma3-270m"], "planted_model": ""})),
        no_big2,
    ):
        glued = {**stage.text.key_numbers(res), **stage.keys.key_numbers(res)}
        assert keys <= set(glued), sorted(keys - set(glued))
        assert all(isinstance(v, str) and v for v in glued.values())
        assert [v for v in glued.values() if bad_pvalues(v)] == []
    assert "display(Markdown(" not in NOTEBOOK.read_text(encoding="utf-8")
    k = stage.text.key_numbers(no_big2)
    assert k["big2_corpus"] == "n/a" and k["single_survivors"] == "mfd2 67 of 263"
    assert k["single_anova_terms"].startswith(f"{PAIR}, mfd2: category × model F(1, 8) = 7.02, p = 0.029")


def test_readings_of_a_hand_made_run():
    r = stage.readings
    k = r.readings(_hand_results())
    assert k["survivor_totals"] == f"{PAIR}, big2_nouns: 67 of 263"
    assert (
        k["survivor_per_model"]
        == f"{PAIR}, big2_nouns: 236 under gemma3-270m, 67 under smollm2-135m-instruct"
    )
    assert (
        k["single_anova_design"] == f"{PAIR}, big2_nouns: 16 points (clustered: 6 adjective means per cell)"
    )
    assert k["single_anova_terms"] == (
        f"{PAIR}, big2_nouns: category × model F(1, 8) = 7.02, p = 0.029 (clustered F(1, 4) = 1.50, p = 0.29); "
        f"{PAIR}, big2_nouns: category × framing × model F(1, 8) = 0.50, p = 0.50 (clustered F(1, 4) = 2.50, "
        "p = 0.19, exact test over 20 splits p = 0.30, smallest possible 0.10)"
    )
    assert k["all_words_terms"] == (
        f"{PAIR}, big2_nouns: summed F(1, 8) = 5.12, p = 0.054, token-count adjusted F(1, 8) = 0.74, p = 0.42"
    )
    assert k["contrast_wins_by_pair"] == f"{PAIR}: 1 of 2"  # the 'all' rows only
    assert (
        k["tail_probabilities"] == f"{PAIR}: 5.0e-03 by raw log ratio, 2.0e-01 by MWLR (4e+01 times higher)"
    )
    assert k["validation_passing"].startswith("none: the planted-word validation was skipped")
    posthocs = pd.DataFrame(
        {
            "pair": [PAIR] * 2, "corpus": ["big2_nouns"] * 2, "metric": ["single_token"] * 2,
            "category": ["Agency", "Communion"], "framing": ["negative", "positive"],
            "level_a": ["gemma3-270m"] * 2, "level_b": ["smollm2-135m-instruct"] * 2,
            "difference": [-2.71, 2.6], "p_corrected": [0.0004, 0.2],
        }
    )  # fmt: skip
    cells = r.anova_readings(pd.DataFrame(_anova("single_token", 7.02, 0.0291)), posthocs)["single_posthocs"]
    assert cells == f"{PAIR}, big2_nouns: 1 of 2 cells, Agency/negative \u22122.7 (p < 0.001)"
    models = pd.DataFrame(
        {"model": ["a", "b"], "family": ["gemma", "llama"], "type": ["pretrained"] * 2, "size": ["1B", "2B"]}
    )
    assert r.confounds(models, [("a", "b")]) == {
        "pair_differences": "a vs b: family (gemma vs llama), size (1B vs 2B)"
    }
    v = pd.DataFrame(
        {
            "level": ["word", "word (cross-tokenizer)", "token"], "reference": ["m", "g", "m"],
            "metric": ["word_mwlr", "word_mwlr", "token_logprob"], "passes": [True, False, False],
        }
    )  # fmt: skip
    mc = pd.DataFrame(
        [{"level": "word", "reference": "m", "metric_a": "word_mwlr", "metric_b": "word_logratio", "auc_a": 0.999,
          "auc_b": 0.986, "difference": 0.013, "ci_low": -0.004, "ci_high": 0.03}]
    )  # fmt: skip
    val = r.validation_readings(v, mc)
    assert val["validation_passing"] == "word: word_mwlr"
    assert val["validation_failing"] == "word (cross-tokenizer) against g: word_mwlr; token: token_logprob"
    assert (
        val["mwlr_minus_raw"] == "word +0.013 [\u22120.004, 0.030] (word_mwlr AUC 0.999, word_logratio 0.986)"
    )
    recovery = pd.DataFrame(
        {
            "target": ["sham words"] * 2,
            "level": ["word"] * 2,
            "metric": ["word_sum", "word_mwlr"],
            "auc": [0.6, 0.7],
        }
    )
    words = pd.DataFrame(
        {"role": ["planted", "sham"], "word": ["duty", "kin"], "zipf_difference": [0.0, -0.12]}
    )
    sham = r.sham_readings(recovery, words, [7.6, 3.1], [8.2, 3.0])
    assert (
        sham["n_sham"] == "1"
        and sham["sham_zipf_max"] == "0.12"
        and sham["planted_loss"] == "7.60 \u2192 3.10"
    )
    assert (
        sham["sham_own_words"].startswith("AUC at most 0.700 (word_mwlr)")
        and "does not show" in sham["sham_own_words"]
    )
    took = r.sham_readings(recovery.assign(auc=[0.6, 0.9]), words, [], [])
    assert took["sham_own_words"].endswith("the sham plant took") and took["planted_loss"] == "n/a"


def test_reader_tables_format_anova_and_validation():
    anova = stage.tables.anova_table(pd.DataFrame(_anova("single_token", 7.02, 0.0004)))
    assert anova.columns.tolist() == ["pair", "corpus", "term", "F", "df", "p"]
    assert anova["term"].tolist() == ["category × model", "category × framing × model"]
    assert anova["df"].tolist() == ["1, 8", "1, 8"] and anova["p"].iloc[0] == "< 0.001"
    both = stage.tables.anova_table(
        pd.DataFrame(_anova("single_token", 7.02, 0.0004)),
        clustered=pd.DataFrame(_anova_clustered(9.0, 0.04)),
    )
    assert (
        both.columns.tolist()[:6] == anova.columns.tolist()
    )  # the paper's columns stay, the clustered follow
    assert both["df (adjectives)"].tolist() == ["1, 4", "1, 4"] and both["p (adjectives)"].tolist() == [
        "0.29",
        "0.040",
    ]
    assert both["exact p (smallest)"].tolist() == ["", "0.30 (0.10)"]
    assert stage.text.anova_verdict(pd.DataFrame(_anova_clustered(9.0, 0.04)).iloc[1]).startswith(
        "framing moves the categories differently"
    )
    assert "exact split test cannot go that low" in stage.text.anova_verdict(
        pd.DataFrame(_anova_clustered(9.0, 0.04)).iloc[1]
    )
    v = pd.DataFrame(
        [
            {
                "level": "word", "reference": "m", "metric": "word_mwlr", "auc_planted": 0.9, "auc_untuned": 0.5,
                "auc_sham": 0.6, "diff_untuned": 0.4, "ci_low_untuned": 0.3, "ci_high_untuned": 0.5,
                "diff_sham": 0.3, "ci_low_sham": -0.1, "ci_high_sham": 0.6, "passes": False,
            }
        ]
    )  # fmt: skip
    t = stage.tables.validation_table(v)
    assert t.iloc[0]["tuned − sham [95% CI]"] == "0.300 [−0.100, 0.600]" and t.iloc[0]["verdict"] == "fails"
    words = pd.DataFrame(
        {
            "role": ["planted", "sham"],
            "word": ["duty", "kin"],
            "zipf_frequency": [4.5, 4.4],
            "matched_to": ["", "duty"],
            "zipf_difference": [0.0, -0.1],
            "category": ["Authority", "Communion"],
        }
    )
    sham = stage.tables.sham_table(words)
    assert sham.iloc[0][["planted word", "sham word", "Zipf (planted)"]].tolist() == ["duty", "kin", "4.50"]
    for empty in (pd.DataFrame(),):
        assert stage.tables.validation_table(empty).empty and stage.tables.sham_table(empty).empty
        assert stage.tables.anova_table(empty).empty and stage.tables.contrast_table(empty).empty


def test_figures_are_one_figure_even_without_data():
    import matplotlib.pyplot as plt

    for fig in (
        stage.figures.plot_median_ranks_grid(pd.DataFrame(), "single_token"),
        stage.figures.plot_contrasts(pd.DataFrame()),
        stage.figures.plot_recovery(pd.DataFrame()),
    ):
        assert len(fig.axes) == 1
        plt.close(fig)


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
        corpora=["big2_nouns", "mfd2"],
        metrics=["token_mwlr", "word_mwlr", "word_logratio", "word_sum", "word_mean"],
        extra_registry=[str(reg)],
        planted_model="tiny-llama",
        planted_words=["peace", "nurse"],
        planted_steps=5,
        planted_lr=3e-3,
        planted_bootstrap=50,
        planted_strengths=[1e-4, 1e-3, 1e-2, 3e-2],
        planted_strength_steps=2,
        planted_strength_prompts=["best_ever_one", "worst_ever_one", "good_time_please"],
        top_k=3,
        results_root=str(corpora_results),
        output_dir=str(out),
    )
    record = RunRecord.for_params(p)
    res = stage.run(p, record)
    assert record.output_dir == out
    table, _ = read_corpora_table(p.corpora_input(), str(corpora_results), ["big2_nouns", "mfd2"])
    labels = labels_of(table)
    wl = pd.read_parquet(out / "word_logprobs.parquet")
    assert set(wl["model"]) == {"tiny-gemma", "tiny-llama"}
    assert set(wl["prompt_id"]) == set(params.DEFAULT_PROMPTS)  # the all-words analysis's subset
    assert dict(wl.groupby("model")["prompt_format"].first()) == {"tiny-gemma": "raw", "tiny-llama": "chat"}
    assert {"framing", "category", "n_tokens", "logprob"} <= set(wl.columns)
    assert len(wl) == 2 * len(params.DEFAULT_PROMPTS) * len(labels)  # corpus words only
    manifest = json.loads((out / "manifest.json").read_text())
    assert [m["prompt_format"] for m in manifest["models"]] == ["raw", "chat"]
    assert "corpora/default/corpora.parquet" in manifest["inputs"]
    assert manifest["seeds"] == {"seed": 0, "sham_words": 0, "validation_bootstrap": 0}
    assert len(manifest["extra"]["planted_losses"]) == 5 and len(manifest["extra"]["sham_losses"]) == 5
    for name in (
        "single_token_words.csv",
        "single_token_counts.csv",
        "single_token_ranks.parquet",
        "single_token_anova.csv",
        "single_token_anova_clustered.csv",
        "single_token_posthocs.csv",
        "single_token_framing_contrasts.csv",
        "token_counts.csv",
        "token_mwlr.parquet",
        "word_mwlr.parquet",
        "median_ranks.parquet",
        "all_words_anova.csv",
        "all_words_anova_clustered.csv",
        "pair_contrasts.csv",
        "planted_words.csv",
        "planted_recovery.csv",
        "planted_validation.csv",
        "planted_metric_contrasts.csv",
        "top_tokens.csv",
        "token_alignment.csv",
    ):
        assert name in manifest["outputs"], name
    # the primary analysis: the tiny tokenizers share few one-token words; by hand (tiny llama, chat: the bare
    # word; tiny gemma, raw: the word after a space) 'kin' is the only Big Two noun, and mfd2 keeps words of two
    # foundations; with all 54 prompts the pair's ANOVA has the paper's residual df 208
    words = pd.read_csv(out / "single_token_words.csv")
    kept = words[words["survives"]]
    assert kept.loc[kept["corpus"] == "big2_nouns", "word"].tolist() == ["kin"]
    assert {"fair", "honest", "war", "kin"} <= set(kept.loc[kept["corpus"] == "mfd2", "word"])
    assert (words["answer_p"].str.startswith(" ")).all() and not words["answer_q"].str.startswith(" ").any()
    assert res.prompts == list(prompt_ids()) and res.single_medians["prompt_id"].nunique() == 54
    anova = res.single_anova.set_index("term")
    assert set(res.single_anova["corpus"]) == {"mfd2"}  # big2_nouns: one category survives, no ANOVA
    assert anova.loc["Residual", "df"] == 2 * 54 * 2 - 8 and len(res.single_posthocs) == 4
    # its clustered counterpart: 6 adjective means per cell, each term on 1 and 4 df; the D contrasts likewise
    clustered = res.single_anova_clustered.set_index("term")
    assert (clustered["df_error"] == 4).all() and (clustered["n_clusters"] == 6).all()
    assert clustered.loc["C(category):C(framing):C(model)", "p_min"] == pytest.approx(0.1)
    assert set(res.single_contrasts["corpus"]) == {"mfd2"} and (res.single_contrasts["n_positive"] == 3).all()
    # the all-words analysis's four word prompts: two adjectives per framing
    fm = res.anova_clustered[res.anova_clustered["term"] == "C(framing):C(model)"]
    assert (res.anova_clustered["n_clusters"] == 4).all() and (fm["df_error"] == 2).all() and len(fm) >= 2
    survivors = stage.readings.survivors(res.single_counts, res.single_words, res.pairs)
    assert "tiny-llama vs tiny-gemma, mfd2: " in survivors["survivor_totals"]
    assert survivors["other_form_survivors"].startswith("tiny-llama vs tiny-gemma: ")
    # the secondary analysis on every word, raw and token-count adjusted
    assert set(res.anova["metric"]) == {"word_sum", "word_sum_adjusted"}
    assert res.alignment["shared_strings"].iloc[0] > 0 and res.alignment["duplicates"].iloc[0] == "max"
    assert set(res.medians["metric"]) == {
        "word_sum",
        "word_sum_adjusted",
        "word_mean",
        "word_mwlr",
        "word_logratio",
    }
    assert not res.token_counts.empty and set(res.contrasts["pair"]) == {"tiny-llama vs tiny-gemma"}
    # the validation: planted and sham words, three conditions, the pass criterion per panel
    pw = res.planted_words
    assert pw["role"].tolist() == ["planted", "planted", "sham", "sham"]
    planted_cats = set(table.loc[table["word"].isin(["peace", "nurse"]), "category"])
    assert planted_cats and not set(pw.loc[pw["role"] == "sham", "category"]) & planted_cats
    assert (pw.loc[pw["role"] == "sham", "zipf_difference"].abs() <= plant_finetune.ZIPF_TOLERANCE).all()
    assert set(res.recovery["condition"]) == {"planted", "untuned", "sham"}
    v = res.validation
    assert list(v["level"]) == ["word"] * 4 + ["word (cross-tokenizer)"] * 2 + ["token"] * 3
    assert set(v.loc[v["level"] == "word (cross-tokenizer)", "reference"]) == {"tiny-gemma"}
    same_ref = v[(v["level"] != "word (cross-tokenizer)") & v["metric"].isin(["word_mwlr", "token_mwlr"])]
    assert (same_ref["auc_untuned"] == 0.5).all()  # the reference against itself: zero everywhere
    assert v["n_prompts"].tolist()[:6] == [4] * 6 and v["n_prompts"].iloc[-1] == 52
    mc = res.metric_contrasts
    assert mc[["level", "metric_a", "metric_b"]].values.tolist() == [
        ["word", "word_mwlr", "word_logratio"],
        ["word (cross-tokenizer)", "word_mwlr", "word_logratio"],
        ["token", "token_mwlr", "token_logratio"],
    ]
    assert "planted-word validation" not in res.timings and "fine-tune (sham)" in res.timings
    # the graded validation: every strength has its plant and both controls, at both levels, every metric
    g = res.graded
    assert sorted(g["strength"].unique()) == [1e-4, 1e-3, 1e-2, 3e-2] and (g["steps"] == 2).all()
    per = g.groupby(["level", "strength"])["metric"].apply(list).to_dict()
    for s in (1e-4, 1e-3, 1e-2, 3e-2):
        assert per[("word", s)] == list(validation.WORD_METRICS) and per[("token", s)] == list(
            validation.TOKEN_METRICS
        )
    assert (
        g[["auc_planted", "auc_sham", "auc_untuned", "ci_low_excess", "ci_high_excess"]].notna().all().all()
    )
    assert (g.loc[g["level"] == "word", "n_prompts"] == 3).all() and (
        g.loc[g["level"] == "token", "n_prompts"] == 52
    ).all()
    pair_metrics = g["metric"].isin(["word_mwlr", "word_logratio", "token_mwlr", "token_logratio"])
    assert (
        g.loc[pair_metrics, "auc_untuned"] == 0.5
    ).all()  # the reference against itself, at every strength
    # the untuned control is one model: the same AUC at every strength
    assert (g.groupby(["level", "metric"])["auc_untuned"].nunique() == 1).all()
    gd = res.graded_differences
    assert len(gd) == 4 * (6 + 3) and set(gd["level"]) == {"word", "token"}  # C(4, 2) + C(3, 2) per strength
    gl = pd.DataFrame(manifest["extra"]["graded_losses"])
    assert len(gl) == 4 * 2 * 2 and set(gl["condition"]) == {"planted", "sham"}
    assert (
        "planted_strengths.csv" in manifest["outputs"]
        and "planted_strength_differences.csv" in manifest["outputs"]
    )
    # every graded plant is timed in the manifest
    assert "fine-tune (planted, lr 0.03)" in res.timings
    gk = stage.keys.key_numbers(res)
    assert (
        gk["graded_n_strengths"] == "4" and gk["graded_word_prompts"] == "3" and gk["base_p"] == "tiny-gemma"
    )
    assert {f.key for f in res.findings} >= {"planted", "planted_graded"}
    # the reader tables: every one a CSV download through the record, the prose numbers all present
    for name in stage.READER_TABLES:
        assert f"tables/{name}.csv" in manifest["outputs"] and res.csv(name).is_file(), name
    assert len(pd.read_csv(res.csv("validation"))) == len(v)
    k = stage.text.key_numbers(res)
    assert k["first_pair"] == "tiny-llama vs tiny-gemma" and k["validation_passes"].endswith(f"of {len(v)}")
    assert k["big2_single_words"] == "1" and k["planted_estimate"].startswith("AUC")
    glued = {**k, **gk}
    assert notebook_glue_keys() <= set(glued) and not [v for v in glued.values() if bad_pvalues(v)]
    assert glued["sham_own_words"].startswith("AUC") and glued["validation_passing"].startswith("word: ")
    import matplotlib.pyplot as plt

    fig = stage.figures.plot_median_ranks_grid(res.single_medians, "single_token")
    assert len(fig.axes) == 4  # ONE figure: a row per corpus with surviving words x a column per framing
    plt.close(fig)


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
