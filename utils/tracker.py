"""The per-step measurement engine.

At a tracked step t the training loop builds a :class:`~utils.hvp.LossHessian` at θ_t (whose
gradient it also uses for the update), lets the real ``torch.optim.Adam`` take its step, and
hands the operator, the new state (v_t, hence D_t and c_t) and v_{t-1} to
:meth:`CurvatureTracker.measure`. So every row pairs H(θ_t) and g_t with the preconditioner
D_t that Adam used for the update from θ_t. The tracker carries the top eigenvectors from one
tracked step to the next as warm starts; it knows nothing of notebooks or plotting.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .adam_state import AdamState, decoupling_statistics
from .curvature import (DENSE_BELOW, SOLVERS, EigenResult, PreconditionedHessian, alignment,
                        gradient_curvatures, top_eigenpair)
from .engine import StepCurvature, TrackingEngine, single_model
from .hvp import LossHessian
from .validation import check_choice, check_number

MEASUREMENTS = ("lambda_max_H", "lambda_max_pre", "lambda_grad", "alignment", "decoupling")
"""What the tracker can measure; ``alignment`` needs ``lambda_max_pre``."""
PRECONDITIONED = ("lambda_max_pre", "alignment", "decoupling")
TRACKER_SOLVERS = ("engine", *SOLVERS)
"""``"engine"``: :class:`~utils.engine.TrackingEngine` (batched, warm-started LOBPCG rounds, the
default); the others solve each quantity separately with :func:`~utils.curvature.top_eigenpair`."""
ENGINE_MIN_PARAMETERS = DENSE_BELOW
"""Below this many parameters (the 1-D quadratic) the dense eigendecomposition is cheaper."""


class CurvatureTracker:
    """Measures the curvature quantities at tracked steps, warm-starting each eigen-solve.

    Parameters
    ----------
    measure: a subset of :data:`MEASUREMENTS`.
    tol: relative tolerance of the eigen-solver. solver: one of :data:`TRACKER_SOLVERS`.
    seed: seeds the random start vector of the first (cold) solve.
    """

    def __init__(self, measure=MEASUREMENTS, *, tol: float = 1e-3, solver: str = "engine",
                 seed: int = 0):
        self.measure_set = tuple(check_choice("measure", m, MEASUREMENTS) for m in measure)
        if "alignment" in self.measure_set and "lambda_max_pre" not in self.measure_set:
            raise ValueError("measure: 'alignment' needs 'lambda_max_pre' as well")
        self.tol = check_number("eig_tol", tol, low=0, low_open=True, high=1, high_open=True)
        self.solver = check_choice("eig_solver", solver, TRACKER_SOLVERS)
        self.seed = seed
        self._warm: dict[str, tuple[torch.Tensor, float]] = {}
        self.engine = TrackingEngine(tol=tol, track_raw="lambda_max_H" in self.measure_set,
                                     seed=seed)

    def _solve(self, key: str, operator) -> EigenResult:
        v0, scale = self._warm.get(key, (None, None))
        solver = "dense" if self.solver == "engine" else self.solver  # engine: tiny n only
        result = top_eigenpair(operator, v0, tol=self.tol, solver=solver, seed=self.seed,
                               scale=scale)
        if math.isfinite(result.value) and bool(torch.isfinite(result.vector).all()):
            self._warm[key] = (result.vector, abs(result.value))
        return result

    def measure(self, hessian: LossHessian, state: AdamState | None,
                v_prev: torch.Tensor | None = None) -> dict[str, float]:
        """All requested quantities at one step, as a flat dict of floats.

        ``state`` is Adam's state after the update from θ_t (``None`` for plain GD, where
        D = I, c = 1 and the preconditioned quantities equal the raw ones); ``v_prev`` is
        v_{t-1} (``None`` at t = 1). Adds ``hvps``, the Hessian-vector products this step used.
        """
        start = hessian.n_hvps
        row: dict[str, float] = {}
        if not bool(torch.isfinite(hessian.gradient).all()):
            return {"hvps": 0}
        d = None if state is None else state.preconditioner
        c = 1.0 if state is None else state.c
        if self.solver == "engine" and hessian.n >= ENGINE_MIN_PARAMETERS:
            row.update(self._measure_with_engine(hessian, d, c))
        else:
            row.update(self._measure_separately(hessian, d, c))
        if "decoupling" in self.measure_set and state is not None and v_prev is not None:
            row.update(decoupling_statistics(hessian.gradient, v_prev, state.v))
        row["hvps"] = hessian.n_hvps - start
        return {k: (float(v) if not isinstance(v, (int, np.integer)) else int(v))
                for k, v in row.items()}

    def _measure_with_engine(self, hessian: LossHessian, d, c) -> dict:
        out = self.engine.step(single_model(hessian), hessian.gradient[None],
                               None if d is None else d[None], c)
        return {k: v.item() for k, v in engine_columns(out, self.measure_set).items()}

    def _measure_separately(self, hessian: LossHessian, d, c) -> dict:
        row = {}
        if "lambda_max_H" in self.measure_set:
            res = self._solve("H", PreconditionedHessian(hessian))
            row.update(lambda_max_H=res.value, eig_residual_H=res.residual)
        if "lambda_max_pre" in self.measure_set:
            op = PreconditionedHessian(hessian, d, c)
            res = self._solve("pre", op)
            row.update(lambda_max_pre=res.value, eig_residual_pre=res.residual,
                       eig_converged_pre=float(res.converged))
            if "alignment" in self.measure_set:
                row.update(alignment(hessian.gradient, res, op))
        if "lambda_grad" in self.measure_set:
            row.update(gradient_curvatures(hessian, d, c))
        return row


def engine_columns(out: StepCurvature, measure) -> dict[str, torch.Tensor]:
    """The requested quantities of one engine step, named as the metrics columns, each a
    tensor of shape (K,) (one value per seed)."""
    cols = {}
    if "lambda_max_H" in measure:
        cols.update(lambda_max_H=out.lambda_max_H, eig_residual_H=out.residual_H)
    if "lambda_max_pre" in measure:
        cols.update(lambda_max_pre=out.lambda_max_pre, eig_residual_pre=out.residual_pre,
                    eig_converged_pre=out.converged.to(out.lambda_max_pre.dtype))
    if "alignment" in measure:
        cols.update(cos_grad_top=out.cos_grad_top, cos_grad_top_sym=out.cos_grad_top_sym)
    if "lambda_grad" in measure:
        cols.update(lambda_grad_H=out.lambda_grad_H, lambda_grad_pre_a=out.lambda_grad_pre_a,
                    lambda_grad_pre=out.lambda_grad_pre)
    return cols
