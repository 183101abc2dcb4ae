"""The warning signals that need the optimizer's state or the model, recorded during a run.

    result = run(config, signals=SignalRecorder())   # adds the columns below, every step

:func:`utils.training.runs.run` calls :meth:`SignalRecorder.before_update` with the step's
gradient g_t (before ``optimizer.step()``) and :meth:`SignalRecorder.after_update` once the real
``torch.optim.Adam`` has stepped. Every column of step t uses only what is known before the
update of step t is applied (θ_t, g_t, Adam's state, the update Adam is about to take):

``spam_ratio``
    max over coordinates of g_t² / v_{t−1} (SPAM's rule fires above θ = 5000;
    :func:`utils.events.detectors.spam_spike`). NaN at t = 1, where v_0 = 0.
``stableadamw_rms``
    max over parameter tensors of RMS(g_t² / max(v̂_t, ε²)), with v̂_t the bias-corrected second
    moment including g_t, as ``optimi.StableAdamW`` computes it with its debiased β2
    (:func:`utils.events.detectors.stableadamw_rms`; the alarm is a value above 1).
``secant``
    c_{t−1} (g_t − g_{t−1})ᵀΔθ / (Δθᵀ D_{t−1}⁻¹ Δθ), Δθ = θ_t − θ_{t−1}: the curvature of the
    preconditioned Hessian along the last update, from two gradients and no Hessian-vector
    product (:func:`utils.events.detectors.secant_curvature`). NaN at t = 1.
``critical_step``
    the smallest step along Adam's update u_t = (θ_{t+1} − θ_t)/η at which the loss of the
    update's batch rises, in units of η (critical sharpness, :func:`utils.events.detectors.
    critical_step`; inf if none rose within the search). One forward pass at s = η is the
    loss at the proposed θ_{t+1}: this signal looks one step ahead, as a line search does.
``critical_forwards``
    forward passes that search used (its cost).

The recorder also keeps its own wall time per signal (:attr:`SignalRecorder.seconds`).
"""
from __future__ import annotations

import math
import time
from collections import defaultdict

import torch

from utils.curvature.adam_state import read_adam_state
from utils.events.detectors import critical_step, secant_curvature, stableadamw_rms
from utils.curvature.hvp import flatten, unflatten
from utils.validation import check_number

COLUMNS = ("spam_ratio", "stableadamw_rms", "secant", "critical_step", "critical_forwards")
"""The per-step columns a :class:`SignalRecorder` adds to a run's metrics."""


