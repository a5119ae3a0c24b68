"""Framing contrasts and the per-pair ANOVA with prompts clustered by adjective (rmvalues.stats.prompts,
rmvalues.stats.anova), checked against hand computations on tiny invented tables."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from rmvalues.stats import (
    adjective_of,
    anova_3way,
    anova_3way_clustered,
    cluster_means,
    framing_contrast,
    framing_contrast_prompts,
    framing_contrasts,
    paired_gap_difference,
)

# 2 adjectives per framing x 2 prompts each: adjective means best 2, good 5 | worst 0.5, bad -1.5
TINY = pd.DataFrame(
    {
        "prompt_id": ["best_ever_one", "best_world_one", "good_ever_one", "good_world_one",
                      "worst_ever_one", "worst_world_one", "bad_ever_one", "bad_world_one"],
        "framing": ["positive"] * 4 + ["negative"] * 4,
        "gap": [1.0, 3.0, 4.0, 6.0, 0.0, 1.0, -1.0, -2.0],
    }
)  # fmt: skip


def test_adjective_is_the_first_part_of_the_prompt_key():
    assert adjective_of("greatest_ever_one") == "greatest" and adjective_of("bad") == "bad"
    means = cluster_means(TINY).set_index("adjective")
    assert means["gap"].to_dict() == {"best": 2.0, "good": 5.0, "bad": -1.5, "worst": 0.5}
    assert (means["n_prompts"] == 2).all()


def test_clustered_contrast_by_hand():
    c = framing_contrast(TINY)
    # adjective means: positive 2, 5 (mean 3.5, variance 4.5); negative 0.5, -1.5 (mean -0.5, variance 2)
    assert c.estimate == pytest.approx(3.5 - (-0.5))
    se2 = 4.5 / 2 + 2.0 / 2
    df = se2**2 / ((4.5 / 2) ** 2 / 1 + (2.0 / 2) ** 2 / 1)  # Welch-Satterthwaite
    t = 4.0 / math.sqrt(se2)
    half = sps.t.ppf(0.975, df) * math.sqrt(se2)
    assert c.df == pytest.approx(df) and df == pytest.approx(10.5625 / 6.0625)
    assert (c.ci_low, c.ci_high) == pytest.approx((4.0 - half, 4.0 + half))
    assert c.p == pytest.approx(2 * sps.t.sf(t, df))
    # the exact test: the 6 splits of {2, 5, 0.5, -1.5} into two framings give mean differences
    # {2,5}: 4.0 (observed), {2,0.5}: -0.5, {2,-1.5}: -2.5, {5,0.5}: 2.5, {5,-1.5}: 0.5, {0.5,-1.5}: -4.0
    # P(T >= 4) = 1/6, P(T <= 4) = 1: two-sided p = 2/6, the smallest any data could give
    assert c.p_exact == pytest.approx(2 / 6) and c.p_min == pytest.approx(2 / 6) and c.n_splits == 6
    assert (c.n_positive, c.n_negative, c.n_prompts, c.unit) == (2, 2, 8, "adjective")
    assert c.includes_zero  # the interval includes zero: inconclusive


def test_prompt_level_contrast_is_the_papers_assumption():
    flat = framing_contrast_prompts(TINY)
    pos, neg = TINY["gap"][:4], TINY["gap"][4:]
    ref = sps.ttest_ind(pos, neg, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert flat.estimate == framing_contrast(TINY).estimate  # the balanced design: the same estimate
    assert (flat.ci_low, flat.ci_high, flat.p) == pytest.approx((ci.low, ci.high, ref.pvalue))
    assert (flat.n_positive, flat.n_negative, flat.unit) == (4, 4, "prompt") and math.isnan(flat.p_exact)
    assert not flat.includes_zero  # the same data look conclusive when every prompt counts
    assert framing_contrast(TINY, cluster=None) == flat


def test_three_against_three_adjectives_allow_p_no_smaller_than_a_tenth():
    means = {"best": 9.0, "greatest": 8.0, "good": 7.0, "worst": 1.0, "bad": 2.0, "terrible": 3.0}
    rows = [
        {"prompt_id": f"{a}_{f}_one", "framing": "positive" if v > 5 else "negative", "gap": v + d}
        for a, v in means.items()
        for f, d in (("ever", -1.0), ("world", 1.0))
    ]
    c = framing_contrast(pd.DataFrame(rows))
    values = list(means.values())
    diffs = [
        np.mean([values[i] for i in pos]) - np.mean([values[i] for i in range(6) if i not in pos])
        for pos in itertools.combinations(range(6), 3)
    ]
    assert len(diffs) == 20 and c.n_splits == 20
    assert c.estimate == pytest.approx(8.0 - 2.0) == pytest.approx(max(diffs))
    assert c.p_exact == pytest.approx(2 * 1 / 20) and c.p_min == pytest.approx(0.1)


def test_unbalanced_clusters_weigh_each_adjective_the_same_and_explicit_clusters():
    unbalanced = TINY.drop(index=[0])  # best keeps one prompt (gap 3)
    c = framing_contrast(unbalanced)
    assert c.estimate == pytest.approx((3.0 + 5.0) / 2 - (-0.5))
    assert framing_contrast_prompts(unbalanced).estimate == pytest.approx(13 / 3 - (-0.5))
    explicit = TINY.assign(cluster=["p1", "p1", "p2", "p2", "n1", "n2", "n1", "n2"])
    e = framing_contrast(explicit, cluster="cluster")
    assert e.estimate == pytest.approx(4.0) and e.unit == "cluster"
    assert cluster_means(explicit, cluster="cluster").set_index("cluster")["gap"]["n1"] == pytest.approx(-0.5)
    with pytest.raises(ValueError, match="both framings"):
        framing_contrast(TINY.assign(cluster="same"), cluster="cluster")
    with pytest.raises(KeyError, match="no 'unit' column"):
        framing_contrast(TINY.drop(columns="prompt_id"), cluster="unit")
    one = framing_contrast(TINY[TINY["prompt_id"].str.startswith(("best", "worst"))])
    assert one.estimate == pytest.approx(2.0 - 0.5) and math.isnan(one.ci_low) and one.includes_zero


def test_paired_contrast_clusters_the_per_prompt_differences():
    a = TINY.assign(rm="a")
    b = TINY.assign(rm="b", gap=TINY["gap"] * 3 + np.arange(8) % 2)  # b - a = 2 gap + (0, 1, 0, 1, ...)
    gaps = pd.concat([a, b])
    diff = paired_gap_difference(gaps, "a", "b")
    c = framing_contrast(diff)
    # adjective means of b - a: best 2*2 + 0.5 = 4.5, good 10.5 | worst 1.5, bad -2.5
    pos, neg = np.array([4.5, 10.5]), np.array([1.5, -2.5])
    ref = sps.ttest_ind(pos, neg, equal_var=False)
    assert c.estimate == pytest.approx(7.5 - (-0.5))
    assert (c.ci_low, c.ci_high) == pytest.approx(tuple(ref.confidence_interval(0.95)))
    table = framing_contrasts(gaps, [("a", "b")]).set_index("rm")
    assert list(table.index) == ["a", "b", "b \u2212 a"]
    assert table.loc["b \u2212 a", "estimate"] == pytest.approx(c.estimate)
    assert table.loc["a", "p_prompts"] == pytest.approx(framing_contrast_prompts(a).p)
    assert table.loc["a", "n_positive"] == 2 and table.loc["a", "p_min"] == pytest.approx(2 / 6)


def _pair_table() -> pd.DataFrame:
    """Median ranks of 2 categories x 2 models under 2 prompts of each of 2 adjectives per framing."""
    rng = np.random.default_rng(3)
    adjectives = {"best": 0.0, "good": 2.0, "worst": -1.0, "bad": 0.5}  # an adjective's own model x category
    rows = []
    for adj, effect in adjectives.items():
        framing = "positive" if adj in ("best", "good") else "negative"
        for frame in ("ever", "world"):
            for model in ("A", "B"):
                for cat in ("Agency", "Communion"):
                    shift = effect * (model == "B") * (cat == "Agency")
                    rows.append(
                        {"prompt_id": f"{adj}_{frame}_one", "framing": framing, "model": model,
                         "category": cat, "median_rank": 10.0 + shift + rng.normal()}
                    )  # fmt: skip
    return pd.DataFrame(rows)


def test_clustered_anova_three_way_term_is_the_pooled_t_of_adjective_contrasts():
    df = _pair_table()
    out = anova_3way_clustered(df).set_index("term")
    assert list(out.index) == list(anova_3way(df).set_index("term").drop(index="Residual").index)
    cell = df.assign(adjective=df["prompt_id"].str.split("_").str[0])
    cell = (
        cell.groupby(["adjective", "framing", "category", "model"])["median_rank"]
        .mean()
        .unstack(["category", "model"])
    )
    # per adjective, the category x model interaction contrast (orthonormal: halved)
    score = (
        cell[("Agency", "B")] - cell[("Agency", "A")] - cell[("Communion", "B")] + cell[("Communion", "A")]
    ) / 2
    pos = score[score.index.get_level_values("framing") == "positive"].to_numpy()
    neg = score[score.index.get_level_values("framing") == "negative"].to_numpy()
    t = sps.ttest_ind(pos, neg, equal_var=True)
    row = out.loc["C(category):C(framing):C(model)"]
    assert row["F"] == pytest.approx(t.statistic**2) and row["p"] == pytest.approx(t.pvalue)
    assert (row["df"], row["df_error"], row["n_clusters"]) == (1, 2, 4)
    assert row["error"] == "C(category):C(model):C(adjective)"
    # the permutation p over the 6 splits of the 4 adjectives: F of each split's pooled t, by hand
    values = np.r_[pos, neg]
    fs = []
    for first in itertools.combinations(range(4), 2):
        x = values[list(first)]
        y = values[[i for i in range(4) if i not in first]]
        fs.append(sps.ttest_ind(x, y).statistic ** 2)
    f_obs = t.statistic**2
    assert row["p_exact"] == pytest.approx(np.mean(np.array(fs) >= f_obs - 1e-9))
    assert row["p_min"] == pytest.approx(2 / 6) and row["n_splits"] == 6
    # a term without framing is tested against its interaction with the adjectives, no permutation p
    cm = out.loc["C(category):C(model)"]
    ss_err = ((pos - pos.mean()) ** 2).sum() + ((neg - neg.mean()) ** 2).sum()
    assert cm["F"] == pytest.approx(4 * score.mean() ** 2 / (ss_err / 2)) and math.isnan(cm["p_exact"])


def test_clustered_anova_matches_a_mixed_anova_on_adjective_means():
    import pingouin as pg

    df = _pair_table()
    cell = df.assign(adjective=df["prompt_id"].str.split("_").str[0])
    cell = cell.groupby(["adjective", "framing", "category"])["median_rank"].mean().reset_index()
    ref = pg.mixed_anova(cell, dv="median_rank", within="category", between="framing", subject="adjective")
    ref = ref.set_index("Source")
    out = anova_3way_clustered(df, factors=("category", "framing")).set_index("term")
    assert out.loc["C(category):C(framing)", "F"] == pytest.approx(ref.loc["Interaction", "F"])
    assert out.loc["C(category)", "p"] == pytest.approx(ref.loc["category", "p_unc"])
    assert out.loc["C(framing)", "F"] == pytest.approx(ref.loc["framing", "F"])
    assert out.loc["C(framing)", "sum_sq"] == pytest.approx(ref.loc["framing", "SS"])
    with pytest.raises(ValueError, match="several framings"):
        anova_3way_clustered(df.assign(adjective="one"))
