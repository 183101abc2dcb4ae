"""Chapter 7's methods, per-run rows, tables and verdicts (each verdict where it fails)."""
import math

import numpy as np
import pandas as pd
import pytest

from utils.studies.mitigations import (ARCHITECTURES, BASELINE, METHODS, best_loss_curve,
                                       eps_bound_table, eps_needed, interval, method_of,
                                       method_table, mitigation_config, mitigation_verdicts,
                                       ranking, steps_to_target, with_targets)


def test_every_method_is_found_again_from_its_config():
    for arch in ARCHITECTURES:
        for name in METHODS:
            assert method_of(mitigation_config(arch, name)) == name


def test_unknown_architecture_or_method_is_refused():
    with pytest.raises(ValueError, match="architecture must be one of"):
        mitigation_config("rnn", "adam")
    with pytest.raises(ValueError, match="method must be one of"):
        mitigation_config("mlp", "lion")


def test_best_loss_curve_and_steps_to_target():
    m = pd.DataFrame({"step": range(1, 31), "loss": [1.0] * 9 + [0.1] + [0.5] * 20})
    curve = best_loss_curve(m, 30, every=10)
    assert curve == "0.1 0.1 0.1"
    assert steps_to_target(curve, 0.2, every=10) == 10
    assert steps_to_target(curve, 0.01, every=10) == math.inf
    diverged = pd.DataFrame({"step": [1, 2], "loss": [1.0, float("nan")]})
    assert best_loss_curve(diverged, 30, every=10) == "1 1 1"


def test_eps_needed_is_the_bound_at_the_worst_tracked_step():
    from utils.curvature.adam_state import momentum_factor

    class C:
        beta1, lr = 0.9, 0.02
    m = pd.DataFrame({"step": [10, 20, 30], "lambda_max_H": [5.0, np.nan, 50.0]})
    want = max(momentum_factor(0.9, 10) * 5.0, momentum_factor(0.9, 30) * 50.0) * 0.02 / 2
    assert eps_needed(m, C) == pytest.approx(want)
    assert math.isnan(eps_needed(m.drop(columns="lambda_max_H"), C))


def test_interval_keeps_infinite_values():
    point, lo, hi = interval([1.0, 2.0, math.inf, math.inf, math.inf], np.median)
    assert point == math.inf and hi == math.inf and lo <= 2.0
    point, lo, hi = interval([1.0, 2.0, 3.0, 4.0], np.mean)
    assert lo <= point == 2.5 <= hi


def fake_table(spikes, *, crossings=None, diverged=None, losses=None, seeds=10):
    """Rows of the sweep's shape: ``spikes[(arch, method)]`` spikes per seed (a list, or one
    number for every seed); every other (arch, method) of METHODS gets 2 spikes."""
    rows = []
    for arch in ARCHITECTURES:
        for name in METHODS:
            n = spikes.get((arch, name), 2)
            n = n if isinstance(n, list) else [n] * seeds
            for seed in range(seeds):
                share = (crossings or {}).get((arch, name), 0.0 if n[seed] == 0 else 0.2)
                loss = (losses or {}).get((arch, name), 1e-3)
                div = bool((diverged or {}).get((arch, name), False))
                rows.append({"architecture": arch, "method": name, "seed": seed,
                             "n_spikes": n[seed], "spikes_per_1000": n[seed] / 2.0,
                             "diverged": div, "final_loss": math.inf if div else loss,
                             "share_above": share if METHODS[name].preconditioned else math.nan,
                             "eps_needed": 1e-3,
                             "best_loss_curve": " ".join(["1"] * 5 + [f"{loss:g}"] * 5)})
    return pd.DataFrame(rows)


def verdicts_of(table):
    return {v.name: v.passed for v in mitigation_verdicts(table)}


def test_verdicts_hold_where_their_claims_hold():
    good = {(a, "eps_0.1"): 0 for a in ARCHITECTURES}
    good[("transformer", "beta2_0.9")] = 0
    assert all(verdicts_of(fake_table(good)).values())


