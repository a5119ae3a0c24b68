"""The audit stage: per-RM statistics computed as the statistics chapter computes them, the placement
arithmetic against hand-computed values, the audited RM's resampling, a tiny local RM audited end to end (its
page executed), and the refusals of bad input before any work.

Models are tiny RANDOM models built in-process (tests/tinymodels.py) and registered in an extra registry file;
the published scores come from the offline data mirror."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tinymodels as T

from rmvalues.core.errors import ParameterError
from rmvalues.data.corpora import corpora_input, read_corpora_table
from rmvalues.data.scores import labels_of, load_published_scores
from rmvalues.stages import audit, scoring
from rmvalues.stages.audit import placement as pl
from rmvalues.stages.rm_statistics import rm_level
from rmvalues.stats import all_median_ranks, rank_scores

ROOT = Path(__file__).resolve().parents[1]
GRM = "Ray2333/GRM-gemma2-2B-rewardmodel-ft"


def _published(results_root: Path, corpora: list[str]) -> pd.DataFrame:
    table, _ = read_corpora_table(corpora_input(), results_root, corpora)
    return load_published_scores(labels_of(table, corpora), corpora)


def _as_new(scores: pd.DataFrame, model: str) -> pd.DataFrame:
    """One published RM's scores as if a scoring run had produced them for a new RM."""
    out = scores[scores["model"] == model].copy()
    out["model"], out["source"] = "as-new", "live"
    return out.reset_index(drop=True)


# -- the audit's statistics are the statistics chapter's ---------------------------------------------------------
def test_a_published_rm_fed_through_the_audit_equals_the_statistics_chapter(corpora_results):
    published = _published(corpora_results, ["big2_nouns", "mfd2"])
    # the statistics chapter's per-RM values (published scores, all prompts, the two families)
    chapter = rm_level.rm_contrasts(all_median_ranks(rank_scores(published)), ["gemma", "llama"])
    chapter = chapter[chapter["rm"] == GRM]
    # the audit path: the RM's scores as live scores, compared on the common words and prompts
    live, refs = pl.common_design(_as_new(published, GRM), published)
    assert len(refs) == len(published)  # every word and prompt kept: nothing to restrict
    mine = pl.audited_values(live)
    key = ["corpus", "analysis", "subcategory", "statistic"]
    both = chapter.merge(mine, on=key, suffixes=("_chapter", "_audit"))
    assert len(both) == len(chapter) == len(mine) == 1 + 5 + 10  # Big Two; MFD pooled; MFD virtue and vice
    np.testing.assert_allclose(both["D_audit"], both["D_chapter"], rtol=0, atol=1e-12)
    # the reference values of the audit are the chapter's too
    ref = pl.audited_values(refs)
    merged = chapter.merge(ref[ref["rm"] == GRM], on=key)
    np.testing.assert_allclose(merged["D_x"], merged["D_y"], rtol=0, atol=1e-12)
    # draw 0 of the resampling (the identity) reproduces the point estimates with the vectorized path
    draws = pl.bootstrap_values(live, 3, seed=0)
    zero = draws[draws["draw"] == 0].merge(mine, on=key)
    assert len(zero) == len(mine)
    np.testing.assert_allclose(zero["D_x"], zero["D_y"], rtol=0, atol=1e-9)


def test_the_reference_values_follow_the_audited_words_and_prompts(corpora_results):
    """Ranks depend on the word set: the references are recomputed on the audited RM's words and prompts."""
    published = _published(corpora_results, ["big2_nouns"])
    new = _as_new(published, GRM)
    words = sorted(new["word"].unique())[::2]
    new = new[new["word"].isin(words) & new["prompt_id"].isin(["best_ever_one", "worst_ever_one"])]
    live, refs = pl.common_design(new, published)
    assert set(refs["word"]) == set(words) and set(refs["prompt_id"]) == {"best_ever_one", "worst_ever_one"}
    ref = pl.audited_values(refs)
    mine = pl.audited_values(live)
    assert math.isclose(
        float(ref.loc[ref["rm"] == GRM, "D"].iloc[0]), float(mine["D"].iloc[0]), abs_tol=1e-12
    )


