"""The statistics chapter (rmvalues.stages.rm_statistics): its analyses on synthetic tables with planted
effects, its parameters, and whole runs on live scores, published scores and both."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pingouin as pg
import pytest
from synthetic_scores import THREE_WAY, THREE_WAY_R, medians_table, synthetic_scores, valence_driven

from rmvalues.core.errors import MissingInputError, ParameterError
from rmvalues.core.manifest import RunRecord
from rmvalues.data.corpora import corpora_input, read_corpora_table
from rmvalues.data.scores import labels_of, load_published_scores
from rmvalues.stages import rm_statistics as stage
from rmvalues.stages.rm_statistics import analysis as an
from rmvalues.stages.rm_statistics import rm_level as rl
from rmvalues.stats import all_median_ranks, fit_mixed_model, rank_scores

# ---------------------------------------------------------------------------------------------------------
# Upstream runs written for the tests (each with its manifest, as the hand-off checks require)
# ---------------------------------------------------------------------------------------------------------


def tokenization_table(table: pd.DataFrame, model: str = "gemma3-270m") -> pd.DataFrame:
    """The corpora stage's token counts of the words of ``table`` in ``model``: every second word one token."""
    words = table[["corpus", "word"]].drop_duplicates().reset_index(drop=True)
    return words.assign(model=model, n_tokens_bare=[1 + i % 2 for i in range(len(words))])


def write_corpora_run(root: Path, table: pd.DataFrame, run: str = "default") -> None:
    record = RunRecord(root / "corpora" / run, stage="corpora", run=run)
    record.write_parquet(table, "corpora.parquet")
    record.write_parquet(tokenization_table(table), "tokenization.parquet")
    record.finish()


def write_scoring_run(root: Path, scores: pd.DataFrame, run: str = "default") -> None:
    record = RunRecord(root / "scoring" / run, stage="scoring", run=run)
    record.write_parquet(scores, "scores.parquet")
    record.finish()


def corpora_table(scores: pd.DataFrame, normed: tuple[str, ...] = (), seed: int = 0) -> pd.DataFrame:
    """A corpora table of the words of ``scores`` (per corpus), with frequency and valence for the corpora
    in ``normed`` and none for the others."""
    rng = np.random.default_rng(seed)
    words = scores[["corpus", "word", "category", "subcategory"]].drop_duplicates().reset_index(drop=True)
    has = words["corpus"].isin(list(normed)).to_numpy()
    words["zipf_frequency"] = np.where(has, rng.normal(4, 1, len(words)), np.nan)
    words["valence"] = np.where(has, rng.normal(5, 1, len(words)), np.nan)
    return words


# ---------------------------------------------------------------------------------------------------------
# Panel tests and the virtue/vice split
# ---------------------------------------------------------------------------------------------------------


