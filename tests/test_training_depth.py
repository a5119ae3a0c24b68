"""Training chapter, issue 16: converged probes against their logistic reference, the depth-of-adaptation arm
(top k blocks trained from cached activations), the random-head null at the estimate's unit, joint
seed x pair intervals, and the findings' method caveat. Tiny random models built in-process; no network."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError
from tinymodels import tiny_reward_model, tiny_tokenizer

from rmvalues.engine import TopBlocks
from rmvalues.stages.training import analysis, config, depth, findings, metrics, reference, trainer


def _settings(**kw) -> config.TrainSettings:
    base = dict(
        method="head",
        learning_rate=0.05,
        epochs=200,
        batch_size=64,
        per_device_batch_size=64,
        max_length=200,
        eval_pairs=4,
        checkpoint_every=50,
        feature_cache=True,
        feature_scaling="standardize",
        head_l2=0.1,
    )
    return config.TrainSettings.model_validate({**base, **kw})


# -- the reference ------------------------------------------------------------------------------------------


def test_sklearn_reference_is_the_optimum_of_the_penalised_bt_objective():
    rng = np.random.default_rng(0)
    d = rng.normal(size=(30, 4)) + np.array([1.0, 0, 0, 0])
    w = reference.logistic_reference(d, 0.1)
    assert reference.sklearn_c(30, 0.1) == pytest.approx(1 / 6)
    assert reference.gradient_norm(w, d, 0.1) < 1e-6  # stationary point of J
    for _ in range(5):  # and no nearby head does better (J is strictly convex)
        assert reference.objective(w, d, 0.1) < reference.objective(w + 0.05 * rng.normal(size=4), d, 0.1)
    # J by hand at w = 0: log 2
    assert reference.objective(np.zeros(4), d, 0.1) == pytest.approx(np.log(2))


def test_trl_head_on_separable_features_reaches_its_logistic_reference(tmp_path):
    tok = tiny_tokenizer("llama")
    model, _ = tiny_reward_model("llama", seed=0)
    model.config.pad_token_id = tok.pad_token_id
    hidden = model.config.hidden_size
    rng = np.random.default_rng(1)
    direction = rng.normal(size=hidden)
    n, m = 48, 32

    def pairs(k):
        rej = rng.normal(size=(k, hidden))
        return rej + 0.8 * direction + 0.3 * rng.normal(size=(k, hidden)), rej

    (ctr, rtr), (cev, rev) = pairs(n), pairs(m)
    feats = {i: (ctr[i].astype(np.float32), rtr[i].astype(np.float32)) for i in range(n)}
    feats |= {n + j: (cev[j].astype(np.float32), rev[j].astype(np.float32)) for j in range(m)}
    data = trainer.CellData(
        train=[([1], [2])] * n,
        eval=[([1], [2])] * m,
        train_ids=list(range(n)),
        eval_ids=list(range(n, n + m)),
    )
    f = {
        "train": (torch.tensor(ctr, dtype=torch.float32), torch.tensor(rtr, dtype=torch.float32)),
        "eval": (torch.tensor(cev, dtype=torch.float32), torch.tensor(rev, dtype=torch.float32)),
    }
    out = trainer.train_reward_model(model, tok, data, _settings(), 0, tmp_path, f)
    check, ref = reference.probe_check(out.heads, out.scale, feats, data.train_ids, data.eval_ids, 0.1)
    assert check["grad_norm_end"] < 1e-3
    assert check["reference_distance"] < 1e-2
    assert check["objective_end"] == pytest.approx(check["reference_objective"], rel=1e-5)
    last = out.heads[max(out.heads)]
    acc = float(np.mean([(feats[i][0] - feats[i][1]) @ last > 0 for i in data.eval_ids]))
    assert abs(acc - check["reference_eval_accuracy"]) <= 0.01 and check["reference_eval_accuracy"] > 0.9
    # the hook is gone: the shared head trains without the penalty afterwards
    assert not model.score.weight._backward_hooks


# -- the depth arm ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["llama", "gemma"])
def test_top_block_from_cached_activations_equals_the_base_with_only_that_block_unfrozen(family):
    model, tok = tiny_reward_model(family, seed=0)
    model.config.pad_token_id = tok.pad_token_id
    model.eval()
    seqs = [[5, 6, 7, 8, 9], [10, 11, 12], [13, 14, 15, 16, 17, 18, 19], [20, 21, 22, 23]]
    chosen, rejected = [0, 2], [1, 3]
    head = np.random.default_rng(0).normal(size=model.config.hidden_size)
    with torch.no_grad():
        model.score.weight.copy_(torch.tensor(head, dtype=torch.float32).reshape(1, -1))
    # the base with only its top block unfrozen, run whole on each sequence
    top = TopBlocks(model, 1)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in top.blocks[0].parameters():
        p.requires_grad_(True)
    r = torch.stack([model(input_ids=torch.tensor([s])).logits[0, 0] for s in seqs])
    loss_full = -torch.nn.functional.logsigmoid(r[chosen] - r[rejected]).mean()
    loss_full.backward()
    grad_full = {n: p.grad.clone() for n, p in top.blocks[0].named_parameters()}
    for p in top.blocks[0].parameters():
        p.grad = None
    # the top block alone, from the hidden states cached below it (batched, padded)
    rows = top.hidden_below(seqs, tok.pad_token_id, batch_size=3)[top.first]
    dm = depth.depth_model(rows, top, head, tok.pad_token_id)
    out = dm(input_ids=torch.tensor([[0], [1], [2], [3]])).logits[:, 0]
    loss_cached = -torch.nn.functional.logsigmoid(out[chosen] - out[rejected]).mean()
    loss_cached.backward()
    assert loss_cached.item() == pytest.approx(loss_full.item(), abs=1e-5)
    for n, p in top.blocks[0].named_parameters():
        torch.testing.assert_close(p.grad, grad_full[n], atol=1e-5, rtol=1e-4)
    # only the top block and the head train in the cached model
    trainable = {n for n, p in dm.named_parameters() if p.requires_grad}
    assert trainable == {f"blocks.0.{n}" for n, _ in top.blocks[0].named_parameters()} | {"score.weight"}


def test_depth_training_restores_the_shared_base(tmp_path):
    model, tok = tiny_reward_model("llama", seed=0)
    model.config.pad_token_id = tok.pad_token_id
    top = TopBlocks(model, 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seqs = [[5 + i, 6 + i, 7, 8 + i % 3] for i in range(12)]
    rows = top.hidden_below(seqs, tok.pad_token_id)[top.first]
    acts = {i: (rows[2 * i], rows[2 * i + 1]) for i in range(6)}
    cell = config.Cell("tiny", "t", "head", 4, 0, depth=1)
    s = _settings(depths=[1], depth_epochs=2, depth_batch_size=2, checkpoint_every=2)
    saved = depth.block_state(top)
    out = depth.train_depth(cell, s, top, acts, [0, 1, 2, 3], [4, 5], np.zeros(32), None, tok, tmp_path)
    assert out.steps == 4 and sorted(out.states) == [2, 4] and len(out.eval) == 2
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())  # the block trained
    depth.restore_blocks(top, saved)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k])
    assert not any(p.requires_grad for p in top.blocks[0].parameters())


def test_the_depth_arm_trains_through_the_one_mapping_into_trl_with_its_own_optimizer(tmp_path):
    """Probe and depth cell get their ``RewardConfig`` from the one mapping; they differ only in the depth
    arm's learning rate, epochs and pairs per step (one step per batch: no accumulation)."""
    s = _settings(depths=[1], depth_learning_rate=1e-3, depth_epochs=2, depth_batch_size=8)
    probe = trainer.reward_config(s, 3, tmp_path, False, True).to_dict()
    deep = trainer.reward_config(s, 3, tmp_path, False, True, depth=True).to_dict()
    assert (probe["learning_rate"], probe["num_train_epochs"], probe["per_device_train_batch_size"]) == (
        0.05,
        200.0,
        64,
    )
    assert (deep["learning_rate"], deep["num_train_epochs"], deep["per_device_train_batch_size"]) == (
        1e-3,
        2.0,
        8,
    )
    assert deep["gradient_accumulation_steps"] == probe["gradient_accumulation_steps"] == 1
    assert {k for k in probe if probe[k] != deep[k]} == {
        "learning_rate",
        "num_train_epochs",
        "per_device_train_batch_size",
    }