# -- the placement arithmetic by hand -----------------------------------------------------------------------------
def test_percentile_distance_and_prediction_by_hand():
    refs = [1.0, 2.0, 3.0, 4.0]
    assert pl.percentile(2.5, refs) == 50.0
    assert pl.percentile(2.0, refs) == 37.5  # one below, one tie counted half: (1 + 0.5) / 4
    assert pl.percentile(0.0, refs) == 0.0 and pl.percentile(9.0, refs) == 100.0
    sd = math.sqrt(5 / 3)  # deviations -1.5, -0.5, 0.5, 1.5: (2.25 + 0.25) * 2 / 3
    assert math.isclose(pl.distance(5.0, refs), 2.5 / sd)
    assert (pl.position(0.5, refs), pl.position(2.2, refs), pl.position(4.5, refs)) == (
        "below",
        "within",
        "above",
    )
    ref = pd.DataFrame({"corpus": "c", "analysis": "pooled", "subcategory": None, "statistic": "D(B)",
                        "category": "B", "versus": "A", "rm": list("wxyz"), "family": "f", "D": refs})  # fmt: skip
    fam = pl.family_summary(ref).iloc[0]
    assert (fam["n_family"], fam["family_min"], fam["family_max"], fam["family_mean"]) == (4, 1.0, 4.0, 2.5)
    assert math.isclose(fam["family_sd"], sd)
    half = 3.182446305284263 * sd * math.sqrt(1 + 1 / 4)  # t(3, 0.975)
    assert math.isclose(fam["pred_high"], 2.5 + half, rel_tol=1e-9)
    limits = pl.reference_limits(4)
    assert limits["p_beyond_range"] == 0.4 and limits["n_needed"] == 39
    assert math.isclose(pl.reference_limits(6)["p_beyond_range"], 2 / 7)


def test_placement_intervals_and_leave_one_out_by_hand():
    ref = pd.DataFrame({"corpus": "c", "analysis": "pooled", "subcategory": None, "statistic": "D(B)",
                        "category": "B", "versus": "A", "rm": list("wxyz"), "family": "f",
                        "D": [1.0, 2.0, 3.0, 10.0]})  # fmt: skip
    audited = ref.iloc[:1].assign(rm="new", family="g", D=5.0)
    draws = pd.DataFrame({"corpus": "c", "analysis": "pooled", "subcategory": None, "statistic": "D(B)",
                          "rm": "new", "draw": range(5), "D": [5.0, 0.0, 2.5, 5.0, 11.0]})  # fmt: skip
    row = pl.placement(audited, ref, draws).iloc[0]
    assert row["percentile"] == 75.0 and row["position"] == "within"
    boot = np.array([0.0, 2.5, 5.0, 11.0])  # draw 0 (the point) is left out of the interval
    assert math.isclose(row["D_low"], np.quantile(boot, 0.025)) and math.isclose(
        row["D_high"], np.quantile(boot, 0.975)
    )
    mean, sd = 4.0, float(np.std([1, 2, 3, 10], ddof=1))
    assert math.isclose(row["distance"], (5 - mean) / sd)
    assert math.isclose(row["distance_high"], (np.quantile(boot, 0.975) - mean) / sd)
    pcts = [pl.percentile(x, [1, 2, 3, 10]) for x in boot]  # 0, 50, 75, 100
    assert math.isclose(row["percentile_low"], np.quantile(pcts, 0.025))
    loo = pl.leave_one_out(audited, ref)
    assert list(loo["left_out"]) == list("wxyz")
    assert list(loo["position"]) == ["within", "within", "within", "above"]  # without z (10) it is above all
    summary = pl.loo_summary(loo).iloc[0]
    assert summary["n_position_changed"] == 1 and not summary["position_stable"]
    assert (summary["max_low"], summary["max_high"]) == (3.0, 10.0)