def test_panel_tests_numbers_and_bonferroni():
    med = medians_table(effect=40.0, seed=2)
    panels = an.panel_tests(med, n_permutations=199, n_bootstrap=200, seed=0)
    assert list(panels.columns) == an.PANEL_COLUMNS
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
    # after Bonferroni over the 4 panels the smallest attainable p is 4 x 2/210 < 0.05: testable
    assert np.allclose(panels["p_rm_min"], 8 / 210)
    assert planted["p_rm_corrected"] == pytest.approx(8 / 210) and planted["rm_verdict"] == "significant"
    assert set(panels["rm_verdict"]) <= {"significant", "inconclusive"}
    # the interval over RMs then prompts is wider than the one over points, and holds the difference
    width_hb = panels["diff_hb_ci_high"] - panels["diff_hb_ci_low"]
    assert (width_hb > panels["diff_ci_high"] - panels["diff_ci_low"]).all()
    assert (
        (panels["diff_hb_ci_low"] < panels["difference"]) & (panels["difference"] < panels["diff_hb_ci_high"])
    ).all()
    again = an.panel_tests(med, n_permutations=199, n_bootstrap=200, seed=0)
    pd.testing.assert_frame_equal(panels, again)
    # ten panels (five categories): 10 x 2/210 > 0.05, so no RM-level verdict is possible
    five = an.panel_tests(
        medians_table(seed=1, n_prompts=4, categories=("A", "B", "C", "D", "E")),
        n_permutations=19,
        n_bootstrap=50,
    )
    assert len(five) == 10 and np.allclose(five["p_rm_min"], 20 / 210)
    assert set(five["rm_verdict"]) == {"cannot be tested at this n"}


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
                "diff_hb_ci_low": -3,
                "diff_hb_ci_high": 13,
            },
            {
                **base,
                "analysis": "split",
                "subcategory": "virtue",
                "difference": 12,
                "d": 1,
                "diff_ci_low": 8,
                "diff_ci_high": 16,
                "diff_hb_ci_low": 2,
                "diff_hb_ci_high": 22,
            },
            {
                **base,
                "analysis": "split",
                "subcategory": "vice",
                "difference": -4,
                "d": -0.4,
                "diff_ci_low": -7,
                "diff_ci_high": -1,
                "diff_hb_ci_low": np.nan,
                "diff_hb_ci_high": np.nan,
            },
        ]
    )
    # over (RM, prompt) points: vice reverses the pooled reading
    out = an.split_vs_pooled(panels, basis="(RM, prompt) points").iloc[0]
    assert out["reading_pooled"] == "gemma ranks higher"
    assert out["reading_virtue"] == "gemma ranks higher" and out["reading_vice"] == "llama ranks higher"
    assert bool(out["changes_reading"]) and out["changed_in"] == "vice"
    # the verdicts (the default) rest on the intervals over RMs then prompts: pooled is unclear there, the
    # virtue panel reads gemma, and the vice panel has no such interval (one RM in a family), so it cannot
    # change a reading
    out = an.split_vs_pooled(panels).iloc[0]
    assert out["basis"] == "RMs within family, then prompts within RM"
    assert (out["reading_pooled"], out["reading_virtue"]) == ("unclear", "gemma ranks higher")
    assert out["reading_vice"] == "cannot be tested at this n"
    assert bool(out["changes_reading"]) and out["changed_in"] == "virtue"
    import matplotlib.pyplot as plt

    fig = stage.figures.plot_split(panels, ["mfd2"])
    assert len(fig.subfigs) == 1
    plt.close(fig)
    shown = stage.tables.split_table(an.split_vs_pooled(panels))
    assert list(shown.columns) == ["corpus", "panel", "pooled", "virtue", "vice", "split changes the reading"]
    assert shown["panel"].tolist() == ["Care, positive"] and shown["virtue"].tolist() == [
        "12.0 (gemma ranks higher)"
    ]
    assert shown["split changes the reading"].tolist() == ["yes"]


# ---------------------------------------------------------------------------------------------------------
# Leave-one-RM-out and the covariate model
# ---------------------------------------------------------------------------------------------------------


def test_leave_one_rm_out_one_row_per_rm():
    med = medians_table(effect=20.0, seed=1)
    loo = an.leave_one_rm_out(med)
    assert len(loo) == 10 and sorted(loo["dropped_rm"]) == sorted(med["rm"].unique())
    assert set(loo["term"]) == {THREE_WAY}
    assert loo.set_index("dropped_rm")["dropped_family"].to_dict() == {
        f"rm{m}": ("gemma" if m < 4 else "llama") for m in range(10)
    }
    full = fit_mixed_model(med, levels=an.coding_levels(med)).table.set_index("term").loc[THREE_WAY, "coef"]
    assert loo["coef_all"].unique().tolist() == pytest.approx([full])
    assert loo["change"].to_numpy() == pytest.approx((loo["coef"] - full).to_numpy())
    assert (loo["ci_low"] < 20).all() and (loo["ci_high"] > 20).all()
    assert an.loo_skipped(med, ["gemma", "llama"]) == []
    # one RM per family: nothing can be left out; an empty table with its columns, and the analysis named
    two = med[med["rm"].isin(["rm0", "rm9"])]
    empty = an.leave_one_rm_out(two)
    assert empty.empty and list(empty.columns) == an.LOO_COLUMNS
    assert an.loo_skipped(two, ["gemma", "llama"]) == ["toy"]
    assert stage.tables.loo_range_table(empty).empty


def test_covariate_model_absorbs_a_valence_driven_gap():
    ranked, cov = valence_driven()
    out = an.covariate_model(ranked, cov)
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


def test_covariates_of_the_corpora_table(tmp_path):
    table = pd.DataFrame(
        {
            "corpus": ["toy", "toy", "toy", "toy2"],
            "word": ["a", "a", "b", "c"],  # "a" has two labels: one covariate row
            "category": ["A", "B", "B", "A"],
            "zipf_frequency": [5.0, 5.0, 3.0, 4.0],
            "valence": [7.0, 7.0, np.nan, np.nan],
        }
    )
    cov = an.covariates_of(table)
    assert list(cov.columns) == ["corpus", "word", "zipf_frequency", "valence"] and len(cov) == 3
    assert an.normed_corpora(cov, ["toy", "toy2"]) == (["toy"], ["toy2"])
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['valence'\]"):
        an.covariates_of(table.drop(columns="valence"))
    # the corpora run is a declared input: without it the run stops before any work (no silent skip)
    write_scoring_run(tmp_path, synthetic_scores(n_rm=4, seed=1))
    params = stage.Params.build(scores="live", corpora=["toy"], results_root=str(tmp_path))
    with pytest.raises(MissingInputError, match="run stage 'corpora' \\(run 'default'\\) first"):
        stage.run(params)


