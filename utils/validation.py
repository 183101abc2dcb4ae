"""Parameter checks shared by every public entry point.

Each check raises a ``ValueError`` that names the parameter, the value it got and the allowed
range, so that bad input is reported before any training starts.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def check_number(name: str, value, *, low=None, high=None, low_open=False, high_open=False,
                 integer=False):
    """Check that ``value`` is a finite (integer) number in the interval [low, high].

    ``low_open``/``high_open`` exclude the end points. Returns the value (as int if ``integer``).
    """
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            integer and not float(value).is_integer()):
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    lo_ok = low is None or (value > low if low_open else value >= low)
    hi_ok = high is None or (value < high if high_open else value <= high)
    if not (lo_ok and hi_ok):
        lo = "(-inf" if low is None else ("(" if low_open else "[") + f"{low}"
        hi = "inf)" if high is None else f"{high}" + (")" if high_open else "]")
        raise ValueError(f"{name} must be in {lo}, {hi}, got {value!r}")
    return int(value) if integer else value


def check_choice(name: str, value, choices: Iterable):
    """Check that ``value`` is one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def resolve_dtype(dtype) -> torch.dtype:
    """Turn ``"float32"``/``"float64"`` (or the torch dtype itself) into a torch dtype."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    return DTYPES[check_choice("dtype", dtype, DTYPES)]


def check_adam_hyperparameters(lr, beta1, beta2, eps):
    """Validate Adam's η > 0, β1, β2 in [0, 1) and ε ≥ 0."""
    check_number("lr", lr, low=0, low_open=True)
    check_number("beta1", beta1, low=0, high=1, high_open=True)
    check_number("beta2", beta2, low=0, high=1, high_open=True)
    check_number("eps", eps, low=0)
