"""The chapter checks on synthetic metrics tables whose answer is known."""
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from utils.studies.claims import (calm_stretches,
                                  decay_crossing_step, predicted_decay_growth,
                                  random_direction_cosine, v_decay_verdicts)
from utils.events.spikes import Spike
from utils.training.runs import RunConfig


def result(metrics, spikes, lr=0.01, beta2=0.999, track_every=1):
    return SimpleNamespace(metrics=metrics, spikes=spikes,
                           config=RunConfig(lr=lr, beta2=beta2, track_every=track_every))


def test_predicted_growth_matches_finite_differences_of_vhat():
    beta2, t = 0.999, np.arange(100, 3000)
    v_hat = beta2 ** t / (1 - beta2 ** t)          # v_t = β2^t v_0, bias-corrected
    numeric = np.diff(-0.5 * np.log(v_hat))         # d ln v̂^{-1/2} / dt
    assert np.allclose(predicted_decay_growth(t[:-1] + 0.5, beta2), numeric, rtol=1e-3)
    assert predicted_decay_growth([1e6], beta2)[0] == pytest.approx(-0.5 * math.log(beta2))


def synthetic_decay_run(lam_h=90.0, h_drift=0.0, rate_factor=1.0, spike_starts=(1000, 1400)):
    """λ_max(Ĥ) grows at ``rate_factor`` × the rate pure β2-decay predicts and reaches 2/η = 200
    exactly 100 steps before each spike's start (it falls back after each spike)."""
    steps = np.arange(1, 1501)
    G = np.cumsum(predicted_decay_growth(steps, 0.999))
    pre = np.empty(len(steps))
    seg_lo = 0
    spikes = []
    for start in spike_starts:
        cross = start - 100
        seg = slice(seg_lo, start + 20)
        pre[seg] = 200.0 * np.exp(rate_factor * (G[seg] - G[cross - 1]))
        spikes.append(Spike(start, start + 5, start + 10, start + 20, 1e-3, 1e-3, 1e-1))
        seg_lo = start + 20
    pre[seg_lo:] = 150.0
    m = pd.DataFrame({"step": steps, "loss": 1e-3, "lambda_max_pre": pre,
                      "lambda_max_H": lam_h * (1 + h_drift * (steps % 200) / 200),
                      "g2_over_v_frac_small": 0.99, "v_ratio_median": 0.999})
    return result(m, spikes)


def test_decay_crossing_step_matches_the_closed_form():
    """Late in training (no bias correction left) λ grows by β2^{-1/2} per step."""
    t0, lam0 = 20_000, 100.0
    expected = t0 + math.ceil(2 * math.log(2.0) / -math.log(0.999))
    assert decay_crossing_step(lam0, t0, 200.0, 0.9, 0.999, 5000) == expected
    assert decay_crossing_step(lam0, t0, 200.0, 0.9, 0.999, 100) is None


def test_v_decay_verdicts_on_a_run_that_obeys_the_claim():
    verdicts = {v.name: v for v in v_decay_verdicts(synthetic_decay_run())}
    assert all(v.passed for v in verdicts.values()), verdicts
    growth = verdicts["lambda_pre_rises_at_decay_rate"].numbers["median_growth_over_predicted"]
    assert growth == pytest.approx(1.0, rel=1e-2)
    pred = verdicts["crossing_predicted_by_decay"].numbers
    assert pred["stretches_predicted"] == 2 and pred["median_relative_error"] < 0.02


def test_v_decay_prediction_fails_when_v_does_not_drive_the_growth():
    """λ_max(Ĥ) rising at half the decay rate (as if v half-tracked g²): the crossing comes
    twice as late as predicted, and the growth ratio is 0.5."""
    bad = {v.name: v for v in v_decay_verdicts(synthetic_decay_run(rate_factor=0.5))}
    assert not bad["crossing_predicted_by_decay"].passed
    assert bad["crossing_predicted_by_decay"].numbers["median_relative_error"] > 0.4
    assert not bad["lambda_pre_rises_at_decay_rate"].passed
    assert bad["decoupled"].passed          # the fraction alone does not decide it


