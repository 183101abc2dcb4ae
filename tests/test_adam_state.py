"""The state read from torch.optim.Adam equals the design note's formulas applied by hand."""
import pytest
import torch

from conftest import tiny_mlp_problem
from utils.curvature.adam_state import decoupling_statistics, read_adam_state
from utils.curvature.hvp import flatten


@pytest.mark.parametrize("betas,eps", [((0.9, 0.999), 1e-8), ((0.0, 0.95), 1e-3)])
def test_state_matches_hand_formulas(betas, eps):
    model, loss_fn = tiny_mlp_problem()
    params = dict(model.named_parameters())
    lr, (b1, b2) = 0.03, betas
    opt = torch.optim.Adam(params.values(), lr=lr, betas=betas, eps=eps)
    m = v = torch.zeros(sum(p.numel() for p in params.values()), dtype=torch.float64)
    for t in range(1, 8):
        opt.zero_grad()
        loss_fn(params).backward()
        g = flatten([p.grad for p in params.values()])
        before = flatten([p.detach() for p in params.values()]).clone()
        opt.step()
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g ** 2
        st = read_adam_state(opt)
        assert st.step == t
        torch.testing.assert_close(st.m, m)
        torch.testing.assert_close(st.v, v)
        d = 1 / ((v / (1 - b2 ** t)).sqrt() + eps)
        torch.testing.assert_close(st.preconditioner, d)
        assert st.c == pytest.approx((1 - b1) / ((1 + b1) * (1 - b1 ** t)), rel=1e-15)
        # the update the state predicts is the one Adam took
        after = flatten([p.detach() for p in params.values()])
        torch.testing.assert_close(st.update, after - before)
        torch.testing.assert_close(st.update, -lr * m / (1 - b1 ** t) * d)


def test_c_is_one_without_momentum():
    model, loss_fn = tiny_mlp_problem()
    params = dict(model.named_parameters())
    opt = torch.optim.Adam(params.values(), betas=(0.0, 0.999))
    loss_fn(params).backward()
    opt.step()
    assert read_adam_state(opt).c == 1.0


def test_read_state_errors():
    model, _ = tiny_mlp_problem()
    with pytest.raises(ValueError, match="no state yet"):
        read_adam_state(torch.optim.Adam(model.parameters()))
    with pytest.raises(ValueError, match="torch.optim.Adam"):
        read_adam_state(torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(ValueError, match="amsgrad"):
        read_adam_state(torch.optim.Adam(model.parameters(), amsgrad=True))


def test_decoupling_statistics_known_values():
    g = torch.tensor([1.0, 0.1, 0.01, 2.0, 0.0])
    v_prev = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0])  # last coordinate left out (v = 0)
    v_new = torch.tensor([0.999, 0.999, 0.999, 1.003, 0.0])
    out = decoupling_statistics(g, v_prev, v_new)
    # ρ = [1, 0.01, 1e-4, 4]: one coordinate strictly below 1e-2
    assert out["g2_over_v_frac_small"] == pytest.approx(0.25)
    assert out["g2_over_v_q90"] == pytest.approx(4.0)
    assert out["g2_over_v_q10"] == pytest.approx(1e-4)
    assert out["v_ratio_median"] == pytest.approx(0.999)
    assert out["v_ratio_q90"] == pytest.approx(1.003)


def test_quantiles_by_selection_are_the_sorted_elements():
    """_quantiles picks by kthvalue exactly the elements that indexing the sorted vector at
    round(q (n − 1)) picks, ties and odd and even lengths included."""
    from utils.curvature.adam_state import QUANTILES, _quantiles

    gen = torch.Generator().manual_seed(0)
    for n in (1, 2, 7, 10, 1001):
        x = torch.randint(0, 5, (n,), generator=gen).double() * torch.rand(n, generator=gen,
                                                                          dtype=torch.float64)
        xs = x.sort().values
        want = [float(xs[int(i)]) for i in (torch.tensor(QUANTILES) * (n - 1)).round().long()]
        assert _quantiles(x, QUANTILES) == want
