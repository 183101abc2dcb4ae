"""The book's one set of scoring rules (utils.studies.scoring): chapters 4, 6 and 9 score the
same alarms against the same spikes alike, through their own code paths."""
from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from utils.events.spikes import detect_spikes
from utils.studies import onset, predictors, watch
from utils.studies.scoring import JUDGED_HORIZON, pool, score_signal


def shared_run(n=400, lr=0.01):
    """One run's table: a flat loss with one spike (×8) from step 250, and λ_grad(Ĥ) (form
    A) above 2/η before it (steps 236-246), inside it (252-255) and far from it (100-104,
    320-323), measured at every step."""
    steps = np.arange(1, n + 1)
    rng = np.random.default_rng(0)
    loss = 0.1 * (1 + 0.01 * rng.standard_normal(n))
    loss[248] = 0.09
    loss[249:259] = 0.8
    threshold = 2 / lr
    lam = np.full(n, 0.5 * threshold)
    for a, b in ((100, 104), (236, 246), (252, 255), (320, 323)):
        lam[(steps >= a) & (steps <= b)] = 1.5 * threshold
    table = pd.DataFrame({"step": steps, "loss": loss, "eval_loss": loss,
                          "threshold": threshold, "secant": 0.0, "lambda_grad_pre_a": lam,
                          "lambda_grad_pre": lam, "lambda_max_pre": lam,
                          "alarm": lam > threshold})
    spikes = detect_spikes(loss, steps, factor=watch.WATCH_FACTOR)
    config = SimpleNamespace(lr=lr, seed=0, optimizer="adam", model="mlp", batch_size=0,
                             track_every=1, model_kwargs={}, data="sin", data_kwargs={})
    result = SimpleNamespace(metrics=table, spikes=spikes, config=config, timings={},
                             diverged_at=None)
    return table, spikes, result


COUNTS = ("spikes", "warned", "alarms", "hits", "false_alarms", "calm_steps")


def test_chapters_4_6_and_9_agree_on_a_shared_table():
    table, spikes, result = shared_run()
    assert len(spikes) == 1 and spikes[0].start == 249
    recorder = SimpleNamespace(seconds=defaultdict(float))
    six = pd.DataFrame(predictors.score_run(result, recorder, signals=("lambda_grad",)))
    six = six[(six["threshold"] == 1.0) & (six["horizon"] == JUDGED_HORIZON)].iloc[0]
    nine = pd.DataFrame(watch.score_watch(table, factors=(watch.WATCH_FACTOR,),
                                          horizons=(JUDGED_HORIZON,)))
    nine = nine[nine["signal"] == "monitor"].iloc[0]
    four = onset.scored_counts(result)
    four = {c: four[f"lambda_grad_book_{c}"] for c in (*COUNTS, "leads")}
    expected = {"spikes": 1, "warned": 1, "alarms": 5 + 11 + 4, "hits": 11}
    for row in (six, nine, four):
        assert {c: int(row[c]) for c in COUNTS} == {c: int(six[c]) for c in COUNTS}
        assert {c: int(row[c]) for c in expected} == expected
        assert str(row["leads"]) == "13"          # 249 − 236


def test_alarms_at_or_after_the_start_and_inside_a_spike_are_never_hits():
    table, spikes, _ = shared_run()
    late = np.zeros(len(table), dtype=bool)
    late[(table["step"] >= 249) & (table["step"] <= 258)] = True     # from the start on
    s = score_signal(table["step"], late, np.ones(len(table), bool), spikes, JUDGED_HORIZON,
                     np.random.default_rng(0))
    assert s["hits"] == 0 and s["alarms"] == 0 and s["warned"] == 0 and s["leads"] == ""


def test_pooling_sums_counts_before_dividing():
    rows = pd.DataFrame({"hits": [1, 0], "alarms": [1, 9], "warned": [1, 0], "spikes": [1, 1],
                         "false_alarms": [0, 9], "calm_steps": [100, 100],
                         "chance_precision": [0.1, 0.1], "leads": ["3", ""], "steps": [100, 100]})
    out = pool(rows)
    assert out["precision"] == pytest.approx(0.1)     # not the mean of 1.0 and 0.0
    assert out["recall"] == pytest.approx(0.5)