def test_v_decay_verdicts_fail_when_h_moves_or_crosses_or_g_keeps_pace():
    bad = {v.name: v for v in v_decay_verdicts(synthetic_decay_run(lam_h=250.0, h_drift=0.5))}
    assert not bad["lambda_H_flat_below_threshold"].passed
    coupled = synthetic_decay_run()
    coupled.metrics["g2_over_v_frac_small"] = 0.2
    v = {x.name: x for x in v_decay_verdicts(coupled)}
    assert not v["decoupled"].passed and not v["crossing_predicted_by_decay"].passed


def test_calm_stretches_respect_the_previous_spike():
    r = synthetic_decay_run()
    stretches = calm_stretches(r.metrics, r.spikes, length=150, settle=20)
    assert [(s["step"].min(), s["step"].max()) for s in stretches] == [(850, 999), (1250, 1399)]
    close = [Spike(100, 101, 102, 103, 1, 1, 10), Spike(104, 105, 106, 107, 1, 1, 10)]
    assert len(calm_stretches(r.metrics, close, keep_empty=True)) == 2
    assert calm_stretches(r.metrics, close, keep_empty=True)[1] is None


def test_random_direction_cosine():
    rng = np.random.default_rng(0)
    n = 500
    z = rng.standard_normal((20000, n))
    sampled = np.median(np.abs(z[:, 0]) / np.linalg.norm(z, axis=1))
    assert random_direction_cosine(n) == pytest.approx(sampled, rel=0.03)
    assert random_direction_cosine(n) == pytest.approx(0.6745 / math.sqrt(n), rel=0.01)


def _instrumented(certificates, errors):
    import pandas as pd
    from types import SimpleNamespace
    from utils.training.runs import RunResult

    metrics = pd.DataFrame({"step": range(len(certificates)), "eig_certificate": certificates,
                            "eig_corrected": [0.0] * len(certificates)})
    checks = [{"step": i, "rel_error": e} for i, e in enumerate(errors)]
    return RunResult(SimpleNamespace(), metrics, [], None, None, 0.0, checks)


def test_instrument_verdict_fails_on_an_uncertified_step_or_a_spot_check_error():
    from utils.studies.claims import instrument_verdict

    assert instrument_verdict(_instrumented(["residual"] * 3, [1e-6, 2e-5])).passed
    assert not instrument_verdict(_instrumented(["residual", "none", "residual"], [1e-6])).passed
    assert not instrument_verdict(_instrumented(["residual"] * 3, [1e-6, 5e-3])).passed
    assert not instrument_verdict(_instrumented(["residual"] * 3, [])).passed  # nothing checked


def quadratic_pair(adam_lambda, gd_loss, a=1.0, lr=0.1, adam_spikes=()):
    steps = np.arange(1, len(adam_lambda) + 1)
    cfg = RunConfig(model="quadratic", model_kwargs={"curvature": a}, lr=lr)
    adam = SimpleNamespace(config=cfg, spikes=list(adam_spikes), diverged_at=None,
                           metrics=pd.DataFrame({"step": steps, "lambda_max_pre": adam_lambda}))
    gd = SimpleNamespace(config=cfg, spikes=[], diverged_at=None,
                         metrics=pd.DataFrame({"step": steps, "loss": gd_loss}))
    return adam, gd


def test_counterexample_verdicts_pass_and_fail():
    from utils.studies.claims import counterexample_verdicts

    n = 400
    rising = np.geomspace(1.0, 40.0, n)                  # crosses 2/η = 20 near step 330
    falling = np.geomspace(1.0, 1e-30, n)
    spike = [Spike(340, 345, 350, 360, 1e-30, 1e-30, 1e-3)]
    ok = {v.name: v for v in counterexample_verdicts(*quadratic_pair(rising, falling,
                                                                      adam_spikes=spike))}
    assert all(v.passed for v in ok.values())
    # Adam's curvature flat below 2/η: no crossing, and a spike before it does not count
    flat = {v.name: v for v in counterexample_verdicts(*quadratic_pair(
        np.full(n, 5.0), falling, adam_spikes=spike))}
    assert not flat["adam_crosses"].passed and not flat["adam_spikes"].passed
    # GD that rises, at a step size near its own limit: sharpness could explain a spike
    bumpy = falling.copy()
    bumpy[200] = bumpy[199] * 10
    sharp = {v.name: v for v in counterexample_verdicts(*quadratic_pair(
        rising, bumpy, a=15.0, adam_spikes=spike))}
    assert not sharp["gd_smooth"].passed and not sharp["sharpness_far_below_limit"].passed
