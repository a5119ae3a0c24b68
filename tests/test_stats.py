"""The statistics layer (rmvalues.stats): ranks, median ranks, two-group tests, bootstrap, mixed models, the
null baseline and the ANOVA variant, checked on small hand-computable tables and planted effects."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pingouin as pg
import pytest
from scipy import stats
from statsmodels.stats.multitest import fdrcorrection
from synthetic_scores import THREE_WAY, THREE_WAY_R, medians_table, scores_table, synthetic_scores

from rmvalues import stats as st

# ---------------------------------------------------------------------------------------------------------
# Ranks and median ranks
# ---------------------------------------------------------------------------------------------------------


def test_rank_ties_averaged_and_rank_1_is_highest():
    df = scores_table(
        [
            ("m", "gemma", "best_ever_one", "a", "A", None, 3.0),
            ("m", "gemma", "best_ever_one", "b", "B", None, 1.0),
            ("m", "gemma", "best_ever_one", "c", "A", None, 3.0),
            ("m", "gemma", "best_ever_one", "d", "B", None, 2.0),
            ("m", "gemma", "worst_ever_one", "a", "A", None, 0.0),  # another prompt: ranked on its own
            ("m", "gemma", "worst_ever_one", "b", "B", None, 5.0),
        ]
    )
    r = st.rank_scores(df).set_index(["prompt_id", "word"])["rank"]
    assert r.loc["best_ever_one"].to_dict() == {"a": 1.5, "b": 4.0, "c": 1.5, "d": 3.0}
    assert r.loc["worst_ever_one"].to_dict() == {"a": 2.0, "b": 1.0}


def test_word_with_two_labels_is_ranked_once_and_counts_in_both_categories():
    rows = [
        ("m", "gemma", "best_ever_one", "a", "A", None, 5.0),
        ("m", "gemma", "best_ever_one", "b", "A", None, 4.0),
        ("m", "gemma", "best_ever_one", "b", "B", None, 4.0),  # b carries two labels
        ("m", "gemma", "best_ever_one", "c", "B", None, 3.0),
    ]
    ranked = st.rank_scores(scores_table(rows))
    assert ranked.set_index(["word", "category"])["rank"].to_dict() == {
        ("a", "A"): 1.0,
        ("b", "A"): 2.0,
        ("b", "B"): 2.0,
        ("c", "B"): 3.0,
    }
    med = st.median_ranks(ranked).set_index("category")
    assert med.loc["A", "median_rank"] == 1.5 and med.loc["B", "median_rank"] == 2.5
    assert med["n_words"].to_dict() == {"A": 2, "B": 2}


def test_median_ranks_pooled_and_split():
    # ranks 1..5 by score; category X = {1, 2, 4} (virtue 1, 2; vice 4), Y = {3, 5}
    rows = [
        ("m", "llama", "good_time_please", "w1", "X", "virtue", 10.0),
        ("m", "llama", "good_time_please", "w2", "X", "virtue", 9.0),
        ("m", "llama", "good_time_please", "w3", "Y", "virtue", 8.0),
        ("m", "llama", "good_time_please", "w4", "X", "vice", 7.0),
        ("m", "llama", "good_time_please", "w5", "Y", "vice", 6.0),
    ]
    ranked = st.rank_scores(scores_table(rows))
    pooled = st.median_ranks(ranked).set_index("category")["median_rank"].to_dict()
    assert pooled == {"X": 2.0, "Y": 4.0}
    split = (
        st.median_ranks(ranked, split=True).set_index(["category", "subcategory"])["median_rank"].to_dict()
    )
    assert split == {("X", "vice"): 4.0, ("X", "virtue"): 1.5, ("Y", "vice"): 5.0, ("Y", "virtue"): 3.0}
    both = st.all_median_ranks(ranked)
    assert both.groupby("analysis").size().to_dict() == {"pooled": 2, "split": 4}
    assert both.loc[both["analysis"] == "pooled", "subcategory"].isna().all()


def test_published_and_live_scores_of_one_rm_stay_apart():
    pub = scores_table(
        [
            ("m", "gemma", "best_ever_one", "a", "A", None, 2.0),
            ("m", "gemma", "best_ever_one", "b", "B", None, 1.0),
        ]
    )
    pub["source"] = "published"
    live = scores_table(
        [
            ("m", "gemma", "best_ever_one", "a", "A", None, 1.0),
            ("m", "gemma", "best_ever_one", "b", "B", None, 3.0),
        ]
    )
    ranked = st.rank_scores(pd.concat([pub, live], ignore_index=True))
    r = ranked.set_index(["rm", "word"])["rank"].to_dict()
    assert r == {
        ("m [published]", "a"): 1.0,
        ("m [published]", "b"): 2.0,
        ("m [live]", "a"): 2.0,
        ("m [live]", "b"): 1.0,
    }


# ---------------------------------------------------------------------------------------------------------
# Two-group statistics
# ---------------------------------------------------------------------------------------------------------


def test_cohens_d_matches_hand_value():
    x, y = [1.0, 2.0, 3.0, 4.0], [3.0, 4.0, 5.0, 6.0]
    # means 2.5 and 4.5; both variances 5/3; pooled SD sqrt(5/3)
    assert st.cohens_d(x, y) == pytest.approx(-2 / np.sqrt(5 / 3))
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 30), rng.normal(1, 2, 45)
    assert st.cohen_d_vectorized(a, b) == pytest.approx(pg.compute_effsize(a, b, eftype="cohen"))


def test_permutation_welch_exact_on_separable_case_and_seeded():
    x, y = [1.0, 2.0, 3.0, 4.0, 5.0], [101.0, 102.0, 103.0, 104.0, 105.0]
    t, p = st.permutation_welch(x, y, n_permutations=9999, seed=0)
    # C(10, 5) = 252 relabellings <= 9999: scipy enumerates them; only the observed split and its mirror
    # are as extreme, so the two-sided p is 2 * 1/252
    assert p == pytest.approx(2 / 252)
    assert t == pytest.approx(stats.ttest_ind(x, y, equal_var=False).statistic)
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, 40), rng.normal(0.3, 1, 50)
    p1 = st.permutation_welch(a, b, 999, seed=7)[1]
    assert st.permutation_welch(a, b, 999, seed=7)[1] == p1  # reproducible
    assert p1 >= 1 / 1000
    # and close to the parametric Welch p-value
    assert p1 == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue, abs=0.05)


def test_bonferroni_and_bootstrap_ci():
    assert st.correct_pvalues([0.01, 0.02, 0.5, 0.3]).tolist() == pytest.approx([0.04, 0.08, 1.0, 1.0])
    rng = np.random.default_rng(0)
    a, b = rng.normal(5, 1, 200), rng.normal(3, 1, 200)
    lo, hi = st.bootstrap_ci(a, b, "difference", 500, seed=1)
    assert lo < a.mean() - b.mean() < hi and hi - lo < 0.6
    assert st.bootstrap_ci(a, b, "difference", 500, seed=1) == (lo, hi)  # seeded
    lo_d, hi_d = st.bootstrap_ci(a, b, "cohen", 500, seed=1)
    assert lo_d < st.cohens_d(a, b) < hi_d
    with pytest.raises(ValueError, match="valid: difference, cohen"):
        st.bootstrap_ci(a, b, "median")


# ---------------------------------------------------------------------------------------------------------
# Few sampled units: exact split tests, their intervals, the hierarchical bootstrap
# ---------------------------------------------------------------------------------------------------------


def test_split_test_by_hand_and_against_scipy():
    # x = {0, 1}, y = {2, 3, 4}: 10 splits; T = mean(second) - mean(first) = 10/3 - 5/6 * sum(first), so the
    # observed 2.5 is the single largest of the 10 values: two-sided p = 2 * 1/10
    res = st.split_test([0.0, 1.0], [2.0, 3.0, 4.0])
    assert (res.difference, res.n_splits, res.exact) == (2.5, 10, True)
    assert res.p == pytest.approx(0.2) and res.p_min == pytest.approx(0.2)
    # 4 vs 6 units: C(10, 4) = 210 splits, the smallest two-sided p is 2/210
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 4), rng.normal(0.8, 1, 6)
    res = st.split_test(a, b)
    assert res.n_splits == 210 and res.p_min == pytest.approx(2 / 210)
    ref = stats.permutation_test(
        (a, b),
        lambda x, y, axis: np.mean(y, axis=axis) - np.mean(x, axis=axis),
        n_resamples=np.inf,
        vectorized=True,
    )
    assert res.p == pytest.approx(ref.pvalue) and res.difference == pytest.approx(b.mean() - a.mean())
    assert st.split_test([1.0, 2.0, 3.0, 4.0], [11.0, 12.0, 13.0, 14.0, 15.0, 16.0]).p == pytest.approx(
        2 / 210
    )
    # one unit per group: two splits, p = 1 whatever the data
    assert (st.split_test([0.0], [100.0]).p, st.split_test([0.0], [100.0]).n_splits) == (1.0, 2)


def test_smallest_attainable_p_after_bonferroni():
    assert st.n_splits(4, 6) == 210
    assert st.smallest_p(4, 6) == pytest.approx(2 / 210)
    assert st.smallest_p(4, 6, 4) == pytest.approx(8 / 210) and st.can_reach(st.smallest_p(4, 6, 4))
    assert st.smallest_p(4, 6, 5) == pytest.approx(10 / 210) and st.can_reach(st.smallest_p(4, 6, 5))
    assert st.smallest_p(4, 6, 10) == pytest.approx(20 / 210) and not st.can_reach(st.smallest_p(4, 6, 10))
    assert st.smallest_p(1, 1) == 1.0 and st.smallest_p(2, 2) == pytest.approx(1 / 3)


def test_split_interval_inverts_the_test():
    rng = np.random.default_rng(4)
    a, b = rng.normal(0, 1, 4), rng.normal(2, 1, 6)
    lo, hi = st.split_interval(a, b)
    assert lo < b.mean() - a.mean() < hi
    eps = 1e-7 * (hi - lo)
    # just inside the interval the shifted test does not reject, just outside it does
    assert st.split_test(a, b - (lo + eps)).p > 0.05 >= st.split_test(a, b - (lo - eps)).p
    assert st.split_test(a, b - (hi - eps)).p > 0.05 >= st.split_test(a, b - (hi + eps)).p
    # 0 outside the interval exactly when the test rejects at 5%
    assert (lo > 0 or hi < 0) == (st.split_test(a, b).p <= 0.05)
    # too few splits to reject any shift: no interval
    assert all(np.isnan(st.split_interval([0.0, 1.0], [2.0, 3.0, 4.0])))


def test_cluster_bootstrap_resamples_units_then_observations():
    rng = np.random.default_rng(2)
    # units with large offsets and 27 noisy observations each: the interval must carry the offsets
    units_a = [rng.normal(u, 1, 27) for u in rng.normal(0, 10, 4)]
    units_b = [rng.normal(u, 1, 27) for u in rng.normal(5, 10, 6)]
    lo, hi = st.cluster_bootstrap_ci(units_a, units_b, 2000, seed=1)
    flat_lo, flat_hi = st.bootstrap_ci(
        np.concatenate(units_b), np.concatenate(units_a), "difference", 2000, 1
    )
    truth = np.mean([u.mean() for u in units_b]) - np.mean([u.mean() for u in units_a])
    assert lo < truth < hi
    assert (hi - lo) > 4 * (flat_hi - flat_lo)  # points as independent: far too narrow
    assert st.cluster_bootstrap_ci(units_a, units_b, 2000, seed=1) == (lo, hi)  # seeded
    # constant units: every resample gives the same difference
    assert st.cluster_bootstrap_ci([[0.0, 0.0]] * 3, [[1.0, 1.0]] * 3, 200, 0) == (1.0, 1.0)
    # fewer than two units in a group: the variation between units cannot be estimated
    assert all(np.isnan(st.cluster_bootstrap_ci(units_a[:1], units_b, 200, 0)))


# ---------------------------------------------------------------------------------------------------------
# Mixed model
# ---------------------------------------------------------------------------------------------------------


#: The paper's coding: positive prompts the reference framing (its script's ``levels = c("positive","negative")``).
PAPER = {"framing": "positive"}


def cell_means(df: pd.DataFrame) -> pd.Series:
    return df.groupby(["family", "category", "framing"])["median_rank"].mean()


def test_mixed_model_recovers_planted_three_way_effect():
    med = medians_table(effect=20.0, seed=0)
    levels = st.treatment_levels(med, first=PAPER)
    fit = st.fit_mixed_model(med, levels=levels)
    t = fit.table.set_index("term")
    assert list(fit.table.columns) == ["term", "coef", "se", "z", "p", "ci_low", "ci_high"]
    assert fit.formula == "median_rank ~ family * category * framing"
    assert (fit.n_obs, fit.n_groups, fit.converged) == (1080, 10, True)
    assert fit.reference == {"family": "gemma", "category": "Agency", "framing": "positive"}
    assert t.loc[THREE_WAY, "ci_low"] < 20 < t.loc[THREE_WAY, "ci_high"]
    assert t.loc[THREE_WAY, "p"] < 1e-6
    assert t.loc[THREE_WAY, "z"] == pytest.approx(t.loc[THREE_WAY, "coef"] / t.loc[THREE_WAY, "se"])
    null = st.fit_mixed_model(medians_table(effect=0.0, seed=0), levels=levels).table.set_index("term")
    assert null.loc[THREE_WAY, "ci_low"] < 0 < null.loc[THREE_WAY, "ci_high"]
    # one framing only: the formula drops framing
    pos = medians_table(seed=0).query("framing == 'positive'")
    assert st.fit_mixed_model(pos).formula == "median_rank ~ family * category"


def test_coding_is_explicit_and_the_three_way_term_is_a_contrast_of_cell_means():
    med = medians_table(effect=20.0, seed=0)
    # R's default: every factor alphabetical, so negative prompts are the reference framing
    assert st.treatment_levels(med) == {
        "family": ["gemma", "llama"],
        "category": ["Agency", "Communion"],
        "framing": ["negative", "positive"],
    }
    assert st.treatment_levels(med, first=PAPER)["framing"] == ["positive", "negative"]
    # the reference family never depends on the order of the contrast
    rev = st.fit_mixed_model(med, families=("llama", "gemma"))
    assert rev.reference["family"] == "gemma" and THREE_WAY_R in set(rev.table["term"])
    r_default = st.fit_mixed_model(med).table.set_index("term")
    paper = st.fit_mixed_model(med, levels=st.treatment_levels(med, first=PAPER)).table.set_index("term")
    # balanced design: the three-way term is the difference-in-differences-in-differences of cell means
    m = cell_means(med)

    def did(fam: str) -> float:
        gap = {fr: m[(fam, "Communion", fr)] - m[(fam, "Agency", fr)] for fr in ("positive", "negative")}
        return gap["negative"] - gap["positive"]

    by_hand = did("llama") - did("gemma")
    assert paper.loc[THREE_WAY, "coef"] == pytest.approx(by_hand, rel=1e-9)
    assert r_default.loc[THREE_WAY_R, "coef"] == pytest.approx(-by_hand, rel=1e-9)
    assert r_default.loc[THREE_WAY_R, "se"] == pytest.approx(paper.loc[THREE_WAY, "se"], rel=1e-6)
    assert paper.loc["Intercept", "coef"] == pytest.approx(m[("gemma", "Agency", "positive")])
    assert r_default.loc["Intercept", "coef"] == pytest.approx(m[("gemma", "Agency", "negative")])
    # cell_contrast: the same contrast from the model's cell means, with the term's SE
    fit = st.fit_mixed_model(med, levels=st.treatment_levels(med, first=PAPER))
    cells = pd.DataFrame(
        [
            (
                f,
                c,
                fr,
                (1 if f == "llama" else -1)
                * (1 if c == "Communion" else -1)
                * (1 if fr == "negative" else -1),
            )
            for f in ("gemma", "llama")
            for c in ("Agency", "Communion")
            for fr in ("positive", "negative")
        ],
        columns=["family", "category", "framing", "weight"],
    )
    c = st.cell_contrast(fit, cells, df=8)
    assert c["estimate"] == pytest.approx(by_hand, rel=1e-9)
    assert c["se"] == pytest.approx(paper.loc[THREE_WAY, "se"], rel=1e-6)
    assert c["p_t"] == pytest.approx(2 * stats.t.sf(abs(c["z"]), 8)) and c["p_t"] > c["p"]


def test_random_slopes_widen_the_interaction_when_rms_differ():
    med = medians_table(effect=20.0, seed=3, slope_sd=15.0)
    levels = st.treatment_levels(med, first=PAPER)
    fit, tried = st.fit_random_slopes(med, levels=levels)
    assert list(tried["structure"]) == list(st.SLOPE_STRUCTURES)
    assert (
        fit is not None
        and fit.converged
        and fit.structure == tried.loc[tried["status"] == "fitted", "structure"].iloc[-1]
    )
    assert tried.loc[0, "n_cov_params"] == 10  # 4 random effects (2 categories x 2 framings) per RM
    ri = st.fit_mixed_model(med, levels=levels).table.set_index("term").loc[THREE_WAY]
    rs = fit.table.set_index("term").loc[THREE_WAY]
    assert rs["coef"] == pytest.approx(ri["coef"], rel=1e-6)  # balanced: the same estimate
    assert rs["se"] > 2 * ri["se"]  # the RMs' own slopes are now part of the uncertainty
    # five categories: 10 random effects per RM = 55 covariance parameters from 10 RMs, not attempted
    five = medians_table(seed=1, n_prompts=6, categories=("A", "B", "C", "D", "E"))
    fit5, tried5 = st.fit_random_slopes(five)
    assert (
        tried5.loc[0, "status"] == "skipped"
        and "55 covariance parameters from 10 RMs" in tried5.loc[0, "note"]
    )
    assert fit5 is None or fit5.structure == "variance components"
    # one RM per family: nothing to fit, and the reason is reported
    two = med[med["rm"].isin(["rm0", "rm9"])]
    none, why = st.fit_random_slopes(two)
    assert none is None and set(why["status"]) == {"skipped"}
    assert "at least 2 RMs per family (gemma: 1, llama: 1)" in why["note"].iloc[0]


def test_mixed_model_falls_back_to_derivative_free_optimizers():
    class Model:
        formula = "y ~ x"

        def __init__(self, failing):
            self.failing, self.calls = failing, []

        def fit(self, reml, method):
            self.calls.append(method)
            if method[0] in self.failing:
                raise np.linalg.LinAlgError("Singular matrix")
            return "fitted"

    model = Model(failing={"bfgs"})
    assert st.fit_with_fallback(model, True) == ("fitted", [], "powell")
    assert model.calls == [["bfgs", "lbfgs", "cg"], ["powell"]]
    with pytest.raises(RuntimeError, match="could not be fitted with any of"):
        st.fit_with_fallback(Model(failing={"bfgs", "powell", "nm"}), True)


# ---------------------------------------------------------------------------------------------------------
# Null baseline
# ---------------------------------------------------------------------------------------------------------


def test_null_baseline_centred_on_null_data_and_extreme_on_planted():
    null_sum, null_draws = st.null_baseline(
        st.rank_scores(synthetic_scores(planted=0.0, seed=4)), n_null=200, seed=0
    )
    gap = null_sum[null_sum["statistic"] == "gap"]
    assert len(gap) == 4  # 2 categories x 2 framings
    assert (gap["null_mean"].abs() < 0.3 * gap["null_sd"]).all()
    assert (gap["p_perm"] > 0.01).all()
    assert len(null_draws) == len(null_sum) * 200
    # for two categories the gaps are opposite and the range is twice the gap
    for fr in ("positive", "negative"):
        g = gap[gap["framing"] == fr].set_index("category")["observed"]
        assert g["A"] == pytest.approx(-g["B"])
        rng_obs = null_sum.query("statistic == 'range' and framing == @fr")["observed"].iloc[0]
        assert rng_obs == pytest.approx(2 * abs(g["B"]))

    planted, _ = st.null_baseline(st.rank_scores(synthetic_scores(planted=3.0, seed=4)), n_null=200, seed=0)
    pg_ = planted.query("statistic == 'gap' and category == 'B'").set_index("framing")
    # llama disfavours B under positive prompts (higher rank) and favours it under negative ones
    assert pg_.loc["positive", "observed"] > pg_.loc["positive", "null_q975"]
    assert pg_.loc["negative", "observed"] < pg_.loc["negative", "null_q025"]
    assert pg_["p_perm"].to_numpy() == pytest.approx([1 / 201, 1 / 201])
    fc = planted.query("statistic == 'framing_contrast' and category == 'B'").iloc[0]
    assert fc["observed"] > 0 and fc["p_perm"] == pytest.approx(1 / 201)
    # the gap equals the family difference of mean median ranks, centred over categories
    med = st.median_ranks(st.rank_scores(synthetic_scores(planted=3.0, seed=4)))
    cell = med.groupby(["framing", "category", "family"])["median_rank"].mean().unstack("family")
    delta = (cell["llama"] - cell["gemma"]).unstack("category")
    assert pg_.loc["positive", "observed"] == pytest.approx(
        (delta.loc["positive", "B"] - delta.loc["positive", "A"]) / 2
    )


def test_null_within_subcategory_keeps_the_virtue_vice_mix():
    # llama disfavours every vice word; category A is mostly vice, B mostly virtue. Against random word
    # sets the A/B gap looks extreme; against random sets with the same virtue/vice mix it does not.
    rng = np.random.default_rng(3)
    subs = ["vice"] * 18 + ["virtue"] * 2 + ["vice"] * 2 + ["virtue"] * 18
    rows = []
    for m in range(6):
        fam = "gemma" if m < 3 else "llama"
        for p in ("best_ever_one", "best_world_one", "worst_ever_one", "worst_world_one"):
            for w in range(40):
                sc = rng.normal(0, 1) - (5.0 if fam == "llama" and subs[w] == "vice" else 0.0)
                rows.append((f"rm{m}", fam, p, f"w{w:02d}", "A" if w < 20 else "B", subs[w], sc))
    summary, _ = st.null_baseline(st.rank_scores(scores_table(rows)), n_null=200, seed=1)
    assert set(summary["null"]) == {"all words", "within subcategory"}
    ranges = summary[summary["statistic"] == "range"]
    assert (ranges.loc[ranges["null"] == "all words", "p_perm"] < 0.02).all()
    assert (ranges.loc[ranges["null"] == "within subcategory", "p_perm"] > 0.2).all()
    # the permutation itself keeps each stratum's labels within it
    codes = np.array([0, 0, 1, 1, 2, 2])
    groups = [np.array([0, 2, 4]), np.array([1, 3, 5])]
    perm = st.permute_within(codes, groups, np.random.default_rng(0))
    assert sorted(perm[[0, 2, 4]]) == [0, 1, 2] and sorted(perm[[1, 3, 5]]) == [0, 1, 2]


# ---------------------------------------------------------------------------------------------------------
# Language-model variant
# ---------------------------------------------------------------------------------------------------------


def test_anova_and_welch_posthocs():
    rng = np.random.default_rng(5)
    rows = []
    for model in ("m1", "m2"):
        for category in ("Agency", "Communion"):
            for framing in ("positive", "negative"):
                for _ in range(6):
                    y = 10 * (category == "Communion") + 3 * (model == "m2") + rng.normal(0, 1)
                    rows.append((model, category, framing, y))
    df = pd.DataFrame(rows, columns=["model", "category", "framing", "median_rank"])
    an = st.anova_3way(df).set_index("term")
    # balanced design: the main-effect sum of squares is n per level x sum of squared level deviations
    grand = df["median_rank"].mean()
    ss_cat = sum(24 * (g.mean() - grand) ** 2 for _, g in df.groupby("category")["median_rank"])
    assert an.loc["C(category)", "sum_sq"] == pytest.approx(ss_cat)
    assert an.loc["C(category)", "df"] == 1 and an.loc["Residual", "df"] == 40
    ph = st.welch_posthocs(df, levels=["m1", "m2"])
    assert len(ph) == 4
    p_raw = []
    for _, row in ph.iterrows():
        cell = df[(df["category"] == row["category"]) & (df["framing"] == row["framing"])]
        x, y = cell.loc[cell["model"] == "m2", "median_rank"], cell.loc[cell["model"] == "m1", "median_rank"]
        ref = stats.ttest_ind(x, y, equal_var=False)
        assert row["t"] == pytest.approx(ref.statistic) and row["p"] == pytest.approx(ref.pvalue)
        p_raw.append(ref.pvalue)
    assert ph["p_corrected"].to_numpy() == pytest.approx(fdrcorrection(p_raw)[1])
