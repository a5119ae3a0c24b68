"""The implicit chapter's graded planted-word validation (rmvalues.stages.implicit.graded) and the glued values
of keys.py: AUCs and detection by hand, the metric comparison and the winner rule, monotone planting strength
on a tiny model, the parameters."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tinymodels as tm

from rmvalues import engine as L
from rmvalues.core.errors import ParameterError
from rmvalues.stages import implicit as stage
from rmvalues.stages.implicit import graded, keys, plant_finetune, validation

UNITS = ["p1", "p2", "c1", "c2", "c3", "c4", "s1"]
PLANTED, SHAM = {"p1": "p1", "p2": "p2"}, {"s1": "s1"}


def _panel(metric: str, planted: np.ndarray, sham: np.ndarray, untuned: np.ndarray) -> validation.Panel:
    return validation.Panel(
        "word", "ref", metric, UNITS, {"planted": planted, "sham": sham, "untuned": untuned}
    )


def _base(n_prompts: int = 3) -> np.ndarray:
    # candidates c1 > c2 > 0 (the planted words' untuned value) > c3 > c4 under every prompt; s1 on top
    return np.tile([0.0, 0.0, 2.0, 1.0, -1.0, -2.0, 5.0], (n_prompts, 1))


def test_detection_auc_by_hand():
    base = _base()
    lifted = base.copy()
    lifted[:, :2] += 1.5  # the planted words go above c2 but stay below c1: each outranks 3 of 4 candidates
    rows, boots, points = graded.detection_rows(
        [_panel("m", lifted, base, base)], PLANTED, SHAM, strength=1e-4, steps=2, n_bootstrap=50
    )
    r = rows[0]
    # untuned and sham: each planted word outranks c3, c4 (2 of 4): AUC 0.5; planted: 3 of 4 = 0.75
    assert (r["auc_planted"], r["auc_sham"], r["auc_untuned"]) == (0.75, 0.5, 0.5)
    assert r["excess"] == pytest.approx(0.25) and r["diff_untuned"] == pytest.approx(0.25)
    # the sham word s1 is no candidate; the prompts are identical, so every replicate is the point estimate
    assert (r["n_candidates"], r["n_planted"], r["n_prompts"]) == (6, 2, 3)
    assert r["ci_low_excess"] == r["ci_high_excess"] == pytest.approx(0.25)
    assert r["detected"] and (r["strength"], r["steps"]) == (1e-4, 2)
    assert np.allclose(boots["m"], 0.25) and points["m"] == pytest.approx(0.25)
    assert list(pd.DataFrame(rows, columns=graded.DETECTION_COLUMNS).columns) == graded.DETECTION_COLUMNS


def test_a_sham_that_lifts_as_much_is_no_detection_and_every_control_is_required():
    base = _base()
    lifted = base.copy()
    lifted[:, :2] += 1.5
    rows, _, _ = graded.detection_rows([_panel("m", lifted, lifted, base)], PLANTED, SHAM, 1e-3, 1, 50)
    assert rows[0]["excess"] == 0.0 and not rows[0]["detected"]  # above the untuned model, not above the sham
    lone = validation.Panel("word", "ref", "m", UNITS, {"planted": lifted, "untuned": base})
    with pytest.raises(ValueError, match=r"lacks the condition\(s\) \['sham'\]"):
        graded.detection_rows([lone], PLANTED, SHAM, 1e-3, 1, 10)


def test_metric_differences_use_the_same_draws_and_separate_a_strong_from_a_weak_metric():
    rng = np.random.default_rng(0)
    base = _base(8) + rng.normal(0, 0.01, (8, len(UNITS)))
    clean = base.copy()
    clean[:, :2] += 3.5  # the planted words on top of every candidate under every prompt: AUC 1
    noisy = base.copy()
    noisy[:, :2] += 0.5  # a weak plant: the planted words stay between c2 and c3, as under the sham: AUC 0.5
    panels = [
        _panel("clean", clean, base, base),
        _panel("noisy", noisy, base, base),
        _panel("twin", clean, base, base),
    ]
    _, boots, points = graded.detection_rows(panels, PLANTED, SHAM, 1e-4, 1, n_bootstrap=300, seed=4)
    diffs = pd.DataFrame(graded.metric_differences("word", 1e-4, boots, points, 300))
    by = diffs.set_index(["metric_a", "metric_b"])
    assert by.loc[("clean", "twin"), "difference"] == 0.0 and not by.loc[("clean", "twin"), "separated"]
    assert by.loc[("clean", "twin"), "ci_low"] == by.loc[("clean", "twin"), "ci_high"] == 0.0  # same draws
    assert by.loc[("clean", "noisy"), "difference"] == pytest.approx(0.5)  # excess 0.5 against 0
    assert by.loc[("clean", "noisy"), "separated"] and by.loc[("clean", "noisy"), "ci_low"] > 0
    assert by.loc[("noisy", "twin"), "ci_high"] < 0
    v = graded.winner(diffs, "word")
    # clean and twin tie: no single winner, both lead
    assert not v.conclusive and v.leaders == ("clean", "twin") and v.first_separating == 1e-4
    assert (v.n_separated, v.n_pairs) == (2, 3)
    assert "inconclusive between clean and twin" in keys.verdict_phrase(v)


def _diff(strength, a, b, lo, hi):
    return {"level": "word", "strength": strength, "metric_a": a, "metric_b": b, "excess_a": 0.0, "excess_b": 0.0,
            "difference": (lo + hi) / 2, "ci_low": lo, "ci_high": hi, "separated": lo > 0 or hi < 0,
            "n_bootstrap": 100}  # fmt: skip


def test_the_metric_that_detects_weaker_plants_wins():
    rows = [
        # weakest: nothing separates
        _diff(1e-6, "a", "b", -0.1, 0.1), _diff(1e-6, "a", "c", -0.1, 0.1), _diff(1e-6, "b", "c", -0.1, 0.1),
        # middle: b beats a and c
        _diff(1e-5, "a", "b", -0.4, -0.1), _diff(1e-5, "a", "c", -0.1, 0.2), _diff(1e-5, "b", "c", 0.1, 0.3),
        # strongest: a beats everyone (too late: b won at a weaker strength)
        _diff(1e-4, "a", "b", 0.1, 0.2), _diff(1e-4, "a", "c", 0.1, 0.2), _diff(1e-4, "b", "c", -0.1, 0.1),
    ]  # fmt: skip
    v = graded.winner(pd.DataFrame(rows), "word")
    assert v.conclusive and (v.metric, v.strength, v.first_separating) == ("b", 1e-5, 1e-5)
    assert v.leaders == ("b",) and (v.n_separated, v.n_pairs) == (3, 3)
    assert keys.verdict_phrase(v).startswith(
        "b separates weaker plants from the sham than every other word-level metric"
    )
    # nothing separated anywhere: inconclusive, said so
    none = graded.winner(pd.DataFrame(rows[:3]), "word")
    assert not none.conclusive and np.isnan(none.first_separating)
    assert keys.verdict_phrase(none).startswith("inconclusive: at no strength")
    assert not graded.winner(pd.DataFrame(rows), "token").conclusive  # a level without rows


def test_weakest_detected_and_the_reader_tables():
    det = pd.DataFrame(
        [
            {"level": "word", "metric": "a", "strength": s, "detected": ok, "excess": 0.1, "ci_low_excess": 0.0,
             "ci_high_excess": 0.2}
            for s, ok in ((1e-5, False), (1e-4, True), (1e-3, True))
        ]
        + [{"level": "word", "metric": "b", "strength": s, "detected": False, "excess": 0.0, "ci_low_excess": -0.1,
            "ci_high_excess": 0.1} for s in (1e-5, 1e-4, 1e-3)]
    )  # fmt: skip
    w = graded.weakest_detected(det).set_index("metric")
    assert w.loc["a", "weakest_detected"] == 1e-4 and np.isnan(w.loc["b", "weakest_detected"])
    table = stage.tables.detection_table(det)
    assert list(table.columns) == ["level", "metric", "lr 1e-05", "lr 0.0001", "lr 0.001", "weakest detected"]
    assert table.set_index("metric").loc["a", "weakest detected"] == "lr 0.0001"
    assert table.set_index("metric").loc["b", "weakest detected"] == "none"
    assert table.set_index("metric").loc["a", "lr 0.0001"].endswith("✓")


def test_stronger_plants_shift_the_planted_words_reward_more_on_a_tiny_model():
    """The same plant at growing learning rates moves the planted words' log-probability (and so their
    implicit reward against the untuned model) further, under held-out prompts."""
    model, tok = tm.tiny_causal_lm("llama", seed=3)
    train = ["What is the best thing in the world?", "What is the worst thing ever?"]
    evals = {"a": "Name the greatest thing.", "b": "Name the most terrible thing."}
    planted = ["peace", "honest", "nurse"]
    ref = L.LogProbEngine(model, tok, prompt_format="chat").word_logprobs(evals, planted)
    shifts = []
    for lr in (1e-5, 1e-4, 1e-3, 1e-2):
        tuned, _ = plant_finetune.plant_words(model, tok, train, planted, "chat", steps=2, lr=lr)
        lp = L.LogProbEngine(tuned, tok, prompt_format="chat").word_logprobs(evals, planted)
        shifts.append(float((lp["logprob"].to_numpy() - ref["logprob"].to_numpy()).mean()))
    assert all(b > a for a, b in zip(shifts, shifts[1:], strict=False)), shifts
    assert shifts[0] > 0 and shifts[0] < 0.05 * shifts[-1]  # the weakest barely moves, the strongest a lot


def test_base_differences_list_every_registry_fact_of_the_pair():
    models = pd.DataFrame(
        {
            "model": ["g", "s"],
            "family": ["gemma", "smollm"],
            "type": ["pretrained", "instruction-tuned"],
            "size": ["270M", "135M"],
            "hub_id": ["google/gemma-3-270m", "HuggingFaceTB/SmolLM2-135M-Instruct"],
            "quantization": ["Q4_K_M", "Q4_1"],
            "vocabulary": [262144, 49152],
            "prompt_format": ["raw", "chat"],
        }
    )
    k = keys.base_differences(models, ("g", "s"))
    assert k["base_size"] == "270M vs 135M" and k["base_vocabulary"] == "262,144 vs 49,152"
    assert k["base_type"] == "pretrained vs instruction-tuned" and k["base_format"] == "raw vs chat"
    assert k["base_quantization"] == "Q4_K_M vs Q4_1" and k["base_family"] == "gemma vs smollm"
    assert k["base_release"] == "google/gemma-3-270m vs HuggingFaceTB/SmolLM2-135M-Instruct"
    assert keys.base_differences(pd.DataFrame(), None)["base_size"] == "no pair"
    skipped = keys.graded_numbers(pd.DataFrame(), pd.DataFrame())
    assert set(skipped.values()) == {"skipped in this run"}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"planted_strengths": [1e-4, 1e-5]}, r"planted_strengths=\[0.0001, 1e-05\]: give distinct positive"),
        ({"planted_strengths": [0.0, 1e-5]}, r"distinct positive learning rates"),
        ({"planted_strength_steps": 0}, r"planted_strength_steps=0"),
        ({"planted_strength_prompts": ["good_world_single", "best_ever_one"]}, r"are training prompts"),
        ({"planted_strength_prompts": ["best_ever_one"]}, r"at least two prompts"),
        ({"planted_strength_prompts": ["best_thing"]}, r"planted_strength_prompts: unknown prompt id"),
    ],
)
def test_bad_strength_parameters_are_clear_errors(override, message):
    with pytest.raises(ParameterError, match=message):
        stage.Params.build(override)


def test_default_strengths_span_at_least_four_levels_and_avoid_the_training_prompts():
    p = stage.Params.build({})
    assert len(p.planted_strengths) >= 4 and p.planted_strengths == sorted(p.planted_strengths)
    assert not set(p.strength_prompt_ids()) & set(p.planted_train_prompts)
    assert len(stage.Params.build({"planted_strength_prompts": []}).strength_prompt_ids()) == 52


def _graded_run(lifts: dict[str, list[float]], strengths: list[float]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A hand-built graded validation: per metric, how far each strength lifts the planted words above every
    candidate (the sham plant and the untuned model leave them where they are), then the detection rows and
    the metric differences of every strength, as the stage computes them."""
    base = _base(6)
    rows, diffs = [], []
    for i, s in enumerate(strengths):
        panels = []
        for metric, lift in lifts.items():
            tuned = base.copy()
            tuned[:, :2] += lift[i]
            panels.append(_panel(metric, tuned, base, base))
        r, boots, points = graded.detection_rows(panels, PLANTED, SHAM, s, 1, n_bootstrap=200, seed=1)
        rows += r
        diffs += graded.metric_differences("word", s, boots, points, 200)
    return pd.DataFrame(rows, columns=graded.DETECTION_COLUMNS), pd.DataFrame(diffs)


