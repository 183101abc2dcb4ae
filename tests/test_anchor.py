"""The anchor-function tasks: the rule holds on every sequence, the split is disjoint, the
generator is seeded, bad arguments are refused, and the cross-entropy they train with is
torch's."""
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from utils.training.anchor import (BACKGROUND, CONTEXT, RULES, VOCAB_SIZE, anchor_function,
                                   anchor_sequences, key_values, read_key, rule_target)
from utils.training.data import load_dataset
from utils.training.losses import cross_entropy, loss_for, mse


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("split", ["train", "test"])
def test_the_rule_holds_on_every_sequence(rule, split):
    for seed in range(3):
        seq = anchor_sequences(rule, 2000, split, seed)
        assert seq.shape == (2000, CONTEXT + 1) and seq.dtype == np.int64
        np.testing.assert_array_equal(rule_target(seq, rule), seq[:, -1])
        anchors = (seq[:, :CONTEXT] < BACKGROUND[0]).sum(axis=1)
        assert (anchors == (1 if rule == "3x_to_x" else 2)).all()
        assert seq.min() >= 0 and seq.max() < VOCAB_SIZE
        x0, p = read_key(seq, rule)
        assert set(x0) <= set(key_values(split))
        assert p.min() == 0 and p.max() == CONTEXT - (2 if rule == "3x_to_x" else 3)


def test_a_wrong_target_is_caught_by_the_rule_check():
    """The check above can fail: a sequence whose target is off by one breaks it."""
    seq = anchor_sequences("3x_to_x", 50, "train", 0)
    seq[7, -1] += 1
    assert (rule_target(seq, "3x_to_x") != seq[:, -1]).sum() == 1


@pytest.mark.parametrize("rule", RULES)
def test_train_and_test_are_disjoint(rule):
    train, test = key_values("train"), key_values("test")
    assert not set(train) & set(test) and len(train) + len(test) == 80
    assert (test % 8 == 0).all() and len(test) == 10
    a = anchor_sequences(rule, 1800, "train", 0)
    b = anchor_sequences(rule, 200, "test", 0)
    assert not {tuple(r) for r in a[:, :CONTEXT]} & {tuple(r) for r in b[:, :CONTEXT]}
    assert not set(read_key(a, rule)[0]) & set(read_key(b, rule)[0])


def test_the_generator_is_seeded():
    a = anchor_sequences("composition", 100, "train", 4)
    np.testing.assert_array_equal(a, anchor_sequences("composition", 100, "train", 4))
    assert (a != anchor_sequences("composition", 100, "train", 5)).any()


def test_bad_arguments_name_the_parameter():
    with pytest.raises(ValueError, match="rule must be one of"):
        anchor_sequences("3x_to_y", 10, "train")
    with pytest.raises(ValueError, match="split must be one of"):
        anchor_sequences("3x_to_x", 10, "validation")
    with pytest.raises(ValueError, match="n"):
        anchor_sequences("3x_to_x", 0, "train")


def test_the_data_set_and_its_loss():
    data = load_dataset("anchor", seed=2, rule="3x_to_x", n=64, split="test")
    assert data.inputs.shape == (64, CONTEXT) and data.targets.shape == (64,)
    assert data.inputs.dtype == torch.int64 and data.info["vocab_size"] == VOCAB_SIZE
    assert loss_for(data.info) is cross_entropy and loss_for({}) is mse
    same = anchor_function("3x_to_x", 64, "test", 2)
    assert torch.equal(same.inputs, data.inputs) and torch.equal(same.targets, data.targets)
    with pytest.raises(ValueError, match="loss must be one of"):
        loss_for({"loss": "hinge"})


def test_cross_entropy_is_torchs():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(10, 7, generator=gen, dtype=torch.float64)
    target = torch.randint(0, 7, (10,), generator=gen)
    torch.testing.assert_close(cross_entropy(logits, target),
                               torch.nn.functional.cross_entropy(logits, target))


