"""Spike warning signals and their scoring."""
import math

import numpy as np
import pytest

from utils.events.detectors import (above, ema_zscore, loss_rose, olmo_skip, random_alarms,
                                    score_alarms, sustained)
from utils.events.spikes import Spike


def spike(start, end):
    return Spike(start, start + 2, start + 5, end, 1.0, 1.0, 100.0)


def test_an_alarm_at_or_after_the_start_is_never_a_hit():
    steps = np.arange(100)
    spikes = [spike(50, 60)]
    for at in (50, 51, 55, 60):
        alarms = steps == at
        s = score_alarms(steps, alarms, spikes, horizon=20)
        assert s.hits == 0 and s.recall == 0 and s.leads == () and s.f1 == 0
        assert s.alarms == 0 and s.false_alarms == 0   # inside the spike: neither
    assert math.isnan(score_alarms(steps, steps == 49, [], horizon=20).f1)   # no spike
    before = score_alarms(steps, steps == 49, spikes, horizon=20)
    assert before.hits == 1 and before.recall == 1 and before.leads == (1,)


def test_scores_count_hits_false_alarms_and_leads():
    steps = np.arange(1000)
    spikes = [spike(200, 220), spike(600, 650)]
    alarms = np.isin(steps, [150, 190, 195, 590, 800, 900])
    s = score_alarms(steps, alarms, spikes, horizon=20)
    assert (s.hits, s.false_alarms, s.alarms) == (3, 3, 6)
    assert s.recall == 1 and s.precision == 0.5 and s.leads == (10, 10)
    assert s.false_alarms_per_1000 == pytest.approx(1000 * 3 / (1000 - 21 - 51))
    assert s.f1 == pytest.approx(2 * 0.5 / 1.5)
    wide = score_alarms(steps, alarms, spikes, horizon=100)
    assert wide.leads == (50, 10) and wide.hits == 4
    with pytest.raises(ValueError, match="shape"):
        score_alarms(steps, alarms[:-1], spikes, horizon=5)


def test_baselines_and_thresholds():
    assert list(loss_rose([3.0, 2.0, 2.5, 2.5, 4.0])) == [False, False, True, False, True]
    assert list(above([1.0, np.nan, 3.0], 2.0)) == [False, False, True]
    assert list(sustained([1, 1, 0, 1, 1, 1], 3)) == [False, False, False, False, False, True]
    assert list(sustained([0, 1], 1)) == [False, True]
    rate = random_alarms(100_000, 0.02, seed=1).mean()
    assert rate == pytest.approx(0.02, rel=0.05)


def test_running_zscore_rules_fire_on_an_outlier_only_after_warmup():
    rng = np.random.default_rng(0)
    x = 1 + 0.01 * rng.standard_normal(400)
    x[300] = 2.0                              # one outlier
    x[10] = 5.0                               # during warm-up: no alarm possible
    for alarms in (olmo_skip(x), ema_zscore(x)):
        assert alarms[300] and not alarms[10]
        assert alarms.sum() <= 3
    assert not olmo_skip(x, warmup=400).any()


def test_ema_zscore_fires_exactly_where_zclip_clips():
    """zclip.ZClip (defaults, no max norm) on a parameter whose gradient norm follows a noisy
    sequence with outliers: it clips at exactly the steps where our rule alarms."""
    import torch
    from zclip import ZClip

    rng = np.random.default_rng(3)
    norms = np.abs(1 + 0.1 * rng.standard_normal(300))
    norms[[30, 80, 81, 150, 220]] *= [3.0, 5.0, 4.0, 1.6, 10.0]
    model = torch.nn.Linear(4, 1, bias=False).double()
    direction = torch.tensor([[0.5, -0.5, 0.5, 0.5]], dtype=torch.float64)   # unit norm
    zclip, clipped = ZClip(max_grad_norm=None), []
    for n in norms:
        model.weight.grad = direction * float(n)
        zclip.step(model)
        clipped.append(float(model.weight.grad.norm()) < n * (1 - 1e-12))
    ours = ema_zscore(norms)
    assert ours.sum() >= 4
    assert list(ours) == clipped


def gradient_sequence(n=120, seed=5):
    """Gradients of one 6-entry parameter: small noise, with a few large spikes."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    grads = [1e-3 * torch.randn(6, generator=gen, dtype=torch.float64) for _ in range(n)]
    for t, k in ((40, 0), (41, 3), (75, 5), (100, 2)):
        grads[t][k] = 5.0
    return grads


def test_spam_rule_fires_exactly_where_pytorch_optimizer_spam_clips():
    """pytorch_optimizer.SPAM clips the coordinates with g² > θ·v in place (after its
    grad_accu_steps); our rule, given SPAM's own v before the step, fires at those steps."""
    import torch
    from pytorch_optimizer import SPAM

    from utils.events.detectors import spam_spike

    p = torch.nn.Parameter(torch.zeros(6, dtype=torch.float64))
    opt = SPAM([p], lr=1e-3, foreach=False)
    ours, clipped = [], []
    for t, g in enumerate(gradient_sequence()):
        state = opt.state[p]
        v_prev = state["exp_avg_sq"].clone() if "exp_avg_sq" in state else torch.zeros(6, dtype=torch.float64)
        p.grad = g.clone()
        opt.step()
        if t + 1 >= opt.grad_accu_steps:       # SPAM clips only from then on
            ours.append(spam_spike(g, v_prev, opt.threshold))
            clipped.append(not torch.equal(p.grad, g))
    assert sum(clipped) >= 3 and ours == clipped


