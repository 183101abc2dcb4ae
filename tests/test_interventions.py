"""Checkpoints, forks and the interventions of the causal chapter."""
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from utils.studies.interventions import (BRANCHES, FrozenPreconditioner, Intervention, RandomKick,
                                         RawVFloor, VHatFloor, checkpoint_at, run_branches)
from utils.training.runs import RunConfig, run

CONFIG = RunConfig(model="mlp", model_kwargs={"width": 16}, data="sin",
                   data_kwargs={"n_points": 64}, lr=0.01, steps=300, track_every=5,
                   measure=("lambda_max_H", "lambda_max_pre", "lambda_grad"), progress=False)


@pytest.fixture(scope="module")
def base():
    return run(CONFIG, checkpoint_every=50)


def test_a_replay_from_a_checkpoint_is_bit_identical(base):
    assert sorted(base.checkpoints) == [0, 50, 100, 150, 200, 250, 300]
    original = base.metrics.set_index("step")[["loss", "grad_norm"]]
    for step in (0, 100):    # from the start, and from the middle
        replay = run(CONFIG, resume=base.checkpoints[step], spot_checks=False)
        again = replay.metrics.set_index("step")[["loss", "grad_norm"]]
        assert again.index[0] == step + 1
        assert (again.to_numpy() == original.loc[step + 1:].to_numpy()).all()
    # a fork between stored checkpoints is replayed up to it, then continues identically
    fork = checkpoint_at(base, 123)
    assert fork.step == 123
    branch = run(CONFIG, resume=fork, intervention=Intervention(), spot_checks=False)
    assert (branch.metrics["loss"].to_numpy() == original.loc[124:, "loss"].to_numpy()).all()
    for name, p in dict(base.model.named_parameters()).items():
        assert torch.equal(p, dict(branch.model.named_parameters())[name])


def test_resume_outside_the_run_is_refused(base):
    with pytest.raises(ValueError, match="resume"):
        run(replace(CONFIG, steps=100), resume=base.checkpoints[100])


def linear_adam(step, v, m, lr=0.01):
    """A linear loss c·θ (constant gradient c) under torch.optim.Adam whose state is set to
    v = c² (so v_t = β2 v + (1-β2) c² = v: v does not change) at a late step (no bias
    correction left)."""
    torch.manual_seed(0)
    theta = torch.nn.Parameter(torch.randn(7, dtype=torch.float64))
    c = torch.linspace(-2, 3, 7, dtype=torch.float64)
    opt = torch.optim.Adam([theta], lr=lr, eps=1e-8)
    theta.grad = c.clone()
    opt.step()                               # creates the state
    state = opt.state[theta]
    state["step"].fill_(step)
    state["exp_avg_sq"].copy_(v(c))
    state["exp_avg"].copy_(m(c))
    return theta, c, opt


def advance(theta, c, opt, n=25):
    for _ in range(n):
        theta.grad = c.clone()
        opt.step()
    return theta.detach().clone()


def test_frozen_preconditioner_agrees_with_adam_where_v_does_not_change():
    """Where v is constant, Adam's D is constant too, so freezing it changes nothing."""
    theta, c, adam = linear_adam(10 ** 6, v=lambda c: c ** 2, m=lambda c: 0.3 * c)
    twin = torch.nn.Parameter(theta.detach().clone())
    frozen = FrozenPreconditioner().prepare(copy_state(adam, theta, twin), {"theta": twin})
    a, f = advance(theta, c, adam), advance(twin, c, frozen)
    assert torch.allclose(a, f, rtol=1e-13, atol=0)
    assert not torch.equal(a, theta.detach() * 0)  # it moved


def test_frozen_preconditioner_differs_from_adam_where_v_decays():
    """With v ≫ g² Adam's v decays and D grows; the frozen D does not, so they part."""
    theta, c, adam = linear_adam(10 ** 6, v=lambda c: 1e4 * c ** 2, m=lambda c: 0.3 * c)
    twin = torch.nn.Parameter(theta.detach().clone())
    frozen = FrozenPreconditioner().prepare(copy_state(adam, theta, twin), {"theta": twin})
    a, f = advance(theta, c, adam, 200), advance(twin, c, frozen, 200)
    assert not torch.allclose(a, f, rtol=1e-6)


def copy_state(adam, theta, twin):
    """A torch.optim.Adam on ``twin`` holding a copy of ``adam``'s state for ``theta``."""
    opt = torch.optim.Adam([twin], lr=adam.param_groups[0]["lr"], eps=adam.param_groups[0]["eps"])
    opt.state[twin] = {k: v.clone() for k, v in adam.state[theta].items()}
    return opt