class SignalRecorder:
    """Per-step warning signals of a run (module docstring). ``critical_evals``: forward passes
    the critical-step line search may use per step (0 switches it off)."""

    def __init__(self, critical_evals: int = 6):
        check_number("critical_evals", critical_evals, low=0, integer=True)
        if critical_evals == 1:
            raise ValueError("critical_evals must be 0 (off) or at least 2, got 1")
        self.critical_evals = critical_evals
        self.seconds: dict[str, float] = defaultdict(float)
        """Wall time spent on each signal, summed over the run (seconds)."""
        self._prev = None      # (g_t, θ_t) flat, from before_update: the secant's previous
        self._precond = None   # point at the next step, and the update's origin; (D, c)

    def before_update(self, step: int, params: dict, grads, opt) -> dict:
        """SPAM's ratio and the secant, from g_t (``grads``, one tensor per parameter) and the
        optimizer's state before this step's update."""
        if not isinstance(opt, torch.optim.Adam):
            raise ValueError(f"optimizer: the signal recorder reads torch.optim.Adam's state, "
                             f"got {type(opt).__name__}")
        row = {}
        tick = time.perf_counter()
        ratios = []
        for p, g in zip(params.values(), grads):
            state = opt.state.get(p, {})
            if g is not None and "exp_avg_sq" in state:
                v = state["exp_avg_sq"]
                g2 = g.detach().pow(2)
                ratio = torch.where(v > 0, g2 / v.clamp_min(torch.finfo(v.dtype).tiny),
                                    torch.where(g2 > 0, math.inf, 0.0))
                ratios.append(float(ratio.max()))
        row["spam_ratio"] = max(ratios) if ratios else math.nan
        tock = time.perf_counter()
        self.seconds["spam"] += tock - tick
        g = flatten([torch.zeros_like(p) if gg is None else gg.detach()
                     for p, gg in zip(params.values(), grads)])
        theta = flatten([p.detach() for p in params.values()])
        row["secant"] = math.nan
        if self._prev is not None and self._precond is not None:
            g_prev, theta_prev = self._prev
            d, c = self._precond
            row["secant"] = secant_curvature(g - g_prev, theta - theta_prev, d, c)
        self._prev = (g, theta)
        self.seconds["secant"] += time.perf_counter() - tock
        return row

    def after_update(self, step: int, params: dict, opt, loss_fn) -> dict:
        """StableAdamW's term with v̂_t, and the critical step along the update just taken
        (``loss_fn``: the loss of the update's batch as a function of a parameter dict)."""
        tick = time.perf_counter()
        state = read_adam_state(opt)
        self._precond = (state.preconditioner, state.c)
        grads = [p.grad for p in params.values()]
        v_hat = [opt.state[p]["exp_avg_sq"] / state.bias_correction2 for p in params.values()]
        row = {"stableadamw_rms": stableadamw_rms(
            [g for g in grads if g is not None],
            [v for v, g in zip(v_hat, grads) if g is not None], state.eps)}
        tock = time.perf_counter()
        self.seconds["stableadamw"] += tock - tick
        if self.critical_evals:
            theta = self._prev[1]
            direction = (flatten([p.detach() for p in params.values()]) - theta) / state.lr
            names, shapes = list(params), [p.shape for p in params.values()]

            def loss_along(s: float) -> float:
                with torch.no_grad():
                    return float(loss_fn(dict(zip(names, unflatten(theta + s * direction,
                                                                   shapes)))))

            s, evals = critical_step(loss_along, state.lr, max_evals=self.critical_evals)
            row.update(critical_step=s / state.lr, critical_forwards=evals + 1)
            self.seconds["critical_step"] += time.perf_counter() - tock
        return row


def attention_blocks(params: dict) -> dict:
    """The parameter blocks whose ‖v̂‖ the paper's Figure 7 follows, for a Transformer of
    :mod:`utils.training.models`: ``"embedding"`` (the token embedding) and ``"wv_<i>"``, the
    value projection W_V of layer i (the last third of the rows of ``blocks.<i>.attn.qkv``).
    Returns name -> (parameter name, row slice)."""
    blocks = {"embedding": ("tok.weight", slice(None))} if "tok.weight" in params else {}
    for name, p in params.items():
        if name.startswith("blocks.") and name.endswith(".attn.qkv.weight"):
            d = p.shape[0] // 3
            blocks[f"wv_{name.split('.')[1]}"] = (name, slice(2 * d, 3 * d))
    if not blocks:
        raise ValueError("params: no token embedding and no attention block found; "
                         "attention_blocks reads the book's Transformers")
    return blocks


class MomentNorms:
    """‖v̂_t‖ (Euclidean norm of Adam's bias-corrected second moment, after the update of step
    t) of chosen parameter blocks, every step, as columns ``v_norm_<block>``. ``blocks``: name
    -> (parameter name, row slice), by default :func:`attention_blocks` of the run's model. The
    same ``before_update`` / ``after_update`` calls as :class:`SignalRecorder`."""

    def __init__(self, blocks: dict | None = None):
        self.blocks = blocks

    def before_update(self, step: int, params: dict, grads, opt) -> dict:
        if self.blocks is None:
            self.blocks = attention_blocks(params)
        missing = sorted({p for p, _ in self.blocks.values()} - set(params))
        if missing:
            raise ValueError(f"blocks: no parameter named {missing[0]!r} in the model")
        return {}

    def after_update(self, step: int, params: dict, opt, loss_fn) -> dict:
        beta2 = opt.param_groups[0]["betas"][1]
        row = {}
        for block, (name, rows) in self.blocks.items():
            state = opt.state[params[name]]
            correction = 1.0 - beta2 ** float(state["step"])
            row[f"v_norm_{block}"] = float(state["exp_avg_sq"][rows].norm()) / correction
        return row