def test_each_verdict_fails_where_its_claim_is_false():
    good = {(a, "eps_0.1"): 0 for a in ARCHITECTURES}
    good[("transformer", "beta2_0.9")] = 0
    # ε = 0.1 leaves spikes in 2 of 10 seeds of the Figure-5 network
    bad = {**good, ("fnn_fig5", "eps_0.1"): [1, 1] + [0] * 8}
    assert not verdicts_of(fake_table(bad, crossings={("fnn_fig5", "eps_0.1"): 0.1}))[
        "eps_0.1_removes_spikes"]
    # β2 = 0.9 spikes as often as Adam on the Transformer
    bad = {**good, ("transformer", "beta2_0.9"): 2}
    assert not verdicts_of(fake_table(bad))["beta2_0.9_reduces_transformer_spikes"]
    # one run at β2 = 0.95 diverges
    assert not verdicts_of(fake_table(good, diverged={("mlp", "beta2_0.95"): True}))[
        "beta2_0.95_does_not_diverge"]
    # runs without a crossing spike as often as those with one
    crossings = {(a, m): 0.0 for a in ARCHITECTURES for m in METHODS}
    assert not verdicts_of(fake_table(good, crossings=crossings))["no_spike_without_crossing"]
    # no run without a crossing: nothing to judge
    crossings = {(a, m): 0.3 for a in ARCHITECTURES for m in METHODS}
    assert not verdicts_of(fake_table(good, crossings=crossings))["no_spike_without_crossing"]


def test_crossing_split_compares_within_the_methods_that_have_both_kinds_of_run():
    from utils.studies.mitigations import crossing_split

    good = {(a, "eps_0.1"): 0 for a in ARCHITECTURES}
    # ε = 1e-2 on the Figure-5 network: 5 seeds without a crossing (spike-free), 5 with (2 spikes each)
    spikes = {**good, ("fnn_fig5", "eps_1e-2"): [0] * 5 + [2] * 5}
    split = crossing_split(fake_table(spikes))
    assert split["strata_with_both"] == 1 and split["within_runs"] == 10
    assert split["within_spike_free_without_crossing"] == 1.0
    assert split["within_spike_free_with_crossing"] == 0.0
    assert split["runs_without_crossing"] == 3 * 10 + 5     # ε = 0.1 everywhere, and those 5
    none = crossing_split(fake_table(good))
    assert none["strata_with_both"] == 0 and math.isnan(none["within_spike_free_with_crossing"])


def test_method_table_targets_and_ranking():
    spikes = {(a, "eps_0.1"): 0 for a in ARCHITECTURES}
    losses = {(a, "eps_0.1"): 1e-1 for a in ARCHITECTURES}   # 100 × Adam's final loss
    spikes.update({(a, "stableadamw"): 0 for a in ARCHITECTURES})
    table = fake_table(spikes, losses=losses)
    t = with_targets(table)
    assert (t["target"] == 2e-3).all()
    assert (t.loc[t["method"] == BASELINE, "steps_to_target"] == 60).all()
    assert np.isinf(t.loc[t["method"] == "eps_0.1", "steps_to_target"]).all()
    summary = method_table(table)
    assert summary.loc[("mlp", "adam"), "spikes_per_1000"] == 1.0
    assert summary.loc[("mlp", "eps_0.1"), "reached_target"] == 0.0
    rank = ranking(summary)
    assert list(rank.index[:2]) == ["stableadamw", "eps_0.1"]
    assert rank.loc["stableadamw", "verdict"] == "removes spikes at no cost in training"
    assert rank.loc["eps_0.1", "verdict"] == "removes spikes, but trains slower"
    assert rank.loc["spam", "verdict"] == "does not reduce spikes"


def test_eps_bound_table_finds_where_things_stop():
    spikes = {(a, "eps_1e-2"): 0 for a in ARCHITECTURES}
    spikes.update({(a, "eps_0.1"): 0 for a in ARCHITECTURES})
    table = fake_table(spikes)
    bound = eps_bound_table(table)
    assert bound.loc["mlp", "eps_spikes_stop"] == 1e-2
    assert bound.loc["mlp", "eps_crossings_stop"] == 1e-2
    assert bound.loc["mlp", "eps_bound_predicts_none"] == 1e-2   # eps_needed = 1e-3
    assert bound.loc["mlp", "eps_needed_median"] == 1e-3


def test_stored_mitigation_table_covers_every_run():
    """data/sweeps/mitigations.csv.gz holds every (architecture, method, seed) with provenance
    (its runs' first steps are recomputed in tests/test_stored_prefixes.py)."""
    from utils.studies.mitigations import MITIGATION_SEEDS
    from utils.book.sweeps import PROVENANCE_COLUMNS, load_sweep

    stored = load_sweep("mitigations")
    assert len(stored) == len(ARCHITECTURES) * len(METHODS) * len(MITIGATION_SEEDS)
    assert set(PROVENANCE_COLUMNS) <= set(stored.columns)
    assert not stored["commit"].str.endswith("-dirty").any()
    assert set(stored["method"]) == set(METHODS)
