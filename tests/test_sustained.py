"""The sustained-predictor study (utils.studies.sustained): its alarm rules, its decay fit, its
measured runs and its verdicts, each with a case where it fails."""
import math

import numpy as np
import pandas as pd
import pytest

from utils.studies.sustained import (alarms, decay_fits, decay_rate, fig7_config, measured_run,
                                     sustained_ratio)


def frame(values, lr=0.1):
    steps = np.arange(1, len(values) + 1)
    return pd.DataFrame({"step": steps, "lr": lr, "lambda_grad_pre_a": values,
                         "loss": np.linspace(1, 0, len(values))})


def test_the_sustained_rule_fires_one_step_after_three_crossings_in_a_row():
    # 2/η = 20: crossings at steps 3 (alone), 6-8 (three) and 10-13 (four)
    values = [1, 1, 30, 1, 1, 30, 30, 30, 1, 30, 30, 30, 30, 1]
    m = frame(values)
    single, eligible = alarms(m, "lambda_grad_pre_a", "single")
    assert list(m["step"][single]) == [3, 6, 7, 8, 10, 11, 12, 13] and eligible.all()
    sustained, eligible = alarms(m, "lambda_grad_pre_a", "sustained")
    # min over (t − 1, t, t + 1) > 2/η at t = 7 and t = 11, 12: alarms at t + 1
    assert list(m["step"][sustained]) == [8, 12, 13]
    assert not eligible[:2].any() and eligible[2:].all()
    ratio = sustained_ratio(m, "lambda_grad_pre_a")
    assert np.isnan(ratio[[0, -1]]).all()
    assert list(m["step"][ratio > 1]) == [7, 11, 12]
    rose, _ = alarms(frame(values).assign(loss=[1, 2, 1, 1, 3, 2, 2, 2, 2, 2, 2, 2, 2, 2]),
                     "loss", "rose")
    assert list(np.flatnonzero(rose) + 1) == [2, 5]
    with pytest.raises(ValueError, match="rule must be"):
        alarms(m, "lambda_grad_pre_a", "twice")


def test_the_decay_fit_recovers_a_geometric_rate_and_its_beta2_share():
    steps = np.arange(1, 201)
    m = pd.DataFrame({"step": steps, "v_norm_embedding": 3.0 * 0.99 ** steps,
                      "v_norm_wv_0": 2.0 * 0.995 ** steps})
    assert decay_rate(m, "v_norm_embedding", end=150) == pytest.approx(0.99, rel=1e-12)
    fits = decay_fits(m, end=150, beta2=0.99)
    assert fits["rate_wv_0"] == pytest.approx(0.995, rel=1e-12)
    shares = [1.0, math.log(0.995) / math.log(0.99)]
    assert fits["share"] == pytest.approx(np.median(shares))
    assert fits["share_min"] == pytest.approx(shares[1])
    assert math.isnan(decay_rate(m, "v_norm_embedding", end=10))     # too few steps before


def test_a_measured_run_continues_the_plain_part_bit_for_bit():
    config = fig7_config(steps=12, warmup=3, data_kwargs={"rule": "composition",
                                                                        "n": 64},
                         batch_size=8, eval_size=16, model_kwargs={
                             "d_model": 8, "n_heads": 2, "n_layers": 1, "d_ff": 8})
    split = measured_run(config, measure_from=7)
    whole = measured_run(config, measure_from=1)
    a, b = split.metrics, whole.metrics
    assert list(a["step"]) == list(range(1, 13))
    assert a["loss"].tolist() == b["loss"].tolist()
    assert a["v_norm_wv_0"].tolist() == b["v_norm_wv_0"].tolist()
    assert a["lambda_grad_pre_a"].iloc[:6].isna().all()
    assert a["batch_lambda_grad_pre_a"].iloc[6:].tolist() == \
        b["batch_lambda_grad_pre_a"].iloc[6:].tolist()
    with pytest.raises(ValueError, match="measure_from"):
        measured_run(config, measure_from=13)


def synthetic_run(seed, *, calm_triples=False, calm_singles=True, loss_blips=False,
                  v_decays=True, beta2=0.99, steps=1000):
    """A run-like object for :func:`seed_rows`: a slowly falling evaluation loss with two
    spikes, λ_grad(Ĥ) (both columns) above 2/η = 20 for the 4 steps before each spike, and the
    variations the verdicts must catch."""
    from types import SimpleNamespace

    from utils.events.spikes import detect_events

    t = np.arange(1, steps + 1)
    starts = (300 + 7 * seed, 700 - 5 * seed)
    loss = 1e-2 * 0.999 ** t
    for s in starts:
        loss[s:s + 10] *= 100                     # steps s + 1 .. s + 10 spike
        if loss_blips:                            # one-step rises at s − 8 and s − 4
            loss[[s - 9, s - 5]] *= 1.02
    lam = np.ones(steps)
    for s in starts:
        lam[s - 5:s - 1] = 30.0                   # steps s − 4 .. s − 1
    if calm_singles:
        lam[[100, 150, 500, 550, 900]] = 30.0
    if calm_triples:
        for c in (120, 520, 880):
            lam[c:c + 3] = 30.0
    v = 1e-3 * (beta2 ** t if v_decays else np.ones(steps))
    m = pd.DataFrame({"step": t, "loss": loss, "lr": 0.1, "lambda_grad_pre_a": lam,
                      "batch_lambda_grad_pre_a": lam, "v_norm_embedding": v,
                      "v_norm_wv_0": 2 * v})
    spikes = [e for e in detect_events(loss, t, factor=10, window=50, floor=0) if e.counted]
    assert [s.start for s in spikes] == list(starts)
    return SimpleNamespace(metrics=m, spikes=spikes, diverged_at=None, seconds=1.0,
                           config=SimpleNamespace(seed=seed, beta2=beta2))


def synthetic_table(**variation):
    from utils.studies.sustained import seed_rows

    return pd.DataFrame([row for seed in range(4)
                         for row in seed_rows(synthetic_run(seed, **variation))])


def verdicts_of(table):
    from utils.studies.sustained import sustained_verdicts

    return {v.name: v for v in sustained_verdicts(table)}


def test_the_verdicts_hold_where_sustained_crossings_precede_every_spike_and_only_spikes():
    from utils.studies.sustained import decay_table, score_table

    table = synthetic_table()
    scores = score_table(table)
    assert scores.loc["sustained_batch", ["precision", "recall"]].tolist() == [1.0, 1.0]
    assert scores.loc["single_batch", "precision"] == pytest.approx(32 / 52)
    assert scores.loc["sustained_batch", "median_lead"] == 2     # first alarm at s − 2
    decay = decay_table(table)
    assert decay.loc["before spikes", "median"] == pytest.approx(1.0)
    assert decay.loc["before spikes", "fits"] == 8
    verdicts = verdicts_of(table)
    assert all(v.passed for v in verdicts.values()), verdicts


@pytest.mark.parametrize("variation, fails", [
    ({"calm_triples": True}, "sustained_matches_spikes"),
    ({"calm_singles": False}, "sustained_beats_single"),
    ({"loss_blips": True}, "sustained_beats_loss_rose"),
    ({"v_decays": False}, "v_decays_at_beta2")])
def test_each_verdict_fails_where_its_claim_does(variation, fails):
    verdicts = verdicts_of(synthetic_table(**variation))
    assert not verdicts[fails].passed
    assert all(v.passed for name, v in verdicts.items() if name != fails), verdicts