def test_several_audited_rms_get_one_row_each_and_one_row_of_the_figure():
    ref = pd.DataFrame({"corpus": "c", "analysis": "pooled", "subcategory": None, "statistic": "D(B)",
                        "category": "B", "versus": "A", "rm": list("wxyz"), "family": ["f", "f", "g", "g"],
                        "D": [1.0, 2.0, 3.0, 10.0]})  # fmt: skip
    audited = pd.concat(
        [ref.iloc[:1].assign(rm="one", family="h", D=1.5), ref.iloc[:1].assign(rm="two", D=11.0)]
    )
    draws = pd.DataFrame({"corpus": "c", "analysis": "pooled", "subcategory": None, "statistic": "D(B)",
                          "rm": ["one"] * 3 + ["two"] * 3, "draw": [0, 1, 2] * 2,
                          "D": [1.5, 1.0, 2.0, 11.0, 9.0, 12.0]})  # fmt: skip
    placed = pl.placement(audited, ref, draws)
    assert len(placed) == 4 and list(placed.groupby("rm").size()) == [2, 2]  # one row per RM and family
    two = placed[(placed["rm"] == "two") & (placed["family"] == "g")].iloc[0]
    assert (two["position"], two["percentile"], two["D_low"]) == ("above", 100.0, 9.0 + 0.025 * 3.0)
    one = placed[(placed["rm"] == "one") & (placed["family"] == "f")].iloc[0]
    assert (one["position"], one["percentile"]) == ("within", 50.0)
    fig = audit.figures.plot_placement(ref, placed)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["f (2 RMs)", "g (2 RMs)", "audited: one", "audited: two"]


# -- a tiny local RM audited end to end ---------------------------------------------------------------------------
@pytest.fixture
def tiny_audit(tmp_path, corpora_results):
    """A results root with the corpora run, a scoring run of a tiny local RM (every Big Two noun, two prompts)
    and the registry file naming it."""
    root = tmp_path / "results"
    shutil.copytree(corpora_results / "corpora", root / "corpora")
    folder = T.save_tiny_model(tmp_path / "tiny-llama-rm", "llama", "reward-model")
    entries = {"tiny-llama-rm": T.registry_entry(folder, "llama", "reward-model")}
    entries["absent-rm"] = T.registry_entry(tmp_path / "nowhere", "llama", "reward-model")
    reg = T.write_registry(tmp_path / "models.yaml", entries)
    params = scoring.Params.build(
        models=["tiny-llama-rm"], training_run="", extra_registry=[str(reg)], corpora=["big2_nouns"],
        prompts=["best_ever_one", "worst_ever_one"], batch_size=64, results_root=str(root), run_name="tiny",
    )  # fmt: skip
    assert scoring.run(params, progress=False).ok
    return root, reg


def _audit_params(root: Path, reg: Path, **kw) -> audit.Params:
    base = dict(models=["tiny-llama-rm"], training_run="", extra_registry=[str(reg)], scoring_run="tiny",
                n_bootstrap=50, results_root=str(root))  # fmt: skip
    return audit.Params.build({**base, **kw})


