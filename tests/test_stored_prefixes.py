"""The stored sweeps on any machine: their deterministic parts exactly, the first steps of their
runs within a tolerance (utils.book.prefixes), also under the "another machine" switch."""
import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from utils.training.models import PERTURB_ENV
from utils.book.prefixes import (PREFIX_FILE, compared_rows, compute_prefix, prefix_targets,
                                 run_prefix, tolerance, watch_prefix)
from utils.book.sweeps import PROVENANCE_COLUMNS, SWEEPS, config_json, config_key, load_sweep

PUBLIC = sorted(name for name, sweep in SWEEPS.items() if sweep.public)
TARGETS = prefix_targets()


@pytest.fixture(scope="module")
def stored_prefixes():
    return load_sweep(PREFIX_FILE)


def assert_prefix_matches(stored, recomputed, sweep):
    """Every stored (quantity, step) is recomputed, each within its relative tolerance (but
    for the steps :func:`~utils.book.prefixes.compared_rows` leaves out)."""
    stored, recomputed = compared_rows(stored, sweep), compared_rows(recomputed, sweep)
    merged = stored.merge(recomputed, on=["quantity", "step"], how="outer",
                          suffixes=("_stored", "_here"), indicator=True)
    assert (merged["_merge"] == "both").all(), merged[merged["_merge"] != "both"]
    for quantity, rows in merged.groupby("quantity"):
        np.testing.assert_allclose(rows["value_here"], rows["value_stored"], atol=0,
                                   rtol=tolerance(sweep, quantity),
                                   err_msg=f"{sweep}: {quantity}")


def stored_target(stored_prefixes, target):
    sweep, index, seed = target
    rows = stored_prefixes[(stored_prefixes["sweep"] == sweep)
                           & (stored_prefixes["config_index"] == index)
                           & (stored_prefixes["seed"] == seed)]
    assert len(rows), f"no stored prefix for {target}: python -m utils.book.prefixes"
    return rows[["step", "quantity", "value"]]


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: f"{t[0]}-{t[1]}")
def test_the_first_steps_of_a_stored_run_recompute_within_tolerance(stored_prefixes, target):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)       # as stored; another count rounds otherwise, within tolerance
    try:
        assert_prefix_matches(stored_target(stored_prefixes, target), compute_prefix(*target),
                              target[0])
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("target", [("04_spike_onset", 0, 0), ("watch", 0, 0)],
                         ids=lambda t: t[0])
def test_the_tolerance_covers_another_machine(stored_prefixes, target, monkeypatch):
    """Under the switch (initial parameters moved by 1e-12, as rounding would) the first steps
    still match the stored ones: the tolerance is not tighter than a machine's rounding."""
    monkeypatch.setenv(PERTURB_ENV, "1e-12")
    recomputed = compute_prefix(*target)
    assert_prefix_matches(stored_target(stored_prefixes, target), recomputed, target[0])


@pytest.mark.parametrize("target", [("04_spike_onset", 0, 0), ("watch", 0, 0)],
                         ids=lambda t: t[0])
def test_another_beta2_fails_the_first_steps(stored_prefixes, target):
    """The comparison fails on a recompute that is really wrong: the same run at β2 = 0.9
    instead of 0.999 leaves the tolerance within the first steps."""
    sweep, index, seed = target
    if sweep == "watch":
        wrong = watch_prefix(seed, beta2=0.9)
    else:
        wrong = run_prefix(dataclasses.replace(SWEEPS[sweep].configs[index], seed=seed,
                                               beta2=0.9))
    with pytest.raises(AssertionError):
        assert_prefix_matches(stored_target(stored_prefixes, target), wrong, sweep)


def test_the_stored_prefixes_name_their_configs_and_provenance(stored_prefixes):
    stored = stored_prefixes
    assert set(map(tuple, stored[["sweep", "config_index", "seed"]].drop_duplicates()
                   .itertuples(index=False))) == set(TARGETS)
    for (sweep, index), rows in stored.groupby(["sweep", "config_index"]):
        if sweep != "watch":
            assert (rows["config"] == config_json(SWEEPS[sweep].configs[index])).all()
    for column in PROVENANCE_COLUMNS[2:]:
        assert stored[column].notna().all(), column
    assert not stored["commit"].str.endswith("-dirty").any()


@pytest.mark.parametrize("name", PUBLIC)
def test_a_stored_sweep_holds_every_config_and_seed_with_its_key_and_provenance(name):
    """What of a stored sweep is the same on every machine, exactly: its configs (as JSON and
    key), its seeds (a sweep whose evaluate trains, such as the forks, may have no row for a
    seed with nothing to fork), its columns' order and its provenance."""
    stored, sweep = load_sweep(name), SWEEPS[name]
    assert set(stored["config_index"]) == set(range(len(sweep.configs)))
    for index, config in enumerate(sweep.configs):
        rows = stored[stored["config_index"] == index]
        seeds = set(rows["seed"])
        assert seeds <= set(sweep.seeds) if sweep.trains else seeds == set(sweep.seeds), index
        assert (rows["config"] == config_json(config)).all(), index
        assert (rows["config_key"] == config_key(config)).all(), index
    assert (stored["sweep"] == name).all()
    assert list(stored.columns[:3]) == ["sweep", "config_index", "seed"]
    assert list(stored.columns[-len(PROVENANCE_COLUMNS):]) == list(PROVENANCE_COLUMNS)
    for column in PROVENANCE_COLUMNS:
        assert stored[column].notna().all(), column
    assert not stored["commit"].str.endswith("-dirty").any()


def test_only_the_first_step_of_form_b_is_left_out_and_only_in_float32():
    prefix = pd.DataFrame({"step": [1, 2, 1, 1], "value": 1.0,
                           "quantity": ["lambda_grad_pre", "lambda_grad_pre", "loss",
                                        "lambda_grad_pre_eval"]})
    kept = compared_rows(prefix, "sustained")       # float32
    assert kept[["step", "quantity"]].values.tolist() == [[2, "lambda_grad_pre"], [1, "loss"]]
    assert len(compared_rows(prefix, "04_spike_onset")) == 4   # float64: every row
