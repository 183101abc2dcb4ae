"""The training loss of every chapter.

``mse`` is the mean squared error over samples and outputs, mean((f(x) - y)²), with no factor
1/2: raw Hessian eigenvalues depend on this normalisation (Adam's preconditioned ones, with small
ε, do not). It is written out rather than taken from ``torch.nn.functional.mse_loss``, whose
forward-over-reverse derivative fails under ``torch.func`` in torch 2.13 ("ZeroTensors are
immutable").
"""
import torch


def mse(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean((output - target)²) over all entries; output and target of the same shape."""
    return ((output - target) ** 2).mean()
