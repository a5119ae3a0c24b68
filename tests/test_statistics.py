"""The statistics chapter's library: numbers checked on small hand-computable tables and planted effects."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pingouin as pg
import pytest
from scipy import stats
from statsmodels.stats.multitest import fdrcorrection

from rmvalues import scores
from rmvalues import statistics as st
from rmvalues.manifest import RunRecord

# ---------------------------------------------------------------------------------------------------------
# Builders of small synthetic tables
# ---------------------------------------------------------------------------------------------------------


def _scores(rows: list[tuple]) -> pd.DataFrame:
    """Long scores table from (model, family, prompt_id, word, category, subcategory, score) tuples."""
    df = pd.DataFrame(
        rows, columns=["model", "family", "prompt_id", "word", "category", "subcategory", "score"]
    )
    df["revision"] = None
    df["source"] = "live"
    df["framing"] = df["prompt_id"].map(scores.framing_of)
    df["corpus"] = "toy"
    df["n_tokens"] = pd.NA
    return scores.conform(df)


def _synthetic(
    n_rm: int = 6,
    n_words: int = 40,
    prompts: tuple[str, ...] = ("best_ever_one", "best_world_one", "worst_ever_one", "worst_world_one"),
    planted: float = 0.0,
    seed: int = 0,
) -> pd.DataFrame:
    """Scores of ``n_rm`` RMs (half gemma, half llama) on ``n_words`` words (half A, half B), random normal.

    ``planted``: llama RMs give category-B words ``planted`` less reward under positive prompts and
    ``planted`` more under negative ones (a family x category x framing effect).
    """
    rng = np.random.default_rng(seed)
    word_effect = rng.normal(0, 1, n_words)
    rows = []
    for m in range(n_rm):
        fam = "gemma" if m < n_rm // 2 else "llama"
        for p in prompts:
            sign = 1 if scores.framing_of(p) == "positive" else -1
            for w in range(n_words):
                cat = "A" if w < n_words // 2 else "B"
                s = sign * word_effect[w] + rng.normal(0, 1)
                if fam == "llama" and cat == "B":
                    s -= sign * planted
                rows.append((f"rm{m}", fam, p, f"w{w:02d}", cat, None, s))
    return _scores(rows)


def _medians(n_rm: int = 10, n_prompts: int = 27, effect: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """Median-rank table like the paper's (RM x prompt x category points) with a planted 3-way effect."""
    rng = np.random.default_rng(seed)
    rows = []
    for m in range(n_rm):
        fam = "gemma" if m < 4 else "llama"
        u = rng.normal(0, 5)
        for framing in ("positive", "negative"):
            for p in range(n_prompts):
                for cat in ("Agency", "Communion"):
                    y = 130 + u + rng.normal(0, 10)
                    if fam == "llama" and cat == "Communion" and framing == "negative":
                        y += effect
                    rows.append(("toy", "pooled", f"rm{m}", fam, f"{framing}_{p}", framing, cat, None, y))
    df = pd.DataFrame(
        rows,
        columns=[
            "corpus",
            "analysis",
            "rm",
            "family",
            "prompt_id",
            "framing",
            "category",
            "subcategory",
            "median_rank",
        ],
    )
    df["model"] = df["rm"]
    return df


# ---------------------------------------------------------------------------------------------------------
# Ranks and median ranks
# ---------------------------------------------------------------------------------------------------------


def test_rank_ties_averaged_and_rank_1_is_highest():
    df = _scores(
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
    ranked = st.rank_scores(_scores(rows))
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
    ranked = st.rank_scores(_scores(rows))
    pooled = st.median_ranks(ranked).set_index("category")["median_rank"].to_dict()
    assert pooled == {"X": 2.0, "Y": 4.0}
    split = (
        st.median_ranks(ranked, split=True).set_index(["category", "subcategory"])["median_rank"].to_dict()
    )
    assert split == {("X", "vice"): 4.0, ("X", "virtue"): 1.5, ("Y", "vice"): 5.0, ("Y", "virtue"): 3.0}
    both = st.all_median_ranks(ranked)
    assert both.groupby("analysis").size().to_dict() == {"pooled": 2, "split": 4}
    assert both.loc[both["analysis"] == "pooled", "subcategory"].isna().all()


# ---------------------------------------------------------------------------------------------------------
# Two-group statistics
# ---------------------------------------------------------------------------------------------------------


def test_cohens_d_matches_hand_value():
    x, y = [1.0, 2.0, 3.0, 4.0], [3.0, 4.0, 5.0, 6.0]
    # means 2.5 and 4.5; both variances 5/3; pooled SD sqrt(5/3)
    assert st.cohens_d(x, y) == pytest.approx(-2 / np.sqrt(5 / 3))
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 30), rng.normal(1, 2, 45)
    assert st._cohen_d(a, b) == pytest.approx(pg.compute_effsize(a, b, eftype="cohen"))


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


