"""Chapter 2's reading of the paper's Figure 5 (utils.studies.crossing): one run's summary by
the stated rules, the remedies, and statements that fail where the paper's text would be false."""
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from utils.events.spikes import Spike
from utils.studies.crossing import (VClip, branch_summary, figure5_statements, remedy_runs,
                                    spike_summary, stricter_verdicts)
from utils.training.runs import RunConfig, run

BETA2 = 0.999


def synthetic(max_at=250, grad_at=266, update_at=270, start=270, peak=290, steps=320,
              v_rate=BETA2, lam_h=150.0):
    """A made-up run at η = 0.02 (2/η = 100) whose first spike starts at ``start``."""
    step = np.arange(1, steps + 1)
    lam_pre = np.where(step >= max_at, 110.0, 80.0)
    lam_grad = np.where(step >= grad_at, 105.0, 20.0)
    lam_upd = np.where(step >= update_at, 105.0, 10.0)
    v_raw = 4.0 * v_rate ** step
    sqrt_v = np.sqrt(v_raw / (1 - BETA2 ** step))
    cos_g = np.where((step >= start) & (step <= peak), 0.9, 0.3)
    metrics = pd.DataFrame({
        "step": step, "loss": np.exp(-step / 20.0), "grad_norm": np.full(steps, 1e-5),
        "lambda_max_pre": lam_pre, "lambda_grad_pre_a": lam_grad, "lambda_update_pre": lam_upd,
        "lambda_max_H": np.full(steps, lam_h), "sqrt_v_hat_norm": sqrt_v,
        "sqrt_v_hat_norm.w": sqrt_v, "sqrt_v_hat_norm.b": sqrt_v / 3,
        "cos_top_consecutive_H": np.full(steps, 0.999), "cos_grad_top_H": cos_g,
        "eig_certificate": ["residual"] * steps})
    spikes = [Spike(start, start + 3, peak, peak + 30, 1.0, 1.0, 1e6)]
    config = SimpleNamespace(lr=0.02, beta2=BETA2)
    return SimpleNamespace(metrics=metrics, spikes=spikes, config=config, diverged_at=None)


def test_a_run_read_as_the_paper_reads_figure_5():
    s = spike_summary(synthetic())
    assert s["n_spikes"] == 1 and s["spike_start"] == 270 and s["recovery"] == 20
    assert s["max_lead"] == 20 and s["grad_lead"] == 4 and s["grad_matched"] == 1
    assert s["early_grad"] == 0 and s["update_after_grad"] == 4
    assert s["h_change"] == 0 and s["h_over_threshold"] == pytest.approx(1.5)
    assert s["v_rate_worst"] == pytest.approx(BETA2, abs=1e-9)     # the raw v decays at β2
    assert s["v_hat_rate_worst"] < BETA2 - 1e-3                    # v̂ faster: bias correction
    assert s["g_over_sqrt_v"] < 1e-4 and s["drift_h"] == pytest.approx(0.999)
    assert s["align_rise"] == pytest.approx(0.6)


def test_no_spike_leaves_the_quantities_undefined():
    run_ = synthetic()
    run_.spikes = []
    s = spike_summary(run_)
    assert s["n_spikes"] == 0 and math.isnan(s["max_lead"]) and math.isnan(s["grad_matched"])


def row(seed, **changes):
    out = {**spike_summary(synthetic(**changes)), "eps_onset_rise": 1.0, "eps_start_spikes": 0,
           "vclip_spikes": 0, "eps_start_slowdown": 2.0, "vclip_slowdown": 3.0}
    return {"seed": seed, **out}


def test_the_statements_hold_on_runs_that_obey_the_figure_and_fail_otherwise():
    good = pd.DataFrame([row(i) for i in range(16)])
    ok = {s.key: s for s in figure5_statements(good)}
    assert all(s.reproduced for s in ok.values()), {k: s.summary for k, s in ok.items()
                                                    if not s.reproduced}
    # λ_max(Ĥ) far ahead of the spike; λ_grad only after the start; v not decaying; λ_update
    # before λ_grad
    bad = pd.DataFrame([row(i, max_at=60, grad_at=272, update_at=250, v_rate=1.0)
                        for i in range(16)])
    failed = {s.key for s in figure5_statements(bad) if not s.reproduced}
    assert {"5.2", "5.3a", "5.6"} <= failed
    bad_remedy = good.assign(eps_onset_rise=1e3, vclip_spikes=2)
    failed = {s.key for s in figure5_statements(bad_remedy) if not s.reproduced}
    assert failed == {"5.9", "D9b"}


def test_our_stricter_tests():
    below = pd.DataFrame([row(i, lam_h=50.0) for i in range(16)])
    above = pd.DataFrame([row(i) for i in range(16)])
    assert {v.name: v.passed for v in stricter_verdicts(below)}["beyond_raw_curvature_below"]
    verdicts = {v.name: v.passed for v in stricter_verdicts(above)}
    assert not verdicts["beyond_raw_curvature_below"]
    assert not verdicts["beyond_v_hat_decays_at_beta2"]


def tiny(**kw):
    return RunConfig(model="mlp", model_kwargs=dict(width=8), data="sin",
                     data_kwargs=dict(n_points=16), lr=0.02, steps=60, progress=False, **kw)


def test_v_clip_keeps_every_second_moment_above_its_floor():
    result = run(tiny(), intervention=VClip(0.5), checkpoint_steps=(30,), spot_checks=False)
    state = result.checkpoints[30].optimizer["state"]
    assert min(float(s["exp_avg_sq"].min()) for s in state.values()) >= 0.5


def test_the_remedies_fork_at_the_onset_and_rerun_from_the_start():
    config = tiny()
    base = run(config, checkpoint_every=10, spot_checks=False)
    runs = remedy_runs(config, base, 25)
    assert set(runs) == {"eps_onset", "eps_start", "v_clip"}
    assert runs["eps_onset"].metrics["step"].iloc[0] == 25
    np.testing.assert_allclose(runs["eps_onset"].metrics["loss"].iloc[0],
                               base.metrics.set_index("step")["loss"].loc[25], rtol=1e-12)
    summary = branch_summary(base, runs, 25)
    assert summary["eps_onset_rise"] >= 1 and summary["eps_start_spikes"] >= 0
    assert "eps_onset" not in remedy_runs(config, base, math.nan)