def test_depth_cells_are_named_and_placed_by_the_settings():
    spec = config.GridSpec(
        "g", ("a", "b"), ("hh",), (40, 400), (0, 1, 2, 3), _settings(depths=[1, 2], depth_seeds=[0, 1])
    )
    cells = spec.depth_cells()
    assert len(cells) == 2 * 2 * 1 * 2  # models x depths x (largest quantity) x depth seeds
    assert {c.quantity for c in cells} == {400} and {c.seed for c in cells} == {0, 1}
    assert cells[0].name == "a-hh-head-top1-n400-s0" and cells[0].arm == "top1+head"
    assert spec.cells()[0].name == "a-hh-head-n40-s0" and spec.cells()[0].depth == 0
    with pytest.raises(ValidationError, match="depths"):
        _settings(depths=[0])


# -- the null at the estimate's unit, joint intervals ----------------------------------------------------------


def _null(cells, heads):
    return pd.DataFrame(
        [
            {"cell": c, "framing": "positive", "head": h + 1, "gap": g}
            for c, row in zip(cells, heads, strict=True)
            for h, g in enumerate(row)
        ]
    )


def test_random_head_null_averages_as_many_heads_as_seeds():
    cells = ["m-s0", "m-s1", "m-s2"]
    heads = np.array([[1.0, -1.0], [2.0, -2.0], [3.0, -3.0]])
    gaps = pd.DataFrame(
        {
            "cell": cells,
            "base_model": "m",
            "family": "f",
            "data": "hh",
            "method": "head",
            "quantity": 40,
            "seed": [0, 1, 2],
            "step": 10,
            "framing": "positive",
            "gap": [2.0, 2.0, 2.0],
        }
    )
    row = analysis.final_gaps(gaps, _null(cells, heads)).iloc[0]
    assert row["null_unit"] == 3 == row["n_seeds"]
    # every random mean is (+-1 +-2 +-3) / 3: its possible values, and the share of |mean| >= 2 by hand
    means = analysis.null_means(heads, n_draws=4000, seed=0)
    assert set(np.round(means * 3).astype(int)) <= {-6, -4, -2, 0, 2, 4, 6}
    assert row["null_share_beyond"] == pytest.approx(2 / 8, abs=0.03)  # |sum| = 6 in 2 of 8 sign patterns