def test_panel_tests_numbers_and_bonferroni():
    med = _medians(effect=40.0, seed=2)
    panels = st.panel_tests(med, n_permutations=199, n_bootstrap=200, seed=0)
    assert list(panels.columns) == st.PANEL_COLUMNS
    assert len(panels) == 4
    for _, row in panels.iterrows():
        cell = med[(med["category"] == row["category"]) & (med["framing"] == row["framing"])]
        a = cell.loc[cell["family"] == "gemma", "median_rank"]
        b = cell.loc[cell["family"] == "llama", "median_rank"]
        assert (row["n_a"], row["n_b"], row["n_rms_a"], row["n_rms_b"]) == (108, 162, 4, 6)
        assert row["difference"] == pytest.approx(b.mean() - a.mean())
        assert row["d"] == pytest.approx(pg.compute_effsize(b, a, eftype="cohen"))
        assert row["p_corrected"] == pytest.approx(min(1.0, 4 * row["p_perm"]))
        assert row["diff_ci_low"] < row["difference"] < row["diff_ci_high"]
        assert row["d_ci_low"] < row["d"] < row["d_ci_high"]
    planted = panels[(panels["category"] == "Communion") & (panels["framing"] == "negative")].iloc[0]
    # nothing as extreme among 199 permutations: scipy's two-sided p is 2 x the one-sided (1 + 0) / (199 + 1)
    assert planted["p_perm"] == pytest.approx(2 / 200)
    assert planted["d"] > 2
    # RM level: 210 relabellings of 4 vs 6 RMs, enumerated; separable RMs reach the minimum 2/210
    assert planted["p_perm_rm"] == pytest.approx(2 / 210)
    again = st.panel_tests(med, n_permutations=199, n_bootstrap=200, seed=0)
    pd.testing.assert_frame_equal(panels, again)


def test_split_vs_pooled_flags_a_reversal():
    base = {
        "corpus": "mfd2",
        "category": "Care",
        "framing": "positive",
        "family_a": "gemma",
        "family_b": "llama",
    }
    panels = pd.DataFrame(
        [
            {
                **base,
                "analysis": "pooled",
                "subcategory": None,
                "difference": 5,
                "d": 0.5,
                "diff_ci_low": 1,
                "diff_ci_high": 9,
            },
            {
                **base,
                "analysis": "split",
                "subcategory": "virtue",
                "difference": 12,
                "d": 1,
                "diff_ci_low": 8,
                "diff_ci_high": 16,
            },
            {
                **base,
                "analysis": "split",
                "subcategory": "vice",
                "difference": -4,
                "d": -0.4,
                "diff_ci_low": -7,
                "diff_ci_high": -1,
            },
        ]
    )
    out = st.split_vs_pooled(panels).iloc[0]
    assert out["reading_pooled"] == "gemma ranks higher"
    assert out["reading_virtue"] == "gemma ranks higher" and out["reading_vice"] == "llama ranks higher"
    assert bool(out["changes_reading"]) and out["changed_in"] == "vice"


# ---------------------------------------------------------------------------------------------------------
# Mixed model and leave-one-RM-out
# ---------------------------------------------------------------------------------------------------------

THREE_WAY = "family[T.llama]:category[T.Communion]:framing[T.negative]"