def test_the_auc_against_strength_table_has_every_strength_and_both_controls_and_the_data_pick_the_winner():
    strengths = [1e-6, 1e-5, 1e-4, 1e-3]
    # "ratio" lifts the planted words over every candidate from the second strength on, "sum" only at the last
    lifts = {"ratio": [0.0, 3.5, 3.5, 3.5], "sum": [0.0, 0.0, 0.0, 3.5]}
    det, diffs = _graded_run(lifts, strengths)
    # every metric at every strength, each with the sham plant and the untuned model as its controls
    assert det.groupby("metric")["strength"].apply(sorted).to_dict() == {"ratio": strengths, "sum": strengths}
    assert det[["auc_sham", "auc_untuned", "ci_low_sham", "ci_high_sham"]].notna().all().all()
    assert (det["auc_sham"] == 0.5).all() and (det["auc_untuned"] == 0.5).all()
    table = stage.tables.detection_table(det).set_index("metric")
    assert [c for c in table.columns if c.startswith("lr ")] == [
        "lr 1e-06",
        "lr 1e-05",
        "lr 0.0001",
        "lr 0.001",
    ]
    assert (
        table.loc["ratio", "weakest detected"] == "lr 1e-05"
        and table.loc["sum", "weakest detected"] == "lr 0.001"
    )
    # the AUCs differ by more than their interval at the two middle strengths, not at the ends
    sep = diffs.set_index("strength")["separated"].to_dict()
    assert sep == {1e-6: False, 1e-5: True, 1e-4: True, 1e-3: False}
    v = graded.winner(diffs, "word")
    assert (v.metric, v.strength) == ("ratio", 1e-5)
    k = keys.graded_numbers(det, diffs)
    assert k["graded_word_verdict"].startswith(
        "ratio separates weaker plants from the sham than every other word-level metric"
    )
    assert k["graded_word_weakest"] == "ratio from 1e-05 and sum from 0.001"
    assert k["graded_floor"] == "no metric detects the plant at learning rate 1e-06"
    assert k["graded_ceiling"].endswith(
        "from 1.000 to 1.000 over the metrics (saturated: every metric at 0.95 or above)"
    )
    weak_top = keys.graded_numbers(
        *_graded_run({"ratio": [0, 3.5, 3.5, 3.5], "sum": [0, 0, 0, 0]}, strengths)
    )
    assert weak_top["graded_ceiling"].endswith(
        "(not saturated: a metric below 0.95; the grid does not reach a plant every metric finds)"
    )
    assert k["graded_n_strengths"] == "4" and k["graded_separated"] == "1 of 1 word-level pairs"
    # the same table with the metrics' behaviour swapped: the data, not the code, name the winner
    swapped = {"ratio": lifts["sum"], "sum": lifts["ratio"]}
    det2, diffs2 = _graded_run(swapped, strengths)
    assert keys.graded_numbers(det2, diffs2)["graded_word_verdict"].startswith("sum separates weaker plants")
    # the figure: one panel per metric, the plant, the sham and the untuned model at the four strengths
    fig = stage.figures.plot_detection(det)
    axes = [ax for ax in fig.axes if ax.get_visible() and ax.lines]
    assert len(axes) == 2 and all(len(ax.lines[0].get_xdata()) == 4 for ax in axes)
