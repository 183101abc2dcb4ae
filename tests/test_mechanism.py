"""The introduction's measured spike: what its page asserts on a chaotic run holds on another
machine with a stated probability, judged against the stored seeds of the same run."""
import numpy as np
import pytest

from utils.book.mechanism import (MECHANISM_BANDS, MECHANISM_SEEDS, MECHANISM_TABLE,
                                  MECHANISM_STEPS, mechanism_config, mechanism_numbers)
from utils.book.sweeps import PROVENANCE_COLUMNS, load_sweep
from utils.events.stages import spike_stages
from utils.studies.ensemble import RECOMPUTE_FALSE_FAILURE, prediction_interval
from utils.training.runs import run


@pytest.fixture(scope="module")
def stored():
    return load_sweep(MECHANISM_TABLE)


def test_every_stored_seed_has_a_qualifying_spike_and_provenance(stored):
    assert list(stored["seed"]) == list(MECHANISM_SEEDS)
    assert stored["has_stages"].all()
    assert not stored["commit"].str.endswith("-dirty").any()
    for column in set(PROVENANCE_COLUMNS) - {"config_key", "config"}:
        assert stored[column].notna().all(), column


def test_the_bands_hold_the_stored_seeds_prediction_intervals(stored):
    """A page run on another machine is another seed of the same process: each asserted number
    lies inside its band with probability at least 1 − 1e-3 for all bands together, since each
    band holds the seeds' prediction interval at 1e-3 / (number of bands) (normal across seeds;
    log-normal too where the number is positive, whichever is wider). The recovery step's
    interval ending before the run's end is also what makes a qualifying spike near-certain."""
    share = RECOMPUTE_FALSE_FAILURE / len(MECHANISM_BANDS)
    for name, (low, high) in MECHANISM_BANDS.items():
        x = stored[name].to_numpy(dtype=float)
        intervals = [prediction_interval(x, share, log=False)]
        if (x > 0).all():
            intervals.append(prediction_interval(x, share, log=True))
        lo, hi = min(i[0] for i in intervals), max(i[1] for i in intervals)
        assert low <= lo and hi <= high, (name, (lo, hi), (low, high))


def test_a_band_too_tight_for_the_seeds_is_caught(stored):
    """The check above fails where a band was set from the seeds' range: the old band on
    λ_max(H), three quarters of 2/η, against a prediction interval that reaches past it."""
    x = stored["mech_lambda_H_share"].to_numpy(dtype=float)
    assert x.max() < 0.75 < prediction_interval(x, RECOMPUTE_FALSE_FAILURE / 3, log=False)[1]


def test_the_numbers_of_a_run_are_those_of_its_stages():
    """On the page's run (seed 0), the numbers are read off the stages."""
    result = run(mechanism_config(0, progress=False), spot_checks=False)
    stages = spike_stages(result)
    numbers = mechanism_numbers(result, stages)
    w0, decoupled, crossed, _, _, recovered = stages.bounds
    assert numbers["mech_decoupled_steps"] == crossed - decoupled > 0
    assert numbers["mech_lead"] == stages.spike.start - crossed
    assert numbers["mech_recovered"] == recovered <= MECHANISM_STEPS
    window = result.metrics[(result.metrics["step"] >= w0) & (result.metrics["step"] <= recovered)]
    assert numbers["mech_lambda_H_share"] == pytest.approx(
        np.nanmax(window["lambda_max_H"]) * 0.01 / 2)
