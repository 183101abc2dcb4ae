"""The spike detector on synthetic curves."""
import numpy as np
import pytest

from utils.spikes import detect_spikes, spikes_table


def decaying(n=300, seed=0, noise=0.05):
    rng = np.random.default_rng(seed)
    return np.exp(-np.arange(n) / 60) * (1 + noise * rng.standard_normal(n))


def test_clean_spike():
    loss = decaying(noise=0)
    loss[150:160] = loss[149] * np.geomspace(2, 1000, 10)   # rises 1000×
    loss[160:170] = loss[149] * np.geomspace(1000, 0.5, 10)  # and recovers
    spikes = detect_spikes(loss, window=50, factor=10)
    assert len(spikes) == 1
    s = spikes[0]
    assert s.start == 149 and s.detected == 153 and s.peak in (159, 160) and 160 < s.end < 170
    assert s.height == pytest.approx(1000, rel=0.01) and not s.diverged


def test_noise_is_not_a_spike():
    assert detect_spikes(decaying(noise=0.3, seed=1)) == []


def test_nan_is_a_divergence():
    loss = decaying(noise=0)
    loss[200] = np.nan
    spikes = detect_spikes(loss)
    assert len(spikes) == 1 and spikes[0].diverged and spikes[0].detected == 200
    assert spikes[0].end is None and spikes[0].height == np.inf


def test_steps_axis_floor_and_unfinished_spike():
    loss = np.array([1e-20, 1e-21, 1e-18, 1e-22, 1.0, 1.0, 5.0])
    steps = np.arange(7) * 10
    # below the floor the 1000× rise at index 2 does not count; the rise to 1.0 does
    spikes = detect_spikes(loss, steps, window=5, floor=1e-6)
    assert [(s.start, s.detected, s.peak, s.end) for s in spikes] == [(30, 40, 60, None)]
    # without the floor the tiny rise at index 2 is detected, and the big one 2 steps after it
    # ends merges into it (within the window): one event from step 10 to the end
    merged = detect_spikes(loss, steps, window=5)
    assert [(s.start, s.detected, s.peak, s.end) for s in merged] == [(10, 20, 60, None)]
    table = spikes_table(spikes)
    assert list(table["start"]) == [30] and "height" in table


@pytest.mark.parametrize("kwargs,match", [({"factor": 1.0}, "factor"), ({"window": 0}, "window"),
                                          ({"floor": -1.0}, "floor")])
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        detect_spikes([1.0, 2.0], **kwargs)


def test_sustained_crossings_with_hysteresis_and_duration():
    from utils.spikes import sustained_crossings
    steps = np.arange(12) * 10
    x = np.array([1, 3, 3, 1.9, 3, 1, 1, 3, 1, 3, 3, 3], dtype=float)
    assert [(c.start, c.end) for c in sustained_crossings(x, steps, 2.0)] == [
        (10, 20), (40, 40), (70, 70), (90, 110)]
    # 1.9 ≥ 2 (1 - 0.1): the dip at step 30 does not close the first interval
    got = sustained_crossings(x, steps, 2.0, hysteresis=0.1, min_duration=20)
    assert [(c.start, c.end, c.duration) for c in got] == [(10, 40, 30), (90, 110, 20)]
    assert sustained_crossings([np.nan, 3.0], [0, 1], 2.0)[0].start == 1


def test_aftershocks_merge_into_one_spike():
    loss = decaying(noise=0)
    base = loss[149]
    loss[150:156] = base * np.array([50, 500, 100, 5, 40, 3])  # dips below 10× then rises again
    spikes = detect_spikes(loss, window=50, factor=10)
    assert len(spikes) == 1
    s = spikes[0]
    assert (s.start, s.detected, s.peak, s.end) == (149, 150, 151, 155)
    # far apart, they stay two spikes
    loss2 = decaying(noise=0)
    loss2[100], loss2[200] = 50 * loss2[99], 50 * loss2[199]
    assert [s.start for s in detect_spikes(loss2, window=50)] == [99, 199]


def test_score_predictor_recall_precision_and_leads():
    from utils.spikes import Crossing, Spike, score_predictor
    spikes = [Spike(100, 105, 110, 120, 1.0, 1.0, 100.0), Spike(300, 302, 310, 330, 1.0, 1.0, 50.0)]
    crossings = [Crossing(95, 112), Crossing(200, 210), Crossing(250, 255)]
    score = score_predictor(crossings, spikes, max_lead=20)
    assert (score.matched_spikes, score.hit_crossings) == (1, 1)
    assert score.recall == 0.5 and score.precision == pytest.approx(1 / 3) and score.leads == (5,)
    wide = score_predictor(crossings, spikes, max_lead=60)  # 250 is now within 60 steps of 300
    assert wide.recall == 1.0 and wide.leads == (5, 50)
    assert np.isnan(score_predictor([], [], max_lead=5).recall)
