"""The per-step measurement engine.

At a tracked step t the training loop builds a :class:`~utils.curvature.hvp.LossHessian` at θ_t
(whose gradient it also uses for the update), lets the real ``torch.optim.Adam`` take its step, and
hands the operator, the new state (v_t, hence D_t and c_t) and v_{t-1} to
:meth:`CurvatureTracker.measure`. So every row pairs H(θ_t) and g_t with the preconditioner
D_t that Adam used for the update from θ_t. The tracker carries the top eigenvectors from one
tracked step to the next as warm starts; it knows nothing of notebooks or plotting.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from utils.curvature.adam_state import AdamState, decoupling_statistics, v_hat_norms
from utils.curvature.preconditioned import (DENSE_BELOW, SOLVERS, EigenResult,
                                            PreconditionedHessian, alignment,
                                            curvature_along_update, gradient_curvatures,
                                            top_eigenpair)
from utils.curvature.engine import StepCurvature, TrackingEngine, single_model
from utils.curvature.hvp import LossHessian, unflatten
from utils.validation import check_choice, check_number

MEASUREMENTS = ("lambda_max_H", "lambda_max_pre", "lambda_grad", "lambda_grad_H", "alignment",
                "decoupling", "lambda_update", "v_norms")
"""What the tracker can measure; ``alignment`` needs ``lambda_max_pre``. ``lambda_grad`` is
λ_grad(Ĥ) in forms (A) and (B) (one product, H D g); ``lambda_grad_H``, the raw λ_grad(H), costs
one more product (H g) unless ``lambda_max_H`` is tracked too. ``lambda_update`` is the paper's
λ_update(Ĥ) = uᵀĤu/‖u‖² along Adam's update u = m̂/(√v̂ + ε) (one more product);
``v_norms``, ‖√v̂‖₂ over all coordinates and over each parameter tensor
(:func:`~utils.curvature.adam_state.v_hat_norms`). ``alignment`` also gives ``cos_top_consecutive``, the |cos| between consecutive
tracked top right-eigenvectors of Ĥ; ``lambda_max_H`` (with the engine) the same for H,
``cos_top_consecutive_H``, and ``cos_grad_top_H``, |cos(g, H's top eigenvector)|."""
CERTIFICATES = ("residual", "residual+cold start", "dense", "none")
"""How a tracked λ_max(Ĥ) is certified (the ``eig_certificate`` column): ``residual``, its
relative residual is within the tolerance (the warm block's top Ritz pair); ``residual+cold
start``, the same, at a step where a cold start from random vectors also ran and joined the
block; ``dense``, the dense eigendecomposition (tiny models); ``none``, not certified (the
solver stopped at its round cap): the value is reported, and counted, but not trusted."""
PRECONDITIONED = ("lambda_max_pre", "alignment", "decoupling", "lambda_update", "v_norms")
TRACKER_SOLVERS = ("engine", *SOLVERS)
"""``"engine"``: :class:`~utils.curvature.engine.TrackingEngine` (batched, warm-started LOBPCG
rounds, the default); the others solve each quantity separately with
:func:`~utils.curvature.preconditioned.top_eigenpair`."""
SPOT_CHECK_EVERY = 100
"""A run compares the tracked λ_max(Ĥ) with a cold solve at every this many tracked steps (the
first included) and at each spike's start (:meth:`CurvatureTracker.spot_checks`)."""
SPOT_CHECK_TOL = 1e-10
"""ARPACK's relative tolerance in a spot check: far below the engine's, so the check measures
the engine's error, not its own."""
SNAPSHOT_BYTES = 256 * 2 ** 20
"""Memory the tracker may spend on the (θ_t, D_t) snapshots that spot checks at spike starts
need; beyond it the oldest unscheduled snapshots are dropped (and those checks skipped)."""
ENGINE_MIN_PARAMETERS = DENSE_BELOW
"""Below this many parameters (the 1-D quadratic) the dense eigendecomposition is cheaper."""


def uncertified_steps(metrics) -> int:
    """Tracked steps of a run's ``metrics`` whose λ_max(Ĥ) the solver could not certify
    (``eig_certificate`` "none"); 0 where nothing was tracked."""
    if "eig_certificate" not in metrics:
        return 0
    return int((metrics["eig_certificate"] == "none").sum())


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
        self.tracked = 0
        self.snapshots: dict[int, tuple] = {}
        """step -> (θ_t flat, D_t, c_t, tracked λ_max(Ĥ), scheduled) for the spot checks;
        ``scheduled``: an every-:data:`SPOT_CHECK_EVERY`-th tracked step, never dropped."""
        self.engine = TrackingEngine(tol=tol, track_raw="lambda_max_H" in self.measure_set,
                                     raw_gradient="lambda_grad_H" in self.measure_set, seed=seed)

    def _solve(self, key: str, operator) -> EigenResult:
        v0, scale = self._warm.get(key, (None, None))
        solver = "dense" if self.solver == "engine" else self.solver  # engine: tiny n only
        result = top_eigenpair(operator, v0, tol=self.tol, solver=solver, seed=self.seed,
                               scale=scale)
        if math.isfinite(result.value) and bool(torch.isfinite(result.vector).all()):
            self._warm[key] = (result.vector, abs(result.value))
        return result

    def measure(self, hessian: LossHessian, state: AdamState | None,
                v_prev: torch.Tensor | None = None, step: int | None = None) -> dict[str, float]:
        """All requested quantities at one step, as a flat dict of floats (and the string
        ``eig_certificate``).

        ``state`` is Adam's state after the update from θ_t (``None`` for plain GD, where
        D = I, c = 1 and the preconditioned quantities equal the raw ones); ``v_prev`` is
        v_{t-1} (``None`` at t = 1); ``step`` is t, under which the step's snapshot is kept for
        :meth:`spot_checks`. Adds ``hvps``, the Hessian-vector products this step used.
        """
        start = hessian.n_hvps
        row: dict[str, float] = {}
        if not bool(torch.isfinite(hessian.gradient).all()):
            return {"hvps": 0}
        d = None if state is None else state.preconditioner
        c = 1.0 if state is None else state.c
        update = (state.m_hat * d if "lambda_update" in self.measure_set and state is not None
                  else None)
        if self.solver == "engine" and hessian.n >= ENGINE_MIN_PARAMETERS:
            row.update(self._measure_with_engine(hessian, d, c, update))
        else:
            row.update(self._measure_separately(hessian, d, c, update))
        if "decoupling" in self.measure_set and state is not None and v_prev is not None:
            row.update(decoupling_statistics(hessian.gradient, v_prev, state.v))
        if "v_norms" in self.measure_set and state is not None:
            row.update(v_hat_norms(state.v_hat, {k: p.numel() for k, p in hessian.theta.items()}))
        row["hvps"] = hessian.n_hvps - start
        if step is not None and math.isfinite(row.get("lambda_max_pre", math.nan)):
            self._snapshot(step, hessian, d, c, row["lambda_max_pre"])
        return {k: (v if isinstance(v, str) else int(v) if isinstance(v, (int, np.integer))
                    else float(v)) for k, v in row.items()}

    def _snapshot(self, step, hessian, d, c, value):
        self._layout = (list(hessian.theta), [p.shape for p in hessian.theta.values()])
        scheduled = self.tracked % SPOT_CHECK_EVERY == 0
        self.tracked += 1
        theta = torch.cat([p.detach().reshape(-1) for p in hessian.theta.values()])
        self.snapshots[step] = (theta, None if d is None else d.clone(), float(c), value, scheduled)
        size = 2 * theta.numel() * theta.element_size()
        while len(self.snapshots) * size > SNAPSHOT_BYTES:
            oldest = next((k for k, snap in self.snapshots.items() if not snap[4]), None)
            if oldest is None:
                break
            del self.snapshots[oldest]

    def spot_check_steps(self, spike_starts=()) -> list[int]:
        """The steps to spot-check: every :data:`SPOT_CHECK_EVERY`-th tracked step and, for each
        step in ``spike_starts``, the last tracked step at or before it."""
        tracked = sorted(self.snapshots)
        chosen = {k for k in tracked if self.snapshots[k][4]}
        for start in spike_starts:
            before = [k for k in tracked if k <= start]
            if before:
                chosen.add(before[-1])
        return sorted(chosen)

    def spot_checks(self, loss_fn, steps) -> list[dict]:
        """Compare the tracked λ_max(Ĥ) at ``steps`` with a cold solve at the same θ_t, D_t:
        scipy's ``eigsh`` (ARPACK) from a random start at relative tolerance
        :data:`SPOT_CHECK_TOL` (dense below :data:`~utils.curvature.preconditioned.DENSE_BELOW`
        parameters). ``loss_fn`` maps a parameter dict to the loss, as in
        :class:`~utils.curvature.hvp.LossHessian`.
        Returns one dict per checked step: step, tracked, reference, rel_error, solver."""
        checks = []
        for step in steps:
            if step not in self.snapshots:
                continue
            theta, d, c, value, _ = self.snapshots[step]
            params = self._params_like(theta)
            op = PreconditionedHessian(LossHessian(loss_fn, params), d, c)
            ref = top_eigenpair(op, None, tol=SPOT_CHECK_TOL, solver="eigsh", seed=step,
                                max_iter=10_000)
            checks.append({"step": int(step), "tracked": value, "reference": ref.value,
                           "rel_error": abs(value - ref.value) / max(abs(ref.value), 1e-300),
                           "solver": ref.solver})
        return checks

    def _params_like(self, theta):
        names, shapes = self._layout
        return dict(zip(names, unflatten(theta, shapes)))

    def _measure_with_engine(self, hessian: LossHessian, d, c, update=None) -> dict:
        out = self.engine.step(single_model(hessian), hessian.gradient[None],
                               None if d is None else d[None], c,
                               update=None if update is None else update[None])
        return {k: v[0] for k, v in engine_columns(out, self.measure_set).items()}

    def _measure_separately(self, hessian: LossHessian, d, c, update=None) -> dict:
        row = {}
        if update is not None:
            hu = hessian.matmat(update[None])[0]
            row["lambda_update_pre"] = float(curvature_along_update(update, hu, d, c))
        if "lambda_max_H" in self.measure_set:
            res = self._solve("H", PreconditionedHessian(hessian))
            row.update(lambda_max_H=res.value, eig_residual_H=res.residual)
        if "lambda_max_pre" in self.measure_set:
            op = PreconditionedHessian(hessian, d, c)
            res = self._solve("pre", op)
            row.update(lambda_max_pre=res.value, eig_residual_pre=res.residual,
                       eig_converged_pre=float(res.converged),
                       eig_certificate=("dense" if res.solver == "dense" else
                                        "residual" if res.converged else "none"))
            if "alignment" in self.measure_set:
                row.update(alignment(hessian.gradient, res, op))
        if "lambda_grad" in self.measure_set or "lambda_grad_H" in self.measure_set:
            values = gradient_curvatures(hessian, d, c)
            if "lambda_grad" in self.measure_set:
                row.update(lambda_grad_pre_a=values["lambda_grad_pre_a"],
                           lambda_grad_pre=values["lambda_grad_pre"])
            if "lambda_grad_H" in self.measure_set:
                row["lambda_grad_H"] = values["lambda_grad_H"]
        return row


def engine_columns(out: StepCurvature, measure) -> dict[str, list]:
    """The requested quantities of one engine step, named as the metrics columns, each a list
    of K values (one per seed)."""
    cols = {}
    if "lambda_max_H" in measure:
        cols.update(lambda_max_H=out.lambda_max_H, eig_residual_H=out.residual_H)
        if out.cos_top_consecutive_H is not None:
            cols.update(cos_top_consecutive_H=out.cos_top_consecutive_H,
                        cos_grad_top_H=out.cos_grad_top_H)
    if "lambda_max_pre" in measure:
        cols.update(lambda_max_pre=out.lambda_max_pre, eig_residual_pre=out.residual_pre,
                    eig_converged_pre=out.converged.to(out.lambda_max_pre.dtype),
                    eig_second_pre=out.second_pre,
                    eig_corrected=out.corrected.to(out.lambda_max_pre.dtype))
    if "alignment" in measure:
        cols.update(cos_grad_top=out.cos_grad_top, cos_grad_top_sym=out.cos_grad_top_sym,
                    cos_top_consecutive=out.cos_top_consecutive)
    if "lambda_update" in measure and out.lambda_update_pre is not None:
        cols.update(lambda_update_pre=out.lambda_update_pre)
    if "lambda_grad" in measure:
        cols.update(lambda_grad_pre_a=out.lambda_grad_pre_a, lambda_grad_pre=out.lambda_grad_pre)
    if "lambda_grad_H" in measure:
        cols.update(lambda_grad_H=out.lambda_grad_H)
    cols = {k: [float(x) for x in v.detach().cpu()] for k, v in cols.items()}
    if "lambda_max_pre" in measure:
        cols["eig_certificate"] = [certificate(bool(ok), out.checked) for ok in out.converged]
    return cols


def certificate(converged: bool, checked: bool) -> str:
    """The ``eig_certificate`` of an engine step (see :data:`CERTIFICATES`)."""
    if not converged:
        return "none"
    return "residual+cold start" if checked else "residual"
