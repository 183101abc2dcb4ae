"""The signal catalogue, the predictor rows, their pooling and the chapter's verdicts."""
import math

import numpy as np
import pandas as pd
import pytest

from utils.events.detectors import SIGNALS, signal_alarms
from utils.studies.predictors import HORIZONS, pooled_scores, predictor_verdicts, score_run
from utils.studies.scoring import matched_chance, pool, pooled_difference
from utils.events.spikes import Spike


def synthetic_metrics(n=400, track_every=4, seed=0):
    rng = np.random.default_rng(seed)
    steps = np.arange(1, n + 1)
    tracked = steps % track_every == 0
    m = pd.DataFrame({"step": steps, "loss": np.exp(-steps / 200) + 0.01 * rng.random(n),
                      "grad_norm": 1 + 0.1 * rng.random(n),
                      "spam_ratio": 10 ** rng.uniform(0, 5, n),
                      "stableadamw_rms": rng.uniform(0, 3, n), "secant": rng.uniform(0, 300, n),
                      "critical_step": rng.uniform(0, 5, n), "critical_forwards": 7})
    for col in ("lambda_grad_pre_a", "lambda_grad_pre", "lambda_max_pre", "cos_grad_top"):
        m[col] = np.where(tracked, rng.uniform(0, 300 if col != "cos_grad_top" else 1, n), np.nan)
    return m


def test_every_signal_gives_one_alarm_per_row_and_tracked_ones_only_where_measured():
    m = synthetic_metrics()
    tracked = m["lambda_grad_pre_a"].notna().to_numpy()
    for name, sig in SIGNALS.items():
        for threshold in sig.thresholds:
            alarms = signal_alarms(name, m, 0.01, threshold)
            assert alarms.dtype == bool and alarms.shape == (len(m),), name
            if sig.tracked:
                assert not alarms[~tracked].any(), name
        assert sig.default in sig.thresholds, name
    lam, lam_b = m["lambda_grad_pre_a"].to_numpy(), m["lambda_grad_pre"].to_numpy()
    np.testing.assert_array_equal(signal_alarms("lambda_grad", m, 0.01, 1.0),   # the paper's (A)
                                  np.nan_to_num(lam, nan=0) > 200)
    np.testing.assert_array_equal(signal_alarms("lambda_grad_b", m, 0.01, 1.0),
                                  np.nan_to_num(lam_b, nan=0) > 200)
    # the sustained predictor: min(λ(t−1), λ(t), λ(t+1)) > 2/η over tracked steps, raised at t+1
    sustained = signal_alarms("lambda_grad_w3", m, 0.01, 1.0)
    measured = np.flatnonzero(np.isfinite(lam))
    window_min = np.minimum(np.minimum(lam[measured][:-2], lam[measured][1:-1]), lam[measured][2:])
    np.testing.assert_array_equal(np.flatnonzero(sustained), measured[2:][window_min > 200])
    assert sustained.sum() < signal_alarms("lambda_grad", m, 0.01, 1.0).sum()
    # alignment fires only where λ_max(Ĥ) > 2/η as well
    aligned = signal_alarms("alignment", m, 0.01, 0.1)
    assert (m["lambda_max_pre"].to_numpy()[aligned] > 200).all()
    assert signal_alarms("critical_step", m, 0.01, 1.0).tolist() == (m["critical_step"] <= 1).tolist()
    with pytest.raises(ValueError, match="signal must be one of"):
        signal_alarms("psychic", m, 0.01, 1.0)


def test_a_full_batch_run_uses_its_loss_for_the_training_loss_rule():
    m = synthetic_metrics()
    m.loc[300, "loss"] = 50.0
    assert signal_alarms("olmo_loss", m, 0.01, 6.0)[300]


def test_matched_chance_is_the_share_of_steps_that_would_be_hits():
    steps = np.arange(1000)
    spikes = [Spike(500, 502, 505, 520, 1.0, 1.0, 100.0)]
    eligible = np.ones(1000, dtype=bool)
    precision, recall = matched_chance(steps, eligible, 100, spikes, 20,
                                       np.random.default_rng(0), draws=200)
    assert precision == pytest.approx(20 / (1000 - 21), rel=0.15)
    assert 0 < recall < 1
    assert all(math.isnan(x) for x in matched_chance(steps, eligible, 0, spikes, 20,
                                                     np.random.default_rng(0)))


def rows(architecture="mlp", setting="full batch", seed=0, signal="lambda_grad", hits=2,
         alarms=4, warned=1, spikes=2, false_alarms=2, calm_steps=1000, leads="3", horizon=20,
         chance_precision=0.1, default=True, threshold=1.0):
    return {"architecture": architecture, "setting": setting, "seed": seed, "signal": signal,
            "threshold": threshold, "default": default, "horizon": horizon, "steps": 1100,
            "hits": hits, "alarms": alarms, "warned": warned, "spikes": spikes,
            "false_alarms": false_alarms, "calm_steps": calm_steps, "leads": leads,
            "chance_precision": chance_precision, "hvps_per_step": 0.2,
            "forwards_per_step": 0.0, "time_ratio": 0.5}


