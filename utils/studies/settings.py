"""The chapters' runs: each chapter's default parameters and the run configuration they define.

The defaults are read from the chapter's own ``parameters`` cell in ``notebooks/`` (with
papermill's notebook inspection), so the committed cell is the one place they are written. The
studies (interventions, predictors, mitigations, phase) build their runs on these configs, and so
do the chapter sweeps, the benchmark and the tests.

Two settings are not a chapter's any more: :data:`TRANSFORMER`, the one-layer Transformer on
(a + b) mod 11 that chapters 5-8 study, was chapter 4's run until chapter 4 moved to the paper's
own Figure 4; :data:`CNN_DIGITS`, the small CNN on 8×8 digits of chapters 5-7, was chapter 3's
until chapter 3 moved to the paper's Figure 6. Their parameters are frozen in
:data:`FROZEN_PARAMETERS`, so the stored sweeps of chapters 5-8 still describe the runs their
configs name.
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


TRANSFORMER = "transformer_mod11"
"""The name of the frozen Transformer setting of chapters 5-8 (module docstring)."""
CNN_DIGITS = "cnn_digits8"
"""The name of the frozen small-CNN setting of chapters 5-7 (module docstring)."""
FROZEN_PARAMETERS = {
    TRANSFORMER: dict(d_model=16, n_heads=2, n_layers=1, modulus=11, lr=0.03, beta1=0.9,
                      beta2=0.999, eps=1e-8, steps=1500, seed=0, track_every=3, dtype="float64"),
    CNN_DIGITS: dict(channels=8, activation="tanh", n_images=128, lr=0.03, beta1=0.9,
                     beta2=0.999, eps=1e-8, steps=2000, seed=0, track_every=2, dtype="float64")}
"""Settings whose parameters live here rather than in a chapter's parameters cell."""


def setting_defaults(setting: str) -> dict:
    """The parameters of a chapter (its parameters cell) or of a frozen setting."""
    if setting in FROZEN_PARAMETERS:
        return dict(FROZEN_PARAMETERS[setting])
    return chapter_defaults(setting)


def chapter_config(chapter: str, params: dict | None = None, **overrides):
    """The :class:`~utils.training.runs.RunConfig` of a chapter's run (chapters 1-4, or a
    frozen setting, :data:`TRANSFORMER` or :data:`CNN_DIGITS`) from its
    parameters (``params``: the notebook's values, as :func:`utils.book.chapters.chapter_parameters`
    returns them; default: the chapter's defaults), with ``overrides`` applied. The notebooks, the
    seed sweeps, the benchmark and the engine's tests all build their runs here."""
    from dataclasses import replace

    from utils.training.runs import RunConfig

    p = {**setting_defaults(chapter), **(params or {})}
    common = dict(lr=p["lr"], beta1=p["beta1"], beta2=p["beta2"], eps=p["eps"], steps=p["steps"],
                  seed=p["seed"], track_every=p["track_every"], dtype=p["dtype"])
    if chapter == "01_v_decay":
        config = RunConfig(model="mlp", model_kwargs=dict(width=p["width"], depth=p["depth"],
                                                          activation=p["activation"]),
                           data="sin", data_kwargs=dict(n_points=p["n_points"]), **common,
                           measure=("lambda_max_H", "lambda_max_pre", "decoupling"))
    elif chapter == "02_lambda_max_crossing":   # the paper's Figure 5 (and D5, D9)
        config = RunConfig(model="mlp", model_kwargs=dict(width=p["width"], depth=1,
                                                          activation=p["activation"],
                                                          init_exponent=p["init_exponent"]),
                           data="quadratic_target", data_kwargs=dict(
                               n_points=p["n_points"], dim=p["input_dim"], noise=p["noise"]),
                           **common, measure=("lambda_max_H", "lambda_max_pre", "lambda_grad",
                                              "lambda_update", "alignment", "v_norms"))
    elif chapter == "03_gradient_alignment":   # the paper's Figure 6
        config = RunConfig(model="lenet", model_kwargs=dict(channels=list(p["channels"]),
                                                            hidden=p["hidden"],
                                                            activation=p["activation"]),
                           data="digits", data_kwargs=dict(
                               n_images=p["n_images"], image_size=p["image_size"], channels=3),
                           **common, grad_every=p["grad_every"], threads=p["threads"],
                           measure=("lambda_max_H", "lambda_max_pre", "alignment",
                                    "lambda_grad", "v_norms"))
    elif chapter == CNN_DIGITS:
        config = RunConfig(model="cnn", model_kwargs=dict(channels=p["channels"],
                                                          activation=p["activation"]),
                           data="digits", data_kwargs=dict(n_images=p["n_images"]), **common,
                           measure=("lambda_max_pre", "alignment", "lambda_grad"))
    elif chapter == "04_spike_onset":   # the paper's Figure 4 (c, d): Adam
        config = RunConfig(model="mlp", model_kwargs=dict(width=p["width"], depth=1,
                                                          activation="tanh",
                                                          init_exponent=p["init_exponent"]),
                           data="sin", data_kwargs=dict(n_points=p["n_points"]), **common,
                           spike_factor=p["spike_factor"], spike_window=p["spike_window"],
                           measure=("lambda_max_pre", "lambda_grad"))
    elif chapter == TRANSFORMER:
        config = RunConfig(model="transformer",
                           model_kwargs=dict(d_model=p["d_model"], n_heads=p["n_heads"],
                                             n_layers=p["n_layers"]),
                           data="modular_addition", data_kwargs=dict(modulus=p["modulus"]),
                           **common, measure=("lambda_max_pre", "lambda_grad"))
    else:
        raise ValueError(f"chapter must be one of {list(SEED_CHAPTERS)}, got {chapter!r}")
    return replace(config, **overrides)


