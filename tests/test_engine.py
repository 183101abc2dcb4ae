"""The tracking engine against dense float64 linear algebra: batched HVPs, λ_max(Ĥ) to its
tolerance over a real Adam trajectory (warm starts), λ_grad exact, alignment as defined."""
import math

import pytest
import torch

from conftest import dense_reference, tiny_mlp_problem, tracked_adam_step
from utils.curvature.engine import TrackingEngine, rayleigh_ritz, single_model
from utils.curvature.hvp import LossHessian, loss_of_params
from utils.training.losses import mse


@pytest.mark.parametrize("fixture", ["tiny_mlp", "tiny_cnn", "tiny_transformer"])
def test_matmat_equals_matvec_rows(fixture, request):
    model, loss_fn = request.getfixturevalue(fixture)
    hess = LossHessian(loss_fn, dict(model.named_parameters()))
    v = torch.randn(3, hess.n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    batched = hess.matmat(v)
    assert hess.n_hvps == 3
    rows = torch.stack([hess.matvec(x) for x in v])
    assert torch.allclose(batched, rows, rtol=1e-10, atol=1e-12)


def test_rayleigh_ritz_recovers_the_top_pairs_of_a_full_basis():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(5, 5, generator=gen, dtype=torch.float64)
    s = a + a.T
    basis = torch.cat([torch.eye(5, dtype=torch.float64), torch.eye(5, dtype=torch.float64)[:1]])  # one dependent row
    theta, pairs = rayleigh_ritz(torch.cat([basis, basis @ s], 1)[None], top=2)
    vals, vecs = torch.linalg.eigh(s)
    assert theta.shape == (1, 2) and pairs.shape == (1, 2, 10)
    for j in range(2):
        u, su = pairs[0, j, :5], pairs[0, j, 5:]
        assert theta[0, j] == pytest.approx(vals[-1 - j].item(), rel=1e-12)
        assert abs(float(u @ vecs[:, -1 - j])) == pytest.approx(1.0, rel=1e-10)
        assert torch.allclose(su, s @ u, atol=1e-10)


def test_engine_tracks_dense_values_along_an_adam_run():
    """Thirty consecutive steps of a real Adam run: every λ_max(Ĥ) and λ_max(H) within the
    tolerance of the dense value, λ_grad in all forms to float precision."""
    model, loss_fn = tiny_mlp_problem(seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    engine = TrackingEngine(tol=1e-3, track_raw=True)
    rounds = []  # track_raw: λ_grad(H) comes with the raw track's free direction H g
    for step in range(30):
        hess, state = tracked_adam_step(model, loss_fn, opt)
        d, c, g, h = state.preconditioner, state.c, hess.gradient, hess.dense()
        out = engine.step(single_model(hess), g[None], d[None], c)
        sd = d.sqrt()
        top, _ = dense_reference(h, d, c)
        top_h = torch.linalg.eigvalsh((h + h.T) / 2)[-1].item()
        assert abs(out.lambda_max_pre.item() - top) <= 1e-3 * abs(top)
        assert abs(out.lambda_max_H.item() - top_h) <= 1e-3 * abs(top_h)
        gg = float(g @ g)
        assert out.lambda_grad_H.item() == pytest.approx(float(g @ h @ g) / gg, rel=1e-10)
        assert out.lambda_grad_pre_a.item() == pytest.approx(c * float((d * g) @ h @ g) / gg, rel=1e-10)
        assert out.lambda_grad_pre.item() == pytest.approx(
            c * float((d * g) @ h @ (d * g)) / float(g @ (d * g)), rel=1e-10)
        u = out.vector_pre[0]
        assert out.cos_grad_top_sym.item() == pytest.approx(
            abs(float((sd * g) @ u)) / float((sd * g).norm()), rel=1e-10)
        rounds.append(out.rounds)
    assert max(rounds[5:]) < rounds[0], "warm starts need fewer rounds than the cold first step"


def test_engine_counts_products_and_rounds():
    model, loss_fn = tiny_mlp_problem(seed=2)
    hess = LossHessian(loss_fn, dict(model.named_parameters()))
    engine = TrackingEngine()
    out = engine.step(single_model(hess), hess.gradient[None], None, 1.0)
    assert out.hvps == hess.n_hvps
    assert out.rounds >= 1 and math.isfinite(out.lambda_max_pre.item())


def test_engine_in_float32_tracks_the_float64_value():
    """A float32 model: the engine's λ_max(Ĥ) and λ_grad agree with float64 dense algebra at the
    same parameters to the tolerance plus float32 rounding."""
    model, _ = tiny_mlp_problem(seed=3)
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(12, 3, generator=gen), torch.randn(12, 2, generator=gen)
    model = model.float()
    loss32 = loss_of_params(model, mse, x, y)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    engine = TrackingEngine(tol=1e-3)
    for _ in range(10):
        hess, state = tracked_adam_step(model, loss32, opt)
        out = engine.step(single_model(hess), hess.gradient[None], state.preconditioner[None], state.c)
    params64 = {k: v.detach().double() for k, v in hess.theta.items()}
    h = LossHessian(loss_of_params(model.double(), mse, x.double(), y.double()), params64).dense()
    top, _ = dense_reference(h, state.preconditioner.double(), state.c)
    assert out.lambda_max_pre.dtype == torch.float64 and out.vector_pre.dtype == torch.float32
    assert abs(out.lambda_max_pre.item() - top) <= 2e-3 * abs(top)
    g, dg = hess.gradient.double(), (state.preconditioner * hess.gradient).double()
    assert out.lambda_grad_pre.item() == pytest.approx(
        state.c * float(dg @ h @ dg) / float(g @ dg), rel=1e-4)


def test_plain_gradient_descent_needs_no_second_gradient_product():
    """With D = I (GD) H g and H D g are one product: the first round is H g and H X (the
    block)."""
    model, loss_fn = tiny_mlp_problem(seed=4)
    hess = LossHessian(loss_fn, dict(model.named_parameters()))
    engine = TrackingEngine(max_rounds=1)
    out = engine.step(single_model(hess), hess.gradient[None], None, 1.0)
    assert out.hvps == 1 + engine.block == hess.n_hvps
    g, h = hess.gradient, hess.dense()
    lam = float(g @ h @ g) / float(g @ g)
    for value in (out.lambda_grad_H, out.lambda_grad_pre_a, out.lambda_grad_pre):
        assert value.item() == pytest.approx(lam, rel=1e-10)
    top, _ = dense_reference(h, torch.ones_like(g), 1.0)
    assert out.lambda_max_pre.item() <= top * (1 + 1e-12)  # a Ritz value never exceeds λ_max


def swapping_operators(n=40, steps=40, seed=0, turn=0.02):
    """Slowly changing symmetric A_t = Q_t diag(λ_t) Q_tᵀ (n × n) whose top two eigenvalues swap
    half-way (λ_1: 10 → 8, λ_2: 8 → 10) while the eigenvectors Q_t turn by ``turn`` radians a
    step (a random rotation), and gradients g_t with no component along the eigenvector that
    becomes the top. Returns the matrices and the gradients."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    a = torch.randn(n, n, generator=gen, dtype=torch.float64)
    skew = (a - a.T) / 2
    rotation = torch.linalg.matrix_exp(turn * skew / torch.linalg.matrix_norm(skew, 2))
    rest = torch.linspace(0.5, 6.0, n - 2, dtype=torch.float64)
    g0 = torch.randn(n, generator=gen, dtype=torch.float64)
    mats, grads = [], []
    for t in range(steps):
        s = t / (steps - 1)
        lam = torch.cat([torch.tensor([10 - 2 * s, 8 + 2 * s], dtype=torch.float64), rest])
        mats.append(q @ torch.diag(lam) @ q.T)
        grads.append(g0 - (g0 @ q[:, 1]) * q[:, 1])
        q = rotation @ q
    return mats, grads


def track(engine, mats, grads):
    """The engine over the operators: per step (relative error against the dense top,
    the StepCurvature)."""
    steps = []
    for a, g in zip(mats, grads):
        out = engine.step(lambda v, a=a: v @ a, g[None], None, 1.0)
        top = torch.linalg.eigvalsh(a)[-1].item()
        steps.append((abs(out.lambda_max_pre.item() - top) / top, out))
    return steps


@pytest.mark.parametrize("block, block_tol, catches", [
    (2, 0.1, True),    # the engine's defaults
    (1, 0.1, False),   # no block: one warm vector
    (2, 0.99, False),  # a block whose second vector is never refined
])
def test_engine_follows_the_top_through_an_eigenvalue_swap(block, catches, block_tol):
    """With its defaults the engine reports the true top at every step. Without the guard it
    keeps following the old branch after the swap: with one warm vector, or with a second vector
    that is not refined as the eigenvectors turn (this is the same test failing when the guard
    is removed)."""
    mats, grads = swapping_operators()
    engine = TrackingEngine(tol=1e-3, block=block, block_tol=block_tol, check_every=0)
    errors = [e for e, _ in track(engine, mats, grads)]
    assert (max(errors) <= 1e-4) == catches, max(errors)


def test_a_cold_start_check_corrects_a_block_that_missed_the_top():
    """An eigenvalue rising from below past a warm vector's is invisible to it (with fixed
    eigenvectors its residual stays zero); the periodic cold start finds it, reports the step as
    corrected, and the engine follows it from then on."""
    mats, grads = swapping_operators(turn=0.0)
    steps = track(TrackingEngine(tol=1e-6, block=1, check_every=25), mats, grads)
    assert [i for i, (_, out) in enumerate(steps) if out.checked] == [25]
    assert bool(steps[25][1].corrected) and not any(bool(o.corrected) for _, o in steps[:25])
    errors = [e for e, _ in steps]
    assert max(errors[25:]) <= 1e-6 < max(errors[20:25])


def test_a_step_at_the_round_cap_is_not_certified():
    """A step that stops at max_rounds with its residual above tol is reported as not
    converged (and the tracker's certificate is 'none'); with enough rounds it is certified."""
    from utils.curvature.tracker import certificate

    mats, grads = swapping_operators()
    g = grads[0]
    capped = TrackingEngine(tol=1e-8, max_rounds=1).step(lambda v: v @ mats[0], g[None], None, 1.0)
    assert capped.residual_pre.item() > 1e-8 and not bool(capped.converged)
    assert certificate(bool(capped.converged), capped.checked) == "none"
    full = TrackingEngine(tol=1e-8).step(lambda v: v @ mats[0], g[None], None, 1.0)
    assert bool(full.converged) and certificate(True, False) == "residual"


def operator_near(threshold, above, n=60, seed=0):
    """A symmetric operator whose top eigenvalue is ``threshold`` × (1 + ``above``), the second
    at 0.9 × threshold and the rest spread below 0.8 × threshold, in a random basis; and a
    random gradient."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    values = torch.cat([torch.tensor([threshold * (1 + above), 0.9 * threshold]),
                        torch.linspace(0.8, -0.2, n - 2, dtype=torch.float64) * threshold])
    return (q * values) @ q.T, torch.randn(n, generator=gen, dtype=torch.float64)


def decide(matrix, g, threshold, **engine):
    out = TrackingEngine(**engine).step(lambda v: v @ matrix, g[None], None, 1.0,
                                        threshold=threshold)
    return out, out.side_pre[0], out.lower_pre.item(), out.upper_pre.item()


@pytest.mark.parametrize("seed", range(6))
def test_the_side_of_the_threshold_is_certified_just_above_and_just_below(seed):
    """A top eigenvalue 1e-4 or 1e-5 above (or below) 2/η: the engine reports the side it is
    on, its bounds hold the true value, and the decision (lower bound above the threshold) is
    right."""
    for above in (1e-4, 1e-5, -1e-4, -1e-5):
        matrix, g = operator_near(100.0, above, seed=seed)
        top = torch.linalg.eigvalsh(matrix)[-1].item()
        out, side, lower, upper = decide(matrix, g, 100.0)
        assert lower <= top * (1 + 1e-12) and top <= upper * (1 + 1e-12)
        assert (lower > 100.0) == (above > 0) and bool(out.converged)
        assert side == ("above" if above > 0 else side) and (above > 0 or side != "above")


def test_without_the_certificate_the_side_comes_out_wrong():
    """The same operators with the decision certificate removed (stop at the zone's width
    alone): on some of them the engine stops with its Ritz value below a top eigenvalue that is
    above 2/η, the wrong side. This is the test above failing when the certificate is removed."""
    wrong = 0
    for seed in range(6):
        matrix, g = operator_near(100.0, 1e-5, seed=seed)
        _, _, lower, _ = decide(matrix, g, 100.0, certify_side=False)
        wrong += lower <= 100.0
    assert wrong > 0


def test_far_from_the_threshold_the_decision_costs_fewer_products():
    """λ_max at half the threshold: the loose zone (1e-2) stops before the residual rule (1e-3)
    and its bounds still hold the true value."""
    matrix, g = operator_near(100.0, 0.0, seed=3)
    top = torch.linalg.eigvalsh(matrix)[-1].item()
    loose, side, lower, upper = decide(matrix, g, 200.0)
    tight = TrackingEngine().step(lambda v: v @ matrix, g[None], None, 1.0)
    assert side.startswith("below") and lower <= top <= upper and (upper - lower) <= 1e-2 * lower
    assert loose.hvps < tight.hvps
