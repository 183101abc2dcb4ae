"""Ensemble verdicts, intervals, sensitivity and bands; the stored sweeps recomputed."""
import math

import numpy as np
import pandas as pd
import pytest

from utils.studies.ensemble import (ENSEMBLE_SHARE, JUDGED, bootstrap_ci, ensemble_verdicts,
                                    glue_checked, glue_illustration, outside_seed_intervals,
                                    prediction_interval, sensitivity_table)
from utils.studies.verdicts import FAILS, HOLDS, INCONCLUSIVE, Verdict, report_verdicts


CHAPTER = "01_v_decay"
FIRST, *OTHERS = JUDGED[CHAPTER]


def table(holds, spikes=None):
    """A made-up chapter-1 sweep: its first judged verdict is ``holds``, the others hold at the
    default and at every spike factor and fail at every other hysteresis."""
    n = len(holds)
    spikes = [2] * n if spikes is None else spikes
    t = pd.DataFrame({"seed": range(n), "n_spikes": spikes, FIRST: holds,
                      **{name: [True] * n for name in OTHERS}})
    for k in (3, 30):
        t[f"n_spikes@K{k:g}"] = spikes
        t[f"{FIRST}@K{k:g}"] = holds
        for name in OTHERS:
            t[f"{name}@K{k:g}"] = True
    for h in (0, 0.05):
        t[f"{FIRST}@h{h:g}"] = holds
        for name in OTHERS:
            t[f"{name}@h{h:g}"] = False
    return t


def test_ensemble_verdict_is_judged_by_the_one_rule_on_k_of_n():
    """Holding in every seed clears 0.75 at 16 seeds; 13 of 16 (share 0.81) is inconclusive,
    its Wilson interval reaching below 0.75; one seed of two lies wholly below: does not hold."""
    ok = {v.name: v for v in ensemble_verdicts(table([True] * 16), CHAPTER)}
    assert ok[f"ensemble_{FIRST}"].outcome == HOLDS and ok[f"ensemble_{FIRST}"].passed
    some = ensemble_verdicts(table([True] * 13 + [False] * 3), CHAPTER)[0]
    share = some.numbers
    assert some.outcome == INCONCLUSIVE and not some.passed
    assert share["share"] == pytest.approx(13 / 16) and share["holding"] == 13
    assert share["share_ci_low"] < 0.75 < share["share"] < share["share_ci_high"] <= 1
    bad = {v.name: v for v in ensemble_verdicts(table([True, False] * 8), CHAPTER)}
    assert bad[f"ensemble_{FIRST}"].outcome == FAILS
    assert ENSEMBLE_SHARE == 0.75


def test_seeds_without_spikes_are_left_out_and_missing_verdicts_count_as_false():
    t = table([True] * 4 + [None] * 2 + [True] * 2, spikes=[2] * 6 + [0] * 2)
    v = ensemble_verdicts(t, CHAPTER)[0]
    assert v.numbers["seeds_spiked"] == 6 and v.numbers["share"] == pytest.approx(4 / 6)
    assert not v.passed


def test_sensitivity_table_reads_each_setting():
    sens = sensitivity_table(table([True] * 16), CHAPTER)
    assert list(sens.index) == ["spike_factor = 3", "spike_factor = 10 (default)",
                                "spike_factor = 30", "hysteresis = 0",
                                "hysteresis = 0.01 (default)", "hysteresis = 0.05"]
    assert sens.loc["hysteresis = 0.05", OTHERS[0]] == 0.0
    assert sens.loc["spike_factor = 30", OTHERS[0]] == 1.0


def test_bootstrap_interval_covers_the_median_and_is_reproducible():
    x = np.random.default_rng(0).normal(5.0, 1.0, 40)
    point, lo, hi = bootstrap_ci(x)
    assert lo < point < hi and lo < 5.0 < hi
    assert bootstrap_ci(x) == (point, lo, hi)
    assert all(math.isnan(v) for v in bootstrap_ci([np.nan]))
    assert bootstrap_ci([3.0]) == (3.0, 3.0, 3.0)


