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
                  v_decays="before", crossings="before", eval_crossings=None, beta2=0.99,
                  steps=1000):
    """A run-like object for :func:`seed_rows`: a slowly falling evaluation loss with two
    spikes, λ_grad(Ĥ) (both columns) above 2/η = 20 for the 4 steps before each spike
    (``crossings="late"``: from the step before its start to 2 after; "none"; on the evaluation
    batch ``eval_crossings``, by default the same), ‖v̂‖ flat but decaying at
    β2 over the 80 steps before each spike (``v_decays``: "always", "never"), and the
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
    lam = crossing_pattern(starts, steps, crossings)
    lam_eval = lam if eval_crossings is None else crossing_pattern(starts, steps, eval_crossings)
    if calm_singles:
        lam[[100, 150, 500, 550, 900]] = 30.0
    if calm_triples:
        for c in (120, 520, 880):
            lam[c:c + 3] = 30.0
    log_v = np.zeros(steps)
    if v_decays == "always":
        log_v = t * np.log(beta2)
    elif v_decays == "before":
        for s in starts:
            log_v[s - 81:s] = np.arange(1, 82) * np.log(beta2)
    v = 1e-3 * np.exp(log_v)
    m = pd.DataFrame({"step": t, "loss": loss, "lr": 0.1, "lambda_grad_pre_a": lam_eval,
                      "batch_lambda_grad_pre_a": lam, "v_norm_embedding": v,
                      "v_norm_wv_0": 2 * v})
    spikes = [e for e in detect_events(loss, t, factor=10, window=50, floor=0) if e.counted]
    assert [s.start for s in spikes] == list(starts)
    return SimpleNamespace(metrics=m, spikes=spikes, diverged_at=None, seconds=1.0,
                           config=SimpleNamespace(seed=seed, beta2=beta2))


def crossing_pattern(starts, steps, crossings):
    """λ_grad(Ĥ) of the synthetic run: 1, and 30 (above 2/η = 20) for the 4 steps before each
    spike's start ("before"), from the step before the start to 2 after ("late"), or never."""
    lam = np.ones(steps)
    for s in starts:
        if crossings == "before":
            lam[s - 5:s - 1] = 30.0               # steps s − 4 .. s − 1
        elif crossings == "late":
            lam[s - 2:s + 2] = 30.0               # steps s − 1 .. s + 2: sustained at s, its
            # alarm at s + 1, inside the spike
    return lam


def synthetic_table(**variation):
    from utils.studies.sustained import seed_rows

    return pd.DataFrame([row for seed in range(4)
                         for row in seed_rows(synthetic_run(seed, **variation))])


def verdicts_of(table):
    from utils.studies.sustained import sustained_verdicts

    return {v.name: v for v in sustained_verdicts(table)}


def test_the_verdicts_hold_where_sustained_crossings_precede_every_spike_and_only_spikes():
    from utils.studies.sustained import coincidence_table, correspondence, decay_table, score_table

    table = synthetic_table()
    scores = score_table(table)
    assert scores.loc["sustained_batch", ["precision", "recall"]].tolist() == [1.0, 1.0]
    assert scores.loc["single_batch", "precision"] == pytest.approx(32 / 52)
    assert scores.loc["sustained_batch", "median_lead"] == 2     # first alarm at s − 2
    decay = decay_table(table)
    assert decay.loc["before spikes", "median"] == pytest.approx(1.0)
    assert decay.loc["before spikes", "fits"] == 8
    assert decay.loc["at calm steps", "at_beta2"] == 0
    coin = coincidence_table(table)
    assert coin.loc["spikes", ["n", "sustained_batch", "median_lag_batch"]].tolist() == [8, 1, -4]
    assert correspondence(table)["share"] == 1.0
    verdicts = verdicts_of(table)
    assert all(v.passed for v in verdicts.values()), verdicts


@pytest.mark.parametrize("variation, fails", [
    ({"crossings": "none"}, "sustained_coincides"),
    ({"eval_crossings": "none"}, "sustained_coincides_eval"),
    ({"calm_triples": True}, "sustained_no_false_alarm"),
    ({"crossings": "late"}, "sustained_warns"),
    ({"calm_singles": False}, "sustained_fewer_false_alarms"),
    ({"loss_blips": True}, "sustained_beats_loss_rose"),
    ({"v_decays": "never"}, "v_decays_at_beta2"),
    ({"v_decays": "always"}, "decay_is_specific")])
def test_each_verdict_fails_where_its_claim_does(variation, fails):
    verdicts = verdicts_of(synthetic_table(**variation))
    assert not verdicts[fails].passed, verdicts[fails]
    if fails == "sustained_warns":      # crossing after the start: coincides, never warns
        assert verdicts["sustained_coincides"].passed


TINY = ["--n", "64", "--d-model", "8", "--n-heads", "2", "--n-layers", "2", "--d-ff", "8",
        "--batch", "16", "--warmup", "2", "--steps", "12"]


def test_the_figure7_command_writes_the_run_the_rows_and_the_figure(tmp_path, capsys):
    from utils.book.figure7 import main

    assert main(["--device", "cpu", "--output-dir", str(tmp_path), *TINY]) == 0
    assert {p.name for p in tmp_path.iterdir()} >= {"metrics.csv", "summary.json", "rows.csv",
                                                    "figure7.png"}
    m = pd.read_csv(tmp_path / "metrics.csv")
    assert len(m) == 12 and m["batch_lambda_grad_pre_a"].notna().all()
    assert {"v_norm_embedding", "v_norm_wv_1"} <= set(m)
    assert "sustained_batch" in capsys.readouterr().out
    assert main(["--device", "cpu", "--output-dir", str(tmp_path), *TINY[:-1], "0"]) == 2
    assert "steps" in capsys.readouterr().err


def test_the_paper_setting_has_about_ten_million_parameters():
    from utils.studies.sustained import paper_config
    from utils.training.runs import parameter_count

    config = paper_config("cpu", n=64)
    assert config.batch_size == config.eval_size == 2048 and config.beta2 == 0.999
    assert 9.5e6 < parameter_count(config) < 10.5e6


def test_only_the_measured_steps_are_scored_and_earlier_spikes_are_counted_apart():
    from utils.studies.sustained import measured_from, seed_rows

    run = synthetic_run(0)
    run.metrics.loc[run.metrics["step"] < 400, ["lambda_grad_pre_a",
                                                "batch_lambda_grad_pre_a"]] = np.nan
    assert measured_from(run.metrics) == 400
    rows = pd.DataFrame(seed_rows(run))
    assert rows.iloc[0]["unscored_spikes"] == 1                 # the spike at 300
    scores = rows[rows["kind"] == "score"].set_index("signal")
    assert (scores["spikes"] == 1).all() and (scores["steps"] == 601).all()
    assert scores.loc["sustained_batch", "hits"] == 2
