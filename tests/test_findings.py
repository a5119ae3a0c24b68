"""The findings hand-off and page: the shared form, the stage that gathers the chapters' findings, the
chapters' findings computed from hand-made tables, and the page's place in the book."""

from __future__ import annotations

import json
import math
import types

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from rmvalues.core.errors import MissingInputError
from rmvalues.core.findings import FILE, Finding, findings_json, read_findings, write_findings
from rmvalues.core.manifest import RunRecord
from rmvalues.stages import findings as stage
from rmvalues.stats import (
    cohen_d_interval,
    framing_contrast,
    framing_contrast_prompts,
    paired_gap_difference,
    prompt_gaps,
    proportion_difference,
)


def _finding(key: str = "a", **kw) -> Finding:
    base = dict(key=key, question="Q?", answer="An answer.", estimate="1.0")
    return Finding(**{**base, **kw})


# -- the form --------------------------------------------------------------------------------------------------
def test_finding_round_trip_and_validation(tmp_path):
    f = _finding(value=1.5, low=0.5, high=2.5, reference=0.0, scale="d", label="x")
    path = tmp_path / FILE
    path.write_bytes(findings_json([f, _finding("b", value=float("nan"))]))
    back = read_findings(path)
    assert back[0] == f and back[0].plottable
    assert back[1].value is None and not back[1].plottable  # NaN is "no number", in JSON too
    with pytest.raises(ValueError, match="repeat"):
        findings_json([f, f])
    with pytest.raises(ValueError, match="key"):
        _finding("bad key")
    with pytest.raises(ValueError, match="empty"):
        _finding(answer=" ")
    with pytest.raises(ValueError, match="reversed"):
        _finding(low=2.0, high=1.0)
    path.write_text(json.dumps([{"key": "a", "question": "Q", "answer": "A", "estimate": "1", "typo": 1}]))
    with pytest.raises(ValueError, match="finding 0"):
        read_findings(path)


# -- the statistics under the chapters' findings ------------------------------------------------------------------
def test_cohen_d_interval_by_hand():
    d, n_a, n_b = 0.5, 20, 30
    se = math.sqrt(50 / 600 + 0.25 / 100)  # sqrt((n_a + n_b)/(n_a n_b) + d^2/(2(n_a + n_b)))
    low, high = cohen_d_interval(d, n_a, n_b)
    assert low == pytest.approx(0.5 - 1.959964 * se, abs=1e-6)
    assert high == pytest.approx(0.5 + 1.959964 * se, abs=1e-6)
    assert all(math.isnan(x) for x in cohen_d_interval(0.2, 0, 5))


def test_proportion_difference_contains_estimate_and_is_antisymmetric():
    diff, low, high = proportion_difference(30, 40, 20, 40)
    assert diff == pytest.approx(0.25)
    assert low < diff < high
    d2, l2, h2 = proportion_difference(20, 40, 30, 40)
    assert (d2, l2, h2) == pytest.approx((-0.25, -high, -low), abs=1e-9)


#: The paper's adjectives per framing and frames: prompt ``i`` of a framing is ``<adjective i % 3>_<frame i // 3>``.
ADJECTIVES = {"positive": ("best", "greatest", "good"), "negative": ("worst", "bad", "terrible")}
FRAMES = ("ever", "world", "time")


def _medians(
    gap_pos: list[float], gap_neg: list[float], rm: str = "rm1", family: str = "gemma"
) -> pd.DataFrame:
    """Median ranks of two categories whose Agency - Communion gap per prompt is given; prompt ``i`` of a
    framing has the framing's adjective ``i % 3`` (so prompts 0 and 3 share an adjective)."""
    rows = []
    for framing, gaps in (("positive", gap_pos), ("negative", gap_neg)):
        for i, g in enumerate(gaps):
            pid = f"{ADJECTIVES[framing][i % 3]}_{FRAMES[i // 3]}_one"
            rows += [
                dict(
                    corpus="big2_nouns",
                    analysis="pooled",
                    rm=rm,
                    family=family,
                    prompt_id=pid,
                    framing=framing,
                    category="Agency",
                    median_rank=50.0 + g,
                ),
                dict(
                    corpus="big2_nouns",
                    analysis="pooled",
                    rm=rm,
                    family=family,
                    prompt_id=pid,
                    framing=framing,
                    category="Communion",
                    median_rank=50.0,
                ),
            ]
    return pd.DataFrame(rows)


