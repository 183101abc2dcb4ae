"""The CUDA path, as a smoke test: a few steps of the book's runs on a GPU agree with the same
steps on the CPU. Skipped, with its reason, where torch finds no CUDA GPU."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from utils.studies.spike_types import anchor_config, lambda_grad_window
from utils.training.runs import RunConfig, run

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA GPU here (torch.cuda.is_available() is False)")


def both(config, **kwargs):
    """The run of ``config`` on the CPU and on the GPU."""
    return run(config, **kwargs), run(replace(config, device="cuda"), **kwargs)


def test_the_tracked_mlp_on_cuda_measures_what_the_cpu_does():
    config = RunConfig(model="mlp", model_kwargs={"width": 16}, data="sin",
                       data_kwargs={"n_points": 32}, steps=20, track_every=5, progress=False)
    cpu, gpu = both(config, spot_checks=False)
    np.testing.assert_allclose(gpu.metrics["loss"], cpu.metrics["loss"], rtol=1e-9)
    for column in ("lambda_max_pre", "lambda_grad_pre", "lambda_max_H"):
        a, b = cpu.metrics[column].dropna(), gpu.metrics[column].dropna()
        np.testing.assert_allclose(b, a, rtol=1e-2, err_msg=column)


def test_the_anchor_transformer_on_cuda_trains_and_replays():
    """The spike-type study's run, shrunk: its losses, its held-out loss and a λ_grad(Ĥ) replay
    from a checkpoint, on the GPU as on the CPU (float64, so the two agree closely)."""
    config = anchor_config(2, steps=30, warmup=5, dtype="float64",
                           data_kwargs={"rule": "3x_to_x", "n": 64, "n_test": 16})
    cpu, gpu = both(config, checkpoint_every=10, spot_checks=False)
    for column in ("loss", "test_loss"):
        np.testing.assert_allclose(gpu.metrics[column], cpu.metrics[column], rtol=1e-6,
                                   err_msg=column)
    window = lambda_grad_window(gpu, 15, 25)
    assert window["replay_diff"].iloc[0] < 1e-9     # the replay retraces the run (CUDA's
    # scatter-adds may round in another order, so not necessarily bit for bit)
    expected = lambda_grad_window(cpu, 15, 25)
    np.testing.assert_allclose(window["ratio_a"], expected["ratio_a"], rtol=1e-4)


def test_the_figure7_command_runs_on_cuda(tmp_path):
    """The one command of the paper's full Figure 7 setting (``python -m utils.book.figure7``),
    shrunk to seconds, on the GPU."""
    import pandas as pd

    from utils.book.figure7 import main

    tiny = ["--n", "512", "--d-model", "16", "--n-heads", "4", "--n-layers", "2", "--d-ff",
            "48", "--batch", "64", "--warmup", "5", "--steps", "30"]
    assert main(["--device", "cuda", "--output-dir", str(tmp_path), *tiny]) == 0
    gpu = pd.read_csv(tmp_path / "metrics.csv")
    assert main(["--device", "cpu", "--output-dir", str(tmp_path / "cpu"), *tiny]) == 0
    cpu = pd.read_csv(tmp_path / "cpu" / "metrics.csv")
    np.testing.assert_allclose(gpu["loss"], cpu["loss"], rtol=1e-3)
    assert gpu["batch_lambda_grad_pre_a"].notna().all()
