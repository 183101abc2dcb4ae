import pytest
import torch

from utils.curvature.adam_state import read_adam_state
from utils.training.data import modular_addition
from utils.curvature.hvp import LossHessian, loss_of_params
from utils.training.losses import cross_entropy, mse
from utils.training.models import build_model

torch.set_num_threads(1)


def tiny_mlp_problem(seed=0, width=5, n=12):
    """A 3-5-2 tanh MLP (32 parameters) on random regression data, float64."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    model = build_model("mlp", seed=seed, in_dim=3, out_dim=2, width=width)
    return model, loss_of_params(model, mse, x, y)


@pytest.fixture
def tiny_mlp():
    return tiny_mlp_problem()


@pytest.fixture
def tiny_transformer():
    data = modular_addition(modulus=3)
    model = build_model("transformer", seed=0, vocab_size=4, seq_len=3, out_dim=3, d_model=4,
                        n_heads=2)
    return model, loss_of_params(model, mse, data.inputs, data.targets)


@pytest.fixture
def tiny_transformer_ce():
    """The tiny Transformer under the cross-entropy of the anchor-function tasks (class ids)."""
    data = modular_addition(modulus=3)
    model = build_model("transformer", seed=0, vocab_size=4, seq_len=3, out_dim=3, d_model=4,
                        n_heads=2, d_ff=6)
    return model, loss_of_params(model, cross_entropy, data.inputs, data.targets.argmax(1))


@pytest.fixture
def tiny_cnn():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(4, 1, 6, 6, generator=gen, dtype=torch.float64)
    y = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    model = build_model("cnn", seed=0, channels=2, n_classes=3, image_size=6)
    return model, loss_of_params(model, mse, x, y)


def adam_after(model, loss_fn, steps=5, lr=0.05, betas=(0.9, 0.999), eps=1e-8):
    """Train ``steps`` real Adam steps; return the optimizer."""
    params = dict(model.named_parameters())
    opt = torch.optim.Adam(params.values(), lr=lr, betas=betas, eps=eps)
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(params).backward()
        opt.step()
    return opt


def dense_reference(h, d, c):
    """Top eigenpair of Ĥ = c D H from its symmetric form, by torch.linalg.eigh on the dense H."""
    sd = d.sqrt()
    s = c * sd[:, None] * h * sd[None, :]
    vals, vecs = torch.linalg.eigh((s + s.T) / 2)
    return vals[-1].item(), vecs[:, -1]


def tracked_adam_step(model, loss_fn, opt):
    """One real Adam step as the training loop takes it: the Hessian operator at θ_t (whose
    gradient the step uses) and Adam's state after the step."""
    hess = LossHessian(loss_fn, dict(model.named_parameters()))
    for p, gp in zip(model.parameters(), hess.unflatten(hess.gradient)):
        p.grad = gp.clone()
    opt.step()
    return hess, read_adam_state(opt)


@pytest.fixture
def no_cluster(monkeypatch):
    """Fail the test if anything tries to start or reach a Dask cluster."""
    import distributed

    def refuse(*args, **kwargs):
        raise AssertionError("a cluster was started before the arguments were checked")
    monkeypatch.setattr(distributed, "LocalCluster", refuse)
    monkeypatch.setattr(distributed, "Client", refuse)