def test_framing_contrast_prompts_is_welch_over_prompts():
    pos, neg = [5.0, 7.0, 9.0, 4.0], [1.0, -2.0, 0.0]
    gaps = prompt_gaps(_medians(pos, neg), "Communion")
    assert sorted(gaps["gap"]) == sorted(pos + neg)  # gap = mean rank of the others - rank of Communion
    c = framing_contrast_prompts(gaps)
    assert c.estimate == pytest.approx(np.mean(pos) - np.mean(neg))
    ref = sps.ttest_ind(pos, neg, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert (c.ci_low, c.ci_high, c.p) == pytest.approx((ci.low, ci.high, ref.pvalue))
    assert (c.n_positive, c.n_negative) == (4, 3)
    same = framing_contrast(prompt_gaps(_medians([4.0, 4.0, 4.0], [1.0, 1.0]), "Communion"))
    assert (same.estimate, same.ci_low, same.ci_high) == (3.0, 3.0, 3.0) and math.isnan(same.p)  # no variance
    one = framing_contrast(prompt_gaps(_medians([3.0], [1.0]), "Communion"))
    assert one.estimate == pytest.approx(2.0) and math.isnan(one.ci_low)  # no interval from one adjective


def test_framing_contrast_averages_each_adjective_first():
    pos, neg = [5.0, 7.0, 9.0, 4.0], [1.0, -2.0, 0.0]  # best: 5 and 4 (mean 4.5), greatest 7, good 9
    c = framing_contrast(prompt_gaps(_medians(pos, neg), "Communion"))
    means_pos, means_neg = [4.5, 7.0, 9.0], [1.0, -2.0, 0.0]
    assert c.estimate == pytest.approx(np.mean(means_pos) - np.mean(means_neg))  # each adjective weighs one
    v_pos, v_neg = np.var(means_pos, ddof=1), np.var(means_neg, ddof=1)
    se2 = v_pos / 3 + v_neg / 3
    df = se2**2 / ((v_pos / 3) ** 2 / 2 + (v_neg / 3) ** 2 / 2)
    half = sps.t.ppf(0.975, df) * math.sqrt(se2)
    assert (c.ci_low, c.ci_high, c.df) == pytest.approx((c.estimate - half, c.estimate + half, df))
    assert (c.n_positive, c.n_negative, c.n_prompts, c.unit) == (3, 3, 7, "adjective")
    # every positive adjective mean is above every negative one: the most extreme of the 20 splits
    assert (c.p_exact, c.p_min, c.n_splits) == pytest.approx((0.1, 0.1, 20))


def test_paired_gap_difference_is_difference_of_rms_per_prompt():
    a = _medians([1.0, 2.0], [0.0, 1.0], rm="a")
    b = _medians([4.0, 4.0], [1.0, 0.0], rm="b")
    gaps = prompt_gaps(pd.concat([a, b]), "Communion")
    diff = paired_gap_difference(gaps, "a", "b").set_index("prompt_id")["gap"]
    assert diff.to_dict() == {
        "best_ever_one": 3.0, "greatest_ever_one": 2.0, "worst_ever_one": 1.0, "bad_ever_one": -1.0
    }  # fmt: skip
    c = framing_contrast(paired_gap_difference(gaps, "a", "b"))
    assert c.estimate == pytest.approx(2.5 - 0.0)
    ref = sps.ttest_ind([3.0, 2.0], [1.0, -1.0], equal_var=False)  # one prompt per adjective here
    assert (c.ci_low, c.ci_high) == pytest.approx(tuple(ref.confidence_interval(0.95)))


# -- the chapters' findings ------------------------------------------------------------------------------------
#: Two prompts per adjective: gem's positive adjective means best (5 + 3) / 2 = 4, greatest 7, good 10,
#: negative worst (1 + 3) / 2 = 2, bad -2, terrible -1; smol's gaps are the same under both framings.
GEM_POS, GEM_NEG = [5, 7, 9, 3, 7, 11], [1, -2, 0, 3, -2, -2]
SMOL = [1, 2, 3, 1, 2, 3]


def _welch_by_hand(pos: list[float], neg: list[float]) -> tuple[float, float, float]:
    """Estimate and 95% Welch interval of mean(pos) - mean(neg), written out."""
    v_pos, v_neg = np.var(pos, ddof=1) / len(pos), np.var(neg, ddof=1) / len(neg)
    df = (v_pos + v_neg) ** 2 / (v_pos**2 / (len(pos) - 1) + v_neg**2 / (len(neg) - 1))
    est = np.mean(pos) - np.mean(neg)
    half = sps.t.ppf(0.975, df) * math.sqrt(v_pos + v_neg)
    return est, est - half, est + half


def _two_models() -> pd.DataFrame:
    return pd.concat([_medians(GEM_POS, GEM_NEG, "gem", "gemma"), _medians(SMOL, SMOL, "smol", "smollm")])


def test_scoring_findings_per_rm_and_pair():
    from rmvalues.stages.scoring.findings import contrast_table, findings

    med = _two_models()
    out = findings(types.SimpleNamespace(medians=med))
    assert [f.key for f in out] == ["big2_nouns_gem", "big2_nouns_smol", "big2_nouns_pair"]
    est, low, high = _welch_by_hand([4, 7, 10], [2, -2, -1])  # over the adjective means
    assert est == pytest.approx(7.0 - (-1 / 3))
    assert (out[0].value, out[0].low, out[0].high) == pytest.approx((est, low, high))
    assert "gain" in out[0].answer and "gemma base" in out[0].answer
    assert "3 positive and 3 negative adjectives, 12 prompts" in out[0].answer
    assert "20 splits of the adjectives gives p = 0.10 (the smallest it can give: 0.10)" in out[0].answer
    assert "the interval excludes zero" in out[0].answer and "as the paper did" in out[0].answer
    assert out[0].unit == "6 adjectives (3 positive, 3 negative) over 12 prompts, one RM"
    assert out[1].value == pytest.approx(0.0) and "inconclusive" in out[1].answer
    # smol - gem per prompt, then per adjective: positive best -3, greatest -5, good -7; negative -1, 4, 4
    est, low, high = _welch_by_hand([-3, -5, -7], [-1, 4, 4])
    assert (out[2].value, out[2].low, out[2].high) == pytest.approx((est, low, high))
    assert out[2].value == pytest.approx(out[1].value - out[0].value)  # balanced: the difference of the D
    assert "one reward model per base model" in out[2].answer.lower()
    table = contrast_table(med)
    comm = table[table["category"] == "Communion"].set_index("rm")
    assert list(comm.index) == ["gem", "smol", "smol \u2212 gem"]
    assert comm.loc["gem", "ci_high_prompts"] - comm.loc["gem", "ci_low_prompts"] < high - low
    assert findings(types.SimpleNamespace(medians=pd.DataFrame())) == []


def test_implicit_findings_pair_and_planted_check():
    from rmvalues.stages.implicit.findings import findings

    med = _two_models()
    med["pair"], med["n_words"] = "gem|smol", 3
    val = pd.DataFrame(
        [
            dict(level="word", reference="other", metric="word_mwlr", n_prompts=9, n_planted=4, n_candidates=40,
                 auc_planted=0.5, auc_untuned=0.5, auc_sham=0.5, diff_sham=0.0, ci_low_sham=-0.1,
                 ci_high_sham=0.1, passes=False),
            dict(level="word", reference="gem", metric="word_mwlr", n_prompts=9, n_planted=4, n_candidates=40,
                 auc_planted=0.9, auc_untuned=0.5, auc_sham=0.6, diff_sham=0.3, ci_low_sham=0.1,
                 ci_high_sham=0.45, passes=True),
            dict(level="word", reference="gem", metric="word_sum", n_prompts=9, n_planted=4, n_candidates=40,
                 auc_planted=0.7, auc_untuned=0.6, auc_sham=0.6, diff_sham=0.1, ci_low_sham=-0.1,
                 ci_high_sham=0.2, passes=False),
        ]
    )  # fmt: skip
    res = types.SimpleNamespace(
        single_medians=med, validation=val, params=types.SimpleNamespace(planted_model="gem")
    )
    pair, planted = findings(res)
    assert pair.key == "big2_nouns_pair"
    assert pair.value == pytest.approx(0.0 - (7.0 - (-1 / 3)))  # smol - gem, paired by prompt
    est, low, high = _welch_by_hand([-3, -5, -7], [-1, 4, 4])  # per prompt, then per adjective
    assert (pair.value, pair.low, pair.high) == pytest.approx((est, low, high))
    assert "6 big2_nouns words" in pair.answer  # the largest word count of each category, summed
    assert "3 positive and 3 negative adjectives, 12 prompts" in pair.answer
    assert "the smallest it can give 0.10" in pair.baseline and "over adjective means" in pair.baseline
    assert pair.unit.startswith("6 adjectives (3 positive, 3 negative) over 12 prompts")
    assert planted.key == "planted" and planted.value == pytest.approx(
        0.3
    )  # against the untuned model itself
    assert (planted.low, planted.high) == (0.1, 0.45) and "passes" in planted.answer
    assert "the other 36 candidates" in planted.answer and "against gem" in planted.answer
    empty = types.SimpleNamespace(single_medians=pd.DataFrame(), validation=pd.DataFrame(), params=res.params)
    assert findings(empty) == []


def test_training_findings_compare_bases_at_largest_quantity():
    from rmvalues.stages.training.findings import findings

    comp = pd.DataFrame(
        [
            dict(data="hh", quantity=q, framing=f, base_a="gem", base_b="smol", gap_a=3.0, gap_b=1.0,
                 difference=2.0 + q, n_a=5, n_b=5, ci_low=0.5, ci_high=3.5 + q, p_perm=0.0079, p_min=0.0079)
            for q in (40, 400)
            for f in ("positive", "negative")
        ]
    )  # fmt: skip
    final = pd.DataFrame(
        [
            dict(base_model=b, data="hh", quantity=400, framing=f, null_low=-1.0, null_high=1.0)
            for b in ("gem", "smol")
            for f in ("positive", "negative")
        ]
    )
    out = findings(
        types.SimpleNamespace(comparison=comp, final=final, spec=types.SimpleNamespace(method="head"))
    )
    assert [f.key for f in out] == ["bases_hh_400_negative", "bases_hh_400_positive"]
    assert out[0].value == 402.0 and (out[0].low, out[0].high) == (0.5, 403.5)
    assert "p = 0.008" in out[0].baseline and "gem [−1.0, 1.0]" in out[0].baseline
    assert "5 + 5 trained reward models" in out[0].unit
    assert (
        "allow p = 0.008 at the smallest" in out[0].answer
        and "linear heads on a frozen base" in out[0].answer
    )
    assert findings(types.SimpleNamespace(comparison=None, final=final)) == []


def _statistics_namespace(verdict: str, label: str, separation: str = "overlap") -> types.SimpleNamespace:
    """A statistics run's tables for one Big Two verdict (the published design: 4 gemma, 6 llama RMs)."""
    key = dict(corpus="big2_nouns", analysis="pooled", subcategory=None, statistic="D(Communion)")
    row = dict(
        **key,
        family_a="gemma",
        family_b="llama",
        mean_a=58.8,
        mean_b=39.0,
        difference=-19.8,
        p_exact=0.076,
        n_splits=210,
        ci_low=-41.7,
        ci_high=3.3,
        category="Communion",
        versus="Agency",
        n_rms_a=4,
        n_rms_b=6,
        n_tests=1,
        p_corrected=0.076,
        p_min=0.0095,
        p_min_corrected=0.0095,
        verdict=verdict,
        separation=separation,
    )
    models = pd.DataFrame([dict(**key, method="random intercept (paper)", p=1e-15, n_units=1080)])
    labels = pd.DataFrame(
        [dict(**key, label=label, share_same_sign=0.94, share_significant=0.27, n_specifications=800)]
    )
    lineage = pd.DataFrame(
        [dict(**key, stratified_difference=-15.1, p_stratified_corrected=0.23,
              survives_lineage="same sign, not significant")]
    )  # fmt: skip
    power = pd.DataFrame(
        [dict(**key, n_a=4, n_b=6, effect_fraction=1.0, test="exact", power=0.49),
         dict(**key, n_a=8, n_b=8, effect_fraction=1.0, test="exact", power=0.76)]
    )  # fmt: skip
    needed = pd.DataFrame([dict(**key, effect_fraction=1.0, n_per_family=10.0)])
    crossed = pd.DataFrame(
        [dict(**key, resample="RMs and words (crossed)", ci_low=-44.4, ci_high=6.0),
         dict(**key, resample="RMs only", ci_low=-33.8, ci_high=-5.2)]
    )  # fmt: skip
    null = pd.DataFrame(
        [dict(corpus="big2_nouns", statistic="range", null="all words", framing=f, p_perm=p)
         for f, p in (("positive", 0.32), ("negative", 0.23))]
    )  # fmt: skip
    return types.SimpleNamespace(
        rm_level=pd.DataFrame([row]), models=models, curve_labels=labels, lineage_adjusted=lineage,
        power=power, power_needed=needed, crossed=crossed, null_summary=null,
    )  # fmt: skip


def test_statistics_findings_from_rm_level_table():
    from rmvalues.stages.rm_statistics.findings import findings

    (f,) = findings(_statistics_namespace("inconclusive", "inconclusive"))
    assert f.key == "big2_nouns_family" and f.value == -19.8 and (f.low, f.high) == (-41.7, 3.3)
    assert "inconclusive in the primary specification" in f.answer and "1,080 (RM, prompt) points" in f.answer
    assert "no difference" not in f.answer
    assert f.unit == "10 reward models (4 gemma, 6 llama)"
    assert "p < 0.001" in f.baseline and "0.076" in f.baseline
    # how robust: the curve's label and shares, the lineage-adjusted estimate, the power at the observed
    # design (not the 8 + 8 row), the crossed interval (not the RM-only one) and the word-label null
    assert f.robustness == (
        "specification curve: inconclusive (94% of 800 specifications share the primary estimate's sign; 27% "
        "have p < 0.05); within lineages −15.1 ranks (stratified exact p = 0.23): same sign, not significant; "
        "power 0.49 at the observed effect (10 RMs per family needed for 80%); RMs and words resampled "
        "together: 95% CI [−44.4, 6.0]; word-label null p = 0.32 (positive), p = 0.23 (negative)"
    )


@pytest.mark.parametrize("label", ["robust", "fragile", "inconclusive"])
def test_statistics_finding_verdict_is_its_curve_label(label):
    """A verdict significant in the primary specification reads as its specification curve labels it: the
    answer never calls a difference established when the curve says fragile or inconclusive."""
    from rmvalues.stages.rm_statistics.findings import READINGS, findings

    (f,) = findings(
        _statistics_namespace("significant", label, "perfect: every llama RM below every gemma RM")
    )
    assert f"Across reasonable analyses the verdict is {READINGS[label]} (" in f.answer
    assert "significant in the primary specification; the families are perfectly separated" in f.answer
    assert ("establish" in f.answer) is False
    assert f.robustness.startswith(f"specification curve: {label} (")


def test_corpora_findings_interval_by_hand():
    from rmvalues.stages.corpora.findings import findings

    balance = pd.DataFrame(
        [
            dict(
                corpus="big2_nouns",
                variable=v,
                group_a="Agency",
                group_b="Communion",
                n_a=40,
                n_b=60,
                mean_a=1.0,
                mean_b=2.0,
                cohen_d=d,
                p_value=0.01,
                category=None,
            )
            for v, d in (("zipf_frequency", -0.6), ("valence", 0.1))
        ]
    )
    table = pd.DataFrame({"corpus": ["big2_nouns"], "word": ["x"]})
    res = types.SimpleNamespace(table=table, balance=balance, token_share=pd.DataFrame())
    freq, val = findings(res)
    low, high = cohen_d_interval(-0.6, 40, 60)
    assert (freq.low, freq.high) == pytest.approx((low, high)) and high < 0
    assert "lower in word frequency" in freq.answer
    assert "do not differ detectably" in val.answer  # its interval includes zero


# -- the stage ---------------------------------------------------------------------------------------------------
def _upstream(root, stage_name: str, run: str, findings: list[Finding]) -> None:
    rec = RunRecord(root / stage_name / run, stage=stage_name, run=run)
    write_findings(rec, findings)
    rec.finish()


def test_stage_gathers_findings_in_reading_order(tmp_path):
    _upstream(tmp_path, "corpora", "default", [_finding("c1", value=0.2, low=0.1, high=0.3, reference=0.0)])
    _upstream(tmp_path, "statistics", "fork", [_finding("s1"), _finding("s2")])
    params = stage.Params.build(
        {
            "results_root": str(tmp_path),
            "statistics_run": "fork",
            "implicit_run": "",
            "training_run": "",
            "scoring_run": "",
        }
    )
    res = stage.run(params)
    assert list(res.table["key"]) == ["s1", "s2", "c1"]  # statistics first: the page's reading order
    assert list(res.table["run"]) == ["fork", "fork", "default"]
    manifest = json.loads((res.output_dir / "manifest.json").read_text())
    assert set(manifest["inputs"]) == {"statistics/fork/findings.json", "corpora/default/findings.json"}
    assert {"findings.parquet", "tables/findings.csv"} <= set(manifest["outputs"])
    keys = stage.text.key_numbers(res)
    assert keys["n_findings"] == "3" and keys["n_chapters"] == "2"
    assert keys["corpora_c1_estimate"] == "1.0"
    assert "{doc}`Published RMs (fork) <statistics--fork>`" in keys["statistics_answer"]
    assert keys["implicit_answer"].startswith("This page leaves out")
    assert set(stage.text.markdown_keys()) <= set(keys)
    table = stage.text.summary_table(res)
    assert list(table.columns)[0] == "Chapter" and len(table) == 3
    fig = stage.figures.plot_estimates(res.table)
    assert len(fig.axes) == 1  # only c1 has an interval


def test_stage_refuses_a_changed_upstream_file(tmp_path):
    _upstream(tmp_path, "corpora", "default", [_finding("c1")])
    (tmp_path / "corpora" / "default" / FILE).write_text("[]\n")
    params = stage.Params.build(
        {
            "results_root": str(tmp_path),
            "statistics_run": "",
            "implicit_run": "",
            "training_run": "",
            "scoring_run": "",
        }
    )
    with pytest.raises(MissingInputError, match="does not match its manifest"):
        stage.run(params)


def test_stage_needs_one_chapter():
    empty = {f"{c}_run": "" for c in stage.CHAPTERS}
    with pytest.raises(Exception, match="at least one chapter"):
        stage.Params.build(empty)


def test_findings_page_opens_the_book():
    from rmvalues.book.config import load_config
    from rmvalues.book.toc import toc

    config = load_config()
    assert config.stages["findings"].part == "overview"
    parts = toc(config, only_existing=False)["parts"]
    assert parts[0]["caption"] == "Overview"
    assert parts[0]["chapters"][0] == {"file": "book/generated/findings"}
    assert all(c["file"] != "book/generated/findings" for p in parts[1:] for c in p["chapters"])
