"""The specification curve (rmvalues.stats.specification, rmvalues.stages.rm_statistics.specification): cell
summaries, the per-RM statistic, the four tests and their intervals, the labelling rule, the matched word
sets, the prompt sets and the enumeration, against hand computations."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from synthetic_scores import synthetic_scores

from rmvalues.data.prompts import load_prompts
from rmvalues.stages.rm_statistics import specification as sp
from rmvalues.stats import rank_scores, split_interval, split_test
from rmvalues.stats.specification import (
    SUMMARIES,
    TESTS,
    CurveRule,
    cell_array,
    cell_standings,
    curve_label,
    rm_statistics,
    two_group_tests,
)


def test_cell_standings_by_hand():
    # one RM, one prompt, four words: scores 4, 3, 2, 1 -> ranks 1..4; A = {w1, w2}, B = {w3, w4}; w2 also in B
    scores = pd.DataFrame(
        {
            "rm": "r",
            "family": "f",
            "prompt_id": "best_ever_one",
            "framing": "positive",
            "word": ["w1", "w2", "w3", "w4", "w2"],
            "category": ["A", "A", "B", "B", "B"],
            "score": [4.0, 3.0, 2.0, 1.0, 3.0],
        }
    )
    cells = cell_standings(scores).set_index("category")
    # ranks: w1 1, w2 2, w3 3, w4 4; A = {1, 2}; B = {2, 3, 4} (w2 counts in both, ranked once)
    assert cells.loc["A", "median rank"] == -1.5 and cells.loc["B", "median rank"] == -3.0
    assert cells.loc["B", "mean rank"] == -3.0
    # min-max: (4-1)/3 = 1, 2/3, 1/3, 0
    assert cells.loc["A", "normalised score"] == pytest.approx((1 + 2 / 3) / 2)
    assert cells.loc["B", "normalised score"] == pytest.approx((2 / 3 + 1 / 3 + 0) / 3)
    # z: mean 2.5, sd (ddof 1) sqrt(5/3)
    sd = np.sqrt(5 / 3)
    assert cells.loc["A", "z-score"] == pytest.approx(((4 - 2.5) + (3 - 2.5)) / 2 / sd)
    # top quarter of 4 words: rank <= 1 -> only w1
    assert cells.loc["A", "top-quartile share"] == 0.5 and cells.loc["B", "top-quartile share"] == 0.0
    assert cells.loc["B", "n_words"] == 3


def test_rm_statistic_by_hand():
    # 1 RM, 2 prompts (one per framing), 2 categories: standings m(k, f)
    values = np.array([[[1.0, 4.0], [3.0, 2.0]]])  # (RM, prompt, category): positive [1, 4], negative [3, 2]
    framing = np.array(["positive", "negative"], dtype=object)
    d = rm_statistics(values, framing, np.array([True, True]))
    # D(k) = [m(k,+) - m(other,+)] - [m(k,-) - m(other,-)]: D(A) = (1-4) - (3-2) = -4; D(B) = +4
    assert d.tolist() == [[-4.0, 4.0]]
    # with ranks as standings (minus the rank) this is the chapter's D: gain in rank from negative to positive
    d_only_positive = rm_statistics(values, framing, np.array([True, False]))
    assert np.isnan(d_only_positive).all()


def test_two_group_tests_against_scipy_and_the_split_test():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, 4), rng.normal(1.5, 2, 6)
    rows = {r["test"]: r for r in two_group_tests(a, b)}
    assert list(rows) == list(TESTS)
    exact = split_test(a, b)
    assert rows["exact mean difference"]["p"] == pytest.approx(exact.p)
    assert (
        rows["exact mean difference"]["ci_low"],
        rows["exact mean difference"]["ci_high"],
    ) == pytest.approx(split_interval(a, b))
    assert rows["exact mean difference"]["p_min"] == pytest.approx(2 / 210)
    mw = stats.mannwhitneyu(b, a, method="exact")
    assert rows["exact Mann-Whitney"]["p"] == pytest.approx(mw.pvalue)
    assert rows["exact Mann-Whitney"]["estimate"] == pytest.approx(np.median(np.subtract.outer(b, a)))
    welch = stats.ttest_ind(b, a, equal_var=False)
    assert rows["Welch t"]["p"] == pytest.approx(welch.pvalue)
    # the permuted Welch t over all 210 splits, by brute force
    z = np.r_[a, b]
    ts = []
    for combo in itertools.combinations(range(10), 6):
        inb = np.zeros(10, bool)
        inb[list(combo)] = True
        ts.append(stats.ttest_ind(z[inb], z[~inb], equal_var=False).statistic)
    t_obs = welch.statistic
    p = min(1.0, 2 * min(np.mean(np.array(ts) >= t_obs - 1e-12), np.mean(np.array(ts) <= t_obs + 1e-12)))
    assert rows["permuted Welch t"]["p"] == pytest.approx(p)


@pytest.mark.parametrize("test", ["exact Mann-Whitney", "permuted Welch t"])
def test_intervals_invert_their_tests(test):
    """Every shift inside the interval is accepted by the test at 0.05 and shifts just outside are rejected."""
    rng = np.random.default_rng(7)
    a, b = rng.normal(0, 1, 4), rng.normal(2, 1, 6)
    (row,) = two_group_tests(a, b, [test])
    lo, hi = row["ci_low"], row["ci_high"]

    def p_at(delta: float) -> float:
        return two_group_tests(a, b - delta, [test])[0]["p"]

    eps = 1e-4 * (hi - lo)
    assert p_at(lo + eps) > 0.05 and p_at(hi - eps) > 0.05
    assert p_at(lo - 10 * eps) <= 0.05 and p_at(hi + 10 * eps) <= 0.05


def test_curve_label_rule():
    rule = CurveRule(sign_share=0.95, robust_share=0.5, fragile_share=0.1)
    est = np.r_[np.full(96, -1.0), np.full(4, 1.0)]
    assert curve_label(est, np.r_[np.full(60, 0.01), np.full(40, 0.5)], -1, rule)["label"] == "robust"
    frag = curve_label(est, np.r_[np.full(20, 0.01), np.full(80, 0.5)], -1, rule)
    assert frag["label"] == "fragile" and frag["share_same_sign"] == 0.96 and frag["share_significant"] == 0.2
    assert curve_label(est, np.r_[np.full(5, 0.01), np.full(95, 0.5)], -1, rule)["label"] == "inconclusive"
    both = np.r_[np.full(90, -1.0), np.full(10, 1.0)]  # 10% with the other sign: the direction does not hold
    assert curve_label(both, np.full(100, 0.001), -1, rule)["label"] == "inconclusive"
    missing = curve_label([np.nan, np.nan], [np.nan, np.nan], -1, rule)
    assert missing["label"] == "untestable" and missing["n_missing"] == 2
    with pytest.raises(ValueError, match="fragile_share"):
        CurveRule(robust_share=0.1, fragile_share=0.2)


def test_matched_words_keep_the_smallest_category_per_bin():
    labels = pd.DataFrame(
        {
            "word": ["a1", "a2", "a3", "b1", "b2", "c1"],
            "category": ["A", "A", "A", "B", "B", "A"],
            "valence": [5.1, 5.2, 7.0, 5.3, 7.1, np.nan],
        }
    )
    kept = sp.matched_words(labels, "valence", 0.5, seed=0)
    # bin [5.0, 5.5): A has a1, a2; B has b1 -> one of a1/a2 and b1; bin [7.0, 7.5): a3 and b2; c1 has no norm
    assert sorted(kept["category"]) == ["A", "A", "B", "B"]
    assert {"b1", "b2", "a3"} <= set(kept["word"]) and len({"a1", "a2"} & set(kept["word"])) == 1


def test_prompt_sets_of_the_design():
    sets = sp.prompt_sets(load_prompts())
    assert len(sets) == 10 and len(sets["all 54"]) == 54
    assert len(sets["without 'best'"]) == 45 and not any(
        p.startswith("best_") for p in sets["without 'best'"]
    )
    assert len(sets["phrasing 'please' only"]) == 18


def test_enumeration_and_the_primary_specification():
    """Every combination of the choices once per verdict; the primary specification reproduces the chapter's
    RM-level test (median ranks, all words, all prompts, the exact test)."""
    from rmvalues.stages.rm_statistics import rm_level

    prompts = ("best_ever_one", "good_world_one", "worst_ever_one", "bad_time_please")
    sc = synthetic_scores(n_rm=8, n_words=16, prompts=prompts, planted=1.5, seed=2)
    ranked = rank_scores(sc)
    words = sc[["corpus", "word"]].drop_duplicates()
    rng = np.random.default_rng(0)
    words = words.assign(zipf_frequency=rng.uniform(3, 5, len(words)), valence=rng.uniform(4, 6, len(words)))
    single = pd.DataFrame(
        [
            (rm, "toy", w, 1 + i % 2)
            for rm in ranked["rm"].unique()
            for i, w in enumerate(sorted(words["word"]))
        ],
        columns=["rm", "corpus", "word", "n_tokens"],
    )
    table = load_prompts()
    curve = sp.specification_curve(ranked, words, single, table, ["gemma", "llama"], seed=0)
    # 4 prompts over 4 adjectives and 2 styles: all; without each of the 4 adjectives; each style alone (the
    # 'please' style has a single negative prompt and no positive one: dropped)
    n_prompt_sets = 1 + 4 + 1
    assert len(curve) == len(SUMMARIES) * len(sp.WORD_SETS) * n_prompt_sets * len(TESTS)
    assert not curve.duplicated(["summary", "word_set", "prompt_set", "test"]).any()
    (prim,) = curve[curve["primary"]].itertuples()
    assert (prim.summary, prim.word_set, prim.prompt_set, prim.test) == (
        "median rank", "all", "all 4", "exact mean difference",
    )  # fmt: skip
    from rmvalues.stats import all_median_ranks

    con = rm_level.rm_contrasts(all_median_ranks(ranked), ["gemma", "llama"])
    ref = rm_level.rm_level_tests(con, ["gemma", "llama"], n_bootstrap=50).iloc[0]
    assert prim.estimate == pytest.approx(ref["difference"]) and prim.p == pytest.approx(ref["p_exact"])
    assert (prim.ci_low, prim.ci_high) == pytest.approx((ref["ci_low"], ref["ci_high"]))
    # the single-token word set ranks only the words that are one token in each RM's tokenizer (half of them)
    one = curve[(curve["word_set"] == "single-token")]
    assert set(one["n_words"]) == {8}
    labels = sp.curve_labels(curve, CurveRule())
    assert len(labels) == 1 and labels["n_specifications"].iloc[0] == len(curve)
    assert labels["primary_estimate"].iloc[0] == pytest.approx(ref["difference"])


def test_cell_array_roundtrip():
    sc = synthetic_scores(n_rm=4, n_words=8, seed=1)
    cells = cell_standings(rank_scores(sc))
    arr = cell_array(cells)
    assert arr.values["median rank"].shape == (4, 4, 2)
    row = cells.iloc[5]
    i, j, k = (
        arr.rms.index(row["rm"]),
        arr.prompts.index(row["prompt_id"]),
        arr.categories.index(row["category"]),
    )
    assert arr.values["z-score"][i, j, k] == pytest.approx(row["z-score"])
