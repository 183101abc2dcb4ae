"""The chapters' runs: each chapter's default parameters and the run configuration they define.

The defaults are read from the chapter's own ``parameters`` cell in ``notebooks/`` (with
papermill's notebook inspection), so the committed cell is the one place they are written. The
studies (interventions, predictors, mitigations, phase) build their runs on these configs, and so
do the chapter sweeps, the benchmark and the tests.
"""
from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

from utils.training.runs import REPO_ROOT

NOTEBOOK_DIR = REPO_ROOT / "notebooks"


def chapter_path(chapter: str) -> Path:
    """``notebooks/<chapter>.ipynb``; ValueError listing the chapters if there is none."""
    path = NOTEBOOK_DIR / f"{chapter}.ipynb"
    if not path.exists():
        names = sorted(p.stem for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
        raise ValueError(f"chapter must be one of {names}, got {chapter!r}")
    return path


@lru_cache(maxsize=None)
def inspect_parameters(chapter: str) -> dict:
    """papermill's inspection of the chapter's ``parameters`` cell: name -> default, help."""
    import papermill

    return papermill.inspect_notebook(str(chapter_path(chapter)))


def chapter_defaults(chapter: str) -> dict:
    """The chapter's parameters and their default values, as written in its parameters cell."""
    return {name: ast.literal_eval(p["default"]) for name, p in inspect_parameters(chapter).items()}


def chapter_config(chapter: str, params: dict | None = None, **overrides):
    """The :class:`~utils.training.runs.RunConfig` of a chapter's run (chapters 1-4) from its
    parameters (``params``: the notebook's values, as :func:`utils.book.chapters.chapter_parameters`
    returns them; default: the chapter's defaults), with ``overrides`` applied. The notebooks, the
    seed sweeps, the benchmark and the engine's tests all build their runs here."""
    from dataclasses import replace

    from utils.training.runs import RunConfig

    p = {**chapter_defaults(chapter), **(params or {})}
    common = dict(lr=p["lr"], beta1=p["beta1"], beta2=p["beta2"], eps=p["eps"], steps=p["steps"],
                  seed=p["seed"], track_every=p["track_every"], dtype=p["dtype"])
    if chapter == "01_v_decay":
        config = RunConfig(model="mlp", model_kwargs=dict(width=p["width"], depth=p["depth"],
                                                          activation=p["activation"]),
                           data="sin", data_kwargs=dict(n_points=p["n_points"]), **common,
                           measure=("lambda_max_H", "lambda_max_pre", "decoupling"))
    elif chapter == "02_lambda_max_crossing":
        config = RunConfig(model="mlp", model_kwargs=dict(width=p["width"], depth=p["depth"],
                                                          activation=p["activation"]),
                           data="teacher", data_kwargs=dict(
                               n_points=p["n_points"], dim=p["input_dim"],
                               teacher_width=p["teacher_width"], noise=p["noise"]),
                           **common, measure=("lambda_max_H", "lambda_max_pre", "lambda_grad"))
    elif chapter == "03_gradient_alignment":
        config = RunConfig(model="cnn", model_kwargs=dict(channels=p["channels"],
                                                          activation=p["activation"]),
                           data="digits", data_kwargs=dict(n_images=p["n_images"]), **common,
                           measure=("lambda_max_pre", "alignment", "lambda_grad"))
    elif chapter == "04_spike_onset":
        config = RunConfig(model="transformer",
                           model_kwargs=dict(d_model=p["d_model"], n_heads=p["n_heads"],
                                             n_layers=p["n_layers"]),
                           data="modular_addition", data_kwargs=dict(modulus=p["modulus"]),
                           **common, measure=("lambda_max_pre", "lambda_grad"))
    else:
        raise ValueError(f"chapter must be one of {list(SEED_CHAPTERS)}, got {chapter!r}")
    return replace(config, **overrides)


SEED_CHAPTERS = ("01_v_decay", "02_lambda_max_crossing", "03_gradient_alignment",
                 "04_spike_onset")
"""The chapters whose claim is judged over seeds (their runs come from :func:`chapter_config`)."""
