"""The spike-type rule (the paper's Figure D1): each kind on a curve built to be it, the
horizon, and the calm baseline."""
import math

import numpy as np
import pandas as pd
import pytest

from utils.events.spikes import detect_spikes
from utils.studies.spike_types import (HORIZON, UNDETERMINED, calm_labels, classify_run,
                                       classify_spike, coincidence)

N = 800


def curves(test_after=1.0, train_after=1e-3, recovers=True, steps=N, spike_at=200,
           second_at=None):
    """A training loss flat at 1e-3, a spike to 1 at ``spike_at`` for 10 steps (forever if not
    ``recovers``) after which it sits at ``train_after``; a test loss of 1 before it and
    ``test_after`` after. ``second_at``: a second spike of 10 steps there."""
    step = np.arange(1, steps + 1)
    train = np.full(steps, 1e-3)
    test = np.ones(steps)
    train[step >= spike_at + 10] = train_after
    inside = step >= spike_at
    if recovers:
        inside &= step < spike_at + 10
    train[inside] = 1.0
    if second_at is not None:
        train[(step >= second_at) & (step < second_at + 10)] = 1.0
    test[step >= spike_at + 10] = test_after
    return pd.DataFrame({"step": step, "loss": train, "test_loss": test})


def kinds(m):
    return classify_run(m, detect_spikes(m["loss"], m["step"]))


def kind(m):
    table = kinds(m)
    assert len(table) == 1
    return table.iloc[0]


@pytest.mark.parametrize("test_after, want", [(1.0, "neutral"), (1.5, "neutral"),
                                              (0.4, "beneficial"), (2.5, "malignant")])
def test_each_kind_on_a_curve_built_to_be_it(test_after, want):
    row = kind(curves(test_after))
    assert row["type"] == want and row["test_ratio"] == pytest.approx(test_after)


def test_the_training_loss_must_come_back_half_way_on_a_log_scale():
    # from 1e-3 to a peak of 1: half-way is 0.03
    assert kind(curves(train_after=1e-2))["type"] == "neutral"
    assert kind(curves(train_after=0.1))["type"] == "catastrophic"
    assert kind(curves(recovers=False))["type"] == "catastrophic"


def test_the_after_window_ends_at_the_horizon_or_the_next_spike():
    row = kind(curves(0.4))
    assert row["after_step"] == row["peak"] + HORIZON
    # the run ends before the horizon: undetermined, however the spike looks
    assert kind(curves(spike_at=N - HORIZON + 5))["type"] == UNDETERMINED
    assert kind(curves(recovers=False, spike_at=N - 5))["type"] == UNDETERMINED
    # a next spike 100 steps on: judged up to its start
    table = kinds(curves(0.4, second_at=300))
    assert len(table) == 2 and table["after_step"][0] == table["start"][1]
    assert table["type"][0] == "beneficial"
    # a next spike within 2 windows of the peak: no clean window after it
    m = curves(0.4)
    spike = detect_spikes(m["loss"], m["step"])[0]
    assert classify_spike(m, spike, next_start=spike.peak + 30)["type"] == UNDETERMINED
    assert classify_spike(m, spike, next_start=spike.peak + 50)["type"] == "beneficial"


def test_a_divergence_is_catastrophic():
    m = curves()
    m.loc[m["step"] >= 205, "loss"] = math.inf
    spikes = detect_spikes(m["loss"], m["step"])
    assert spikes[-1].diverged and classify_spike(m, spikes[-1])["type"] == "catastrophic"


def test_calm_baseline():
    m = curves(0.4)
    spikes = detect_spikes(m["loss"], m["step"])
    # the test loss is flat away from the spike: every calm pseudo-spike is neutral
    labels = calm_labels(m, spikes, 30, np.random.default_rng(0))
    assert len(labels) == 30 and (labels == "neutral").all()
    # a test loss that halves every 100 steps makes calm stretches "beneficial" without a spike
    m["test_loss"] = 0.5 ** (m["step"] / 100)
    labels = calm_labels(m, spikes, 30, np.random.default_rng(0))
    assert (labels == "beneficial").all()


def test_coincidence_reads_form_a_over_the_judged_window():
    steps = np.arange(60, 106)
    ratio = np.full(len(steps), 0.5)
    window = pd.DataFrame({"step": steps, "loss": 1e-3, "ratio_a": ratio, "ratio_b": ratio,
                           "replay_diff": 0.0})
    out = coincidence(window, start=100, peak=105)
    assert math.isnan(out["grad_lag"]) and out["grad_a_before"] == 0.5
    window.loc[window["step"] == 102, "ratio_a"] = 3.0      # crosses 2 steps after the start
    assert coincidence(window, 100, 105)["grad_lag"] == 2
    window.loc[window["step"] == 70, "ratio_a"] = 3.0       # 30 steps before: outside h = 20
    assert coincidence(window, 100, 105)["grad_lag"] == 2
    window.loc[window["step"] == 85, "ratio_a"] = 3.0
    out = coincidence(window, 100, 105)
    assert out["grad_lag"] == -15 and out["grad_a_before"] == 3.0