def test_pooling_sums_counts_over_seeds_before_dividing():
    table = pd.DataFrame([rows(seed=0, hits=1, alarms=1, warned=1, leads="4"),
                          rows(seed=1, hits=1, alarms=9, warned=1, leads="8 2")])
    out = pool(table, intervals=True)
    assert out["precision"] == pytest.approx(2 / 10)
    assert out["recall"] == pytest.approx(2 / 4)
    assert out["f1"] == pytest.approx(2 * 0.2 * 0.5 / 0.7)
    assert out["false_alarms_per_1000"] == pytest.approx(1000 * 4 / 2000)
    assert out["median_lead"] == 4 and out["seeds"] == 2
    assert out["precision_low"] <= out["precision"] <= out["precision_high"]
    assert pooled_scores(table).loc[("mlp", "full batch", "lambda_grad", 1.0, 20), "alarms"] == 10


def verdict_table(lead="3", better=True, seeds=5):
    out = []
    for seed in range(seeds):
        out.append(rows(seed=seed, leads=lead))
        out.append(rows(seed=seed, signal="loss_rose", threshold=0.0,
                        hits=1 if better else 4, alarms=8 if better else 4, warned=1 if better else 2,
                        false_alarms=7 if better else 0, leads="1", chance_precision=0.1))
    return pd.DataFrame(out)


def test_verdicts_fail_where_their_claim_is_false():
    good = {v.name: v for v in predictor_verdicts(verdict_table())}
    assert good["lambda_grad_beats_loss_rose"].passed
    assert good["lambda_grad_beats_chance"].passed
    assert good["spikes_to_score"].passed              # 5 seeds × 2 spikes
    few = {v.name: v for v in predictor_verdicts(verdict_table(seeds=4))}
    assert not few["spikes_to_score"].passed
    assert "no_hit_at_or_after_a_start" not in good    # a property of the scoring, below
    worse = {v.name: v for v in predictor_verdicts(verdict_table(better=False))}
    assert not worse["lambda_grad_beats_loss_rose"].passed
    diff, lo, hi = pooled_difference(verdict_table(better=False), "lambda_grad", "loss_rose")
    assert diff < 0 and lo <= diff <= hi


def test_score_run_scores_every_signal_threshold_and_horizon():
    from utils.training.runs import RunConfig, run
    from utils.training.signals import SignalRecorder

    config = RunConfig(model="mlp", model_kwargs={"width": 16}, data="sin",
                       data_kwargs={"n_points": 64}, lr=0.03, steps=300, track_every=5,
                       measure=("lambda_max_pre", "alignment", "lambda_grad"), progress=False)
    recorder = SignalRecorder()
    result = run(config, signals=recorder, spot_checks=False)
    out = pd.DataFrame(score_run(result, recorder))
    assert len(out) == sum(len(s.thresholds) for s in SIGNALS.values()) * len(HORIZONS)
    assert set(out["signal"]) == set(SIGNALS)
    assert out.groupby("signal")["default"].sum().eq(len(HORIZONS)).all()
    for row in out.itertuples():
        assert all(1 <= int(x) <= row.horizon for x in str(row.leads).split())
    assert (out["hvps_per_step"] >= 0).all() and out["time_ratio"].notna().all()


def test_stored_table_has_every_signal_setting_and_provenance():
    from utils.studies.predictors import PREDICTOR_SEEDS, SETTINGS
    from utils.book.sweeps import PROVENANCE_COLUMNS, load_sweep

    stored = load_sweep("predictors")
    for column in ("architecture", "setting", "seed", "signal", "threshold", "horizon",
                   "precision", "recall", "false_alarms_per_1000", "median_lead",
                   *PROVENANCE_COLUMNS):
        assert column in stored, column
    assert set(stored["signal"]) == set(SIGNALS)
    assert set(zip(stored["architecture"], stored["setting"])) == set(SETTINGS)
    per_run = sum(len(s.thresholds) for s in SIGNALS.values()) * len(HORIZONS)
    assert len(stored) == len(SETTINGS) * PREDICTOR_SEEDS * per_run
    assert not stored["commit"].str.endswith("-dirty").any()


@pytest.mark.parametrize("name", ["predictors", "watch"])
def test_every_stored_lead_lies_in_its_window(name):
    """No alarm at or after a spike's start was counted as a hit: every lead of the stored
    tables of chapters 6 and 9 lies in [1, h] (once a verdict, which the window made
    unfailable; the scoring itself is tested in tests/test_detectors.py)."""
    from utils.book.sweeps import load_sweep
    from utils.studies.scoring import lead_lists

    table = load_sweep(name)
    leads = [(x, h) for row, h in zip(lead_lists(table["leads"]), table["horizon"]) for x in row]
    assert leads and all(1 <= x <= h for x, h in leads)


def test_setting_of_names_the_setting_not_the_model_class():
    """Chapter 1's MLP and chapter 2's network are both ``model="mlp"``: the rows must tell
    them apart, and a run of no setting keeps its model class."""
    from utils.studies.predictors import SETTINGS, predictor_config, setting_of
    from utils.training.runs import RunConfig

    for key in SETTINGS:
        assert setting_of(predictor_config(*key, seed=3, lr=1e-3)) == key
    assert setting_of(predictor_config("mlp", "full batch")) != setting_of(
        predictor_config("fnn_fig5", "full batch"))
    assert setting_of(RunConfig(model="mlp", model_kwargs={"width": 16}, batch_size=8)) == (
        "mlp", "batch 8")