# ---------------------------------------------------------------------------------------------------------
# Parameters and the stage
# ---------------------------------------------------------------------------------------------------------


def test_parameters():
    stage.Params.build()
    stage.Params.build(prompts=["greatest_ever_one", "worst_time_please"], corpora=["big2_nouns"])
    cases = {
        "scores": ("cached", "scores='cached': Input should be 'published', 'live' or 'both'"),
        "corpora": (["big2_expanded"], "no published scores for \\['big2_expanded'\\]; published corpora"),
        "prompts": (["greatest_thing"], "unknown prompt id\\(s\\) \\['greatest_thing'\\].*selects all 54"),
        "families": (["gemma"], "exactly two different base-model families"),
        "n_permutations": (5, "n_permutations=5: Input should be greater than or equal to 9"),
        "n_bootstrap": (True, "n_bootstrap=True: Input should be a valid integer"),
        "n_null": (10.5, "n_null=10.5"),
        "seed": (-1, "seed=-1: Input should be greater than or equal to 0"),
        "scoring_run": ("a/b", "scoring_run='a/b': give a run name"),
    }
    for key, (value, message) in cases.items():
        with pytest.raises(ParameterError, match=message):
            stage.Params.build(**{key: value})
    with pytest.raises(ParameterError, match="families: \\['qwen'\\] not among the published RMs' families"):
        stage.Params.build(families=["gemma", "qwen"])
    stage.Params.build(scores="live", families=["gemma", "qwen"], corpora=["toy"])
    with pytest.raises(ParameterError, match="unknown parameter 'n_perm'"):
        stage.Params.build(n_perm=10)


def test_run_on_live_scores_writes_outputs(tmp_path):
    sc = synthetic_scores(n_rm=6, planted=2.0, seed=9)
    write_scoring_run(tmp_path, sc)
    write_corpora_run(tmp_path, corpora_table(sc))  # no normed words: the covariate model is skipped
    values = {
        "scores": "live",
        "corpora": ["toy"],
        "n_permutations": 99,
        "n_bootstrap": 100,
        "n_null": 20,
        "results_root": str(tmp_path),
        "output_dir": str(tmp_path / "out"),
    }
    res = stage.run(stage.Params.build(values))
    out = tmp_path / "out"
    mixed = pd.read_csv(out / "mixed_model.csv")
    assert list(mixed.columns[: len(an.MIXED_COLUMNS)]) == an.MIXED_COLUMNS
    assert list(pd.read_csv(out / "panel_tests.csv").columns) == an.PANEL_COLUMNS
    assert set(pd.read_parquet(out / "median_ranks.parquet")["analysis"]) == {"pooled"}
    assert {"statistic", "observed", "null_mean", "null_sd", "p_perm"} <= set(
        pd.read_csv(out / "null_baseline.csv").columns
    )
    assert len(pd.read_csv(out / "loo_family_effect.csv")) == 6
    assert res.covariates is None and "no normed words for toy" in res.covariate_note
    assert not (out / "covariate_model.csv").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seeds"]["seed"] == 0
    assert {"scoring/default/scores.parquet", "corpora/default/corpora.parquet"} <= set(manifest["inputs"])
    assert {"mixed_model.csv", "panel_tests.csv", "null_baseline.csv", "median_ranks.parquet"} <= set(
        manifest["outputs"]
    )
    assert set(res.timings) >= {
        "load_scores",
        "ranks",
        "mixed_model",
        "panel_tests",
        "null_baseline",
        "rm_level",
    }
    rm = pd.read_csv(out / "rm_level_interaction.csv")
    assert list(rm.columns[:12]) == [
        "corpus",
        "subcategory",
        "statistic",
        "family_a",
        "family_b",
        "mean_a",
        "mean_b",
        "difference",
        "p_exact",
        "n_splits",
        "ci_low",
        "ci_high",
    ]
    assert rm[["statistic", "n_splits"]].values.tolist() == [["D(B)", 20]]  # 3 vs 3 RMs: C(6, 3) splits
    assert {"rm_level_interaction.csv", "interaction_models.csv", "model_coding.csv"} <= set(
        manifest["outputs"]
    )
    # the families are checked against the scoring run's scores before any work
    with pytest.raises(
        ParameterError,
        match=r"families: \['qwen'\] have no scores: the scoring run 'default' has scores of families "
        r"\['gemma', 'llama'\]; set families=\[\.\.\.\]",
    ):
        stage.Params.build(values, families=["gemma", "qwen"])


