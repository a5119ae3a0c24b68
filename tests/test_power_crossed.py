"""Power of the RM-level design (rmvalues.stats.power) and the crossed bootstrap over RMs and words
(rmvalues.stats.crossed), against values known by hand, by enumeration or from scipy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from synthetic_scores import scores_table

from rmvalues import stats as st
from rmvalues.stages.rm_statistics.rm_level import rm_contrasts

FAMILIES = ("gemma", "llama")

# ---------------------------------------------------------------------------------------------- power


def test_split_pvalues_are_split_tests_when_exact_and_close_when_sampled():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(15, 4)), rng.normal(0.8, 1.0, size=(15, 6))
    p, exact = st.split_pvalues(a, b)
    assert exact
    assert np.allclose(p, [st.split_test(x, y).p for x, y in zip(a, b, strict=True)])
    a, b = rng.normal(size=(10, 8)), rng.normal(0.8, 1.0, size=(10, 8))  # C(16, 8) = 12870 > 5000
    p, exact = st.split_pvalues(a, b, n_permutations=20_000, seed=2)
    assert not exact
    assert np.abs(p - [st.split_test(x, y).p for x, y in zip(a, b, strict=True)]).max() < 0.02


@pytest.mark.parametrize(("n_a", "n_b", "test"), [(4, 6, "exact"), (4, 6, "welch"), (8, 8, "exact")])
def test_a_huge_effect_is_always_detected(n_a, n_b, test):
    r = st.simulate_power(100.0, 1.0, 1.0, n_a, n_b, test, n_sims=300, n_permutations=199)
    assert r.power == 1.0 and r.mc_se == 0.0
    assert (r.exact, r.n_splits) == {
        "exact": (n_a == 4, 210 if n_a == 4 else 200),
        "welch": (False, 0),
    }[test]


def test_zero_effect_rejects_at_the_exact_size_of_the_split_test():
    size = st.split_test_size(4, 6, 0.05)
    # 210 splits: p = 2 min(k, 211 - k) / 210 <= 0.05 for k <= 5 in each tail
    assert size == pytest.approx(10 / 210) and size <= 0.05
    assert st.split_test_size(3, 3, 0.05) == 0.0  # 20 splits: p >= 0.1, never significant
    r = st.simulate_power(0.0, 1.0, 1.0, 4, 6, "exact", n_sims=20_000, seed=3)
    se = np.sqrt(size * (1 - size) / r.n_sims)
    assert abs(r.power - size) <= 3 * se
    assert r.power <= 0.05 + 3 * se


def test_welch_power_matches_the_noncentral_t_approximation():
    approx = st.welch_power(1.2, 1.0, 3.0, 20, 20)
    assert 0.3 < approx < 0.9
    r = st.simulate_power(1.2, 1.0, 3.0, 20, 20, "welch", n_sims=4000, seed=4)
    assert abs(r.power - approx) <= 3 * r.mc_se
    # the approximation at zero effect is the test's nominal size
    assert st.welch_power(0.0, 1.0, 3.0, 20, 20) == pytest.approx(0.05)


def test_power_table_rows_and_columns():
    sizes = [(4, 6), (8, 8)]
    table = st.power_table(1.0, 0.5, 1.5, sizes, n_sims=300, seed=5, n_permutations=199)
    assert list(table.columns) == st.POWER_COLUMNS
    assert len(table) == 4
    assert table["effect"].tolist() == [1.0, 1.0, 0.5, 0.5]
    assert table["effect_fraction"].tolist() == [1.0, 1.0, 0.5, 0.5]
    assert list(zip(table["n_a"], table["n_b"], strict=True)) == sizes * 2
    direct = st.simulate_power(1.0, 0.5, 1.5, 4, 6, n_sims=300, seed=5)
    assert table.loc[0, "power"] == direct.power and table.loc[0, "mc_se"] == direct.mc_se
    assert (table["n_sims"] == 300).all() and (table["test"] == "exact").all()


def test_simulated_power_is_seeded():
    one = st.simulate_power(1.0, 0.5, 1.5, 8, 8, n_sims=200, seed=6, n_permutations=199)
    two = st.simulate_power(1.0, 0.5, 1.5, 8, 8, n_sims=200, seed=6, n_permutations=199)
    assert one == two


def test_rms_needed_grows_as_the_effect_shrinks():
    effects = [2.0, 1.0, 0.8, 0.6]
    approx = [st.rms_needed(e, 0.5, 1.5) for e in effects]
    assert all(n is not None for n in approx)
    assert approx == sorted(approx) and approx[0] < approx[-1]
    # the returned size reaches the target, one fewer does not
    for e, n in zip(effects, approx, strict=True):
        assert st.welch_power(e, 0.5, 1.5, n, n) >= 0.8
        assert n == 3 or st.welch_power(e, 0.5, 1.5, n - 1, n - 1) < 0.8
    simulated = [st.rms_needed(e, 0.5, 1.5, method="welch", n_sims=1000) for e in effects]
    assert simulated == sorted(simulated)
    assert all(abs(s - a) <= 3 for s, a in zip(simulated, approx, strict=True))
    assert st.rms_needed(0.05, 0.5, 1.5) is None
    assert st.rms_needed(0.0, 0.5, 1.5, method="welch", n_sims=500) is None


# -------------------------------------------------------------------------------------- crossed bootstrap


def _hand_example() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """2 + 2 RMs, prompts (positive, negative), words w0, w1 (A) and w2, w3 (B)."""
    ranks = np.array(
        [
            [[1, 2, 3, 4], [3, 4, 1, 2]],  # gemma 1: A 1.5, B 3.5 | A 3.5, B 1.5 -> D(B) = -2 - 2 = -4
            [[1, 2, 3, 4], [1, 2, 3, 4]],  # gemma 2: A 1.5, B 3.5 | A 1.5, B 3.5 -> D(B) = -2 + 2 = 0
            [[1, 3, 2, 4], [2, 4, 1, 3]],  # llama 1: A 2, B 3 | A 3, B 2 -> D(B) = -1 - 1 = -2
            [[3, 4, 1, 2], [1, 2, 3, 4]],  # llama 2: A 3.5, B 1.5 | A 1.5, B 3.5 -> D(B) = 2 + 2 = 4
        ],
        dtype=float,
    )
    return (
        ranks,
        np.array(["A", "A", "B", "B"]),
        np.array(["gemma", "gemma", "llama", "llama"]),
        np.array(["positive", "negative"]),
    )


def test_estimate_is_the_hand_computed_family_difference_of_d():
    ranks, cats, fams, framing = _hand_example()
    # mean D(B): gemma (-4 + 0) / 2 = -2, llama (-2 + 4) / 2 = 1; difference 3
    r = st.crossed_bootstrap(ranks, cats, fams, framing, "B", FAMILIES, n_bootstrap=200)
    assert r.estimate == pytest.approx(3.0)
    assert st.crossed_bootstrap(ranks, cats, fams, framing, "A", FAMILIES, n_bootstrap=10).estimate == (
        pytest.approx(-3.0)
    )
    # RM-only draws: each family's mean over two drawn D values
    rms = st.crossed_bootstrap(ranks, cats, fams, framing, "B", FAMILIES, n_bootstrap=400, resample=("rms",))
    possible = {lb - ga for ga in (-4, -2, 0) for lb in (-2, 1, 4)}
    assert set(np.round(rms.draws, 9)) <= possible and len(set(np.round(rms.draws, 9))) > 3


def test_interval_collapses_without_resampling_variance():
    rng = np.random.default_rng(7)
    n_prompts, cats = 6, np.repeat(["X", "Y", "Z"], [4, 5, 3])
    framing = np.array(["positive", "negative"] * (n_prompts // 2))
    fams = np.array(["gemma"] * 3 + ["llama"] * 4)
    per_family = {f: rng.uniform(1, 12, size=(n_prompts, 3)) for f in FAMILIES}
    col = np.searchsorted(["X", "Y", "Z"], cats)
    ranks = np.stack([per_family[f][:, col] for f in fams])  # every word of a category ranked alike
    for resample in (("rms",), ("words",), ("rms", "words")):
        r = st.crossed_bootstrap(
            ranks, cats, fams, framing, "Y", FAMILIES, n_bootstrap=100, resample=resample
        )
        assert r.ci_low == pytest.approx(r.estimate) and r.ci_high == pytest.approx(r.estimate)
        assert np.allclose(r.draws, r.estimate)
    assert r.estimate != pytest.approx(0.0)


def _random_ranks(seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """4 + 6 RMs x 8 prompts x 3 categories of 8 words; RMs and words both vary; ranked per (RM, prompt)."""
    rng = np.random.default_rng(seed)
    n_rms, n_prompts, n_words = 10, 8, 24
    cats = np.repeat(["A", "B", "C"], 8)
    framing = np.array(["positive", "negative"] * (n_prompts // 2))
    sign = np.where(framing == "positive", 1.0, -1.0)
    word = rng.normal(0, 1, n_words)
    rm_slope = rng.normal(0, 0.15, (n_rms, 3))[:, np.searchsorted(["A", "B", "C"], cats)]
    score = sign[None, :, None] * (word[None, None, :] + rm_slope[:, None, :]) + rng.normal(
        0, 0.5, (n_rms, n_prompts, n_words)
    )
    ranks = np.stack([[pd.Series(-s).rank().to_numpy() for s in rm] for rm in score])
    return ranks, cats, np.array(["gemma"] * 4 + ["llama"] * 6), framing


def test_crossed_interval_is_at_least_as_wide_as_each_one_way_interval():
    ranks, cats, fams, framing = _random_ranks()
    width = {}
    for resample in (("rms",), ("words",), ("rms", "words")):
        r = st.crossed_bootstrap(
            ranks, cats, fams, framing, "B", FAMILIES, n_bootstrap=2000, resample=resample
        )
        assert r.ci_low <= r.estimate <= r.ci_high
        width[resample] = r.ci_high - r.ci_low
    assert width[("rms", "words")] >= width[("rms",)]
    assert width[("rms", "words")] >= width[("words",)]


def test_word_draws_are_medians_of_the_drawn_words():
    ranks, cats, fams, framing = _random_ranks(9)
    n = 25
    r = st.crossed_bootstrap(
        ranks, cats, fams, framing, "A", FAMILIES, n_bootstrap=n, seed=3, resample=("words",)
    )
    # a plain re-implementation with the same random numbers: one multinomial draw per category in order
    rng = np.random.default_rng(3)
    members = {c: np.flatnonzero(cats == c) for c in ("A", "B", "C")}
    counts = {c: rng.multinomial(m.size, np.full(m.size, 1 / m.size), size=n) for c, m in members.items()}
    pos, neg = framing == "positive", framing == "negative"
    for b in range(n):
        m = {}
        for c, cols in members.items():
            med = np.median(ranks[:, :, np.repeat(cols, counts[c][b])], axis=2)
            m[c] = (med[:, pos].mean(axis=1), med[:, neg].mean(axis=1))
        d = (np.mean([m["B"][0], m["C"][0]], axis=0) - m["A"][0]) - (
            np.mean([m["B"][1], m["C"][1]], axis=0) - m["A"][1]
        )
        assert r.draws[b] == pytest.approx(d[fams == "llama"].mean() - d[fams == "gemma"].mean())


def test_crossed_bootstrap_is_seeded():
    ranks, cats, fams, framing = _random_ranks()
    one = st.crossed_bootstrap(ranks, cats, fams, framing, "C", FAMILIES, n_bootstrap=50, seed=11)
    two = st.crossed_bootstrap(ranks, cats, fams, framing, "C", FAMILIES, n_bootstrap=50, seed=11)
    other = st.crossed_bootstrap(ranks, cats, fams, framing, "C", FAMILIES, n_bootstrap=50, seed=12)
    assert np.array_equal(one.draws, two.draws) and (one.ci_low, one.ci_high) == (two.ci_low, two.ci_high)
    assert not np.array_equal(one.draws, other.draws)
    with pytest.raises(ValueError, match="resample"):
        st.crossed_bootstrap(ranks, cats, fams, framing, "C", FAMILIES, resample=("prompts",))


def _ranked_with_a_two_label_word() -> pd.DataFrame:
    rng = np.random.default_rng(10)
    prompts = ("best_ever_one", "best_world_one", "worst_ever_one", "worst_world_one")
    words = [(f"w{i:02d}", "ABC"[i % 3]) for i in range(14)] + [("w01", "C")]  # w01 is B and C
    score = {(m, p, w): rng.normal() for m in range(5) for p in prompts for w, _ in words}
    rows = [
        (f"rm{m}", FAMILIES[m >= 2], p, w, c, None, score[m, p, w])
        for m in range(5)
        for p in prompts
        for w, c in words
    ]
    return st.rank_scores(scores_table(rows))


def test_rank_array_and_estimate_agree_with_the_rm_level_pipeline():
    ranked = _ranked_with_a_two_label_word()
    arrays = st.rank_array(ranked)
    assert arrays.ranks.shape == (5, 4, 14)
    assert arrays.word_index.size == 15 and list(arrays.words).count("w01") == 1
    w01 = int(np.searchsorted(arrays.words, "w01"))
    assert sorted(arrays.word_category[arrays.word_index == w01]) == ["B", "C"]
    assert list(arrays.prompt_framing) == ["positive", "positive", "negative", "negative"]
    contrasts = rm_contrasts(st.median_ranks(ranked), FAMILIES)
    for category in ("A", "B", "C"):
        d = contrasts[contrasts["category"] == category].groupby("family")["D"].mean()
        r = st.crossed_bootstrap(
            arrays.ranks,
            arrays.word_category,
            arrays.rm_family,
            arrays.prompt_framing,
            category,
            FAMILIES,
            n_bootstrap=20,
            word_index=arrays.word_index,
        )
        assert r.estimate == pytest.approx(d["llama"] - d["gemma"])
    with pytest.raises(ValueError, match="incomplete"):
        st.rank_array(ranked.iloc[1:])
