"""Runs end to end: validation before training, determinism, divergence, output files."""
import json
import math

import pandas as pd
import numpy as np
import pytest
import torch

from utils.training.data import load_dataset
from utils.training.models import build_model
from utils.training.runs import RunConfig, run

FAST = dict(model="mlp", model_kwargs={"width": 8}, data="sin", data_kwargs={"n_points": 32},
            steps=40, track_every=10, progress=False)


@pytest.mark.parametrize("field,value,match", [
    ("lr", 0.0, r"lr must be in \(0, inf\)"),
    ("lr", -1.0, r"lr must be in \(0, inf\)"),
    ("beta1", 1.0, r"beta1 must be in \[0, 1\)"),
    ("beta2", -0.1, r"beta2 must be in \[0, 1\)"),
    ("eps", -1e-8, r"eps must be in \[0, inf\)"),
    ("model", "resnet", "model must be one of"),
    ("data", "cifar10", "data must be one of"),
    ("optimizer", "sgdm", "optimizer must be one of"),
    ("steps", 0, r"steps must be in \[1, inf\)"),
    ("steps", 2.5, "steps must be an integer"),
    ("seed", -1, r"seed must be in \[0, inf\)"),
    ("track_every", -5, r"track_every must be in \[0, inf\)"),
    ("dtype", "float16", "dtype must be one of"),
    ("hvp_method", "fd", "hvp_method must be one of"),
    ("eig_solver", "power", "eig_solver must be one of"),
    ("eig_tol", 2.0, r"eig_tol must be in \(0, 1\)"),
    ("measure", ("lambda_min",), "measure must be one of"),
    ("spike_factor", 0.5, "spike_factor"),
    ("threads", 0, "threads"),
    ("lr", float("nan"), "lr must be finite"),
])
def test_bad_parameters_fail_before_training(field, value, match):
    with pytest.raises(ValueError, match=match):
        run(RunConfig(**{**FAST, field: value}))