def test_run_covariates_from_the_corpora_stage(tmp_path):
    sc = pd.concat(
        [
            synthetic_scores(n_rm=4, seed=1).assign(corpus="toy"),
            synthetic_scores(n_rm=4, seed=2).assign(corpus="toy2"),
        ]
    )
    write_scoring_run(tmp_path, sc)
    write_corpora_run(tmp_path, corpora_table(sc, normed=("toy",)))
    params = {
        "scores": "live",
        "corpora": ["toy", "toy2"],
        "n_permutations": 19,
        "n_bootstrap": 50,
        "n_null": 10,
    }
    res = stage.run(stage.Params.build(params, results_root=str(tmp_path), output_dir=str(tmp_path / "out")))
    assert set(res.covariates["corpus"]) == {"toy"} and set(res.covariates["covariates"]) == {
        "with",
        "without",
    }
    assert "fitted for toy" in res.covariate_note and "no normed words for toy2" in res.covariate_note
    assert (tmp_path / "out" / "covariate_model.csv").is_file()
    # every figure of the page is ONE figure for all the corpora of the run (a corpus per subfigure/panel)
    import matplotlib.pyplot as plt

    figs = stage.figures
    both = ["toy", "toy2"]
    for fig, n_parts in (
        (figs.plot_family_panels(res.medians, both, res.families), 2),
        (figs.plot_per_rm(res.per_rm, both), 2),
    ):
        assert len(fig.subfigs) == n_parts and fig.get_figwidth() <= figs.MAX_WIDTH
        plt.close(fig)
    fig = figs.plot_rm_contrasts(res.contrasts, res.rm_level, both)
    assert [ax.get_title().split("\n")[0] for ax in fig.axes if ax.get_visible()] == [
        "toy: D(B)",
        "toy2: D(B)",
    ]
    plt.close(fig)
    fig = figs.plot_null(res.null_draws, res.null_summary)
    assert len(fig.axes) == 4  # two corpora x two framings
    plt.close(fig)
    with pytest.raises(ValueError, match="no split analysis"):
        figs.plot_split(res.panels, both)
    assert set(stage.tables.covariate_table(res.covariates)["corpus"]) == {"toy"}


def test_run_on_published_and_both(corpora_results, tmp_path):
    """Published scores labelled by the corpora run, and published + live together (the published attrs
    kept), on two prompts."""
    root = tmp_path / "results"
    shutil.copytree(corpora_results / "corpora", root / "corpora")
    small = {
        "corpora": ["big2_nouns"],
        "prompts": ["best_ever_one", "worst_ever_one"],
        "n_permutations": 19,
        "n_bootstrap": 50,
        "n_null": 10,
        "results_root": str(root),
    }
    pub = stage.run(stage.Params.build(small, run_name="published"))
    assert set(pub.scores["source"]) == {"published"} and pub.scores["model"].nunique() == 10
    assert pub.unlabelled_words == {"big2_nouns": ["discussion", "eagerness"]}
    assert set(pub.overview["prompts"]) == {2}
    assert set(pub.covariates["corpus"]) == {"big2_nouns"}
    manifest = json.loads((root / "statistics" / "published" / "manifest.json").read_text())
    assert "corpora/default/corpora.parquet" in manifest["inputs"]
    assert "paper/config/prompts" in manifest["inputs"]
    assert manifest["extra"]["unlabelled_words"] == {"big2_nouns": ["discussion", "eagerness"]}
    # the page: the CSV downloads beside the reader tables, and the numbers its prose glues
    for name, attr in stage.READER_TABLES.items():
        assert (pub.csv(name) is not None) == (getattr(pub, attr) is not None), name
    assert pd.read_csv(pub.csv("mixed_model")).equals(pd.read_csv(pub.output_dir / "mixed_model.csv"))
    keys = stage.text.key_numbers(pub)
    assert set(keys) == KEY_NUMBERS and all(isinstance(v, str) and v for v in keys.values())
    r = pub.rm_level.iloc[0]
    assert keys["bigtwo_rm_statistic"] == "D(Communion)" and keys["bigtwo_rm_splits"] == "210"
    assert keys["bigtwo_rm_verdict"] == r["verdict"] and keys["n_rms"] == "10" and keys["n_prompts"] == "2"
    assert keys["bigtwo_three_way_term"] == "llama \u00d7 Communion \u00d7 negative"
    assert keys["p_min"] == "0.0095" and keys["n_panels"] == "4"
    assert keys["mfd_three_way"] == keys["mfd_rm_n_sig"] == keys["split_changed"] == "n/a"
    assert keys["split_corpora"] == "none" and keys["split_changed_list"] == "n/a"
    assert stage.tables.subcategory_mix_table(pub.corpora, pub.split_corpora).empty

    live = pub.scores[pub.scores["model"].str.contains("Gemma|Llama-3.1")].assign(source="live")
    write_scoring_run(root, live)
    both = stage.run(stage.Params.build(small, scores="both", run_name="both"))
    assert set(both.scores["source"]) == {"published", "live"}
    assert len(both.scores) == len(pub.scores) + len(live)
    assert both.unlabelled_words == pub.unlabelled_words
    assert any(rm.endswith(" [live]") for rm in both.medians["rm"])