def test_glue_illustration_sets_the_live_value_beside_the_seeds_and_asserts_nothing():
    stored = pd.DataFrame({"x": [1.0, 2.0, 3.0, np.nan]})
    t = glue_illustration({"x_demo": 4.0, "y_demo": 2.5, "z_demo": 1.0}, stored,
                          {"x_demo": "x", "y_demo": "x"})
    assert t.loc["x_demo", ["seeds min", "seeds median", "seeds max"]].tolist() == [1.0, 2.0, 3.0]
    assert t.loc["x_demo", "within the seeds' range"] is False       # outside: shown, not raised
    assert t.loc["y_demo", "within the seeds' range"] is True
    assert math.isnan(t.loc["z_demo", "seeds median"])               # no sweep column
    assert math.isnan(glue_illustration({"x_demo": 1.0}, None, {"x_demo": "x"})
                      .loc["x_demo", "seeds min"])


def test_glue_checked_fails_outside_a_band_only_under_the_defaults():
    band = (0.8, 3.2)
    assert glue_checked({"x_demo": 2.5}, {"x_demo": band}, strict=True)["inside"].all()
    with pytest.raises(AssertionError, match="x_demo"):
        glue_checked({"x_demo": 4.0}, {"x_demo": band}, strict=True)
    assert not glue_checked({"x_demo": 4.0}, {"x_demo": band}, strict=False)["inside"].any()
    with pytest.raises(AssertionError, match="without a band"):
        glue_checked({"y_demo": 1.0}, {}, strict=True)


def test_report_verdicts_enforces_what_the_chapter_states():
    verdicts = [Verdict("a", "holds", True), Verdict("b", "does not hold", False)]
    report_verdicts(verdicts, strict=True, not_reproduced=("b",))
    with pytest.raises(AssertionError, match="'b'"):        # b false but not declared
        report_verdicts(verdicts, strict=True)
    with pytest.raises(AssertionError, match="'a'"):        # a declared false but true
        report_verdicts(verdicts, strict=True, not_reproduced=("a", "b"))
    with pytest.raises(AssertionError, match="names no verdict"):
        report_verdicts(verdicts, strict=True, not_reproduced=("b", "typo"))
    report_verdicts(verdicts, strict=False)


def test_a_new_normal_draw_misses_the_prediction_interval_at_its_stated_rate():
    """For 8 seeds and a new run of the same normal process, the interval at 1e-3 is missed
    about once in a thousand (20,000 trials: 20 expected; fewer than 45 with probability
    > 0.9999), where the range of the 8 seeds is missed about 2 times in 9."""
    rng = np.random.default_rng(0)
    draws = rng.normal(size=(20_000, 9))
    missed_interval = missed_range = 0
    for row in draws:
        lo, hi = prediction_interval(row[:8], 1e-3, log=False)
        missed_interval += not lo <= row[8] <= hi
        missed_range += not row[:8].min() <= row[8] <= row[:8].max()
    assert 5 <= missed_interval <= 45
    assert abs(missed_range / len(draws) - 2 / 9) < 0.02


def test_a_shifted_value_is_outside_and_the_names_share_the_false_failure_rate():
    seeds = np.exp(np.random.default_rng(1).normal(np.log(0.36), 0.22, 8))
    lo, hi = prediction_interval(seeds, 1e-3)
    assert lo < 0.36 < hi and hi < 2.0
    assert outside_seed_intervals({"a": 0.36, "b": 0.4}, {"a": seeds, "b": seeds}) == {}
    outside = outside_seed_intervals({"a": 0.36, "b": 2.4}, {"a": seeds, "b": seeds})
    assert list(outside) == ["b"] and outside["b"][0] == 2.4
    split = prediction_interval(seeds, 5e-4)     # two names: each at half the rate
    assert outside_seed_intervals({"a": split[1] * 0.999, "b": 0.4},
                                  {"a": seeds, "b": seeds}) == {}
    assert split[1] > hi


@pytest.mark.parametrize("seeds, kwargs, name", [
    ([1.0, 2.0], {}, "at least 3"), ([1.0, -2.0, 3.0], {}, "positive"),
    ([1.0, 2.0, 3.0], {"false_failure": 0.0}, "false_failure"),
    ([1.0, 2.0, 3.0], {"false_failure": 0.5}, "false_failure")])
def test_bad_seeds_or_rates_are_refused_by_name(seeds, kwargs, name):
    with pytest.raises(ValueError, match=name):
        prediction_interval(seeds, **kwargs)
    with pytest.raises(ValueError, match="same quantities"):
        outside_seed_intervals({"a": 1.0}, {"b": [1.0, 2.0, 3.0]})
