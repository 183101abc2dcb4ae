"""λ_max(Ĥ), λ_grad (A, B) and the alignment cosine against dense float64 linear algebra."""
import math

import pytest
import torch

from conftest import adam_after, dense_reference, tiny_mlp_problem
from utils.curvature.adam_state import read_adam_state
from utils.curvature.preconditioned import (PreconditionedHessian, alignment, gradient_curvatures,
                                            top_eigenpair)
from utils.curvature.hvp import LossHessian

REL = 1e-6


def rel(a, b):
    return abs(a - b) / abs(b)


@pytest.fixture
def trained():
    """A tiny MLP after 20 real Adam steps: H at θ_t, D_t and c_t from the optimizer."""
    model, loss_fn = tiny_mlp_problem(seed=1)
    opt = adam_after(model, loss_fn, steps=20)
    hess = LossHessian(loss_fn, dict(model.named_parameters()))
    state = read_adam_state(opt)
    return hess, state, hess.dense()


@pytest.mark.parametrize("solver", ["lobpcg", "eigsh", "dense"])
def test_lambda_max_pre_matches_dense(trained, solver):
    hess, state, h = trained
    d, c = state.preconditioner, state.c
    ref, _ = dense_reference(h, d, c)
    # eigenvalues of the non-symmetric c D H, computed directly, agree with the symmetric form
    direct = torch.linalg.eigvals(c * d[:, None] * h).real.max().item()
    assert rel(direct, ref) < 1e-9
    res = top_eigenpair(PreconditionedHessian(hess, d, c), tol=1e-10, solver=solver)
    assert rel(res.value, ref) < REL
    assert res.residual < 1e-4 and res.converged
    assert res.n_hvps > 0


def test_right_eigenvector_of_dh(trained):
    hess, state, h = trained
    d, c = state.preconditioner, state.c
    op = PreconditionedHessian(hess, d, c)
    res = top_eigenpair(op, tol=1e-10)
    r = res.right_vector
    torch.testing.assert_close(r, op.right_eigenvector(res.vector))
    torch.testing.assert_close(c * d * (h @ r), res.value * r, rtol=1e-5, atol=1e-6 * res.value)


def test_lambda_max_h_matches_dense(trained):
    hess, _, h = trained
    res = top_eigenpair(PreconditionedHessian(hess), tol=1e-10)
    assert rel(res.value, torch.linalg.eigvalsh(h)[-1].item()) < REL


def test_gradient_curvatures_match_dense(trained):
    hess, state, h = trained
    d, c, g = state.preconditioner, state.c, hess.gradient
    out = gradient_curvatures(hess, d, c)
    assert rel(out["lambda_grad_H"], (g @ h @ g / (g @ g)).item()) < REL
    assert rel(out["lambda_grad_pre_a"], (c * g @ (d[:, None] * h) @ g / (g @ g)).item()) < REL
    dg = d * g
    assert rel(out["lambda_grad_pre"], (c * dg @ h @ dg / (g @ dg)).item()) < REL
    # form (B) is a Rayleigh quotient of the symmetric form, so it cannot exceed λ_max(Ĥ)
    assert out["lambda_grad_pre"] <= dense_reference(h, d, c)[0] * (1 + 1e-12)
    no_pre = gradient_curvatures(hess)
    assert no_pre["lambda_grad_pre"] == pytest.approx(no_pre["lambda_grad_H"], rel=1e-12)


def test_alignment_matches_dense(trained):
    hess, state, h = trained
    d, c, g = state.preconditioner, state.c, hess.gradient
    op = PreconditionedHessian(hess, d, c)
    res = top_eigenpair(op, tol=1e-10)
    _, u = dense_reference(h, d, c)
    r = d.sqrt() * u
    expect = abs((g @ r) / (g.norm() * r.norm())).item()
    gs = d.sqrt() * g
    expect_sym = abs((gs @ u) / gs.norm()).item()
    out = alignment(g, res, op)
    assert out["cos_grad_top"] == pytest.approx(expect, rel=REL, abs=1e-9)
    assert out["cos_grad_top_sym"] == pytest.approx(expect_sym, rel=REL, abs=1e-9)


def test_gradient_aligned_with_top_eigenvector_gives_cos_one_and_lambda_grad_max(trained):
    """Closed form: if D^{1/2} g is the top eigenvector, (B) equals λ_max and cos_sym is 1."""
    hess, state, h = trained
    d, c = state.preconditioner, state.c
    lam, u = dense_reference(h, d, c)
    hess.gradient = u / d.sqrt()
    out = gradient_curvatures(hess, d, c)
    assert rel(out["lambda_grad_pre"], lam) < 1e-9
    res = top_eigenpair(PreconditionedHessian(hess, d, c), tol=1e-10)
    assert alignment(hess.gradient, res, PreconditionedHessian(hess, d, c))[
        "cos_grad_top_sym"] == pytest.approx(1.0, abs=1e-6)


def test_warm_start_same_value_fewer_hvps():
    """From the previous step's eigenvector LOBPCG reaches the same λ_max(Ĥ) with fewer HVPs."""
    model, loss_fn = tiny_mlp_problem(seed=2, width=40, n=60)  # 242 parameters
    opt = adam_after(model, loss_fn, steps=30, lr=0.01)
    params = dict(model.named_parameters())
    st = read_adam_state(opt)
    prev = top_eigenpair(PreconditionedHessian(LossHessian(loss_fn, params), st.preconditioner,
                                               st.c), tol=1e-8)
    opt.zero_grad()
    loss_fn(params).backward()
    opt.step()  # one more step: Ĥ moves a little
    st = read_adam_state(opt)
    hess = LossHessian(loss_fn, params)
    cold = top_eigenpair(PreconditionedHessian(hess, st.preconditioner, st.c), tol=1e-8)
    warm = top_eigenpair(PreconditionedHessian(hess, st.preconditioner, st.c), prev.vector,
                         tol=1e-8, scale=prev.value)
    assert cold.converged and warm.converged
    assert rel(warm.value, cold.value) < 1e-7
    assert warm.n_hvps < cold.n_hvps
    ref, _ = dense_reference(hess.dense(), st.preconditioner, st.c)
    assert rel(warm.value, ref) < 1e-7


def test_solver_arguments_are_validated(trained):
    hess, _, _ = trained
    op = PreconditionedHessian(hess)
    with pytest.raises(ValueError, match="tol must be in"):
        top_eigenpair(op, tol=0)
    with pytest.raises(ValueError, match="solver must be one of"):
        top_eigenpair(op, solver="power")
    with pytest.raises(ValueError, match="v0 must have shape"):
        top_eigenpair(op, torch.ones(3))
    with pytest.raises(ValueError, match="preconditioner must have shape"):
        PreconditionedHessian(hess, torch.ones(3))


def test_zero_gradient_gives_nan(trained):
    hess, state, _ = trained
    hess.gradient = torch.zeros_like(hess.gradient)
    out = gradient_curvatures(hess, state.preconditioner, state.c)
    assert all(math.isnan(v) for v in out.values())