# ---------------------------------------------------------------------------------------------------------
# The central interaction at the RM level, and the paper's coding on the released data
# ---------------------------------------------------------------------------------------------------------


def rm_cell_means(med: pd.DataFrame) -> pd.DataFrame:
    return (
        med.groupby(["rm", "family", "framing", "category"])["median_rank"]
        .mean()
        .unstack(["framing", "category"])
    )


def test_rm_contrasts_by_hand_and_the_exact_split_test():
    med = medians_table(effect=40.0, seed=2)
    con = rl.rm_contrasts(med, ["gemma", "llama"])
    assert list(con.columns) == rl.INTERACTION_COLUMNS and set(con["statistic"]) == {"D(Communion)"}
    m = rm_cell_means(med)
    by_hand = (m[("positive", "Agency")] - m[("positive", "Communion")]) - (
        m[("negative", "Agency")] - m[("negative", "Communion")]
    )
    got = con.set_index("rm")["D"]
    for (rm, _), value in by_hand.items():
        assert got[rm] == pytest.approx(value)
    tests = rl.rm_level_tests(con, ["gemma", "llama"], n_bootstrap=200)
    assert list(tests.columns) == rl.RM_LEVEL_COLUMNS and len(tests) == 1
    r = tests.iloc[0]
    assert (r["n_rms_a"], r["n_rms_b"], r["n_splits"], r["n_tests"]) == (4, 6, 210, 1)
    assert r["difference"] == pytest.approx(r["mean_b"] - r["mean_a"])
    # planted +40 on llama Communion under negative prompts: every llama RM above every gemma RM
    assert r["p_exact"] == pytest.approx(2 / 210) and r["verdict"] == "significant"
    assert r["ci_low"] < 40 < r["ci_high"] and r["ci_low"] > 0
    # in the paper's coding the three-way coefficient IS the family difference of mean D (balanced design)
    levels = an.coding_levels(med)
    fit = fit_mixed_model(med, levels=levels)
    assert fit.table.set_index("term").loc[THREE_WAY, "coef"] == pytest.approx(r["difference"], rel=1e-9)
    # side by side: three methods, one estimate; the paper's model far more certain than the RMs allow
    side, tried, slope = rl.interaction_models(
        med, tests, {("toy", "pooled", None): fit}, ["gemma", "llama"], levels
    )
    assert side["method"].str.split(" ").str[0].tolist() == ["random", "random", "RM"]
    assert side["estimate"].to_numpy() == pytest.approx([r["difference"]] * 3, rel=1e-6)
    assert side["se"].iloc[0] < side["se"].iloc[1]
    assert side["n_units"].tolist() == [1080, 10, 10] and side["df"].iloc[1] == 8
    assert set(tried["status"]) <= {"fitted", "not needed"} and THREE_WAY in set(slope["term"])


