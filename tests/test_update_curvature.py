"""The paper's λ_update(Ĥ), the eigenvector drift and the norms of v̂: against dense float64
linear algebra and against Adam's own state, through both training loops."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import adam_after, tiny_mlp_problem
from utils.curvature.adam_state import read_adam_state, v_hat_norms
from utils.curvature.hvp import LossHessian
from utils.curvature.preconditioned import curvature_along_update
from utils.curvature.tracker import CurvatureTracker
from utils.training.runs import RunConfig, run
from utils.training.seeds import run_seeds


def test_curvature_along_update_is_the_dense_quotient():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(7, 7, generator=gen, dtype=torch.float64)
    h = a + a.T
    d = torch.rand(7, generator=gen, dtype=torch.float64) + 0.1
    u = torch.randn(7, generator=gen, dtype=torch.float64)
    want = float(u @ (0.3 * d[:, None] * h) @ u / (u @ u))   # uᵀ Ĥ u / ‖u‖², Ĥ = c D H
    assert float(curvature_along_update(u, h @ u, d, 0.3)) == pytest.approx(want, rel=1e-12)
    assert np.isnan(curvature_along_update(torch.zeros(7, dtype=torch.float64),
                                           torch.zeros(7, dtype=torch.float64), d, 0.3))


def test_the_tracker_measures_lambda_update_and_the_norms_of_v_hat():
    model, loss_fn = tiny_mlp_problem(seed=2)
    opt = adam_after(model, loss_fn, steps=15)
    params = dict(model.named_parameters())
    hess = LossHessian(loss_fn, params)
    state = read_adam_state(opt)
    h = hess.dense()
    u = state.m_hat * state.preconditioner
    want = float(u @ (state.c * state.preconditioner[:, None] * h) @ u / (u @ u))
    for solver_n in ("engine", "dense"):
        tracker = CurvatureTracker(("lambda_max_pre", "lambda_update", "v_norms", "alignment"),
                                   tol=1e-8, solver=solver_n)
        row = tracker.measure(hess, state)
        assert row["lambda_update_pre"] == pytest.approx(want, rel=1e-9), solver_n
    assert row["sqrt_v_hat_norm"] == pytest.approx(float(state.v_hat.sum().sqrt()), rel=1e-12)
    blocks = [k for k in row if k.startswith("sqrt_v_hat_norm.")]
    assert blocks == [f"sqrt_v_hat_norm.{name}" for name in params]
    first = next(iter(params.values())).numel()
    assert row[blocks[0]] == pytest.approx(float(state.v_hat[:first].sum().sqrt()), rel=1e-12)


def test_v_hat_norms_refuse_blocks_that_do_not_cover_v():
    with pytest.raises(ValueError, match="blocks"):
        v_hat_norms(torch.ones(5), {"a": 2, "b": 2})


def test_consecutive_top_eigenvectors_are_compared_from_the_second_step():
    config = RunConfig(model="mlp", model_kwargs=dict(width=12), data="sin",
                       data_kwargs=dict(n_points=32), lr=0.02, steps=30, track_every=1,
                       measure=("lambda_max_pre", "alignment"), progress=False)
    m = run(config, spot_checks=False).metrics
    cos = m["cos_top_consecutive"].to_numpy()
    assert np.isnan(cos[0]) and np.all((cos[1:] >= 0) & (cos[1:] <= 1 + 1e-12))
    assert np.median(cos[10:]) > 0.9     # the top direction moves slowly between steps


def test_both_training_loops_measure_lambda_update_and_v_norms_alike():
    config = RunConfig(model="mlp", model_kwargs=dict(width=12), data="sin",
                       data_kwargs=dict(n_points=32), lr=0.02, steps=24, track_every=3,
                       measure=("lambda_max_pre", "lambda_update", "v_norms", "alignment"),
                       progress=False)
    batched = run_seeds(config, [0, 5])
    for s, got in zip([0, 5], batched):
        want = run(replace(config, seed=s), spot_checks=False).metrics
        for col in [c for c in want if c.startswith(("lambda_update", "sqrt_v_hat"))]:
            np.testing.assert_allclose(got.metrics[col], want[col], rtol=1e-9, err_msg=col)
        # each eigenvector is solved to the engine's tolerance (1e-3), not bitwise
        np.testing.assert_allclose(got.metrics["cos_top_consecutive"],
                                   want["cos_top_consecutive"], atol=2e-3, err_msg="drift")


def test_the_engine_gives_h_s_top_direction_its_drift_and_its_cosine_with_the_gradient():
    from utils.curvature.engine import TrackingEngine, single_model

    model, loss_fn = tiny_mlp_problem(seed=3)
    opt = adam_after(model, loss_fn, steps=10)
    hess = LossHessian(loss_fn, dict(model.named_parameters()))
    state = read_adam_state(opt)
    engine = TrackingEngine(tol=1e-10, track_raw=True, max_rounds=60)
    first = engine.step(single_model(hess), hess.gradient[None], state.preconditioner[None],
                        state.c)
    again = engine.step(single_model(hess), hess.gradient[None], state.preconditioner[None],
                        state.c)
    vals, vecs = torch.linalg.eigh(hess.dense())
    g = hess.gradient
    want = float((g @ vecs[:, -1]).abs() / g.norm())
    assert float(first.cos_grad_top_H[0]) == pytest.approx(want, rel=1e-6)
    assert np.isnan(float(first.cos_top_consecutive_H[0]))
    assert float(again.cos_top_consecutive_H[0]) == pytest.approx(1.0, abs=1e-8)  # same H
