"""The book's data sets, generated in code or bundled with scikit-learn (no downloads).

Each function returns a :class:`Dataset` of tensors in the requested dtype, identical for the
same arguments and seed. Regression targets use the MSE loss (mean over samples and outputs);
classification sets carry one-hot targets for the same loss.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from utils.training.anchor import anchor_function
from utils.validation import check_choice, check_number, resolve_dtype


@dataclass
class Dataset:
    """inputs: (N, ...) tensor; targets: (N, out_dim) tensor; info: what was generated;
    test: a held-out set of the same task, where the data set has one (the training loop then
    records its loss at every step, ``test_loss``)."""

    inputs: torch.Tensor
    targets: torch.Tensor
    info: dict = field(default_factory=dict)
    test: "Dataset | None" = None

    def __len__(self):
        return len(self.inputs)


def sin_regression(n_points: int = 200, x_max: float = math.pi, noise: float = 0.0, seed: int = 0,
                   dtype="float64") -> Dataset:
    """y = sin x + sin 4x (+ Gaussian noise of std ``noise``) at N uniform x in [-x_max, x_max].

    inputs (N, 1), targets (N, 1).
    """
    check_number("n_points", n_points, low=2, integer=True)
    check_number("x_max", x_max, low=0, low_open=True)
    check_number("noise", noise, low=0)
    rng = np.random.default_rng(check_number("seed", seed, low=0, integer=True))
    x = rng.uniform(-x_max, x_max, size=(n_points, 1))
    y = np.sin(x) + np.sin(4 * x) + noise * rng.standard_normal((n_points, 1))
    dt = resolve_dtype(dtype)
    return Dataset(torch.tensor(x, dtype=dt), torch.tensor(y, dtype=dt),
                   {"name": "sin", "n_points": n_points, "x_max": x_max, "noise": noise})


def teacher_regression(n_points: int = 500, dim: int = 50, teacher_width: int = 20,
                       noise: float = 0.0, seed: int = 0, dtype="float64") -> Dataset:
    """Targets from a random one-hidden-layer tanh teacher on Gaussian inputs x ~ N(0, I_dim).

    y = a · tanh(W x) / sqrt(teacher_width) + noise; inputs (N, dim), targets (N, 1).
    """
    check_number("n_points", n_points, low=1, integer=True)
    check_number("dim", dim, low=1, integer=True)
    check_number("teacher_width", teacher_width, low=1, integer=True)
    check_number("noise", noise, low=0)
    rng = np.random.default_rng(check_number("seed", seed, low=0, integer=True))
    x = rng.standard_normal((n_points, dim))
    w = rng.standard_normal((dim, teacher_width)) / math.sqrt(dim)
    a = rng.standard_normal((teacher_width, 1))
    y = np.tanh(x @ w) @ a / math.sqrt(teacher_width) + noise * rng.standard_normal((n_points, 1))
    dt = resolve_dtype(dtype)
    return Dataset(torch.tensor(x, dtype=dt), torch.tensor(y, dtype=dt),
                   {"name": "teacher", "n_points": n_points, "dim": dim,
                    "teacher_width": teacher_width, "noise": noise})


def quadratic_target(n_points: int = 200, dim: int = 50, noise: float = 0.1, seed: int = 0,
                     dtype="float64") -> Dataset:
    """The paper's 50-dimensional task (v1, Appendix E, its Figure 5): y = w*ᵀx + xᵀdiag(v*)x
    plus Gaussian noise of std ``noise``, at N inputs x ~ N(0, I_dim).

    The paper does not say how w* and v* are drawn; here both are standard normal, N(0, I),
    which starts the loss near 10², where the paper's Figure 5(a) starts (with N(0, I/dim) it
    starts near 3). inputs (N, dim), targets (N, 1).
    """
    check_number("n_points", n_points, low=1, integer=True)
    check_number("dim", dim, low=1, integer=True)
    check_number("noise", noise, low=0)
    rng = np.random.default_rng(check_number("seed", seed, low=0, integer=True))
    w = rng.standard_normal(dim)
    v = rng.standard_normal(dim)
    x = rng.standard_normal((n_points, dim))
    y = (x @ w + (x ** 2) @ v + noise * rng.standard_normal(n_points))[:, None]
    dt = resolve_dtype(dtype)
    return Dataset(torch.tensor(x, dtype=dt), torch.tensor(y, dtype=dt),
                   {"name": "quadratic_target", "n_points": n_points, "dim": dim,
                    "noise": noise})


def digits(n_images: int = 128, seed: int = 0, image_size: int = 8, channels: int = 1,
           dtype="float64") -> Dataset:
    """scikit-learn's 8×8 digits: ``n_images`` drawn without replacement under ``seed``.

    inputs (N, channels, image_size, image_size) scaled to [0, 1]: the 8×8 images, resized
    bilinearly when ``image_size`` is not 8 and repeated over ``channels``; targets (N, 10)
    one-hot. ``image_size=32, channels=3`` gives CIFAR-10's shape, the book's stand-in for the
    paper's 50 CIFAR-10 images (chapter 3), which cannot be downloaded here.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    check_number("n_images", n_images, low=1, high=len(bunch.target), integer=True)
    check_number("image_size", image_size, low=8, high=256, integer=True)
    check_number("channels", channels, low=1, high=4, integer=True)
    rng = np.random.default_rng(check_number("seed", seed, low=0, integer=True))
    idx = np.sort(rng.choice(len(bunch.target), size=n_images, replace=False))
    dt = resolve_dtype(dtype)
    x = torch.tensor(bunch.images[idx] / 16.0, dtype=torch.float64).unsqueeze(1)
    if image_size != 8:
        x = torch.nn.functional.interpolate(x, size=image_size, mode="bilinear",
                                            align_corners=False)
    x = x.repeat(1, channels, 1, 1).to(dt)
    y = torch.nn.functional.one_hot(torch.tensor(bunch.target[idx]), 10).to(dt)
    return Dataset(x, y, {"name": "digits", "n_images": n_images, "image_size": image_size,
                          "channels": channels})


def modular_addition(modulus: int = 11, dtype="float64") -> Dataset:
    """All modulus² sequences (a, b, =) with target the one-hot of (a + b) mod modulus.

    Token ids: 0..modulus-1 for numbers, ``modulus`` for '='. inputs (N, 3) long;
    targets (N, modulus) one-hot. Deterministic (no sampling).
    """
    check_number("modulus", modulus, low=2, integer=True)
    a, b = torch.meshgrid(torch.arange(modulus), torch.arange(modulus), indexing="ij")
    a, b = a.reshape(-1), b.reshape(-1)
    x = torch.stack([a, b, torch.full_like(a, modulus)], dim=1)
    y = torch.nn.functional.one_hot((a + b) % modulus, modulus).to(resolve_dtype(dtype))
    return Dataset(x, y, {"name": "modular_addition", "modulus": modulus,
                          "vocab_size": modulus + 1, "seq_len": 3})


DATASETS = {"sin": sin_regression, "teacher": teacher_regression,
            "quadratic_target": quadratic_target, "digits": digits,
            "modular_addition": modular_addition, "anchor": anchor_function}


def load_dataset(name: str, seed: int = 0, **kwargs) -> Dataset:
    """Build data set ``name`` (one of :data:`DATASETS`) with its keyword arguments.

    ``seed`` goes to the generators that sample; the modular-addition set has no randomness.
    """
    make = DATASETS[check_choice("data", name, DATASETS)]
    if "seed" in inspect.signature(make).parameters:
        kwargs["seed"] = seed
    return make(**kwargs)