def test_rm_contrasts_with_more_than_two_categories():
    med = medians_table(seed=5, n_prompts=5, categories=("A", "B", "C"))
    con = rl.rm_contrasts(med, ["gemma", "llama"])
    assert sorted(con["statistic"].unique()) == ["D(A)", "D(B)", "D(C)"]
    m = rm_cell_means(med).loc["rm3"].iloc[0]
    gain = {fr: (m[(fr, "A")] + m[(fr, "C")]) / 2 - m[(fr, "B")] for fr in ("positive", "negative")}
    row = con[(con["rm"] == "rm3") & (con["statistic"] == "D(B)")].iloc[0]
    assert row["D"] == pytest.approx(gain["positive"] - gain["negative"]) and row["versus"] == "A, C"
    # D sums to zero over the categories, up to the factor K/(K-1)
    assert con.groupby("rm")["D"].sum().abs().max() < 1e-9
    tests = rl.rm_level_tests(con, ["gemma", "llama"], n_bootstrap=100)
    assert (tests["n_tests"] == 3).all() and np.allclose(tests["p_min_corrected"], 6 / 210)
    assert np.allclose(tests["p_corrected"], np.minimum(1, 3 * tests["p_exact"]))
    # the model contrast with the same weights gives the same estimate
    levels = an.coding_levels(med)
    fit = fit_mixed_model(med, levels=levels)
    side, slope_fits, _ = rl.interaction_models(
        med, tests, {("toy", "pooled", None): fit}, ["gemma", "llama"], levels
    )
    for stat_, grp in side.groupby("statistic"):
        assert grp["estimate"].to_numpy() == pytest.approx(
            [tests.set_index("statistic").loc[stat_, "difference"]] * 2, rel=1e-6
        )
    # more than two categories: no random-slope model (one variance would be imposed on every contrast), the
    # reason recorded
    assert not side["method"].str.startswith("random slopes").any()
    (note,) = slope_fits["note"]
    assert (
        slope_fits["status"].tolist() == ["not fitted"] and "the same SE" in note and "21 parameters" in note
    )


def test_paper_coding_on_the_released_big_two_scores(corpora_results):
    """Regression on the released data (all 54 prompts): the model's three-way term equals the contrast of
    cell means computed by hand, in the paper's coding (gemma, Agency, positive prompts the references)."""
    table, _ = read_corpora_table(
        corpora_input("default", "test", ["big2_nouns"]), corpora_results, ["big2_nouns"]
    )
    scores = load_published_scores(labels_of(table, ["big2_nouns"]), ["big2_nouns"], None)
    med = all_median_ranks(rank_scores(scores))
    assert len(med) == 10 * 54 * 2 and med.groupby("rm")["prompt_id"].nunique().eq(54).all()  # balanced
    levels = an.coding_levels(med)
    fit = fit_mixed_model(med, levels=levels)
    assert fit.reference == {"family": "gemma", "category": "Agency", "framing": "positive"}
    coef = fit.table.set_index("term")["coef"]
    cell = med.groupby(["family", "category", "framing"])["median_rank"].mean()

    def gap_change(fam: str) -> float:  # (Communion - Agency) under negative minus under positive prompts
        return (cell[(fam, "Communion", "negative")] - cell[(fam, "Agency", "negative")]) - (
            cell[(fam, "Communion", "positive")] - cell[(fam, "Agency", "positive")]
        )

    three_way = gap_change("llama") - gap_change("gemma")
    assert coef[THREE_WAY] == pytest.approx(three_way, rel=1e-9)
    assert coef[THREE_WAY] == pytest.approx(-19.828, abs=1e-3)  # the released data's value
    assert coef["Intercept"] == pytest.approx(cell[("gemma", "Agency", "positive")], rel=1e-9)
    assert coef["family[T.llama]"] == pytest.approx(
        cell[("llama", "Agency", "positive")] - cell[("gemma", "Agency", "positive")], rel=1e-9
    )
    # R's alphabetical default (negative prompts the reference) reads the same term with the opposite sign
    r_default = fit_mixed_model(med).table.set_index("term")["coef"]
    assert r_default[THREE_WAY_R] == pytest.approx(-three_way, rel=1e-9)
    # the RM-level statistic: the family difference of mean D is the same number; its exact p is 16/210
    tests = rl.rm_level_tests(rl.rm_contrasts(med, ["gemma", "llama"]), ["gemma", "llama"], n_bootstrap=100)
    r = tests.iloc[0]
    assert r["difference"] == pytest.approx(three_way, rel=1e-9)
    assert (r["n_splits"], r["p_exact"]) == (210, pytest.approx(16 / 210))
    assert r["verdict"] == "inconclusive" and r["ci_low"] < 0 < r["ci_high"]