@pytest.mark.parametrize("name,kwargs,match", [
    ("mlp", {"in_dim": 1, "out_dim": 1, "width": 0}, "width"),
    ("mlp", {"in_dim": 1, "out_dim": 1, "activation": "sigmoid"}, "activation must be one of"),
    ("transformer", {"vocab_size": 5, "seq_len": 3, "out_dim": 2, "d_model": 5, "n_heads": 2},
     "multiple of n_heads"),
    ("quadratic", {"curvature": 0.0}, r"curvature must be in \(0, inf\)"),
])
def test_model_arguments_are_validated(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_model(name, **kwargs)


def test_data_arguments_are_validated():
    with pytest.raises(ValueError, match="n_points"):
        load_dataset("sin", n_points=1)
    with pytest.raises(ValueError, match=r"n_images must be in \[1, 1797\]"):
        load_dataset("digits", n_images=5000)


def test_two_identical_runs_give_identical_metrics():
    a, b = run(RunConfig(**FAST)), run(RunConfig(**FAST))
    pd.testing.assert_frame_equal(a.metrics, b.metrics)
    assert a.metrics["lambda_max_pre"].notna().sum() == 4  # steps 10, 20, 30, 40


def test_metrics_columns_and_files(tmp_path):
    result = run(RunConfig(**FAST))
    cols = {"step", "loss", "grad_norm", "lambda_max_H", "lambda_max_pre", "lambda_grad_pre",
            "lambda_grad_pre_a", "cos_grad_top", "g2_over_v_median", "v_ratio_median", "hvps"}
    assert cols <= set(result.metrics.columns)
    assert list(result.metrics["step"]) == list(range(1, 41))
    out = result.save(tmp_path / "run")
    metrics = pd.read_csv(out / "metrics.csv")
    assert len(metrics) == 40
    summary = json.loads((out / "summary.json").read_text())
    assert summary["parameters"]["lr"] == 0.01 and summary["library_version"]
    assert summary["threshold_2_over_lr"] == pytest.approx(200.0)


def test_diverging_run_is_recorded_not_raised(tmp_path):
    result = run(RunConfig(**{**FAST, "optimizer": "gd", "lr": 50.0, "steps": 200}))
    assert result.diverged_at is not None and result.diverged_at < 200
    last = result.metrics.iloc[-1]
    assert last["step"] == result.diverged_at and not math.isfinite(last["loss"])
    assert result.spikes[-1].diverged
    summary = json.loads((result.save(tmp_path) / "summary.json").read_text())
    assert summary["diverged_at"] == result.diverged_at


def test_gd_on_the_quadratic_converges_and_measures_a():
    cfg = RunConfig(model="quadratic", model_kwargs={"curvature": 2.0, "theta0": 1.0},
                    optimizer="gd", lr=0.1, steps=50, track_every=10, progress=False)
    result = run(cfg)
    assert result.metrics["loss"].iloc[-1] < 1e-8 and not result.spikes
    assert np.allclose(result.metrics["lambda_max_H"].dropna(), 2.0, rtol=1e-12, atol=0)
    # GD: θ_{t+1} = (1 - ηa) θ_t exactly
    assert result.metrics["loss"].iloc[1] == pytest.approx(result.metrics["loss"].iloc[0] * 0.64)


@pytest.mark.parametrize("model,data,kwargs", [
    ("cnn", "digits", {"channels": 2}),
    ("transformer", "modular_addition", {"d_model": 4, "n_heads": 2}),
    ("mlp", "teacher", {"width": 4}),
])
def test_every_architecture_runs_and_tracks(model, data, kwargs):
    dk = {"n_images": 16} if data == "digits" else ({"n_points": 20, "dim": 5}
                                                    if data == "teacher" else {"modulus": 3})
    result = run(RunConfig(model=model, model_kwargs=kwargs, data=data, data_kwargs=dk, steps=6,
                           track_every=3, progress=False, lr=0.01))
    tracked = result.metrics.dropna(subset=["lambda_max_pre"])
    assert len(tracked) == 2 and (tracked["hvps"] > 0).all()
    assert (tracked["lambda_grad_pre"] <= tracked["lambda_max_pre"] * 1.01).all()


def test_data_is_deterministic_under_a_seed():
    for name, kw in [("sin", {}), ("teacher", {"n_points": 10}), ("digits", {"n_images": 10})]:
        a, b = load_dataset(name, seed=3, **kw), load_dataset(name, seed=3, **kw)
        assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
        assert not torch.equal(a.inputs, load_dataset(name, seed=4, **kw).inputs)
    assert load_dataset("modular_addition", modulus=5).inputs.shape == (25, 3)


def test_tracking_does_not_change_the_trajectory():
    """Tracked and untracked steps use the same kernels: the losses agree to the last bit."""
    base = dict(model="transformer", model_kwargs={"d_model": 4, "n_heads": 2},
                data="modular_addition", data_kwargs={"modulus": 3}, steps=12, progress=False,
                measure=("lambda_grad",))
    plain = run(RunConfig(**base, track_every=0)).metrics["loss"]
    tracked = run(RunConfig(**base, track_every=3)).metrics["loss"]
    pd.testing.assert_series_equal(plain, tracked)


def test_a_run_spot_checks_the_engine_and_records_its_certificates(tmp_path):
    """Every 100th tracked step (the first included) and each spike's start are compared with a
    cold eigsh; the errors, the certificates and the instrument's record reach metrics.csv and
    summary.json."""
    from utils.curvature.tracker import CERTIFICATES

    config = RunConfig(model="mlp", model_kwargs={"width": 8}, data="sin",
                       data_kwargs={"n_points": 32}, lr=0.05, steps=210, track_every=2,
                       progress=False, measure=("lambda_max_pre", "lambda_grad"))
    result = run(config)
    checked = [c["step"] for c in result.spot_checks]
    starts = [max(t for t in range(2, 211, 2) if t <= s.start) for s in result.spikes
              if s.start >= 2]
    assert set(checked) == {2, 202} | set(starts)
    assert all(c["rel_error"] <= 1e-3 for c in result.spot_checks)
    m = result.metrics
    assert set(m["eig_certificate"].dropna()) <= set(CERTIFICATES) - {"none"}
    assert sorted(m.dropna(subset=["eig_spot_rel_error"])["step"]) == sorted(checked)
    summary = json.loads((result.save(tmp_path) / "summary.json").read_text())
    assert summary["instrument"]["tracked_steps"] == 105
    assert summary["instrument"]["uncertified_steps"] == 0
    assert summary["instrument"]["spot_checks"] == len(checked)
