"""The spike detector on synthetic curves."""
import numpy as np
import pytest

from utils.events.spikes import detect_events, detect_spikes, float_floor, spikes_table


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


def test_steps_axis_and_unfinished_spike():
    loss = np.array([1.0, 0.5, 0.4, 0.3, 20.0, 30.0, 50.0])
    steps = np.arange(7) * 10
    spikes = detect_spikes(loss, steps, window=5)
    assert [(s.start, s.detected, s.peak, s.end) for s in spikes] == [(30, 40, 60, None)]
    table = spikes_table(spikes)
    assert list(table["start"]) == [30] and "height" in table and "excluded" in table


def test_events_at_the_float_floor_are_reported_not_counted():
    """A realisable target: the loss falls to rounding level (1e-31 of its start), where a
    rise of many orders of magnitude is still reported, as excluded, never as a spike."""
    loss = np.r_[np.geomspace(1.0, 1e-31, 200), np.geomspace(1e-31, 1e-3, 20),
                 np.geomspace(1e-3, 1e-5, 30)]
    events = detect_events(loss, floor=float_floor("float64"))
    assert len(events) == 1 and events[0].excluded == "float floor"
    assert detect_spikes(loss, floor=float_floor("float64")) == []
    # without a floor the same event counts
    assert len(detect_spikes(loss, floor=0.0)) == 1
    assert float_floor("float64") == pytest.approx((100 * 2.220446049250313e-16) ** 2)
    assert float_floor("float32") > 1e-11


def test_start_is_where_the_loss_leaves_its_trend_despite_oscillation():
    """Full-batch training oscillates (period 2) around a falling trend; the start is the last
    step at or below the running median, i.e. the trough before the rise, not an earlier
    minimum and not the detection step."""
    n = 200
    trend = np.exp(-np.arange(n) / 400)
    loss = trend * np.where(np.arange(n) % 2 == 0, 1.0, 3.0)   # ×3 oscillation
    loss[150:] = loss[150]          # from step 150 on the loss stops falling ...
    loss[150:170] = loss[150] * np.geomspace(1, 1000, 20)     # ... and rises 1000×
    loss[170:] = loss[150]
    (s,) = detect_spikes(loss, window=50, factor=10)
    median = np.median(loss[s.start - 50:s.start])
    assert 150 <= s.start <= 152 and loss[s.start] <= median < loss[s.start + 1]
    assert s.detected > s.start
    # a slow creep above the trend before the rise belongs to the spike
    creep = decaying(noise=0)
    creep[150:156] = creep[149] * 1.3 ** np.arange(1, 7)
    creep[156:165] = creep[155] * np.geomspace(2, 300, 9)
    creep[165:] = creep[149] * 0.5
    (c,) = detect_spikes(creep, window=50, factor=10)
    assert c.start == 150   # 1.3 × loss[149] is still below the lagging median of a falling loss
    assert creep[150] <= np.median(creep[100:150]) and creep[151] > np.median(creep[101:151])


def test_a_dip_and_its_recovery_are_not_a_spike():
    """One step far below the trend, then back to it: the recovery is 20× over the dip but not
    over the trend, so nothing is detected (a running-minimum rule would call it a spike)."""
    loss = np.ones(120)
    loss[60] = 0.05
    assert detect_events(loss, window=50, factor=10) == []
    loss[70:75] = 15.0                  # a real rise afterwards starts at the trend, step 69
    (s,) = detect_spikes(loss, window=50, factor=10)
    assert (s.start, s.detected, s.height) == (69, 70, 15.0)


def test_no_onset_window_ends_after_its_spike_start():
    """Over many random spiky curves, every onset window ends exactly at the spike's start,
    which is never after its detection, and a crossing that starts after the start is never
    matched (it would be if windows ended at the peak)."""
    from utils.events.spikes import Crossing, onset_window, score_predictor
    rng = np.random.default_rng(0)
    for trial in range(30):
        loss = decaying(n=600, seed=trial, noise=0.2)
        for at in rng.choice(np.arange(60, 560), size=3, replace=False):
            loss[at:at + 8] *= np.geomspace(3, 10 ** rng.uniform(1.5, 3), 8)
        for s in detect_spikes(loss, window=50, factor=10):
            lo, hi = onset_window(s, 40)
            assert hi == s.start <= s.detected <= s.peak and lo == s.start - 40
            late = score_predictor([Crossing(s.start + 1, s.peak)], [s], max_lead=40)
            assert late.matched_spikes == 0 and late.signed_leads == (-1,)
            on_time = score_predictor([Crossing(s.start, s.peak)], [s], max_lead=40)
            assert on_time.matched_spikes == 1 and on_time.leads == (0,)


@pytest.mark.parametrize("kwargs,match", [({"factor": 1.0}, "factor"), ({"window": 0}, "window"),
                                          ({"floor": -1.0}, "floor"),
                                          ({"floor": 1.0}, "floor")])
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        detect_spikes([1.0, 2.0], **kwargs)


def test_sustained_crossings_with_hysteresis_and_duration():
    from utils.events.spikes import sustained_crossings
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
    from utils.events.spikes import Crossing, Spike, score_predictor
    spikes = [Spike(100, 105, 110, 120, 1.0, 1.0, 100.0), Spike(300, 302, 310, 330, 1.0, 1.0, 50.0)]
    crossings = [Crossing(95, 112), Crossing(200, 210), Crossing(250, 255)]
    score = score_predictor(crossings, spikes, max_lead=20)
    assert (score.matched_spikes, score.hit_crossings) == (1, 1)
    assert score.recall == 0.5 and score.precision == pytest.approx(1 / 3) and score.leads == (5,)
    wide = score_predictor(crossings, spikes, max_lead=60)  # 250 is now within 60 steps of 300
    assert wide.recall == 1.0 and wide.leads == (5, 50)
    # a crossing between a spike's start and its peak is reported (signed), never matched
    after = score_predictor([Crossing(104, 112)], spikes[:1], max_lead=20)
    assert after.matched_spikes == 0 and after.signed_leads == (-4,)
    assert np.isnan(score_predictor([], [], max_lead=5).recall)