def test_stableadamw_rule_fires_exactly_where_optimi_reduces_the_step():
    """optimi.StableAdamW divides the step by RMS(g²/max(v, ε²)) where it exceeds 1; given its
    own v after the step, our term reproduces the step's reduction."""
    import torch
    from optimi import StableAdamW

    from utils.events.detectors import stableadamw_rms

    p = torch.nn.Parameter(torch.zeros(6, dtype=torch.float64))
    lr, eps = 1e-2, 1e-6
    opt = StableAdamW([p], lr=lr, eps=eps, weight_decay=0.0)
    fired, reduced = [], []
    for g in gradient_sequence():
        before = p.detach().clone()
        p.grad = g.clone()
        opt.step()
        state = opt.state[p]
        full = -lr * state["exp_avg"] / (state["exp_avg_sq"].sqrt() + eps)   # an unreduced step
        ratio = float((p.detach() - before).norm() / full.norm())
        rms = stableadamw_rms(g, state["exp_avg_sq"], eps)
        assert ratio == pytest.approx(1 / max(1.0, rms), rel=1e-9)
        fired.append(rms > 1)
        reduced.append(ratio < 1 - 1e-12)
    assert sum(reduced) >= 3 and fired == reduced


def test_secant_curvature_is_lambda_grad_on_a_quadratic():
    """On L = ½ θᵀAθ (g = Aθ), after a preconditioned gradient step Δθ = −η D g, the secant
    estimate equals form (B) of λ_grad(Ĥ), c (Dg)ᵀA(Dg)/(gᵀDg), computed with A itself; along
    any other update it is the Rayleigh quotient of c D^{1/2} A D^{1/2} along D^{-1/2} Δθ."""
    import torch

    from utils.curvature.preconditioned import curvatures_along_gradient
    from utils.events.detectors import secant_curvature

    gen = torch.Generator().manual_seed(0)
    q = torch.randn(8, 8, generator=gen, dtype=torch.float64)
    a = q @ q.T + torch.eye(8, dtype=torch.float64)
    theta = torch.randn(8, generator=gen, dtype=torch.float64)
    d = torch.rand(8, generator=gen, dtype=torch.float64) + 0.1
    c, lr = 0.05, 0.01
    g = a @ theta
    step = -lr * d * g
    estimate = secant_curvature(a @ (theta + step) - g, step, d, c)
    dg = d * g
    assert estimate == pytest.approx(c * float(dg @ a @ dg) / float(g @ (d * g)), rel=1e-12)
    ref = curvatures_along_gradient(g, dg, a @ g, a @ dg, c)
    assert estimate == pytest.approx(ref["lambda_grad_pre"], rel=1e-12)
    other = torch.randn(8, generator=gen, dtype=torch.float64)
    u = other / d.sqrt()
    rayleigh = c * float(u @ (d.sqrt()[:, None] * a * d.sqrt()[None, :]) @ u) / float(u @ u)
    assert secant_curvature(a @ other, other, d, c) == pytest.approx(rayleigh, rel=1e-12)
    # given D⁻¹ instead of D (the monitor's form), the same value
    assert secant_curvature(a @ other, other, 1 / d, c, inverse=True) == pytest.approx(
        rayleigh, rel=1e-12)


@pytest.mark.parametrize("scale", [0.05, 1.0, 30.0])
def test_critical_step_finds_the_closed_form_on_a_quadratic(scale):
    """Along u from θ on L = ½ θᵀAθ the loss rises exactly for s > −2 gᵀu / (uᵀAu); the line
    search brackets it in ≤ 10 forward passes, from above (never reporting a smaller step), and
    its alarm (step ≤ η) is the exact one."""
    import torch

    from utils.events.detectors import critical_step

    gen = torch.Generator().manual_seed(1)
    q = torch.randn(6, 6, generator=gen, dtype=torch.float64)
    a = scale * (q @ q.T + torch.eye(6, dtype=torch.float64))
    theta = torch.randn(6, generator=gen, dtype=torch.float64)
    g = a @ theta
    u = -g * (torch.rand(6, generator=gen, dtype=torch.float64) + 0.5)   # a descent direction
    exact = float(-2 * (g @ u) / (u @ a @ u))
    loss = lambda s: float(0.5 * (theta + s * u) @ a @ (theta + s * u))
    found, evals = critical_step(loss, lr=0.1, max_evals=10)
    assert evals <= 10 and exact <= found <= 2 * exact
    assert (found <= 0.1) == (exact <= 0.1)
    assert critical_step(lambda s: -s, lr=0.1, max_evals=5) == (math.inf, 5)  # never rises