def test_a_tiny_local_rm_is_audited_and_gets_a_page(tiny_audit, tmp_path, monkeypatch):
    import nbformat
    import papermill

    root, reg = tiny_audit
    res = audit.run(_audit_params(root, reg))
    out = root / "audit" / "default"
    assert set(res.placed["family"]) == {"gemma", "llama"} and set(res.placed["rm"]) == {"tiny-llama-rm"}
    assert res.design.iloc[0]["n_prompts"] == 2 and res.design.iloc[0]["n_words"] == 263
    assert (res.placed["n_family"].to_numpy() == [4, 6]).all()
    assert res.scoring.iloc[0]["chat_template"] and res.scoring.iloc[0]["dtype"] == "float32"
    own = res.tokenization[res.tokenization["role"] == "audited"].iloc[0]
    assert own["n_words"] == 263 and own["n_one_token"] + own["n_split"] == 263
    manifest = json.loads((out / "manifest.json").read_text())
    assert "scoring/tiny/scores.parquet" in manifest["inputs"] and "placement.csv" in manifest["outputs"]
    # the page: the notebook executed on these parameters shows the figure and the glued values
    page = tmp_path / "audit.ipynb"
    monkeypatch.setenv(
        "MPLBACKEND", "module://matplotlib_inline.backend_inline"
    )  # figures inline, as the runner
    papermill.execute_notebook(
        str(ROOT / "notebooks" / "audit.ipynb"), str(page), cwd=str(ROOT), progress_bar=False,
        parameters=dict(models=["tiny-llama-rm"], training_run="", extra_registry=[str(reg)],
                        scoring_run="tiny", n_bootstrap=50, results_root=str(root), run_name="page"),
    )  # fmt: skip
    nb = nbformat.read(page, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    glued = {
        k for o in outputs for k in o.get("metadata", {}).get("scrapbook", {}).values() if isinstance(k, str)
    }
    assert {"first_D", "fam_a_percentile", "fam_b_distance_ci", "tok_split", "template"} <= glued


# -- refusals before any work --------------------------------------------------------------------------------
def test_bad_input_is_refused_before_any_work(tiny_audit, tmp_path):
    root, reg = tiny_audit
    out = str(tmp_path / "never")
    cases = {
        "not a reward model": (dict(models=["gemma3-270m"]), r"'gemma3-270m' is a causal-lm, not a reward model"),
        "unknown": (dict(models=["my-rm"]), r"'my-rm' is not a registered model; registered reward models: .*"
                    r"tiny-llama-rm.*register it in config/models.yaml"),
        "weights": (dict(models=["absent-rm"]), r"absent-rm.*nowhere does not exist.*make its weights available"),
        "corpora": (dict(corpora=["big2_expanded"]), r"\['big2_expanded'\] have no published reference scores.*"
                    r"corpora=\['big2_nouns'\]"),
        "not scored": (dict(corpora=["mfd2"]), r"scoring run 'tiny' holds no scores of \['tiny-llama-rm on mfd2'\]"),
    }  # fmt: skip
    for name, (kw, pattern) in cases.items():
        with pytest.raises(ParameterError, match=pattern):
            _audit_params(root, reg, output_dir=out, **kw)
        assert not Path(out).exists(), name


def test_bad_input_is_refused_before_planned_upstream_runs_execute():
    """While the scoring (or training) run an audit needs is still to run, what no upstream output can change is
    refused at once (the runner calls check_planned before it defers the rest of the check)."""
    planned = {"scoring/x": {}}
    p = audit.Params.parse({"models": ["gemma3-270m"]})
    assert any("'gemma3-270m' is a causal-lm, not a reward model" in m for m in p.check_planned(planned))
    p = audit.Params.parse({"corpora": ["big2_dictionary"]})
    assert any("have no published reference scores" in m for m in p.check_planned(planned))
    p = audit.Params.parse({"models": ["my-rm"], "training_run": ""})
    assert any("'my-rm' is not a registered model" in m for m in p.check_planned(planned))
    # a name the planned training run may register is left to the check after it has run
    assert audit.Params.parse({"models": ["my-rm"]}).check_planned(planned) == []


def test_a_named_audit_asks_the_runner_for_a_scoring_run_that_holds_its_rms():
    """The audit declares what its scoring run must hold, so the runner reuses a run that holds the RM's scores
    or makes one that does (`make audit MODEL=...`)."""
    inp = audit.Params.parse({"models": ["a", "b"], "corpora": ["big2_nouns"]}).scoring_input()
    assert inp.satisfied_by({"models": ["a", "b", "c"], "corpora": ["big2_nouns"], "candidates": "words",
                             "training_run": "default"})  # fmt: skip
    assert not inp.satisfied_by({"models": ["a"], "corpora": ["big2_nouns"], "candidates": "words",
                                 "training_run": "default"})  # fmt: skip
    assert inp.required_parameters()["models"] == ["a", "b"]
