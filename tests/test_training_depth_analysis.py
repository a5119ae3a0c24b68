"""Training chapter, depth arm: the between-base comparison across depths (hand-computed), its verdicts and
the glued phrases ("inconclusive" when an interval includes zero), and the depth figure."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest

from rmvalues.stages.training import depth_analysis, figures, glue

matplotlib.use("Agg")


def _gaps(values: dict[tuple[str, int], list[float]]) -> pd.DataFrame:
    """Last-checkpoint gaps: (base, depth) -> one gap per seed."""
    rows = []
    for (base, k), gaps in values.items():
        for seed, gap in enumerate(gaps):
            rows.append(
                {
                    "cell": f"{base}-k{k}-s{seed}",
                    "base_model": base,
                    "family": base,
                    "data": "hh",
                    "method": "top1+head" if k else "head",
                    "depth": k,
                    "quantity": 400,
                    "seed": seed,
                    "step": 20,
                    "framing": "positive",
                    "gap": gap,
                }
            )
    return pd.DataFrame(rows)


def test_depth_gaps_shrink_by_hand():
    # equal seeds within a base: every bootstrap draw gives the same means, so the interval is a point
    g = _gaps({("a", 0): [3.0] * 3, ("b", 0): [1.0] * 3, ("a", 1): [2.0] * 3, ("b", 1): [1.5] * 3})
    (row,) = depth_analysis.depth_gaps(g, n_bootstrap=200).to_dict("records")
    assert row["difference_0"] == pytest.approx(2.0) and row["difference_k"] == pytest.approx(0.5)
    assert row["size_change"] == pytest.approx(-1.5) == row["ci_low"] == row["ci_high"]
    assert row["verdict"] == "shrinks" and row["n_seeds"] == 3 and row["depth"] == 1


def test_depth_gaps_whose_interval_includes_zero_are_inconclusive():
    g = _gaps(
        {
            ("a", 0): [3.0, -3.0, 0.0],
            ("b", 0): [0.0, 0.0, 0.0],
            ("a", 1): [-3.0, 3.0, 0.5],
            ("b", 1): [0.0] * 3,
        }
    )
    (row,) = depth_analysis.depth_gaps(g, n_bootstrap=500).to_dict("records")
    assert row["ci_low"] < 0 < row["ci_high"] and row["verdict"] == "inconclusive"
    assert depth_analysis.verdict(0.1, 0.4, "falls", "rises") == "rises"
    assert depth_analysis.verdict(np.nan, 0.4, "falls", "rises") == "not computed"


def test_depth_accuracy_pairs_seeds_and_pairs_across_depths():
    cells = pd.DataFrame(
        {
            "cell": ["p0", "p1", "d0", "d1"],
            "base_model": "a",
            "data": "hh",
            "quantity": 400,
            "depth": [0, 0, 1, 1],
            "seed": [0, 1, 0, 1],
        }
    )
    # the probes rank pairs 0-1 of 4 correctly, the depth cells pairs 0-2: +25 points for every draw of seeds;
    # over the pairs drawn, the change is the share of pair 2 among them
    correct = {"p0": [1, 1, 0, 0], "p1": [1, 1, 0, 0], "d0": [1, 1, 1, 0], "d1": [1, 1, 1, 0]}
    ev = pd.DataFrame(
        [{"cell": c, "pair_id": j, "correct": bool(v)} for c, vs in correct.items() for j, v in enumerate(vs)]
    )
    (row,) = depth_analysis.depth_accuracy(cells, ev, n_bootstrap=400).to_dict("records")
    assert row["accuracy_0"] == 0.5 and row["accuracy_k"] == 0.75 and row["change"] == pytest.approx(0.25)
    assert 0 <= row["ci_low"] <= 0.25 <= row["ci_high"] <= 1
    assert row["verdict"] == ("rises" if row["ci_low"] > 0 else "inconclusive")


def test_verdict_phrases_name_the_depth_and_never_claim_no_difference():
    assert glue._verdict_phrase("shrinks", 1) == "shrinks with the top 1 block adapted"
    assert glue._verdict_phrase("grows", 2) == "grows with the top 2 blocks adapted"
    text = glue._verdict_phrase("inconclusive", 1)
    assert text.startswith("is inconclusive") and "includes zero" in text and "no difference" not in text


def test_depth_figure_has_a_panel_per_framing_and_accuracy():
    g = _gaps({("a", 0): [3.0, 2.0], ("b", 0): [1.0, 0.0], ("a", 1): [2.0, 1.0], ("b", 1): [1.5, 0.5]})
    neg = g.assign(framing="negative", gap=-g["gap"])
    gaps = pd.concat([g, neg], ignore_index=True)
    cells = g[["cell", "base_model", "family", "depth", "quantity", "seed"]].assign(
        eval_accuracy_end=[0.6, 0.62, 0.55, 0.57, 0.63, 0.64, 0.56, 0.6]
    )
    fig = figures.plot_depth(gaps, cells)
    assert [ax.get_title() for ax in fig.axes] == [
        "positive prompts, 400 pairs",
        "negative prompts, 400 pairs",
        "held-out accuracy, 400 pairs",
    ]
    empty = figures.plot_depth(gaps, cells[cells["depth"] == 0])
    assert "no depth arm" in " ".join(t.get_text() for ax in empty.axes for t in ax.texts) + " ".join(
        t.get_text() for t in empty.texts
    )


def test_reference_verdict_names_the_base_that_falls_short_and_why():
    top = pd.DataFrame(
        {
            "base_model": ["a", "b"],
            "quantity": 400,
            "within_reference": [True, False],
            "reference_difference_max": [0.0, 0.02],
        }
    )
    cells = pd.DataFrame(
        {
            "base_model": ["a", "b"],
            "quantity": 400,
            "reference_distance": [0.001, 0.05],
            "grad_norm_end": [1e-5, 0.01],
        }
    )
    text = glue._reference_verdict(top, cells)
    assert (
        text.startswith("b falls short (up to 2.0 points over seeds")
        and "5.0e-02" in text
        and "1.0e-02" in text
    )
    assert "a falls" not in text
    top["within_reference"] = True
    assert glue._reference_verdict(top, cells) == "every base's probe is within 1 point of its reference"


def test_what_the_seeds_vary_is_chosen_by_convergence():
    converged = pd.DataFrame({"reference_distance": [0.001, 0.004]})
    text = glue._seeds_vary(converged, full_batch=True)
    assert text.startswith(
        "the training subset; each step uses every training pair, so there is no batch order"
    )
    assert "random start does not survive" in text
    loose = glue._seeds_vary(pd.DataFrame({"reference_distance": [0.001, 0.3]}), full_batch=False)
    assert "the order of the training batches" in loose and "3.0e-01" in loose and "remains" in loose