def test_joint_bootstrap_is_wider_than_pairs_alone():
    correct = np.array([[1] * 10, [0] * 10], dtype=bool)  # two seeds that disagree on every pair
    p_lo, p_hi = metrics.pair_bootstrap_ci(correct)
    j_lo, j_hi = metrics.joint_bootstrap_ci(correct)
    assert p_lo == p_hi == 0.5  # per-pair shares are all 0.5: resampling pairs cannot move the mean
    assert j_lo == 0.0 and j_hi == 1.0  # resampling the two seeds can


# -- the findings ----------------------------------------------------------------------------------------------


def test_findings_print_the_method_caveat_and_every_difference():
    comparison = pd.DataFrame(
        [
            {
                "data": "hh",
                "method": "head",
                "quantity": 400,
                "framing": "positive",
                "checkpoint": "last",
                "base_a": "a",
                "base_b": "b",
                "gap_a": 1.0,
                "gap_b": -1.0,
                "difference": 2.0,
                "n_a": 5,
                "n_b": 5,
                "ci_low": -1.0,
                "ci_high": 5.0,
                "p_perm": 0.2,
                "n_relabellings": 252,
                "p_min": 2 / 252,
                "d": 0.5,
            }
        ]
    )
    bases = pd.DataFrame(
        [
            {
                "base_model": "a",
                "type": "pretrained",
                "size": "270M",
                "tokenizer_vocab": 262144,
                "hub_id": "google/gemma-3-270m",
                "chat_template": "builtin:gemma",
                "quantization": "Q4_K_M",
                "layers": 18,
                "hidden_size": 640,
            },
            {
                "base_model": "b",
                "type": "instruction-tuned",
                "size": "135M",
                "tokenizer_vocab": 49152,
                "hub_id": "HuggingFaceTB/SmolLM2-135M-Instruct",
                "chat_template": "tokenizer",
                "quantization": "Q4_1",
                "layers": 30,
                "hidden_size": 576,
            },
        ]
    )
    spec = SimpleNamespace(settings=_settings())
    res = SimpleNamespace(
        comparison=comparison, spec=spec, bases=bases, final=pd.DataFrame(), depth_gaps=pd.DataFrame()
    )
    (f,) = findings.findings(res)
    assert "linear heads on a frozen base" in f.answer
    for part in (
        "270M vs 135M",
        "262,144",
        "pretraining data",
        "pretrained vs instruction-tuned",
        "chat template",
        "Q4_K_M vs Q4_1",
    ):
        assert part in f.answer, part
    # a finding reading an attribute the result does not have fails instead of printing nothing
    with pytest.raises(AttributeError):
        findings.findings(
            SimpleNamespace(
                comparison=comparison,
                spec=SimpleNamespace(),
                bases=bases,
                final=pd.DataFrame(),
                depth_gaps=pd.DataFrame(),
            )
        )