def test_run_on_live_scores_with_one_rm_per_family(tmp_path):
    """The scoring stage's default hands over one RM per family (gemma, smollm): the chapter runs, says what
    it cannot test, and its text renders."""
    sc = synthetic_scores(n_rm=2, planted=2.0, seed=3)
    sc["family"] = sc["family"].replace({"llama": "smollm"})
    write_scoring_run(tmp_path, sc)
    write_corpora_run(tmp_path, corpora_table(sc))
    values = {
        "scores": "live",
        "corpora": ["toy"],
        "n_permutations": 19,
        "n_bootstrap": 50,
        "n_null": 10,
        "results_root": str(tmp_path),
        "output_dir": str(tmp_path / "out"),
    }
    # the default families are not in the live scores: a problem before any work, naming the fix
    with pytest.raises(ParameterError, match=r"has scores of families \['gemma', 'smollm'\]; set families="):
        stage.Params.build(values)
    res = stage.run(stage.Params.build(values, families=["gemma", "smollm"]))
    out = tmp_path / "out"
    for name in (
        "rm_level_interaction.csv",
        "loo_family_effect.csv",
        "random_slope_fits.csv",
        "panel_tests.csv",
    ):
        assert (out / name).is_file()
    r = res.rm_level.iloc[0]
    assert (r["n_splits"], r["p_min"], r["verdict"]) == (2, 1.0, "cannot be tested at this n")
    assert np.isnan(r["ci_low"]) and np.isnan(r["boot_ci_low"])
    assert res.loo.empty and res.loo_skipped == ["toy"]
    assert set(res.panels["rm_verdict"]) == {"cannot be tested at this n"}
    assert res.panels["diff_hb_ci_low"].isna().all()
    assert set(res.slope_fits["status"]) == {"skipped"}
    assert res.models["method"].tolist() == ["random intercept (paper)", "RM level, exact split test"]
    text = stage.text
    # the chapter's table of the random-slope attempts builds when none was fitted (no convergence columns)
    fits = stage.tables.slope_fits_table(res.slope_fits)
    assert len(fits) == len(res.slope_fits) and set(fits["converged"]) == {"n/a"}
    slopes = stage.tables.slope_summary_table(res.slope_fits)
    assert set(slopes["used"]) == {"none"} and slopes["structures tried"].str.contains("skipped").all()
    floor = stage.tables.attainable_table(res.panels, res.rm_level)
    assert set(floor["splits"]) == {"2"} and set(floor["smallest p of one test"]) == {"1.0000"}
    assert set(floor["can reach 0.05"]) == {"no"}
    keys = text.key_numbers(res)
    assert set(keys) == KEY_NUMBERS
    assert keys["bigtwo_rm_ci"] == keys["loo_sign_changes"] == keys["bigtwo_three_way"] == "n/a"
    assert keys["loo_skipped"] == "toy" and keys["bigtwo_overlap"] == "n/a"
    reading = stage.readings.rm_reading(next(res.rm_level.itertuples()))
    assert reading.startswith("cannot be tested at this n (with 1 and 1 RMs the smallest attainable p")
    assert (keys["n_rms_a"], keys["n_rms_b"], keys["p_min"], keys["n_panels_rm_testable"]) == (
        "1",
        "1",
        "1.0000",
        "0",
    )
    import matplotlib.pyplot as plt

    plt.close(stage.figures.plot_rm_contrasts(res.contrasts, res.rm_level, "toy"))


# ---------------------------------------------------------------------------------------------------------
# The page: reader tables, key numbers
# ---------------------------------------------------------------------------------------------------------

#: The numbers the chapter's prose glues (every key present in every run).
KEY_NUMBERS = {
    "scores", "corpora", "family_a", "family_b", "n_rms", "n_rms_a", "n_rms_b", "n_prompts", "n_scores",
    "alpha", "ci_level",
    "bigtwo_three_way", "bigtwo_three_way_term", "bigtwo_three_way_se", "bigtwo_three_way_ci",
    "bigtwo_three_way_p", "mfd_three_way", "mfd_three_way_n_sig", "mfd_reference", "three_way_all",
    "bigtwo_rm_statistic", "bigtwo_rm_means", "bigtwo_rm_diff", "bigtwo_rm_ci", "bigtwo_rm_p",
    "bigtwo_rm_p_corrected", "bigtwo_rm_splits", "bigtwo_rm_verdict",
    "mfd_rm_n_tests", "mfd_rm_n_sig", "mfd_rm_n_untestable", "mfd_rm_significant", "rm_level_all",
    "p_min", "n_splits", "bigtwo_panels_p_min", "mfd_panels_p_min", "mfd_rm_p_min",
    "n_panels", "n_panels_point_sig", "n_panels_rm_testable", "n_panels_rm_sig",
    "bigtwo_null_p", "bigtwo_null_observed", "mfd_null_p", "mfd_null_observed", "n_null",
    "loo_sign_changes", "split_changed",
    # the robustness sections (rmvalues.stages.rm_statistics.robust_numbers)
    "spec_rule", "spec_choices", "spec_n", "spec_label_counts", "bigtwo_spec_verdict", "bigtwo_spec_label",
    "mfd_spec_labels", "mfd_primary_significant", "lineage_counts", "bigtwo_lineage", "bigtwo_lineage_survives",
    "bigtwo_within_lineages", "bigtwo_lineage_ols", "n_lineages", "bigtwo_power", "bigtwo_power_half",
    "bigtwo_rms_needed", "bigtwo_rms_needed_half", "power_sizes", "power_target", "bigtwo_crossed_ci",
    "bigtwo_rm_only_ci", "bigtwo_word_only_ci", "bigtwo_crossed_reading", "n_crossed",
    "r_status", "bigtwo_family_tests", "bigtwo_three_way_tests", "r_coef_agreement",
    # the data-chosen phrases (rmvalues.stages.rm_statistics.readings)
    "unlabelled", "confound_families", "developer_crossing", "coding_reference", "framing_reference_source",
    "coding_other_framing", "coding_flips", "bigtwo_corpus", "bigtwo_move", "bigtwo_paper_p",
    "bigtwo_rm_reading", "bigtwo_overlap", "mfd_paper_n_sig", "mfd_rm_n_inconclusive", "boot_n_panels",
    "boot_n_excluding", "boot_n_loose", "boot_rms", "split_corpora", "split_changed_list", "split_unclear",
    "split_unreadable", "split_points_changed", "covariate_words", "loo_skipped",
}  # fmt: skip


