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


def study_table(kinds=("neutral", "beneficial", "malignant", "catastrophic") * 3,
                lags=None, calm_labels_=("neutral",) * 30, calm_lags=None):
    """A sweep table as type_rows writes it: spikes of ``kinds`` with first crossings at
    ``lags`` (NaN: none), calm pseudo-spikes labelled ``calm_labels_`` with crossings at
    ``calm_lags``, and one score row per seed."""
    lags = [-1.0] * len(kinds) if lags is None else lags
    calm_lags = [math.nan] * len(calm_labels_) if calm_lags is None else calm_lags
    rows = [{"kind": "spike", "seed": i % 4, "type": k, "grad_lag": lag, "grad_a_before": 2.0,
             "grad_a_rise": 5.0} for i, (k, lag) in enumerate(zip(kinds, lags))]
    rows += [{"kind": "calm", "seed": i % 4, "type": k, "grad_lag": lag, "grad_a_before": 1e-3,
              "grad_a_rise": 1e-3} for i, (k, lag) in enumerate(zip(calm_labels_, calm_lags))]
    rows += [{"kind": "score", "seed": s, "steps": 200, "spikes": 3, "warned": 3, "alarms": 6,
              "hits": 5, "false_alarms": 1, "calm_steps": 150, "chance_precision": 0.1,
              "leads": "1 2 1"} for s in range(4)]
    return pd.DataFrame(rows)


def verdicts_of(table):
    from utils.studies.spike_types import type_verdicts

    return {v.name: v.passed for v in type_verdicts(table)}


def test_the_verdicts_hold_on_a_table_where_the_claims_hold():
    assert all(verdicts_of(study_table()).values())


def test_each_verdict_fails_where_its_claim_does_not_hold():
    kinds = ("neutral", "beneficial", "malignant", "catastrophic") * 3
    # spikes without λ_grad(Ĥ) > 2/η
    assert not verdicts_of(study_table(lags=[math.nan] * 4 + [0.0] * 8))["every_kind_coincides"]
    # λ_grad(Ĥ) above 2/η at calm stretches as well
    v = verdicts_of(study_table(calm_lags=[-5.0] * 10 + [math.nan] * 20))
    assert not v["coincidence_is_specific"] and v["every_kind_coincides"]
    # a kind missing
    assert not verdicts_of(study_table(kinds=kinds[:3] * 4))["four_kinds"]
    # calm stretches labelled beneficial or malignant as often as the spikes
    drift = ("neutral", "beneficial", "malignant", "neutral") * 8
    assert not verdicts_of(study_table(calm_labels_=drift))["spikes_change_generalisation"]


def test_the_chapter_tables():
    from utils.studies.spike_types import coincidence_table, lambda_grad_score, type_counts

    table = study_table(lags=[math.nan] + [-1.0] * 11)
    counts = type_counts(table)
    assert counts.loc["neutral", "spikes"] == 3 and counts["share of spikes"].iloc[:4].sum() == 1
    coin = coincidence_table(table)
    assert coin.loc["neutral", "coinciding"] == 2 and coin.loc["all spikes", "n"] == 12
    assert coin.loc["calm pseudo-spikes", "share"] == 0
    score = lambda_grad_score(table)
    assert score["precision"] == pytest.approx(20 / 24) and score["recall"] == 1


def test_a_replay_retraces_the_run_and_a_run_without_spikes_has_rows():
    """λ_grad(Ĥ) replayed from a checkpoint: the replay's losses are the run's, bit for bit, and
    form A over 2/η_t is finite; a run with no spike still gives its run and score rows."""
    from utils.studies.spike_types import anchor_config, lambda_grad_window, seed_rows
    from utils.training.runs import run

    config = anchor_config(2, steps=40, warmup=5,
                           data_kwargs={"rule": "3x_to_x", "n": 64, "n_test": 16})
    base = run(config, checkpoint_every=10, spot_checks=False)
    window = lambda_grad_window(base, 13, 27)
    assert list(window["step"]) == list(range(13, 28))
    assert window["replay_diff"].iloc[0] == 0 and np.isfinite(window["ratio_a"]).all()
    rows = pd.DataFrame(seed_rows(base))
    assert sorted(rows["kind"]) == ["run", "score"]
    assert rows["spikes"].iloc[0] == len(base.spikes) == 0
    assert len(rows.loc[0, "curve_train"].split()) == 4      # every 10th of 40 steps


def test_rise_factor_reads_the_trace_at_the_start_and_20_steps_before():
    from utils.studies.spike_types import rise_factors

    trace = " ".join(f"{1.5 ** k:g}" for k in range(45))         # from step 60 on
    rows = pd.DataFrame([{"start": 100, "trace_from": 60, "trace_ratio_a": trace},
                         {"start": 70, "trace_from": 60, "trace_ratio_a": trace},   # no 20 before
                         {"start": 100, "trace_from": 60, "trace_ratio_a": "-1 " * 45}])
    factors = rise_factors(rows)
    assert factors[0] == pytest.approx(1.5 ** 20, rel=1e-4) and factors[1:].isna().all()


def with_runs(table, layers, spikes=(3, 3, 3, 3)):
    """``table`` with one run row per seed, of a model of ``layers`` layers."""
    runs = [{"kind": "run", "seed": s, "layers": layers, "spikes": k, "plain_step_s": 0.1,
             "final_loss": 1e-3, "final_test_loss": 0.1} for s, k in enumerate(spikes)]
    return pd.concat([pd.DataFrame(runs), table.assign(layers=layers)], ignore_index=True)


def test_the_second_setting_has_its_own_verdicts_and_column():
    from utils.studies.spike_types import depth_table, paper_comparison, type_verdicts

    deep = with_runs(study_table(lags=[math.nan] * 12), 12, spikes=(6, 6, 0, 0))
    names = {v.name: v.passed for v in type_verdicts(deep, suffix="_12_layers")}
    assert not names["every_kind_coincides_12_layers"] and names["four_kinds_12_layers"]
    both = depth_table({"4 layers": with_runs(study_table(), 4), "12 layers": deep})
    assert list(both.columns) == ["4 layers", "12 layers"]
    assert both.loc["seeds (spiking at least once)", "12 layers"] == "4 (2)"
    assert both.loc["spikes with λ_grad(Ĥ) > 2/η in [start − 20, peak]", "12 layers"] \
        .startswith("0 of 12") and both.loc["spikes", "4 layers"] == "12"
    # the 12-layer model of width 16 has more parameters than the 4-layer one
    count = both.loc["parameters"].str.replace(",", "").astype(int)
    assert count["12 layers"] > 2 * count["4 layers"]
    table = paper_comparison(study_table(), deep=deep)
    assert table.loc["spikes with λ_grad(Ĥ) > 2/η (Figure D1), 12 layers", "this book"] \
        .startswith("0 of 12")
    assert paper_comparison(study_table()).loc[
        "kinds of spike (Figure D1), 12 layers", "this book"].startswith("not measured")
