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
from synthetic_scores import THREE_WAY, medians_table, synthetic_scores, valence_driven

from rmvalues.core.errors import MissingInputError, ParameterError
from rmvalues.core.manifest import RunRecord
from rmvalues.stages import rm_statistics as stage
from rmvalues.stages.rm_statistics import analysis as an
from rmvalues.stats import fit_mixed_model

# ---------------------------------------------------------------------------------------------------------
# Upstream runs written for the tests (each with its manifest, as the hand-off checks require)
# ---------------------------------------------------------------------------------------------------------


def write_corpora_run(root: Path, table: pd.DataFrame, run: str = "default") -> None:
    record = RunRecord(root / "corpora" / run, stage="corpora", run=run)
    record.write_parquet(table, "corpora.parquet")
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
    again = an.panel_tests(med, n_permutations=199, n_bootstrap=200, seed=0)
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
    out = an.split_vs_pooled(panels).iloc[0]
    assert out["reading_pooled"] == "gemma ranks higher"
    assert out["reading_virtue"] == "gemma ranks higher" and out["reading_vice"] == "llama ranks higher"
    assert bool(out["changes_reading"]) and out["changed_in"] == "vice"


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
    full = fit_mixed_model(med).table.set_index("term").loc[THREE_WAY, "coef"]
    assert loo["coef_all"].unique().tolist() == pytest.approx([full])
    assert loo["change"].to_numpy() == pytest.approx((loo["coef"] - full).to_numpy())
    assert (loo["ci_low"] < 20).all() and (loo["ci_high"] > 20).all()


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
    assert set(res.timings) >= {"load_scores", "ranks", "mixed_model", "panel_tests", "null_baseline"}
    with pytest.raises(
        ValueError, match="family \\['qwen'\\] has no scores; families present: \\['gemma', 'llama'\\]"
    ):
        stage.run(stage.Params.build(values, families=["gemma", "qwen"]))


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

    live = pub.scores[pub.scores["model"].str.contains("Gemma|Llama-3.1")].assign(source="live")
    write_scoring_run(root, live)
    both = stage.run(stage.Params.build(small, scores="both", run_name="both"))
    assert set(both.scores["source"]) == {"published", "live"}
    assert len(both.scores) == len(pub.scores) + len(live)
    assert both.unlabelled_words == pub.unlabelled_words
    assert any(rm.endswith(" [live]") for rm in both.medians["rm"])