def test_readable_terms():
    from rmvalues.stages.rm_statistics.tables import readable_term

    assert readable_term(THREE_WAY) == "llama \u00d7 Communion \u00d7 negative"
    assert (
        readable_term("family[T.llama]:framing[T.negative]:zipf_z")
        == "llama \u00d7 negative \u00d7 frequency (z)"
    )
    assert readable_term("C(category):C(framing)") == "category \u00d7 framing"
    assert readable_term("Intercept") == "intercept"


def test_reader_tables_round_and_keep_intervals_on_one_line():
    med = medians_table(effect=20.0, seed=1)
    mixed, _ = an.mixed_models(med, ["gemma", "llama"], an.coding_levels(med))
    shown = stage.tables.model_terms(mixed)
    assert list(shown.columns) == ["corpus", "term", "coefficient (ranks)", "SE", "95% CI", "p"]
    assert set(shown["term"]) == {
        "llama",
        "llama \u00d7 Communion",
        "llama \u00d7 negative",
        "llama \u00d7 Communion \u00d7 negative",
    }
    row = shown.set_index("term").loc["llama \u00d7 Communion \u00d7 negative"]
    assert row["p"] == "<\u00a00.001" and ",\u00a0" in row["95% CI"] and " " not in row["95% CI"]
    assert row["coefficient (ranks)"].count(".") == 1 and len(row["coefficient (ranks)"].split(".")[1]) == 1
    every = stage.tables.model_terms(mixed, family_only=False, analysis=None)
    assert len(every) == len(mixed) and "intercept" in set(every["term"])
    assert stage.tables.timings_table({"ranks": 0.123})["seconds"].tolist() == ["0.1"]


def test_families_are_checked_against_what_a_planned_scoring_run_promises(tmp_path):
    """Before a scoring run has executed, it promises the families of the RMs it will score (from the registry);
    statistics on its live scores checks ``families`` against them (the runner does so before any work)."""
    from rmvalues.stages.scoring.params import Params as ScoringParams

    scoring = {"training_run": "", "results_root": str(tmp_path)}
    mixed = ScoringParams.parse(
        {**scoring, "models": ["qrm-gemma2-27b", "armorm-llama3-8b-v0.1", "qrm-llama3.1-8b"]}
    )
    assert mixed.promises() == {"families": ["gemma", "llama"]}
    assert ScoringParams.parse({**scoring, "models": ["not-registered"]}).promises() == {}
    # the default models are the training run's RMs: unknown until that run has written its registry
    assert ScoringParams.parse({"results_root": str(tmp_path)}).promises() == {}

    values = {"scores": "live", "corpora": ["toy"], "results_root": str(tmp_path)}
    live = stage.Params.parse(values)  # families: gemma, llama (the paper's)
    promised = {"scoring/default": {"families": ["gemma", "smollm"]}}
    assert live.check_planned(promised) == [
        "families: ['llama'] have no scores: the scoring run 'default' will score RMs of families "
        "['gemma', 'smollm']; set families=[...] to two of them, e.g. families=['gemma', 'smollm']"
    ]
    assert stage.Params.parse({**values, "families": ["gemma", "smollm"]}).check_planned(promised) == []
    assert live.check_planned({"scoring/default": {}}) == []  # nothing promised: checked when it is read
    # with the published scores too, the published RMs' families count
    both = stage.Params.parse({**values, "scores": "both", "corpora": ["big2_nouns"]})
    assert both.check_planned(promised) == []
    assert stage.Params.parse({**values, "scores": "published"}).check_planned(promised) == []