def test_raw_v_floor_holds_v_at_its_fork_value_while_adam_would_decay_it():
    theta, c, adam = linear_adam(10 ** 6, v=lambda c: 1e4 * c ** 2, m=lambda c: 0 * c)
    floor = adam.state[theta]["exp_avg_sq"].clone()
    vf = RawVFloor()
    vf.prepare(adam, {"theta": theta})
    for _ in range(50):
        theta.grad = c.clone()
        adam.step()
        vf.after_step(adam)
    assert torch.equal(adam.state[theta]["exp_avg_sq"], floor)   # g² ≪ v: clamped every step
    _, _, free = linear_adam(10 ** 6, v=lambda c: 1e4 * c ** 2, m=lambda c: 0 * c)
    advance(next(iter(free.state)), c, free, 50)
    assert (next(iter(free.state.values()))["exp_avg_sq"] < floor).all()


class Preconditioners(Intervention):
    """``inner``, with read_adam_state's D kept after every step (``d``: list of tensors)."""

    def __init__(self, inner):
        self.inner, self.d = inner, []

    def prepare(self, opt, params):
        out = self.inner.prepare(opt, params)
        self.d.append(self.state(out).preconditioner)
        return out

    def after_step(self, opt):
        self.inner.after_step(opt)
        self.d.append(self.state(opt).preconditioner)


def test_v_hat_floor_keeps_adams_preconditioner_non_increasing_over_a_fork(base):
    """Forked early (β2^t ≈ 0.9, the bias correction still moving), the v̂ floor keeps every
    element of read_adam_state's D at or below its previous value, step after step; the raw-v
    floor does not (v̂ = v/(1−β2^t) falls as 1−β2^t rises), nor does the unchanged run."""
    def preconditioners(intervention, until=200):
        recorded = Preconditioners(intervention)
        run(replace(CONFIG, steps=until), resume=checkpoint_at(base, 100),
            intervention=recorded, spot_checks=False)
        return torch.stack(recorded.d)

    def rises(d):
        return int((d[1:] > d[:-1] * (1 + 1e-12)).sum())

    hat = preconditioners(VHatFloor())
    assert len(hat) == 101 and rises(hat) == 0
    assert rises(preconditioners(RawVFloor())) > 0
    assert rises(preconditioners(Intervention())) > 0


def test_v_hat_floor_refuses_a_fork_before_the_first_step():
    theta = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = torch.optim.Adam([theta])
    theta.grad = torch.ones(3, dtype=torch.float64)
    opt.step()
    opt.state[theta]["step"].fill_(0)
    with pytest.raises(ValueError, match="step"):
        VHatFloor().prepare(opt, {"theta": theta})


def test_random_kick_moves_the_parameters_by_its_size():
    theta = torch.nn.Parameter(torch.zeros(3, 4, dtype=torch.float64))
    other = torch.nn.Parameter(torch.ones(5, dtype=torch.float64))
    RandomKick(0.25, seed=3).prepare(None, {"a": theta, "b": other})
    moved = torch.cat([theta.detach().reshape(-1), other.detach() - 1])
    assert float(moved.norm()) == pytest.approx(0.25, rel=1e-12)
    with pytest.raises(ValueError, match="size"):
        RandomKick(-1.0)


def test_run_branches_gives_one_row_per_branch(base):
    rows = run_branches(base, fork=100, until=180, seed=0)
    assert [r["branch"] for r in rows] == list(BRANCHES)
    control = rows[0]
    assert control["steps"] == 80 and control["fork_step"] == 100
    ratio = base.metrics.set_index("step")["loss"]
    assert control["max_loss_ratio"] == pytest.approx(ratio.loc[101:180].max() / ratio.loc[100])
    kicked = rows[BRANCHES.index("random_kick")]
    assert kicked["change"] >= 0 and rows[BRANCHES.index("eps_raised")]["change"] > 0
    assert all(math.isfinite(r["max_lambda_max_pre"]) for r in rows)


def test_fork_steps_end_at_the_spike_start_and_skip_a_missing_previous_spike():
    from types import SimpleNamespace

    import pandas as pd

    from utils.studies.interventions import fork_steps
    from utils.events.spikes import Spike

    steps = np.arange(1, 401)
    lam = np.where(steps >= 300, 250.0, 150.0)          # crosses 2/η = 200 at 300
    result = SimpleNamespace(metrics=pd.DataFrame({"step": steps, "lambda_max_pre": lam}),
                             threshold=200.0)
    spike = Spike(330, 335, 340, 350, 1, 1, 100)
    assert fork_steps(result, spike, None) == {"crossing-50": 250, "crossing-10": 290,
                                               "crossing": 300, "start": 330}
    lags = fork_steps(result, spike, 280)
    assert lags["previous_end"] == 280 and lags["crossing-50"] == 280   # clipped
    assert max(lags.values()) == spike.start
    assert fork_steps(result, Spike(250, 255, 260, 270, 1, 1, 100), None) is None


