"""How many torch threads a run takes: its own ``threads``, capped by the environment.

``make test`` runs two notebooks at a time (pytest-xdist) on a 2-core machine. A chapter whose
default run asks for 2 threads would then put four threads on two cores, and OpenMP's spinning
threads slow both runs far more than the second thread ever gains. The test tier therefore sets
``ADAM_SPIKES_MAX_THREADS=1``: every run takes ``min(threads, 1)``. A thread count changes only
the rounding (a chaotic trajectory moves, as under the "another machine" switch
``ADAM_SPIKES_PERTURB``), never what a page asserts. Unset, a run takes exactly what it asks.
"""
from __future__ import annotations

import os

import torch

MAX_THREADS_ENV = "ADAM_SPIKES_MAX_THREADS"
"""The environment variable that caps the torch threads of every run (unset: no cap)."""


def max_threads() -> int | None:
    """The cap ``ADAM_SPIKES_MAX_THREADS`` sets: None when it is unset or empty; ValueError
    naming the variable and the allowed range for anything but an integer ≥ 1."""
    raw = os.environ.get(MAX_THREADS_ENV, "").strip()
    if not raw:
        return None
    try:
        cap = int(raw)
    except ValueError:
        cap = 0
    if cap < 1:
        raise ValueError(f"{MAX_THREADS_ENV} must be an integer >= 1 (or unset), got {raw!r}")
    return cap


def set_threads(threads: int) -> int:
    """Set torch's intra-op threads to ``threads``, or to the cap of :func:`max_threads` if that
    is smaller, and return the number set."""
    cap = max_threads()
    n = int(threads) if cap is None else min(int(threads), cap)
    torch.set_num_threads(n)
    return n