def test_mixed_model_recovers_planted_three_way_effect():
    fit = st.fit_mixed_model(_medians(effect=20.0, seed=0))
    t = fit.table.set_index("term")
    assert list(fit.table.columns) == ["term", "coef", "se", "z", "p", "ci_low", "ci_high"]
    assert fit.formula == "median_rank ~ family * category * framing"
    assert (fit.n_obs, fit.n_groups, fit.converged) == (1080, 10, True)
    assert t.loc[THREE_WAY, "ci_low"] < 20 < t.loc[THREE_WAY, "ci_high"]
    assert t.loc[THREE_WAY, "p"] < 1e-6
    assert t.loc[THREE_WAY, "z"] == pytest.approx(t.loc[THREE_WAY, "coef"] / t.loc[THREE_WAY, "se"])
    null = st.fit_mixed_model(_medians(effect=0.0, seed=0)).table.set_index("term")
    assert null.loc[THREE_WAY, "ci_low"] < 0 < null.loc[THREE_WAY, "ci_high"]
    # one framing only: the formula drops framing
    pos = _medians(seed=0).query("framing == 'positive'")
    assert st.fit_mixed_model(pos).formula == "median_rank ~ family * category"


def test_leave_one_rm_out_one_row_per_rm():
    med = _medians(effect=20.0, seed=1)
    loo = st.leave_one_rm_out(med)
    assert len(loo) == 10 and sorted(loo["dropped_rm"]) == sorted(med["rm"].unique())
    assert set(loo["term"]) == {THREE_WAY}
    assert loo.set_index("dropped_rm")["dropped_family"].to_dict() == {
        f"rm{m}": ("gemma" if m < 4 else "llama") for m in range(10)
    }
    full = st.fit_mixed_model(med).table.set_index("term").loc[THREE_WAY, "coef"]
    assert loo["coef_all"].unique().tolist() == pytest.approx([full])
    assert loo["change"].to_numpy() == pytest.approx((loo["coef"] - full).to_numpy())
    assert (loo["ci_low"] < 20).all() and (loo["ci_high"] > 20).all()


# ---------------------------------------------------------------------------------------------------------
# Null baseline
# ---------------------------------------------------------------------------------------------------------