def figure4_gd_config(params: dict | None = None, **overrides):
    """Chapter 4's second run, the paper's Figure 4 (a, b): gradient descent on the same task
    with its own width, initialisation, η and length (the ``gd_*`` parameters), measuring
    λ_max(H) and λ_grad(H) (with D = I and c = 1, the tracker's λ_grad is the raw one)."""
    from dataclasses import replace

    p = {**chapter_defaults("04_spike_onset"), **(params or {})}
    adam = chapter_config("04_spike_onset", p)
    config = replace(adam, optimizer="gd", lr=p["gd_lr"], steps=p["gd_steps"],
                     model_kwargs={**adam.model_kwargs, "width": p["gd_width"],
                                   "init_exponent": p["gd_init_exponent"]},
                     measure=("lambda_max_H", "lambda_grad"))
    return replace(config, **overrides)


SEED_CHAPTERS = ("01_v_decay", "02_lambda_max_crossing", "03_gradient_alignment",
                 "04_spike_onset")
"""The chapters whose claim is judged over seeds (their runs come from :func:`chapter_config`)."""


def chapter_runs(chapter: str, params: dict | None = None, **overrides) -> tuple:
    """The configs a chapter's seed sweep repeats under ``params``: its run, and for chapter 4
    both of the paper's Figure 4 runs (Adam, then gradient descent)."""
    if chapter == "04_spike_onset":
        return (chapter_config(chapter, params, **overrides),
                figure4_gd_config(params, **overrides))
    return (chapter_config(chapter, params, **overrides),)


def chapter_evaluate(chapter: str) -> tuple[str, bool]:
    """The evaluate function (``module:function``) of a chapter's seed sweep, and whether it
    trains the seeds itself (chapter 2 forks each run to test the paper's remedies)."""
    if chapter not in SEED_CHAPTERS:
        raise ValueError(f"chapter must be one of {list(SEED_CHAPTERS)}, got {chapter!r}")
    if chapter == "02_lambda_max_crossing":
        return "utils.studies.crossing:figure5_rows", True
    if chapter == "03_gradient_alignment":
        return "utils.studies.alignment:figure6_rows", False
    if chapter == "04_spike_onset":
        return "utils.studies.onset:figure4_rows", False
    return f"utils.studies.ensemble:seeds_{chapter[:2]}", False
