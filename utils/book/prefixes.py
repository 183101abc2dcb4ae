"""The first steps of the stored sweeps' runs: the part of a chaotic run every machine shares.

A spike's timing is chaotic: another CPU, BLAS build, thread count or batched training rounds
differently, and after a few hundred steps the run is another sample. The stored sweep tables
(``data/sweeps/<name>.csv.gz``) summarise whole runs, so no other machine can recompute them
exactly. What it can recompute is how each run *starts*: the loss over the first
:data:`PREFIX_STEPS` steps and the curvature measured in them. This module trains that prefix
for a few configs of every sweep and stores it, with provenance, in
``data/sweeps/prefixes.csv.gz``; ``tests/test_stored_prefixes.py`` trains it again and compares
within :data:`TOLERANCE`, which must also cover a run under the "another machine" switch
(``ADAM_SPIKES_PERTURB``, :mod:`utils.training.models`).

    python -m utils.book.prefixes          # writes data/sweeps/prefixes.csv.gz (about 10 s)
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys

import pandas as pd

from utils.book.sweeps import (SWEEP_DIR, SWEEPS, config_json, provenance, provenance_columns,
                               write_table)
from utils.training.runs import display_path, run

PREFIX_STEPS = 30
"""Steps of each stored prefix: long enough to hold a few curvature measurements, short enough
that rounding differences have not grown past :data:`TOLERANCE`."""
TOLERANCE = {"loss": 1e-6, "lambda_max_pre": 5e-3, "lambda_grad_pre": 5e-3, "lambda_max_H": 5e-3}
"""Relative tolerance of each quantity: the loss is computed exactly up to rounding; a largest
eigenvalue is solved to a relative residual of 1e-3, so two machines' solves of the same operator
may differ by a few times that."""
FLOAT32_TOLERANCE = {"loss": 1e-4, "lambda_grad_pre": 1e-2}
"""The float32 runs (chapter 9's language model on mini-batches, the anchor-function
Transformers): rounding is 1e-7 there, and chapter 9's single-batch λ_grad(Ĥ) amplifies it more
than the float64 full-batch models do."""
FIRST_STEP_UNSTABLE = ("lambda_grad_pre", "lambda_grad_pre_eval")
"""Quantities not compared at step 1 of a float32 run: there v̂ = g², so D g = g / (|g| + ε) maps
the rounding noise of gradient entries near ε to entries anywhere in [0, 1), and form B of
λ_grad(Ĥ), weighted by D g on both sides, moves with it (measured: 63.41 on an AMD EPYC against
62.65 on an Intel Xeon, chapter 11's model; from step 2 on both agree to 1e-6)."""
PREFIX_FILE = "prefixes"
"""The stem of the stored file, ``data/sweeps/prefixes.csv.gz``."""
QUANTITIES = ("loss", "lambda_max_pre", "lambda_grad_pre", "lambda_max_H")


def sampled_configs(n_configs: int) -> list[int]:
    """The config indices whose prefixes are stored: the first, the middle and the last."""
    return sorted({0, n_configs // 2, n_configs - 1})


def run_prefix(config) -> pd.DataFrame:
    """The first :data:`PREFIX_STEPS` steps of ``config`` (one seed, trained alone by
    :func:`~utils.training.runs.run`, no spot checks) in long form: columns ``step``, ``quantity``,
    ``value`` for each finite value of :data:`QUANTITIES` the run records."""
    config = dataclasses.replace(config, steps=PREFIX_STEPS, progress=False)
    metrics = run(config, spot_checks=False).metrics
    return _long(metrics, [q for q in QUANTITIES if q in metrics])


def watch_prefix(seed: int, **settings) -> pd.DataFrame:
    """Chapter 9's run of ``seed`` for :data:`PREFIX_STEPS` steps with both monitors (under
    ``settings``, chapter 9's :data:`~utils.studies.watch.WATCH` otherwise): the loss of every
    step and λ_grad(Ĥ) on the step's own batch (``lambda_grad_pre``) and on the fixed
    evaluation batch (``lambda_grad_pre_eval``), in the long form of :func:`run_prefix`."""
    from utils.studies.watch import train_watched

    result = train_watched(seed, progress=False, steps=PREFIX_STEPS, measure_on=("batch", "eval"),
                           **settings)
    batch, evaluation = result.tables["batch"], result.tables["eval"]
    table = batch[["step", "loss", "lambda_grad_pre"]].merge(
        evaluation[["step", "lambda_grad_pre"]].rename(
            columns={"lambda_grad_pre": "lambda_grad_pre_eval"}), on="step")
    return _long(table, ["loss", "lambda_grad_pre", "lambda_grad_pre_eval"])


def _long(table: pd.DataFrame, quantities) -> pd.DataFrame:
    out = table.melt(id_vars="step", value_vars=list(quantities), var_name="quantity")
    out = out[out["value"].map(lambda x: isinstance(x, float) and math.isfinite(x))]
    return out.sort_values(["quantity", "step"], kind="stable").reset_index(drop=True)


def prefix_targets() -> list[tuple[str, int, int]]:
    """(sweep, config index, seed) of every stored prefix: the sampled configs of each public
    sweep under its first seed, and chapter 9's first seed (config index 0)."""
    from utils.studies.watch import WATCH_SEEDS

    targets = [(s.name, i, int(s.seeds[0])) for s in SWEEPS.values() if s.public
               for i in sampled_configs(len(s.configs))]
    return targets + [("watch", 0, int(WATCH_SEEDS[0]))]


def compute_prefix(sweep: str, config_index: int, seed: int) -> pd.DataFrame:
    """The prefix of one target of :func:`prefix_targets`, as trained here and now."""
    if sweep == "watch":
        return watch_prefix(seed)
    config = dataclasses.replace(SWEEPS[sweep].configs[config_index], seed=seed)
    return run_prefix(config)


def tolerance(sweep: str, quantity: str) -> float:
    """The relative tolerance of ``quantity`` in the prefixes of ``sweep``:
    :data:`FLOAT32_TOLERANCE` for chapter 9's runs and the sweeps trained in float32."""
    float32 = sweep == "watch" or any(c.dtype == "float32" for c in SWEEPS[sweep].configs)
    return (FLOAT32_TOLERANCE if float32 else TOLERANCE)[quantity.removesuffix("_eval")]


def compared_rows(prefix: pd.DataFrame, sweep: str) -> pd.DataFrame:
    """The rows of a ``prefix`` of ``sweep`` (long form) that a recomputation is held to: all
    but, in float32 runs, step 1 of :data:`FIRST_STEP_UNSTABLE`."""
    if tolerance(sweep, "loss") != FLOAT32_TOLERANCE["loss"]:
        return prefix
    return prefix[~(prefix["quantity"].isin(FIRST_STEP_UNSTABLE) & (prefix["step"] == 1))]


def write_prefixes(out=None, progress: bool = True) -> pd.DataFrame:
    """Train every prefix of :func:`prefix_targets` and write them, with the provenance of this
    process and each config's JSON, to ``data/sweeps/prefixes.csv.gz`` (or ``out``)."""
    from tqdm import tqdm

    prov = provenance_columns(provenance())
    frames = []
    for sweep, index, seed in tqdm(prefix_targets(), desc="prefixes", disable=not progress):
        frame = compute_prefix(sweep, index, seed)
        config = "" if sweep == "watch" else config_json(SWEEPS[sweep].configs[index])
        frames.append(frame.assign(sweep=sweep, config_index=index, seed=seed, config=config))
    table = pd.concat(frames, ignore_index=True).assign(**prov)
    table = table[["sweep", "config_index", "seed", "step", "quantity", "value", "config",
                   *prov]]
    out = out or SWEEP_DIR / f"{PREFIX_FILE}.csv.gz"
    write_table(table, out)
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.book.prefixes",
                                     description=__doc__.split("\n")[0])
    parser.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    table = write_prefixes()
    print(f"{len(table)} values of {table[['sweep', 'config_index']].drop_duplicates().shape[0]} "
          f"runs -> {display_path(SWEEP_DIR / f'{PREFIX_FILE}.csv.gz')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