def test_null_baseline_centred_on_null_data_and_extreme_on_planted():
    null_sum, null_draws = st.null_baseline(
        st.rank_scores(_synthetic(planted=0.0, seed=4)), n_null=200, seed=0
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

    planted, _ = st.null_baseline(st.rank_scores(_synthetic(planted=3.0, seed=4)), n_null=200, seed=0)
    pg_ = planted.query("statistic == 'gap' and category == 'B'").set_index("framing")
    # llama disfavours B under positive prompts (higher rank) and favours it under negative ones
    assert pg_.loc["positive", "observed"] > pg_.loc["positive", "null_q975"]
    assert pg_.loc["negative", "observed"] < pg_.loc["negative", "null_q025"]
    assert pg_["p_perm"].to_numpy() == pytest.approx([1 / 201, 1 / 201])
    fc = planted.query("statistic == 'framing_contrast' and category == 'B'").iloc[0]
    assert fc["observed"] > 0 and fc["p_perm"] == pytest.approx(1 / 201)
    # the gap equals the family difference of mean median ranks, centred over categories
    med = st.median_ranks(st.rank_scores(_synthetic(planted=3.0, seed=4)))
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
    summary, _ = st.null_baseline(st.rank_scores(_scores(rows)), n_null=200, seed=1)
    assert set(summary["null"]) == {"all words", "within subcategory"}
    ranges = summary[summary["statistic"] == "range"]
    assert (ranges.loc[ranges["null"] == "all words", "p_perm"] < 0.02).all()
    assert (ranges.loc[ranges["null"] == "within subcategory", "p_perm"] > 0.2).all()
    # the permutation itself keeps each stratum's labels within it
    codes = np.array([0, 0, 1, 1, 2, 2])
    groups = [np.array([0, 2, 4]), np.array([1, 3, 5])]
    perm = st._permute(codes, groups, np.random.default_rng(0))
    assert sorted(perm[[0, 2, 4]]) == [0, 1, 2] and sorted(perm[[1, 3, 5]]) == [0, 1, 2]


# ---------------------------------------------------------------------------------------------------------
# Covariate model
# ---------------------------------------------------------------------------------------------------------


def _valence_driven(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Word-level ranks driven by family x framing x valence only; category B words have lower valence."""
    rng = np.random.default_rng(seed)
    words = [f"w{i:02d}" for i in range(60)]
    cat = np.array(["A"] * 30 + ["B"] * 30)
    valence = np.where(cat == "A", rng.normal(6, 1, 60), rng.normal(4, 1, 60))
    cov = pd.DataFrame(
        {"corpus": "toy", "word": words, "zipf_frequency": rng.normal(4, 1, 60), "valence": valence}
    )
    vz = (valence - valence.mean()) / valence.std(ddof=1)
    rows = []
    for m in range(6):
        fam = "gemma" if m < 3 else "llama"
        u = rng.normal(0, 3)
        for p in ("best_ever_one", "best_world_one", "worst_ever_one", "worst_world_one"):
            sign = 1 if scores.framing_of(p) == "positive" else -1
            for i, w in enumerate(words):
                y = 100 + u + rng.normal(0, 3) + (10 * sign * vz[i] if fam == "llama" else 0)
                rows.append(
                    ("toy", "live", f"rm{m}", f"rm{m}", fam, p, scores.framing_of(p), w, cat[i], None, y)
                )
    ranked = pd.DataFrame(
        rows,
        columns=[
            "corpus",
            "source",
            "model",
            "rm",
            "family",
            "prompt_id",
            "framing",
            "word",
            "category",
            "subcategory",
            "rank",
        ],
    )
    return ranked, cov


def test_covariate_model_absorbs_a_valence_driven_gap():
    ranked, cov = _valence_driven()
    out = st.covariate_model(ranked, cov)
    t = out.set_index(["covariates", "term"])
    three = "family[T.llama]:category[T.B]:framing[T.negative]"
    without, with_ = t.loc[("without", three)], t.loc[("with", three)]
    # without covariates the valence effect masquerades as a family x category x framing effect
    assert abs(without["coef"]) > 10 and without["p"] < 1e-6
    # with them it is gone, and the family x framing x valence term carries it (10 per SD, sign flips)
    assert abs(with_["coef"]) < 3 * with_["se"]
    assert t.loc[("with", "family[T.llama]:framing[T.negative]:valence_z"), "coef"] == pytest.approx(
        -20, abs=2
    )
    assert set(out["n_words"]) == {60}


def test_load_covariates(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the corpora stage"):
        st.load_covariates("default", tmp_path)
    path = tmp_path / "corpora" / "default" / "corpora.parquet"
    path.parent.mkdir(parents=True)
    pd.DataFrame(
        {
            "corpus": ["toy", "toy", "toy"],
            "word": ["a", "a", "b"],  # "a" has two labels: one covariate row
            "category": ["A", "B", "B"],
            "zipf_frequency": [5.0, 5.0, 3.0],
            "valence": [7.0, 7.0, np.nan],
        }
    ).to_parquet(path)
    cov = st.load_covariates("default", tmp_path)
    assert list(cov.columns) == ["corpus", "word", "zipf_frequency", "valence"] and len(cov) == 2


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


# ---------------------------------------------------------------------------------------------------------
# Parameters and the stage
# ---------------------------------------------------------------------------------------------------------


def test_check_parameters():
    st.check_parameters(st.DEFAULT_PARAMETERS)
    st.check_parameters({"prompts": ["greatest_ever_one", "worst_time_please"], "corpora": ["big2_nouns"]})
    cases = {
        "scores": ("cached", "choose one of published, live, both"),
        "corpora": (["big2_expanded"], "no published scores for \\['big2_expanded'\\]; published corpora"),
        "prompts": (["greatest_thing"], "unknown id\\(s\\) \\['greatest_thing'\\].*\\[\\] = all 54"),
        "families": (["gemma"], "exactly two different base-model families"),
        "n_permutations": (5, "n_permutations=5: give an integer >= 9"),
        "n_bootstrap": (True, "n_bootstrap=True: give an integer"),
        "n_null": (10.5, "n_null=10.5"),
        "seed": (-1, "seed=-1: give a non-negative integer"),
        "scoring_run": ("a/b", "scoring_run='a/b': give a run name"),
    }
    for key, (value, message) in cases.items():
        with pytest.raises(ValueError, match=message):
            st.check_parameters({key: value})
    with pytest.raises(ValueError, match="families: \\['qwen'\\] not among the published RMs' families"):
        st.check_parameters({"families": ["gemma", "qwen"]})
    st.check_parameters({"scores": "live", "families": ["gemma", "qwen"], "corpora": ["toy"]})
    with pytest.raises(ValueError, match="unknown parameter\\(s\\) \\['n_perm'\\]"):
        st.check_parameters({"n_perm": 10})


def test_run_statistics_on_live_scores_writes_outputs(tmp_path):
    sc = _synthetic(n_rm=6, planted=2.0, seed=9)
    sc["corpus"] = "toy"
    path = scores.live_scores_path("default", tmp_path)
    path.parent.mkdir(parents=True)
    sc.to_parquet(path)
    params = {
        "scores": "live",
        "corpora": ["toy"],
        "n_permutations": 99,
        "n_bootstrap": 100,
        "n_null": 20,
        "results_root": str(tmp_path),
        "output_dir": str(tmp_path / "out"),
    }
    record = RunRecord(tmp_path / "out", stage="statistics", parameters=params)
    res = st.run_statistics(params, record)
    record.finish()
    out = tmp_path / "out"
    mixed = pd.read_csv(out / "mixed_model.csv")
    assert list(mixed.columns[: len(st.MIXED_COLUMNS)]) == st.MIXED_COLUMNS
    assert list(pd.read_csv(out / "panel_tests.csv").columns) == st.PANEL_COLUMNS
    assert set(pd.read_parquet(out / "median_ranks.parquet")["analysis"]) == {"pooled"}
    assert {"statistic", "observed", "null_mean", "null_sd", "p_perm"} <= set(
        pd.read_csv(out / "null_baseline.csv").columns
    )
    assert len(pd.read_csv(out / "loo_family_effect.csv")) == 6
    assert res.covariates is None and "run the corpora stage" in res.covariate_note
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seeds"]["seed"] == 0
    assert "scoring/default/scores.parquet" in manifest["inputs"]
    assert {"mixed_model.csv", "panel_tests.csv", "null_baseline.csv", "median_ranks.parquet"} <= set(
        manifest["outputs"]
    )
    with pytest.raises(
        ValueError, match="family \\['qwen'\\] has no scores; families present: \\['gemma', 'llama'\\]"
    ):
        st.run_statistics({**params, "families": ["gemma", "qwen"]})


def test_run_statistics_covariates_from_the_corpora_stage(tmp_path):
    sc = pd.concat(
        [_synthetic(n_rm=4, seed=1).assign(corpus="toy"), _synthetic(n_rm=4, seed=2).assign(corpus="toy2")]
    )
    path = scores.live_scores_path("default", tmp_path)
    path.parent.mkdir(parents=True)
    sc.to_parquet(path)
    words = sorted(sc["word"].unique())
    rng = np.random.default_rng(0)
    corp = tmp_path / "corpora" / "default" / "corpora.parquet"
    corp.parent.mkdir(parents=True)
    pd.DataFrame(
        {
            "corpus": "toy",
            "word": words,
            "zipf_frequency": rng.normal(4, 1, len(words)),
            "valence": rng.normal(5, 1, len(words)),
        }
    ).to_parquet(corp)
    params = {
        "scores": "live",
        "corpora": ["toy", "toy2"],
        "n_permutations": 19,
        "n_bootstrap": 50,
        "n_null": 10,
    }
    res = st.run_statistics({**params, "results_root": str(tmp_path), "output_dir": str(tmp_path / "out")})
    assert set(res.covariates["corpus"]) == {"toy"} and set(res.covariates["covariates"]) == {
        "with",
        "without",
    }
    assert "fitted for toy" in res.covariate_note and "no normed words for toy2" in res.covariate_note


def test_published_and_live_scores_of_one_rm_stay_apart():
    pub = _scores(
        [
            ("m", "gemma", "best_ever_one", "a", "A", None, 2.0),
            ("m", "gemma", "best_ever_one", "b", "B", None, 1.0),
        ]
    )
    pub["source"] = "published"
    live = _scores(
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
    assert st._fit_with_fallback(model, True) == ("fitted", [], "powell")
    assert model.calls == [["bfgs", "lbfgs", "cg"], ["powell"]]
    with pytest.raises(RuntimeError, match="could not be fitted with any of"):
        st._fit_with_fallback(Model(failing={"bfgs", "powell", "nm"}), True)
