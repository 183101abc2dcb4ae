"""Chapter 9's run and its scoring (utils.studies.watch): settings checked before training, the
loop's files read back, alarms counted where they are raised, scoring windows that end at a spike's
start, verdicts that fail where their claim is false, and the stored table recomputed."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from utils.studies import watch
from utils.studies.ensemble import outside_seed_intervals
from utils.studies.scoring import JUDGED_HORIZON
from utils.studies.watch import (WATCH, WATCH_FACTOR, WATCH_SEEDS, WATCH_SIGNALS, check_watch,
                                 read_tensorboard, score_watch, train_watched, watch_alarms,
                                 watch_verdicts)


@pytest.mark.parametrize("settings, name", [
    ({"lr": 0.0}, "lr"), ({"steps": 0}, "steps"), ({"every": 0}, "every"),
    ({"beta2": 1.0}, "beta2"), ({"warmup": -1}, "warmup"), ({"context": 2.5}, "context"),
])
def test_bad_settings_are_refused_by_name_before_training(settings, name, monkeypatch):
    monkeypatch.setattr(watch, "TinyGPT", lambda *a, **k: pytest.fail("trained anyway"))
    with pytest.raises(ValueError, match=name):
        train_watched(0, progress=False, **settings)


def test_unknown_settings_are_named():
    with pytest.raises(ValueError, match="learning_rate"):
        check_watch({"learning_rate": 1e-3})


def test_a_short_run_writes_one_row_per_step_and_tensorboard_holds_the_same_values(tmp_path):
    run = train_watched(0, tmp_path, progress=False, steps=12, every=5,
                        measure_on=("batch", "eval"))
    t = run.tables["batch"]
    assert list(t["step"]) == list(range(1, 13)) and run.diverged_at is None
    assert np.isfinite(t["lambda_grad_pre_a"]).sum() == 2      # steps 5 and 10
    assert np.isfinite(t["eval_loss"]).all() and 0 < run.eval_seconds < run.seconds
    assert t["threshold"].iloc[0] == pytest.approx(2 / (WATCH["lr"] / WATCH["warmup"]))
    e = run.tables["eval"]                                     # the same run, seen twice
    np.testing.assert_array_equal(e["loss"], t["loss"])
    np.testing.assert_array_equal(e["secant"], t["secant"])
    np.testing.assert_array_equal(e["eval_loss"], t["eval_loss"])
    assert not np.allclose(e["lambda_grad_pre"].dropna(), t["lambda_grad_pre"].dropna())
    assert 1 < run.overhead("eval") and 1 < run.overhead("batch")
    assert run.loop_seconds < run.seconds - run.eval_seconds
    events = read_tensorboard(run.log_dirs["batch"])
    np.testing.assert_allclose(events.loc[t["step"], "loss"], t["loss"], rtol=1e-6)
    measured = t.dropna(subset=["lambda_grad_pre"])
    np.testing.assert_allclose(events.loc[measured["step"], "lambda_grad_pre"],
                               measured["lambda_grad_pre"], rtol=1e-6)
    assert {"secant", "threshold", "g2_over_v_median", "update_rms/tok.weight"} <= set(events)


def test_a_non_finite_loss_stops_the_run_and_is_recorded(monkeypatch, tmp_path):
    calls = {"n": 0}
    real = watch.lm_loss

    def breaks_at_the_eighth_step(model, batch):
        loss = real(model, batch)
        if model.__class__.__name__ == "TinyGPT" and torch.is_grad_enabled():   # the loop's
            # training calls, not the monitor's nor the evaluation loss's
            calls["n"] += 1
            if calls["n"] == 8:
                return loss * float("nan")
        return loss
    monkeypatch.setattr(watch, "lm_loss", breaks_at_the_eighth_step)
    run = train_watched(0, tmp_path, progress=False, steps=20, every=5)
    assert run.diverged_at == 8 and len(run.tables["batch"]) == 7


def _table(n=300, spike_start=150, alarm_steps=(), secant_steps=(), measured_every=10):
    """A monitor table: a flat noisy loss with one spike (×8) from ``spike_start``, λ_grad(Ĥ)
    measured every ``measured_every`` steps and above 2/η at ``alarm_steps``."""
    rng = np.random.default_rng(0)
    steps = np.arange(1, n + 1)
    loss = 0.1 * (1 + 0.01 * rng.standard_normal(n))
    loss[spike_start - 1] = 0.09            # below its trend: the spike starts at this step
    loss[spike_start:spike_start + 10] = 0.8
    lam = np.where(steps % measured_every == 0, 100.0, np.nan)
    lam[np.isin(steps, alarm_steps)] = 300.0
    secant = np.full(n, 50.0)
    secant[np.isin(steps, secant_steps)] = 300.0
    alarm = np.zeros(n, dtype=bool)
    for s in alarm_steps:          # the monitor keeps its alarm up until the next measurement
        alarm[s - 1:s - 1 + measured_every] = True
    return pd.DataFrame({"step": steps, "loss": loss, "threshold": 200.0, "secant": secant,
                         "lambda_grad_pre_a": lam, "alarm": alarm})


def test_the_monitor_alarm_counts_once_where_it_is_raised():
    alarms = watch_alarms(_table(alarm_steps=(140,)))
    fired, eligible = alarms["monitor"]
    assert list(np.flatnonzero(fired) + 1) == [140]
    assert eligible.sum() == 30
    held, _ = watch_alarms(_table(alarm_steps=(120, 130, 140)))["monitor_w3"]
    assert list(np.flatnonzero(held) + 1) == [140]            # raised at the third
    held, _ = watch_alarms(_table(alarm_steps=(130, 140)))["monitor_w3"]
    assert not held.any()


def test_an_alarm_before_the_start_is_a_hit_and_one_after_it_is_not():
    spike_start = 150                     # the loss is up from row 150, step 151
    rows = pd.DataFrame(score_watch(_table(spike_start=spike_start, alarm_steps=(140, 160)),
                                    factors=(WATCH_FACTOR,), horizons=(JUDGED_HORIZON,)))
    monitor = rows[rows["signal"] == "monitor"].iloc[0]
    assert monitor["spikes"] == 1 and monitor["warned"] == 1
    assert monitor["hits"] == 1 and monitor["false_alarms"] == 0   # 160 is inside the spike
    assert monitor["leads"] == "10"        # the start is step 150, the alarm at 140
    for after in (150, 160):              # at the start, or inside the spike: never a hit
        late = pd.DataFrame(score_watch(_table(alarm_steps=(after,)), factors=(WATCH_FACTOR,),
                                        horizons=(JUDGED_HORIZON,)))
        late = late[late["signal"] == "monitor"].iloc[0]
        assert late["warned"] == 0 and late["hits"] == 0


def test_spikes_are_found_on_the_evaluation_loss_where_the_table_has_it():
    table = _table(alarm_steps=(140,))
    flat = table.assign(eval_loss=0.1)      # the evaluation loss did not spike
    rows = pd.DataFrame(score_watch(flat, factors=(WATCH_FACTOR,), horizons=(JUDGED_HORIZON,)))
    assert (rows["spikes"] == 0).all()
    moved = table.assign(eval_loss=table["loss"].shift(20, fill_value=0.1))
    rows = pd.DataFrame(score_watch(moved, factors=(WATCH_FACTOR,), horizons=(JUDGED_HORIZON,)))
    monitor = rows[rows["signal"] == "monitor"].iloc[0]
    assert monitor["spikes"] == 1 and monitor["hits"] == 0   # 140 is > h before step 170


def _stored_like(monitor_alarms, seeds=4):
    rows = []
    for seed in range(seeds):
        t = _table(alarm_steps=monitor_alarms, secant_steps=(145,))
        rows += score_watch(t, seed)
    return pd.DataFrame(rows)


def test_verdicts_hold_on_a_table_where_the_monitor_warns_and_fail_where_it_does_not():
    good = {v.name: v.passed for v in watch_verdicts(_stored_like((120, 130, 140), seeds=10))}
    assert good == {"spikes_to_score": True, "monitor_beats_loss_rose": True,
                    "monitor_beats_chance": True, "monitor_false_alarms_within_budget": True,
                    "sustained_more_precise_than_single": True}
    flood = tuple(range(10, 301, 10))     # an alarm at every measurement
    bad = {v.name: v.passed for v in watch_verdicts(_stored_like(flood, seeds=4))}
    assert not bad["spikes_to_score"]                      # 4 spikes < 10
    assert not bad["monitor_false_alarms_within_budget"]   # ~100 per 1,000 calm steps
    assert not bad["monitor_beats_chance"]                 # precision = its rate
    silent = {v.name: v.passed for v in watch_verdicts(_stored_like((), seeds=10))}
    assert not silent["monitor_beats_loss_rose"]
    assert not silent["sustained_more_precise_than_single"]     # it raised nothing
    # sustained where the crossings are false alarms: less precise than the single measurement
    early = {v.name: v.passed for v in watch_verdicts(_stored_like((40, 50, 60, 140), seeds=10))}
    assert not early["sustained_more_precise_than_single"]


def test_bad_places_are_refused():
    with pytest.raises(ValueError, match="measure_on"):
        train_watched(0, progress=False, measure_on=("batch", "batch"))
    with pytest.raises(ValueError, match="measure_on"):
        train_watched(0, progress=False, measure_on=("fixed",))


def test_the_eval_batch_verdict_fails_where_that_monitor_is_no_better_than_chance():
    table = _stored_like((140,), seeds=10)
    flood = _stored_like(tuple(range(10, 301, 10)), seeds=10)
    good_eval = table[table["signal"] == "monitor"].assign(signal="monitor_eval")
    bad_eval = flood[flood["signal"] == "monitor"].assign(signal="monitor_eval")
    passed = lambda t: {v.name: v.passed for v in watch_verdicts(t)}["eval_batch_beats_chance"]
    assert passed(pd.concat([table, good_eval]))
    assert not passed(pd.concat([table, bad_eval]))
    assert "eval_batch_beats_chance" not in {v.name for v in watch_verdicts(table)}


def test_stored_table_has_every_seed_signal_and_provenance():
    from utils.book.sweeps import load_sweep

    stored = load_sweep("watch")
    assert set(stored["seed"]) == set(WATCH_SEEDS)
    assert set(stored["signal"]) == set(WATCH_SIGNALS)
    assert not stored["commit"].str.endswith("-dirty").any()
    assert json.loads(stored["settings"].iloc[0]) == WATCH
    for column in ("versions", "machine", "python", "utils_version"):
        assert stored[column].notna().all()


def test_the_chapter_defaults_are_the_stored_settings():
    from utils.studies.settings import chapter_defaults

    defaults = chapter_defaults("09_watch_your_run")
    assert {k: defaults[k] for k in ("lr", "warmup", "steps", "every")} == {
        k: WATCH[k] for k in ("lr", "warmup", "steps", "every")}
    assert defaults["seed"] in WATCH_SEEDS and defaults["hvp"] == "auto"


RECOMPUTED = {"loss": "loss_at_recompute", "eval_loss": "eval_loss_at_recompute"}
"""The step-200 numbers a recompute is judged on, and the stored columns of the same quantity."""


def recompute_at_step_200(**settings) -> dict:
    """Seed 0 trained here up to RECOMPUTE_STEP under ``settings`` (chapter 9's otherwise), the
    monitor on the step's own batches: its training and evaluation losses at that step."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)       # as stored; restored for the worker's next tests
    try:
        run = train_watched(0, progress=False, steps=watch.RECOMPUTE_STEP, **settings)
    finally:
        torch.set_num_threads(threads)
    row = run.tables["batch"].set_index("step").loc[watch.RECOMPUTE_STEP]
    return {name: float(row[name]) for name in RECOMPUTED}


@pytest.fixture(scope="module")
def stored_at_step_200():
    from utils.book.sweeps import load_sweep

    stored = load_sweep("watch").groupby("seed").first()
    return {name: stored[column].to_numpy() for name, column in RECOMPUTED.items()}


def test_a_run_here_lies_within_the_stored_seeds_prediction_interval(stored_at_step_200):
    """Seed 0 trained again to step 200 is another sample of the stored seeds' process: its
    training and evaluation losses there lie within the 8 stored seeds' prediction interval
    (log-normal across seeds, Student's t; utils.studies.ensemble.prediction_interval), which a
    correct recompute misses with probability at most RECOMPUTE_FALSE_FAILURE = 1e-3 for both
    together. The stored logs pass a Shapiro-Wilk test (p = 0.95 and 0.58); the intervals are
    about [0.09, 1.42] and [0.09, 1.53], against stored values 0.26-0.52. The range of the 8
    seeds, checked here before, was missed with probability 2/9 per quantity (seed 0's
    evaluation loss: 0.531 on one AMD EPYC against a stored maximum of 0.515).

    λ_grad(Ĥ) at step 200 is left out: it varies 43-fold over the stored seeds and takes either
    sign on other CPUs, so no interval at 1e-3 would say anything. It is compared, with the
    losses, over the first 30 steps within a tolerance (tests/test_stored_prefixes.py,
    chapter 9's prefix), where another β2 fails (test_another_beta2_fails_the_first_steps)."""
    outside = outside_seed_intervals(recompute_at_step_200(), stored_at_step_200)
    assert not outside, outside


def test_a_wrong_recompute_falls_outside_the_prediction_interval(stored_at_step_200):
    """The check above fails on a recompute that is really wrong: three times chapter 9's η
    (its loss at step 200 measured at 2.37, above the interval's 1.42)."""
    wrong = recompute_at_step_200(lr=3 * WATCH["lr"])
    assert set(outside_seed_intervals(wrong, stored_at_step_200)) == {"loss", "eval_loss"}


def test_cached_seeds_are_recomputed_when_a_source_changes(tmp_path, monkeypatch):
    """run_watch_sweep reuses a seed's cached rows until the hash of the utils sources it
    imports changes (watch_rows stubbed: nothing is trained)."""
    from utils.book import sweeps, watch_sweep

    calls = []
    monkeypatch.setattr(watch_sweep, "watch_rows", lambda seed: calls.append(seed) or [{"n": 1}])
    args = dict(seeds=[0], out=tmp_path / "watch.csv.gz", cache_dir=tmp_path, progress=False,
                threads=torch.get_num_threads())
    watch_sweep.run_watch_sweep(**args)
    watch_sweep.run_watch_sweep(**args)
    assert calls == [0]
    assert json.loads((tmp_path / "watch" / "seed_0.json").read_text())["key"]["sources"] == \
        sweeps.source_hash("utils.studies.watch:watch_rows")
    monkeypatch.setattr(watch_sweep, "source_hash", lambda evaluate: "edited")
    watch_sweep.run_watch_sweep(**args)
    assert calls == [0, 0]


def test_every_stored_verdict_is_judged_by_the_one_rule():
    """Each of the chapter's verdicts on the stored table carries its interval and bar, and its
    outcome is the rule's on them: a point estimate past the bar with an interval that contains
    it is inconclusive (the monitor against chance and against 'the loss rose')."""
    from utils.book.sweeps import load_sweep
    from utils.studies.verdicts import INCONCLUSIVE, judge

    verdicts = watch_verdicts(load_sweep("watch"))
    sides = {"monitor_false_alarms_within_budget": "<=", "spikes_to_score": ">="}
    for v in verdicts:
        n = v.numbers
        assert v.outcome == judge(n["ci_low"], n["ci_high"], n["bar"], sides.get(v.name, ">"))
    outcome = {v.name: v.outcome for v in verdicts}
    assert outcome["monitor_beats_chance"] == outcome["monitor_beats_loss_rose"] == INCONCLUSIVE
