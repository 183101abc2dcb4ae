"""Spike warning signals and their scoring."""
import math

import numpy as np
import pytest

from utils.detectors import (above, ema_zscore, loss_rose, olmo_skip, random_alarms,
                             score_alarms, sustained)
from utils.spikes import Spike


def spike(start, end):
    return Spike(start, start + 2, start + 5, end, 1.0, 1.0, 100.0)


def test_an_alarm_at_or_after_the_start_is_never_a_hit():
    steps = np.arange(100)
    spikes = [spike(50, 60)]
    for at in (50, 51, 55, 60):
        alarms = steps == at
        s = score_alarms(steps, alarms, spikes, horizon=20)
        assert s.hits == 0 and s.recall == 0 and s.leads == ()
        assert s.alarms == 0 and s.false_alarms == 0   # inside the spike: neither
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
