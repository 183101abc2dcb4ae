"""The chapter checks on synthetic metrics tables whose answer is known."""
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from utils.claims import (alignment_verdicts, calm_stretches, crossing_verdicts,
                          predicted_decay_growth, v_decay_verdicts)
from utils.spikes import Spike
from utils.runs import RunConfig


def result(metrics, spikes, lr=0.01, beta2=0.999, track_every=1):
    return SimpleNamespace(metrics=metrics, spikes=spikes,
                           config=RunConfig(lr=lr, beta2=beta2, track_every=track_every))


def test_predicted_growth_matches_finite_differences_of_vhat():
    beta2, t = 0.999, np.arange(100, 3000)
    v_hat = beta2 ** t / (1 - beta2 ** t)          # v_t = β2^t v_0, bias-corrected
    numeric = np.diff(-0.5 * np.log(v_hat))         # d ln v̂^{-1/2} / dt
    assert np.allclose(predicted_decay_growth(t[:-1] + 0.5, beta2), numeric, rtol=1e-3)
    assert predicted_decay_growth([1e6], beta2)[0] == pytest.approx(-0.5 * math.log(beta2))


def synthetic_decay_run(lam_h=90.0, h_drift=0.0):
    """λ_max(Ĥ) grows exactly as pure β2-decay predicts; a spike at 1000 and one at 1400."""
    steps = np.arange(1, 1501)
    rate = predicted_decay_growth(steps, 0.999)
    pre = 150 * np.exp(np.cumsum(rate))
    m = pd.DataFrame({"step": steps, "loss": 1e-3, "lambda_max_pre": pre,
                      "lambda_max_H": lam_h * (1 + h_drift * (steps % 200) / 200),
                      "g2_over_v_frac_small": 0.99, "v_ratio_median": 0.999})
    spikes = [Spike(1000, 1005, 1010, 1020, 1e-3, 1e-3, 1e-1),
              Spike(1400, 1405, 1410, 1420, 1e-3, 1e-3, 1e-1)]
    return result(m, spikes)


def test_v_decay_verdicts_on_a_run_that_obeys_the_claim():
    verdicts = {v.name: v for v in v_decay_verdicts(synthetic_decay_run())}
    assert all(v.passed for v in verdicts.values())
    growth = verdicts["lambda_pre_rises_at_decay_rate"].numbers["median_growth_over_predicted"]
    assert growth == pytest.approx(1.0, rel=1e-3)  # a line fitted to a slightly curved log


def test_v_decay_verdicts_fail_when_h_moves_or_crosses():
    bad = {v.name: v for v in v_decay_verdicts(synthetic_decay_run(lam_h=250.0, h_drift=0.5))}
    assert not bad["lambda_H_flat_below_threshold"].passed


def test_calm_stretches_respect_the_previous_spike():
    r = synthetic_decay_run()
    stretches = calm_stretches(r.metrics, r.spikes, length=150, settle=20)
    assert [(s["step"].min(), s["step"].max()) for s in stretches] == [(850, 999), (1250, 1399)]
    close = [Spike(100, 101, 102, 103, 1, 1, 10), Spike(104, 105, 106, 107, 1, 1, 10)]
    assert len(calm_stretches(r.metrics, close, keep_empty=True)) == 2
    assert calm_stretches(r.metrics, close, keep_empty=True)[1] is None


def test_crossing_verdicts():
    steps = np.arange(1, 401)
    pre = np.where((steps > 80) & (steps < 130), 210.0, 150.0)   # crosses 2/η = 200 at 81
    m = pd.DataFrame({"step": steps, "lambda_max_pre": pre, "lambda_max_H": 90.0})
    ok = {v.name: v for v in crossing_verdicts(result(m, [Spike(95, 100, 110, 125, 1, 1, 100)]))}
    assert ok["crossing_precedes_every_spike"].passed
    assert ok["crossing_precedes_every_spike"].numbers["median_lead_steps"] == 19
    late = {v.name: v for v in crossing_verdicts(result(m, [Spike(300, 302, 310, 330, 1, 1, 100)]))}
    assert not late["crossing_precedes_every_spike"].passed
    m2 = m.assign(lambda_max_H=205.0)
    assert not {v.name: v for v in crossing_verdicts(result(m2, []))}["raw_curvature_below"].passed


def test_alignment_verdicts():
    steps = np.arange(1, 1201)
    cos = np.full(len(steps), 1e-3)
    cos[989:1009] = np.linspace(0.1, 0.99, 20)        # steps 990..1009: onset of the spike at 1000
    m = pd.DataFrame({"step": steps, "lambda_max_pre": 150.0, "cos_grad_top_sym": cos,
                      "cos_grad_top": cos / 2})
    spikes = [Spike(1000, 1003, 1009, 1020, 1, 1, 100)]
    v = {x.name: x for x in alignment_verdicts(result(m, spikes))}
    assert all(x.passed for x in v.values())
    assert v["onset_alignment_large"].numbers["median_onset_peak_cos"] == pytest.approx(0.99)
    aligned = m.assign(cos_grad_top_sym=0.5)
    assert not {x.name: x for x in alignment_verdicts(result(aligned, spikes))}[
        "calm_alignment_small"].passed


def _instrumented(certificates, errors):
    import pandas as pd
    from types import SimpleNamespace
    from utils.runs import RunResult

    metrics = pd.DataFrame({"step": range(len(certificates)), "eig_certificate": certificates,
                            "eig_corrected": [0.0] * len(certificates)})
    checks = [{"step": i, "rel_error": e} for i, e in enumerate(errors)]
    return RunResult(SimpleNamespace(), metrics, [], None, None, 0.0, checks)


def test_instrument_verdict_fails_on_an_uncertified_step_or_a_spot_check_error():
    from utils.claims import instrument_verdict

    assert instrument_verdict(_instrumented(["residual"] * 3, [1e-6, 2e-5])).passed
    assert not instrument_verdict(_instrumented(["residual", "none", "residual"], [1e-6])).passed
    assert not instrument_verdict(_instrumented(["residual"] * 3, [1e-6, 5e-3])).passed
    assert not instrument_verdict(_instrumented(["residual"] * 3, [])).passed  # nothing checked
