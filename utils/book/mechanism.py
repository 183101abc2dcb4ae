"""The introduction's measured spike: its run, the numbers its prose quotes, the bands it asserts,
and the stored seeds those bands are judged against.

The introduction shows one spike of chapter 1's setting (seed 0) stage by stage. The run is
chaotic: on another machine its first spike comes at another step, so what the page asserts on
it is judged against :data:`MECHANISM_SEEDS` seeds of the same run, stored in
``data/sweeps/mechanism.csv.gz``: each band holds the seeds' prediction interval at a false-failure
probability of :data:`~utils.studies.ensemble.RECOMPUTE_FALSE_FAILURE`
(``tests/test_mechanism.py``).

    python -m utils.book.mechanism         # writes data/sweeps/mechanism.csv.gz (about 3 min)
"""
from __future__ import annotations

import argparse
import sys

import pandas as pd
from tqdm import tqdm

from utils.book.sweeps import SWEEP_DIR, provenance, provenance_columns, write_table
from utils.events.stages import spike_stages
from utils.training.runs import RunConfig, display_path, run

MECHANISM_LR = 0.01
MECHANISM_STEPS = 5000
"""Steps of the run: long enough that the first qualifying spike has recovered on any machine
(the stored seeds' prediction interval of that step at 1e-3 ends before it)."""
MECHANISM_SEEDS = tuple(range(16))
MECHANISM_TABLE = "mechanism"
"""The stored seeds' table, ``data/sweeps/mechanism.csv.gz`` (read with
:func:`~utils.book.sweeps.load_sweep`)."""
MECHANISM_FILE = SWEEP_DIR / f"{MECHANISM_TABLE}.csv.gz"


def mechanism_config(seed: int = 0, progress: bool = True) -> RunConfig:
    """Chapter 1's network and data (a one-hidden-layer tanh network of width 100 on 200 points
    of sin x + sin 4x, Adam at η = 0.01, β2 = 0.999, float64) for :data:`MECHANISM_STEPS` steps,
    λ_max(Ĥ), λ_max(H) and g²/v tracked every 2nd step."""
    return RunConfig(model="mlp", model_kwargs=dict(width=100, depth=1, activation="tanh"),
                     data="sin", data_kwargs=dict(n_points=200), lr=MECHANISM_LR, beta2=0.999,
                     steps=MECHANISM_STEPS, seed=seed, track_every=2, dtype="float64",
                     measure=("lambda_max_H", "lambda_max_pre", "decoupling"),
                     progress=progress).validate()


def mechanism_numbers(result, stages) -> dict:
    """The numbers the introduction's prose quotes of the spike in ``stages`` (a
    :class:`~utils.events.stages.SpikeStages` of ``result``): the steps from decoupling to the
    crossing (``mech_decoupled_steps``), the crossing's step, the steps from the crossing to the
    spike's start (``mech_lead``), the recovery's step, and the largest λ_max(H) over the
    stages as a share of 2/η (``mech_lambda_H_share``)."""
    spike, (w0, decoupled, crossed, _, _, recovered) = stages.spike, stages.bounds
    metrics = result.metrics
    window = metrics[(metrics["step"] >= w0) & (metrics["step"] <= recovered)]
    return {"mech_decoupled_steps": crossed - decoupled, "mech_crossing": crossed,
            "mech_lead": spike.start - crossed, "mech_recovered": recovered,
            "mech_lambda_H_share": float(window["lambda_max_H"].max()) * result.config.lr / 2}


MECHANISM_BANDS = {"mech_lead": (0, MECHANISM_STEPS), "mech_recovered": (1, MECHANISM_STEPS),
                   "mech_lambda_H_share": (0, 1)}
"""What the prose states of the numbers, asserted on every run of the page: λ_max(Ĥ) crosses
2/η no later than the step the loss starts to rise from, the spike has recovered within the
run, and λ_max(H) stays below 2/η throughout."""


def mechanism_row(seed: int) -> dict:
    """One stored seed: :func:`mechanism_numbers` of its first qualifying spike (NaN where it
    has none)."""
    result = run(mechanism_config(seed, progress=False), spot_checks=False)
    stages = spike_stages(result)
    numbers = mechanism_numbers(result, stages) if stages is not None else {}
    return {"seed": seed, "has_stages": stages is not None, **numbers}


def write_mechanism_seeds(progress: bool = True) -> pd.DataFrame:
    """Run every seed of :data:`MECHANISM_SEEDS` and write their rows, with provenance, to
    :data:`MECHANISM_FILE`."""
    rows = [mechanism_row(seed) for seed in tqdm(MECHANISM_SEEDS, desc="seeds",
                                                 disable=not progress)]
    table = pd.DataFrame(rows).assign(**provenance_columns(provenance()))
    write_table(table, MECHANISM_FILE)
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.book.mechanism",
                                     description=__doc__.split("\n")[0])
    parser.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    table = write_mechanism_seeds()
    print(f"{len(table)} seeds -> {display_path(MECHANISM_FILE)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
