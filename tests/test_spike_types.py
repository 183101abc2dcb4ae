"""The spike-type rule (the paper's Figure D1): each kind on a curve built to be it, and the
calm baseline."""
import math

import numpy as np
import pandas as pd
import pytest

from utils.events.spikes import detect_spikes
from utils.studies.spike_types import (UNDETERMINED, calm_labels, classify_run,
                                       classify_spike)

N = 400


def curves(test_after=1.0, recovers=True, steps=N, spike_at=200):
    """A training loss falling as 1e-3, one spike of ×1000 at ``spike_at`` for 10 steps
    (forever if not ``recovers``); a test loss of 1 before it and ``test_after`` after."""
    step = np.arange(1, steps + 1)
    train = np.full(steps, 1e-3)
    test = np.ones(steps)
    inside = step >= spike_at
    if recovers:
        inside &= step < spike_at + 10
    train[inside] = 1.0
    test[step >= spike_at + 10] = test_after
    return pd.DataFrame({"step": step, "loss": train, "test_loss": test})


def kind(m):
    spikes = detect_spikes(m["loss"], m["step"])
    assert len(spikes) == 1
    return classify_spike(m, spikes[0])


@pytest.mark.parametrize("test_after, want", [(1.0, "neutral"), (1.5, "neutral"),
                                              (0.4, "beneficial"), (2.5, "malignant")])
def test_each_kind_on_a_curve_built_to_be_it(test_after, want):
    row = kind(curves(test_after))
    assert row["type"] == want and row["test_ratio"] == pytest.approx(test_after)


def test_a_spike_that_never_recovers_is_catastrophic_unless_the_run_just_ended():
    assert kind(curves(recovers=False))["type"] == "catastrophic"
    assert kind(curves(recovers=False, spike_at=N - 5))["type"] == UNDETERMINED
    assert kind(curves(spike_at=N - 15))["type"] == UNDETERMINED   # no window after the end


def test_a_divergence_is_catastrophic():
    m = curves()
    m.loc[m["step"] >= 205, "loss"] = math.inf
    spikes = detect_spikes(m["loss"], m["step"])
    assert spikes[-1].diverged and classify_spike(m, spikes[-1])["type"] == "catastrophic"


def test_run_table_and_calm_baseline():
    m = curves(0.4)
    table = classify_run(m, detect_spikes(m["loss"], m["step"]))
    assert list(table["type"]) == ["beneficial"]
    # the test loss is flat away from the spike: every calm pseudo-spike is neutral
    labels = calm_labels(m, detect_spikes(m["loss"], m["step"]), 30, np.random.default_rng(0))
    assert len(labels) == 30 and (labels == "neutral").all()
    # a test loss that halves every 10 steps makes calm stretches "beneficial" without a spike
    m["test_loss"] = 0.5 ** (m["step"] / 10)
    labels = calm_labels(m, detect_spikes(m["loss"], m["step"]), 30, np.random.default_rng(0))
    assert (labels == "beneficial").all()
