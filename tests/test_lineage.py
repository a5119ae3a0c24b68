"""Lineage of the published reward models: the lineage data (config/published_rms.yaml), the split test within
strata (rmvalues.stats.stratified_split_test) and the within-lineage analysis (rm_statistics.lineage), each
checked against answers computed by hand on small invented designs."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from rmvalues import stats as st
from rmvalues.data import scores
from rmvalues.stages.rm_statistics import lineage as lin

FAMILIES = ["gemma", "llama"]

# ---------------------------------------------------------------------------------------------------------
# The split test within strata
# ---------------------------------------------------------------------------------------------------------

# Stratum 1: a = [2], b = [1, 6, 7]; stratum 2: a = [4], b = [10]; stratum 3: b = [100] only (no information).
DESIGN_VALUES = [2.0, 1.0, 6.0, 7.0, 4.0, 10.0, 100.0]
DESIGN_GROUPS = ["a", "b", "b", "b", "a", "b", "b"]
DESIGN_STRATA = ["s1", "s1", "s1", "s1", "s2", "s2", "s3"]


def test_stratified_split_test_by_hand():
    # Weights: harmonic-mean group sizes, 2 / (1/1 + 1/3) = 1.5 in s1 and 2 / (1/1 + 1/1) = 1 in s2 (sum 2.5).
    # s1 (values 1, 2, 6, 7; sum 16): with unit x labelled a, mean_b - mean_a = (16 - x) / 3 - x = (16 - 4x) / 3:
    #   x = 2 (observed): 8/3; x = 1: 4; x = 6: -8/3; x = 7: -4. Weighted by 1.5: 4, 6, -4, -6.
    # s2 (values 4, 10): b = 10 (observed): +6; b = 4: -6.
    # The 4 x 2 = 8 relabellings, T = (1.5 d1 + d2) / 2.5:
    by_hand = [(4 + 6) / 2.5, (6 + 6) / 2.5, (-4 + 6) / 2.5, (-6 + 6) / 2.5]  # s2 observed: 4, 4.8, 0.8, 0
    by_hand += [(4 - 6) / 2.5, (6 - 6) / 2.5, (-4 - 6) / 2.5, (-6 - 6) / 2.5]  # s2 swapped: -0.8, 0, -4, -4.8
    observed = by_hand[0]
    assert observed == pytest.approx(4.0)
    upper = sum(t >= observed - 1e-12 for t in by_hand) / 8  # 4 and 4.8: 2/8
    lower = sum(t <= observed + 1e-12 for t in by_hand) / 8  # all but 4.8: 7/8
    assert (upper, lower) == (2 / 8, 7 / 8)

    res = st.stratified_split_test(DESIGN_VALUES, DESIGN_GROUPS, DESIGN_STRATA, "b")
    assert res.stratified_difference == pytest.approx(4.0)
    assert res.p == pytest.approx(min(1.0, 2 * min(upper, lower)))  # 0.5
    assert res.p == pytest.approx(0.5)
    assert (res.n_relabellings, res.exact) == (8, True)
    assert res.p_min == pytest.approx(2 / 8)
    assert (res.n_strata, res.n_informative, res.n_a, res.n_b) == (3, 2, 2, 5)
    # the plain difference sees the one-group stratum: mean(1, 6, 7, 10, 100) - mean(2, 4) = 24.8 - 3
    assert res.difference == pytest.approx(21.8)


def test_stratified_split_test_with_one_stratum_is_the_split_test():
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=4), rng.normal(size=6) + 0.5
    res = st.stratified_split_test([*a, *b], ["a"] * 4 + ["b"] * 6, ["x"] * 10, "b")
    plain = st.split_test(a, b)
    assert res.stratified_difference == pytest.approx(plain.difference)
    assert res.difference == pytest.approx(plain.difference)
    assert (res.p, res.n_relabellings, res.p_min) == (pytest.approx(plain.p), 210, pytest.approx(plain.p_min))


def test_stratified_split_test_without_informative_strata_and_when_sampled():
    res = st.stratified_split_test([1.0, 2.0, 3.0], ["a", "a", "b"], ["s1", "s1", "s2"], "b")
    assert math.isnan(res.p) and math.isnan(res.stratified_difference)
    assert (res.n_informative, res.n_strata, res.n_relabellings, res.p_min) == (0, 2, 1, 1.0)
    assert res.difference == pytest.approx(1.5)
    # three strata of 4 + 4 units: 70^3 = 343,000 relabellings, enumerated; 20,000 drawn come close
    rng = np.random.default_rng(3)
    values = rng.normal(size=24) + np.tile([0.0] * 4 + [0.4] * 4, 3)
    groups, strata = ["a"] * 4 + ["b"] * 4, [s for s in "xyz" for _ in range(8)]
    exact = st.stratified_split_test(values, groups * 3, strata, "b")
    sampled = st.stratified_split_test(values, groups * 3, strata, "b", max_splits=20_000, seed=1)
    assert exact.exact and not sampled.exact and exact.n_relabellings == sampled.n_relabellings == 70**3
    assert sampled.stratified_difference == pytest.approx(exact.stratified_difference)
    assert abs(sampled.p - exact.p) < 0.02
    with pytest.raises(ValueError, match="exactly two groups"):
        st.stratified_split_test([1.0, 2.0, 3.0], ["a", "b", "c"], ["s"] * 3, "b")
    with pytest.raises(ValueError, match="differ in length"):
        st.stratified_split_test([1.0, 2.0], ["a", "b"], ["s"], "b")


# ---------------------------------------------------------------------------------------------------------
# The within-lineage analysis
# ---------------------------------------------------------------------------------------------------------


def contrasts_table(rows: list[tuple[str, str, float]], statistic: str = "D(Communion)") -> pd.DataFrame:
    """A contrasts table (rm_level.INTERACTION_COLUMNS' keys) of one statistic: (rm, family, D) per RM."""
    return pd.DataFrame(
        [
            {
                "corpus": "big2_nouns",
                "analysis": "pooled",
                "subcategory": None,
                "statistic": statistic,
                "category": "Communion",
                "versus": "Agency",
                "rm": rm,
                "family": fam,
                "D": d,
            }
            for rm, fam, d in rows
        ]
    )


def lineages_of(rows: list[tuple[str, str, str | None]]) -> pd.DataFrame:
    """A lineage table: (rm, family, lineage) per RM."""
    return pd.DataFrame(
        [
            {
                "rm": rm,
                "family": fam,
                "developer": "dev",
                "lineage": ln,
                "base_model": None,
                "preference_data": None,
            }
            for rm, fam, ln in rows
        ],
        columns=lin.LINEAGE_COLUMNS,
    )


# Lineage L1: gemma 1, 3 and llama 4, 6; lineage L2: gemma 5, 7 and llama 10, 8 (cell means 2, 5, 6, 9).
BALANCED = [
    ("g1", "gemma", "L1", 1.0),
    ("g2", "gemma", "L1", 3.0),
    ("l1", "llama", "L1", 4.0),
    ("l2", "llama", "L1", 6.0),
    ("g3", "gemma", "L2", 5.0),
    ("g4", "gemma", "L2", 7.0),
    ("l3", "llama", "L2", 10.0),
    ("l4", "llama", "L2", 8.0),
]


def test_rm_labels_map_to_models_and_unknown_rms_are_their_own_lineage():
    assert (
        lin.model_of_rm("Skywork/Skywork-Reward-Gemma-2-27B [published]")
        == "Skywork/Skywork-Reward-Gemma-2-27B"
    )
    assert lin.model_of_rm("org/m [live]") == "org/m"
    assert lin.model_of_rm("org/m [other]") == "org/m [other]"
    table = lineages_of([("org/a", "gemma", "L1"), ("org/b", "llama", None)])
    got = lin.lineage_of_rms(["org/a [published]", "org/a [live]", "org/b", "mine/x [live]"], table)
    assert list(got["lineage"]) == ["L1", "L1", "unknown: org/b", "unknown: mine/x [live]"]
    assert list(got["known"]) == [True, True, False, False]
    assert list(got["model"]) == ["org/a", "org/a", "org/b", "mine/x"]


def test_within_lineage_table_by_hand():
    rows = [(rm, fam, d) for rm, fam, _, d in BALANCED] + [("a3", "llama", 20.0), ("x [live]", "gemma", 0.0)]
    lineages = lineages_of([(rm, fam, ln) for rm, fam, ln, _ in BALANCED] + [("a3", "llama", "L3")])
    got = lin.within_lineage_table(contrasts_table(rows), lineages, FAMILIES).set_index("lineage")
    assert list(got.columns) == [c for c in lin.WITHIN_COLUMNS if c != "lineage"]
    assert list(got.index) == ["L1", "L2", "L3", "unknown: x [live]"]
    assert got.loc["L1", ["n_rms_a", "n_rms_b", "mean_a", "mean_b", "difference"]].tolist() == [
        2,
        2,
        2.0,
        5.0,
        3.0,
    ]
    assert got.loc["L2", ["mean_a", "mean_b", "difference"]].tolist() == [6.0, 9.0, 3.0]
    assert got.loc["L1", "rms"] == "g1, g2, l1, l2"
    # a lineage lacking a family has no within-lineage difference
    assert (got.loc["L3", "n_rms_a"], got.loc["L3", "mean_b"]) == (0, 20.0)
    assert np.isnan(got.loc["L3", "difference"]) and np.isnan(got.loc["unknown: x [live]", "difference"])


def test_lineage_adjusted_ols_and_stratified_test_by_hand():
    contrasts = contrasts_table([(rm, fam, d) for rm, fam, _, d in BALANCED])
    lineages = lineages_of([(rm, fam, ln) for rm, fam, ln, _ in BALANCED])
    row = lin.lineage_adjusted(contrasts, lineages, FAMILIES).iloc[0]
    # The additive model fits the cell means exactly (family +3 in both lineages, lineage +4): residuals are
    # +-1, RSS = 8 on 8 - 3 = 5 df, s^2 = 1.6. The family dummy, centred, has sum of squares 8 x 1/4 = 2, and is
    # orthogonal to the lineage dummy (balanced design): SE = sqrt(1.6 / 2).
    se = math.sqrt(1.6 / 2)
    t = 3.0 / se
    half = stats.t.ppf(0.975, 5) * se
    assert row["ols_coef"] == pytest.approx(3.0)
    assert row["ols_se"] == pytest.approx(se)
    assert (row["ols_df"], row["ols_t"]) == (5, pytest.approx(t))
    assert row["ols_p"] == pytest.approx(2 * stats.t.sf(t, 5))
    assert (row["ols_ci_low"], row["ols_ci_high"]) == (pytest.approx(3.0 - half), pytest.approx(3.0 + half))
    # Lineage F-test: D ~ family leaves RSS 20 + 20 = 40 (family means 4 and 7): F = (40 - 8) / 1 / (8 / 5) = 20.
    assert row["lineage_f_p"] == pytest.approx(stats.f.sf(20.0, 1, 5))
    # Stratified: both lineages' within differences are 3; C(4, 2)^2 = 36 relabellings and the observed one is
    # the unique largest (each lineage's llama pair is its two largest values): p = 2/36, which is also p_min.
    assert row["difference"] == pytest.approx(3.0) and row["stratified_difference"] == pytest.approx(3.0)
    assert (row["n_relabellings"], row["n_lineages"], row["n_informative_lineages"]) == (36, 2, 2)
    assert row["p_stratified"] == pytest.approx(2 / 36) and row["p_min_stratified"] == pytest.approx(2 / 36)
    assert (row["n_tests"], row["n_unknown_lineage"]) == (1, 0)
    assert row["survives_lineage"] == "same sign, cannot reach alpha"  # 2/36 = 0.056 > 0.05
    relaxed = lin.lineage_adjusted(contrasts, lineages, FAMILIES, alpha=0.1).iloc[0]
    assert relaxed["survives_lineage"] == "same sign, significant"
    assert relaxed["ols_ci_high"] - relaxed["ols_ci_low"] == pytest.approx(2 * stats.t.ppf(0.95, 5) * se)


def test_lineage_adjusted_sign_flip_and_untestable_designs():
    # Simpson's paradox: llama is higher within each lineage (+1) but lower overall (3.5 vs 7.5).
    flip = [
        ("g1", "gemma", "L1", 10.0),
        ("g2", "gemma", "L1", 10.0),
        ("g3", "gemma", "L1", 10.0),
        ("l1", "llama", "L1", 11.0),
        ("g4", "gemma", "L2", 0.0),
        ("l2", "llama", "L2", 1.0),
        ("l3", "llama", "L2", 1.0),
        ("l4", "llama", "L2", 1.0),
    ]
    row = lin.lineage_adjusted(
        contrasts_table([(r, f, d) for r, f, _, d in flip]),
        lineages_of([(r, f, ln) for r, f, ln, _ in flip]),
        FAMILIES,
    ).iloc[0]
    assert row["difference"] == pytest.approx(-4.0)
    assert row["stratified_difference"] == pytest.approx(1.0)
    assert row["ols_coef"] == pytest.approx(1.0)  # an exact fit: residuals 0
    assert row["survives_lineage"] == "sign flips"
    # No lineage holds both families: family is lineage, the design is singular, nothing can be tested.
    confounded = [
        ("g1", "gemma", "L1", 1.0),
        ("g2", "gemma", "L1", 2.0),
        ("l1", "llama", "L2", 5.0),
        ("l2", "llama", "L2", 6.0),
    ]
    row = lin.lineage_adjusted(
        contrasts_table([(r, f, d) for r, f, _, d in confounded]),
        lineages_of([(r, f, ln) for r, f, ln, _ in confounded]),
        FAMILIES,
    ).iloc[0]
    assert row["n_informative_lineages"] == 0 and np.isnan(row["ols_coef"]) and np.isnan(row["p_stratified"])
    assert "singular" in row["ols_note"]
    assert row["survives_lineage"] == "cannot be tested"
    assert set(lin.SURVIVAL) >= {"sign flips", "cannot be tested"}


def test_lineage_adjusted_counts_unknown_rms_and_rejects_family_mismatches():
    rows = [(rm, fam, d) for rm, fam, _, d in BALANCED] + [("mine/x [live]", "llama", 50.0)]
    lineages = lineages_of([(rm, fam, ln) for rm, fam, ln, _ in BALANCED])
    row = lin.lineage_adjusted(contrasts_table(rows), lineages, FAMILIES).iloc[0]
    # the unknown RM is a singleton lineage: counted, no information, one more coefficient (df stays 5)
    assert (row["n_unknown_lineage"], row["n_lineages"], row["n_informative_lineages"]) == (1, 3, 2)
    assert row["stratified_difference"] == pytest.approx(3.0) and row["ols_coef"] == pytest.approx(3.0)
    assert row["ols_df"] == 5
    wrong = lineages_of([(rm, "llama" if rm == "g1" else fam, ln) for rm, fam, ln, _ in BALANCED])
    with pytest.raises(ValueError, match=r"family mismatch for g1 \(gemma in the contrasts, llama"):
        lin.lineage_adjusted(contrasts_table(rows), wrong, FAMILIES)
    with pytest.raises(ValueError, match="lacks column"):
        lin.lineage_adjusted(contrasts_table(rows).drop(columns="D"), lineages, FAMILIES)


# ---------------------------------------------------------------------------------------------------------
# The lineage data of the ten published RMs
# ---------------------------------------------------------------------------------------------------------

SOURCE = re.compile(r"^(https://huggingface\.co/\S+|arXiv:\d{4}\.\d{4,5})$")


def test_every_published_rm_has_every_lineage_field_with_a_source():
    raw = yaml.safe_load(scores.published_rms_path().read_text(encoding="utf-8"))["rms"]
    assert len(raw) == 10
    for entry in raw:
        for fact in scores.LINEAGE_FACTS:
            assert fact in entry, (entry["model"], fact)
            src = entry["sources"][fact]
            assert src["note"].strip(), (entry["model"], fact)
            if entry[fact] is None:
                assert scores.NOT_VERIFIED in src["note"]
            else:
                assert SOURCE.match(src["source"]), (entry["model"], fact, src["source"])
        assert entry["lineage"] in {"skywork", "grm", "armorm"}
    table = scores.published_rm_table()
    assert list(table.columns) == list(scores.PUBLISHED_RM_COLUMNS)
    assert list(table.columns[:5]) == ["model", "file", "family", "label", "revision"]
    sources = scores.published_lineage_sources()
    assert list(sources.columns) == list(scores.LINEAGE_SOURCE_COLUMNS)
    assert len(sources) == 10 * len(scores.LINEAGE_FACTS)


def test_six_skywork_lineage_rms_three_per_family():
    table = lin.lineage_table(scores.published_rm_table())
    assert list(table.columns) == lin.LINEAGE_COLUMNS and len(table) == 10
    counts = table.groupby(["lineage", "family"]).size().to_dict()
    assert counts == {
        ("skywork", "gemma"): 3,
        ("skywork", "llama"): 3,
        ("grm", "gemma"): 1,
        ("grm", "llama"): 2,
        ("armorm", "llama"): 1,
    }
    by_rm = table.set_index("rm")
    assert by_rm.loc["nicolinho/QRM-Gemma-2-27B", "base_model"] == "Skywork/Skywork-Reward-Gemma-2-27B-v0.2"
    assert by_rm.loc["RLHFlow/ArmoRM-Llama3-8B-v0.1", "base_model"] == "sfairXC/FsfairX-LLaMA3-RM-v0.1"
    # the published design: C(6, 3) x C(3, 1) = 60 relabellings within lineage (ArmoRM informs nothing)
    contrasts = contrasts_table(
        [(rm, fam, float(i)) for i, (rm, fam) in enumerate(zip(table["rm"], table["family"], strict=True))]
    )
    contrasts["rm"] = contrasts["rm"] + " [published]"
    row = lin.lineage_adjusted(contrasts, table, FAMILIES).iloc[0]
    assert (row["n_relabellings"], row["n_lineages"], row["n_informative_lineages"]) == (60, 3, 2)
    assert row["p_min_stratified"] == pytest.approx(2 / 60) and row["n_unknown_lineage"] == 0
    # with lineage fixed effects, OLS's family coefficient is the harmonic-weighted within-lineage difference
    assert row["ols_coef"] == pytest.approx(row["stratified_difference"])
    assert row["ols_df"] == 10 - 4


def write_rms(tmp_path, name: str, entry: dict) -> str:
    """A published-RMs file of one RM, at its own path (the parsed files are cached by path)."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"rms": [entry]}), encoding="utf-8")
    return str(path)


def test_a_missing_or_unsourced_lineage_field_is_a_clear_error(tmp_path):
    entry = yaml.safe_load(scores.published_rms_path().read_text(encoding="utf-8"))["rms"][0]
    assert scores.read_published_rms(write_rms(tmp_path, "ok", entry))[0].lineage == "skywork"
    path = write_rms(tmp_path, "missing", {k: v for k, v in entry.items() if k != "base_model"})
    with pytest.raises(
        ValueError, match=r"RM 'nicolinho/QRM-Gemma-2-27B' lacks field\(s\) base_model"
    ) as err:
        scores.read_published_rms(path)
    assert path in str(err.value)
    unverified = {**entry, "developer": None}
    with pytest.raises(ValueError, match="developer is null but sources.developer.note does not say"):
        scores.read_published_rms(write_rms(tmp_path, "null", unverified))
    unverified["sources"] = {
        **entry["sources"],
        "developer": {"source": None, "note": "not verified offline"},
    }
    assert scores.read_published_rms(write_rms(tmp_path, "null_ok", unverified))[0].developer is None
    no_source = {**entry, "sources": {k: v for k, v in entry["sources"].items() if k != "lineage"}}
    with pytest.raises(ValueError, match="sources.lineage is missing"):
        scores.read_published_rms(write_rms(tmp_path, "nosource", no_source))
