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


def cross_entropy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (nats) of logits ``output`` (N, C) against class ids ``target`` (N,):
    mean(logsumexp(output) − output[target]). Written out, as :func:`mse` is, so that every
    derivative the book takes (double backward, forward-over-reverse) goes through plain ops."""
    picked = output.gather(1, target.long().unsqueeze(1)).squeeze(1)
    return (torch.logsumexp(output, dim=1) - picked).mean()


LOSSES = {"mse": mse, "cross_entropy": cross_entropy}
"""The losses by name; a data set's ``info["loss"]`` picks one (``"mse"`` when it names none)."""


def loss_for(info: dict):
    """The loss function a data set's ``info`` names (:data:`LOSSES`; default ``"mse"``)."""
    name = info.get("loss", "mse")
    if name not in LOSSES:
        raise ValueError(f"loss must be one of {list(LOSSES)}, got {name!r}")
    return LOSSES[name]
