"""Hessian-vector products: both methods, against dense autograd Hessians and a closed form."""
import pytest
import torch
import torch.nn.functional as F

from utils.training.losses import mse
from torch.func import functional_call

from utils.curvature.hvp import LossHessian, flatten, loss_of_params


def dense_hessian(model, loss_fn):
    """torch.autograd.functional.hessian on the flat parameter vector (an independent path)."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    theta0 = flatten([p.detach() for p in model.parameters()])

    def f(theta):
        pieces = theta.split([s.numel() for s in shapes])
        return loss_fn({n: c.view(s) for n, c, s in zip(names, pieces, shapes)})

    from utils.curvature.hvp import math_attention
    with math_attention():
        return torch.autograd.functional.hessian(f, theta0)


@pytest.mark.parametrize("problem", ["tiny_mlp", "tiny_transformer", "tiny_transformer_ce",
                                     "tiny_cnn"])
@pytest.mark.parametrize("method", ["autograd", "func"])
def test_hvp_matches_dense_hessian(problem, method, request):
    model, loss_fn = request.getfixturevalue(problem)
    ref = dense_hessian(model, loss_fn)
    op = LossHessian(loss_fn, dict(model.named_parameters()), method=method)
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):
        v = torch.randn(op.n, generator=gen, dtype=torch.float64)
        torch.testing.assert_close(op.matvec(v), ref @ v, rtol=1e-9, atol=1e-11)
    assert op.n_hvps == 3


def test_methods_agree_and_count(tiny_transformer):
    model, loss_fn = tiny_transformer
    a = LossHessian(loss_fn, dict(model.named_parameters()), method="autograd")
    b = LossHessian(loss_fn, dict(model.named_parameters()), method="func")
    torch.testing.assert_close(a.gradient, b.gradient)
    dense = a.dense()
    torch.testing.assert_close(dense, dense.T, rtol=1e-9, atol=1e-11)
    # forward-over-reverse re-runs the forward per product: compare 24 columns spread over
    # every parameter tensor, and count them
    cols = torch.linspace(0, a.n - 1, 24).round().long()
    eye = torch.eye(a.n, dtype=dense.dtype)
    torch.testing.assert_close(b.matmat(eye[cols]).T, dense[:, cols], rtol=1e-9, atol=1e-11)
    assert b.n_hvps == 24 and a.n_hvps == a.n


def test_gradient_and_loss(tiny_mlp):
    model, loss_fn = tiny_mlp
    params = dict(model.named_parameters())
    op = LossHessian(loss_fn, params)
    loss = loss_fn(params)
    grads = torch.autograd.grad(loss, list(params.values()))
    torch.testing.assert_close(op.loss, loss.detach())
    torch.testing.assert_close(op.gradient, flatten(grads))


@pytest.mark.parametrize("method", ["autograd", "func"])
def test_linear_least_squares_closed_form(method):
    """L(w) = mean((Xw - y)²) has H = 2 XᵀX / N exactly: catches a bug both autograd paths share."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(20, 4, generator=gen, dtype=torch.float64)
    y = torch.randn(20, 1, generator=gen, dtype=torch.float64)
    model = torch.nn.Linear(4, 1, bias=False).double()
    op = LossHessian(loss_of_params(model, mse, x, y), dict(model.named_parameters()),
                     method=method)
    torch.testing.assert_close(op.dense(), 2 * x.T @ x / 20, rtol=1e-12, atol=1e-12)


def test_operator_survives_parameter_update(tiny_mlp):
    """The operator copies θ: an in-place optimizer step afterwards does not change it."""
    model, loss_fn = tiny_mlp
    params = dict(model.named_parameters())
    op = LossHessian(loss_fn, params)
    v = torch.ones(op.n, dtype=torch.float64)
    before = op.matvec(v)
    with torch.no_grad():
        for p in params.values():
            p.add_(0.3)
    torch.testing.assert_close(op.matvec(v), before)


def test_bad_vector_shape_and_method(tiny_mlp):
    model, loss_fn = tiny_mlp
    op = LossHessian(loss_fn, dict(model.named_parameters()))
    with pytest.raises(ValueError, match="vector must have shape"):
        op.matvec(torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="method must be one of"):
        LossHessian(loss_fn, dict(model.named_parameters()), method="finite-differences")


def test_forward_of_transformer_uses_sdpa(tiny_transformer):
    """Sanity: the model really calls scaled_dot_product_attention (so forcing math matters)."""
    model, _ = tiny_transformer
    calls = []
    orig = F.scaled_dot_product_attention

    def spy(*a, **k):
        calls.append(1)
        return orig(*a, **k)

    F.scaled_dot_product_attention = spy
    try:
        functional_call(model, dict(model.named_parameters()),
                        (torch.zeros(2, 3, dtype=torch.long),))
    finally:
        F.scaled_dot_product_attention = orig
    assert calls


@pytest.mark.parametrize("problem", ["tiny_mlp", "tiny_transformer", "tiny_transformer_ce",
                                     "tiny_cnn"])
def test_finite_difference_products_match_the_dense_hessian(problem, request):
    """The central difference of gradients agrees with the dense Hessian to O(ε^{2/3}) in
    float64, keeps no graph of ∇L, and counts its products."""
    model, loss_fn = request.getfixturevalue(problem)
    ref = dense_hessian(model, loss_fn)
    op = LossHessian(loss_fn, dict(model.named_parameters()), method="finite_difference")
    assert not any(g.requires_grad for g in op._grads)
    gen = torch.Generator().manual_seed(4)
    for _ in range(3):
        v = torch.randn(op.n, generator=gen, dtype=torch.float64)
        torch.testing.assert_close(op.matvec(v), ref @ v, rtol=1e-6, atol=1e-8)
    assert op.n_hvps == 3
    torch.testing.assert_close(op.matvec(torch.zeros(op.n, dtype=torch.float64)),
                               torch.zeros(op.n, dtype=torch.float64))


def test_finite_differences_take_a_known_gradient_and_skip_its_pass(tiny_mlp):
    """Given ∇L(θ) (a loop's .grad), the finite-difference operator makes no gradient pass of
    its own: its products are the same, with two loss evaluations each and none at set-up."""
    model, loss_fn = tiny_mlp
    params = dict(model.named_parameters())
    own = LossHessian(loss_fn, params, method="finite_difference")
    calls = []
    counted = lambda p: calls.append(1) or loss_fn(p)
    given = LossHessian(counted, params, method="finite_difference", gradient=own.gradient)
    assert not calls and torch.isnan(given.loss)
    torch.testing.assert_close(given.gradient, own.gradient)
    v = torch.randn(own.n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(given.matvec(v), own.matvec(v), rtol=0, atol=0)
    assert len(calls) == 2
    with pytest.raises(ValueError, match="gradient must have shape"):
        LossHessian(loss_fn, params, method="finite_difference", gradient=own.gradient[:-1])