def test_a_transformer_trains_and_is_tracked_on_the_anchor_task():
    """The run loop builds the model from the data set (vocabulary, context, 201 outputs),
    trains it with cross-entropy and measures λ_max(Ĥ) and λ_grad(Ĥ), its engine checked
    against a cold solve (``spot_checks``)."""
    from utils.training.runs import RunConfig, run

    config = RunConfig(model="transformer", data="anchor", data_kwargs={"n": 32},
                       model_kwargs={"d_model": 8, "n_heads": 2, "d_ff": 12}, lr=3e-3,
                       steps=6, track_every=3, measure=("lambda_max_pre", "lambda_grad"),
                       progress=False)
    result = run(config)
    m = result.metrics
    assert len(m) == 6 and m["loss"].iloc[0] == pytest.approx(np.log(VOCAB_SIZE), rel=0.2)
    assert m["lambda_max_pre"].notna().sum() == 2 and m["lambda_grad_pre"].notna().sum() == 2


def test_the_held_out_loss_is_recorded_at_every_step():
    """With ``n_test``, the loop records the test set's loss at θ_t beside the training loss;
    the model at step 1 is the initial one, so both are the cross-entropy of its outputs."""
    from utils.training.runs import RunConfig, build_problem, run
    from utils.training.losses import cross_entropy

    config = RunConfig(model="transformer", data="anchor", data_kwargs={"n": 32, "n_test": 16},
                       model_kwargs={"d_model": 8, "n_heads": 2}, lr=3e-3, steps=4,
                       track_every=0, progress=False)
    m = run(config, spot_checks=False).metrics
    assert m["test_loss"].notna().all() and len(m) == 4
    model, _ = build_problem(config)
    test = anchor_function("3x_to_x", 16, "test", 0)
    with torch.no_grad():
        first = float(cross_entropy(model(test.inputs), test.targets))
    assert m["test_loss"].iloc[0] == pytest.approx(first, rel=1e-12)
    plain = run(RunConfig(model="transformer", data="anchor", data_kwargs={"n": 32},
                          model_kwargs={"d_model": 8, "n_heads": 2}, steps=2, track_every=0,
                          progress=False), spot_checks=False).metrics
    assert "test_loss" not in plain
    with pytest.raises(ValueError, match="n_test"):
        anchor_function("3x_to_x", 8, "test", 0, n_test=4)


def test_a_linear_warm_up_sets_each_steps_lr():
    """η_t = η t / w for t < w, then η: Adam's parameter group steps with it, the ``lr``
    column records it; a negative warm-up is refused, one longer than the run is not."""
    from utils.training.runs import RunConfig, lr_at, run
    from utils.training.seeds import batchable

    config = RunConfig(model="mlp", model_kwargs={"width": 4}, data_kwargs={"n_points": 8},
                       lr=0.1, steps=6, warmup=4, track_every=0, progress=False)
    assert [lr_at(config, t) for t in range(1, 7)] == pytest.approx(
        [0.025, 0.05, 0.075, 0.1, 0.1, 0.1])
    assert list(run(config, spot_checks=False).metrics["lr"]) == pytest.approx(
        [lr_at(config, t) for t in range(1, 7)])
    assert not batchable(config)
    with pytest.raises(ValueError, match="warmup"):
        RunConfig(steps=5, warmup=-1).validate()
    RunConfig(steps=5, warmup=6).validate()    # the first steps of a longer warm-up


def test_a_cosine_schedule_decays_from_eta_to_a_tenth_after_the_warm_up():
    from utils.training.runs import COSINE_FLOOR, RunConfig, lr_at, run

    config = RunConfig(model="mlp", model_kwargs={"width": 4}, data_kwargs={"n_points": 8},
                       lr=0.1, steps=12, warmup=2, schedule="cosine", track_every=0,
                       progress=False)
    lrs = [lr_at(config, t) for t in range(1, 13)]
    assert lrs[:3] == pytest.approx([0.05, 0.1, 0.1 - 0.09 * (1 - math.cos(math.pi / 10)) / 2])
    assert lrs[6] == pytest.approx((0.1 + COSINE_FLOOR * 0.1) / 2)      # half-way: the middle
    assert lrs[-1] == pytest.approx(COSINE_FLOOR * 0.1)
    assert all(a > b for a, b in zip(lrs[1:], lrs[2:]))                 # falls after the warm-up
    assert list(run(config, spot_checks=False).metrics["lr"]) == pytest.approx(lrs)
    with pytest.raises(ValueError, match="schedule"):
        RunConfig(schedule="linear").validate()
    longer = replace(config, steps=6, decay_steps=12)       # the first half of the same run
    assert [lr_at(longer, t) for t in range(1, 7)] == pytest.approx(lrs[:6])
    with pytest.raises(ValueError, match="decay_steps must exceed warmup=2"):
        replace(config, decay_steps=2).validate()