def test_no_getattr_with_a_default_in_the_training_stage():
    import ast
    from pathlib import Path

    import rmvalues.stages.training as pkg

    for file in Path(pkg.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "getattr":
                assert len(node.args) < 3, f"{file.name}:{node.lineno} getattr with a default"


@pytest.mark.parametrize("family", ["llama", "gemma"])
def test_one_pass_gives_the_probe_features_and_the_prefix_shared_word_activations(family):
    from rmvalues.engine import RewardScorer

    model, tok = tiny_reward_model(family, seed=0)
    model.config.pad_token_id = tok.pad_token_id
    model.eval()
    top = TopBlocks(model, 1)
    seqs = [[5, 6, 7, 8, 9], [10, 11, 12], [13, 14, 15, 16, 17, 18, 19]]
    below, last = top.hidden_below_and_last(seqs, tok.pad_token_id, batch_size=2, firsts=[top.first, 0])
    # the last-token features of the same pass are the engine's (what the probe trains on)
    engine = RewardScorer(model, tok).last_hidden(seqs, batch_size=2)
    np.testing.assert_allclose(last, engine, atol=1e-5, rtol=1e-4)
    assert [len(r) for r in below[top.first]] == [5, 3, 7]
    # words: the prompt's prefix run once and reused gives the activations of the whole sequences
    prefix, conts = [3, 4, 5, 6], [[7, 8], [9], [10, 11, 12, 13]]
    shared = top.hidden_below_after_prefix(prefix, conts, tok.pad_token_id, batch_size=2)[top.first]
    whole = top.hidden_below([prefix + c for c in conts], tok.pad_token_id, batch_size=2)[top.first]
    for a, b in zip(shared, whole, strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", ["llama", "gemma"])
def test_top_blocks_with_a_shared_prefix_give_the_whole_sequences_hidden_state(family):
    model, tok = tiny_reward_model(family, seed=0)
    model.config.pad_token_id = tok.pad_token_id
    model.eval()
    top = TopBlocks(model, 2)
    prefix, conts = [3, 4, 5, 6, 7], [[8, 9], [10], [11, 12, 13, 14]]
    rows = top.hidden_below([prefix + c for c in conts], tok.pad_token_id)[top.first]
    p = len(prefix)
    with torch.no_grad():
        hidden, mask = depth._pad(rows)
        whole = top.last_hidden(hidden, mask)
        shared = top.last_hidden_after_prefix(
            torch.as_tensor(rows[0][:p]), [r[p:] for r in rows], batch_size=2
        )
    torch.testing.assert_close(shared, whole, atol=1e-5, rtol=1e-4)
    # the words' rewards at a checkpoint: the same with the prefix shared as with every sequence whole
    head = np.random.default_rng(1).normal(size=model.config.hidden_size)
    dm = depth.depth_model(rows, top, head, tok.pad_token_id)
    state = {5: {n: q.detach().clone() for n, q in dm.named_parameters() if q.requires_grad}}
    steps, whole_r = depth.word_rewards(top, state, {"p": rows}, tok.pad_token_id)
    _, shared_r = depth.word_rewards(top, state, {"p": rows}, tok.pad_token_id, {"p": p})
    assert steps == [5] and whole_r["p"].shape == (3, 1)
    np.testing.assert_allclose(shared_r["p"], whole_r["p"], atol=1e-5, rtol=1e-4)