def fork_table():
    """A made-up sweep table: 10 forks at each lag; the control always spikes, the v floor
    prevents the spike at early lags in 9 of 10, the kick in 1 of 10."""
    import pandas as pd

    from utils.studies.interventions import LAGS

    rows = []
    for seed in range(10):
        for lag in LAGS:
            early = lag in ("previous_end", "crossing-50", "crossing-10")
            spiked = {"control": True, "v_floor": not early or seed == 0,
                      "v_floor_raw": not early or seed < 5, "d_frozen": True, "eps_raised": False, "lr_lowered": True,
                      "random_kick": not (early and seed == 1)}
            for branch in BRANCHES:
                offset = {"previous_end": -200, "crossing-50": -50, "crossing-10": -10,
                          "crossing": 0, "start": 30}[lag]
                rows.append({"architecture": "mlp", "seed": seed, "spike": 0, "lag": lag,
                             "branch": branch, "spiked": spiked[branch],
                             "crossing": 970, "fork_step": 970 + offset,
                             "grad_crossing": 990 + seed, "original_start": 1000,
                             "spike_start": 1000 + (100 if branch == "v_floor" else 0)
                             if spiked[branch] else None})
    return pd.DataFrame(rows)


def test_intervention_verdicts_pass_and_fail():
    from utils.studies.interventions import intervention_verdicts, spike_rates

    table = fork_table()
    v = {x.name: x for x in intervention_verdicts(table)}
    assert all(x.passed for x in v.values()), v
    assert v["v_floor_prevents_the_spike"].numbers["share_prevented"] == pytest.approx(0.9)
    rates = spike_rates(table)
    row = rates.loc[("v_floor", "crossing-10")]
    assert row["forks"] == 10 and row["spike_rate"] == pytest.approx(0.1)
    assert row["ci95_low"] < 0.1 < row["ci95_high"] and row["median_delay_steps"] == 100
    # a v floor that only delays (the branch spikes anyway) fails; so does a kick that
    # prevents as often as the floor
    delayed = table.assign(spiked=table["spiked"] | (table["branch"] == "v_floor"))
    assert not {x.name: x for x in intervention_verdicts(delayed)}["v_floor_prevents_the_spike"].passed
    kicked = table.assign(spiked=table["spiked"] & (table["branch"] != "random_kick"))
    assert not {x.name: x for x in intervention_verdicts(kicked)}["random_kick_does_not_prevent"].passed
    broken = table.assign(spiked=table["spiked"] & (table["branch"] != "control"))
    assert not {x.name: x for x in intervention_verdicts(broken)}["control_reproduces_the_spike"].passed


def test_prevented_shares_and_lag_offsets():
    from utils.studies.interventions import lag_offsets, prevented_shares

    table = fork_table()
    shares = prevented_shares(table)
    assert "control" not in shares.index
    assert shares.loc["v_floor", "crossing-10"] == pytest.approx(0.9)
    assert shares.loc["v_floor", "start"] == 0.0 and shares.loc["eps_raised", "start"] == 1.0
    offsets = lag_offsets(table)
    assert offsets["crossing-50"] == -50 and offsets["start"] == 30
    assert offsets["lambda_grad crossing"] == 24.5   # seeds 0-9: 20..29, median over spikes
    assert offsets["spike start"] == 30


def test_architecture_effects_set_the_floors_beside_the_kick():
    from utils.studies.interventions import architecture_effects

    table = fork_table()
    effects = architecture_effects(table)
    assert list(effects.index.get_level_values("branch")) == ["v_floor", "v_floor_raw",
                                                              "random_kick"]
    floor, raw, kick = (effects.loc[("mlp", b)] for b in ("v_floor", "v_floor_raw", "random_kick"))
    assert floor["forks"] == 30 and floor["share_prevented"] == pytest.approx(0.9)
    assert raw["share_prevented"] == pytest.approx(0.5)
    assert kick["share_prevented"] == pytest.approx(0.1)
    assert floor["ci95_low"] < 0.9 < floor["ci95_high"]
    assert floor["median_delay_steps"] == 100 and kick["median_delay_steps"] == 0
    # forks whose control did not spike are left out
    quiet = table.assign(spiked=table["spiked"] & ~((table["branch"] == "control")
                                                     & (table["seed"] == 0)))
    assert architecture_effects(quiet).loc[("mlp", "v_floor"), "forks"] == 27


def test_prevented_up_to_crossing_averages_the_lags_before_the_spike_start():
    from utils.studies.interventions import prevented_up_to_crossing

    table = fork_table()
    assert prevented_up_to_crossing(table, "v_floor") == pytest.approx((0.9 * 3 + 0.0) / 4)
    assert prevented_up_to_crossing(table, "eps_raised") == 1.0


def test_early_prevented_pools_the_early_forks_whose_control_spiked():
    from utils.studies.interventions import early_prevented

    table = fork_table()
    assert early_prevented(table, "v_floor") == (pytest.approx(0.9), 30)
    assert early_prevented(table, "v_floor_raw") == (pytest.approx(0.5), 30)
