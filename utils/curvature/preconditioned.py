"""Curvature of the loss as Adam sees it.

* :class:`PreconditionedHessian` — Ĥ = c D H in its symmetric form S = c D^{1/2} H D^{1/2}
  (same eigenvalues; the top right-eigenvector of Ĥ is D^{1/2} u for the top eigenvector u of S).
* :func:`top_eigenpair` — the largest (algebraic) eigenpair of a symmetric operator from a
  well-kept solver (scipy's LOBPCG or ARPACK), with warm start, tolerance, HVP count and residual.
* :func:`gradient_curvatures` — λ_grad of H and of Ĥ in the forms (A) and (B).
* :func:`alignment` — |cos| between the gradient and the top eigendirection of Ĥ.

Conventions: every vector is a flat tensor of shape (n,) in parameter order; eigenvalues are in
the units of the loss per squared parameter unit; the stability threshold on Ĥ is 2/η.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh, lobpcg

from utils.curvature.hvp import LossHessian
from utils.validation import check_choice, check_number

SOLVERS = ("lobpcg", "eigsh", "dense")
DENSE_BELOW = 6
"""Operators with fewer rows than this are always solved densely (n products are fewer than
an iterative solver needs)."""


class PreconditionedHessian:
    """S = c D^{1/2} H D^{1/2}, the symmetric form of Ĥ = c D H.

    ``preconditioner`` is the diagonal D as a flat tensor of shape (n,) (``None`` means D = I,
    plain GD); ``c`` is the scalar c_t. With D = None and c = 1 this is H itself.
    """

    def __init__(self, hessian: LossHessian, preconditioner: torch.Tensor | None = None,
                 c: float = 1.0):
        self.hessian = hessian
        self.n = hessian.n
        self.c = float(c)
        if preconditioner is None:
            self.sqrt_d = None
        else:
            if preconditioner.shape != (self.n,):
                raise ValueError(f"preconditioner must have shape ({self.n},), "
                                 f"got {tuple(preconditioner.shape)}")
            self.sqrt_d = preconditioner.to(hessian.dtype).sqrt()

    @property
    def n_hvps(self) -> int:
        return self.hessian.n_hvps

    def matvec(self, vector: torch.Tensor) -> torch.Tensor:
        """S v, shape (n,) -> (n,), on the Hessian's device and in its dtype whatever v's.
        One Hessian-vector product."""
        vector = vector.to(dtype=self.hessian.dtype, device=self.hessian.device)
        if self.sqrt_d is None:
            return self.c * self.hessian.matvec(vector)
        return self.c * self.sqrt_d * self.hessian.matvec(self.sqrt_d * vector)

    def right_eigenvector(self, u: torch.Tensor) -> torch.Tensor:
        """Map an eigenvector u of S to the unit right-eigenvector D^{1/2} u of Ĥ = c D H
        (on u's device and in its dtype)."""
        r = u if self.sqrt_d is None else self.sqrt_d.to(u) * u
        return r / r.norm()


@dataclass
class EigenResult:
    """The top eigenpair of a symmetric operator A.

    value: λ_max(A). vector: unit eigenvector u, shape (n,). right_vector: for a
    :class:`PreconditionedHessian`, the unit top right-eigenvector D^{1/2} u of Ĥ = c D H
    (for other operators, u itself). n_hvps: products with A used, the residual check
    included. residual: ‖A u - λ u‖ / |λ|. converged: the solver reached its tolerance.
    solver: which solver ran.
    """

    value: float
    vector: torch.Tensor
    right_vector: torch.Tensor
    n_hvps: int
    residual: float
    converged: bool
    solver: str


def top_eigenpair(operator, v0: torch.Tensor | None = None, *, tol: float = 1e-3,
                  solver: str = "lobpcg", max_iter: int = 500, seed: int = 0,
                  scale: float | None = None) -> EigenResult:
    """Largest algebraic eigenpair of a symmetric operator with ``.matvec`` and ``.n``.

    Parameters
    ----------
    operator: a :class:`PreconditionedHessian` or :class:`~utils.curvature.hvp.LossHessian`
        (anything with ``n``, ``n_hvps`` and ``matvec``).
    v0: warm start, shape (n,); a random vector (seeded by ``seed``) when ``None``.
    tol: relative tolerance. LOBPCG stops when ‖A u - λ u‖ ≤ tol · scale; ARPACK's own
        relative criterion is used for ``"eigsh"``.
    solver: ``"lobpcg"`` (scipy, warm-startable), ``"eigsh"`` (scipy ARPACK, Lanczos) or
        ``"dense"`` (n products, then ``torch.linalg.eigh``, the residual from the same
        matrix; tiny problems only).
    scale: the eigenvalue magnitude that turns ``tol`` into LOBPCG's absolute residual bound;
        by default |vᵀAv| at the start vector (one extra product).
    """
    check_number("tol", tol, low=0, low_open=True, high=1, high_open=True)
    check_choice("solver", solver, SOLVERS)
    check_number("max_iter", max_iter, low=1, integer=True)
    n = operator.n
    start = operator.n_hvps
    if v0 is None:
        gen = torch.Generator().manual_seed(seed)
        v0 = torch.randn(n, generator=gen, dtype=torch.float64)
    elif v0.shape != (n,):
        raise ValueError(f"v0 must have shape ({n},), got {tuple(v0.shape)}")
    v0 = v0.detach().to(torch.float64).cpu()
    v0 = v0 / v0.norm()

    matrix = None
    if solver == "dense" or n < DENSE_BELOW:
        (value, vector, matrix), converged, solver = _dense(operator), True, "dense"
    elif solver == "eigsh":
        value, vector, converged = _eigsh(operator, v0, tol, max_iter)
    else:
        if scale is None:
            scale = abs(float(v0 @ _apply(operator, v0)))
        value, vector, converged = _lobpcg(operator, v0, tol * max(scale, 1e-300), max_iter)

    vector = vector / vector.norm()
    av = matrix @ vector if matrix is not None else _apply(operator, vector)
    value = float(vector @ av)  # Rayleigh quotient: exact for the returned vector
    residual = float((av - value * vector).norm()) / max(abs(value), 1e-300)
    right = (operator.right_eigenvector(vector).to(torch.float64).cpu()
             if hasattr(operator, "right_eigenvector") else vector)
    return EigenResult(value=value, vector=vector, right_vector=right,
                       n_hvps=operator.n_hvps - start,
                       residual=residual, converged=bool(converged), solver=solver)


def _apply(operator, x: torch.Tensor) -> torch.Tensor:
    """A x in float64 on the CPU, whatever the operator's own dtype and device."""
    return operator.matvec(x).detach().to(torch.float64).cpu()


def linear_operator(operator) -> LinearOperator:
    """``operator`` (anything with ``n`` and ``matvec``) as a scipy ``LinearOperator`` on float64
    NumPy vectors, for scipy's solvers."""
    def mv(x):
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64).reshape(-1))
        return _apply(operator, x).numpy()

    def mm(xs):
        return np.stack([mv(x) for x in np.asarray(xs).T], axis=1)

    return LinearOperator((operator.n, operator.n), matvec=mv, matmat=mm, dtype=np.float64)


def _dense(operator):
    """Top eigenpair of the dense matrix of ``operator`` (n products), and the matrix itself
    (symmetrised), from which the residual then needs no further product."""
    eye = torch.eye(operator.n, dtype=torch.float64)
    a = torch.stack([_apply(operator, eye[i]) for i in range(operator.n)], dim=1)
    a = (a + a.T) / 2
    vals, vecs = torch.linalg.eigh(a)
    return vals[-1].item(), vecs[:, -1].clone(), a


def _eigsh(operator, v0, tol, max_iter):
    try:
        vals, vecs = eigsh(linear_operator(operator), k=1, which="LA", v0=v0.numpy(), tol=tol,
                           maxiter=max_iter)
        return float(vals[0]), torch.from_numpy(vecs[:, 0].copy()), True
    except ArpackNoConvergence as err:
        if len(err.eigenvalues):
            return float(err.eigenvalues[0]), torch.from_numpy(err.eigenvectors[:, 0].copy()), False
        return float("nan"), v0.clone(), False


def _lobpcg(operator, v0, abs_tol, max_iter):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vals, vecs = lobpcg(linear_operator(operator), v0.numpy().reshape(-1, 1), tol=abs_tol,
                            maxiter=max_iter, largest=True)
    converged = not any("not reaching the requested tolerance" in str(w.message) for w in caught)
    return float(vals[0]), torch.from_numpy(np.asarray(vecs)[:, 0].copy()), converged


def gradient_curvatures(hessian: LossHessian, preconditioner: torch.Tensor | None = None,
                        c: float = 1.0, raw: bool = True) -> dict[str, float]:
    """Curvature along the gradient g = ∇L of ``hessian``; two Hessian-vector products (one,
    H (D g), with ``raw=False``, which leaves ``lambda_grad_H`` out).

    Returns
    -------
    ``lambda_grad_H``: gᵀ H g / ‖g‖² (raw).
    ``lambda_grad_pre_a``: form (A), c · gᵀ D H g / ‖g‖².
    ``lambda_grad_pre``: form (B), c · (D g)ᵀ H (D g) / (gᵀ D g), the Rayleigh quotient of
    S = c D^{1/2} H D^{1/2} along D^{1/2} g.
    NaN where g = 0. With D = None, D = I.
    """
    g = hessian.gradient
    d = torch.ones_like(g) if preconditioner is None else preconditioner.to(g.dtype)
    dg = d * g
    values = curvatures_along_gradient(g, dg, hessian.matvec(g) if raw else None,
                                       hessian.matvec(dg), c)
    return {k: float(v) for k, v in values.items() if raw or k != "lambda_grad_H"}


def curvatures_along_gradient(g, dg, hg, hdg, c) -> dict[str, np.ndarray]:
    """λ_grad(H) and forms (A), (B) of λ_grad(Ĥ) from g, D g and the products H g, H (D g).

    Forms (A) and (B) need only H (D g): by the symmetry of H, gᵀ D H g = gᵀ H (D g).
    ``hg`` may be None; λ_grad(H) is then NaN.
    Vectors have shape (..., n) (a leading seed axis is allowed); ``c`` is a float or an array
    of the leading shape. Each result is a float64 NumPy array of the leading shape; NaN where
    g = 0 or is not finite. The inner products come from one batched matrix product.
    """
    rows = torch.stack([g, dg, hdg] + ([] if hg is None else [hg]), -2)
    inner = (rows[..., :2, :] @ rows.transpose(-1, -2)).to(torch.float64).cpu().numpy()
    gg, gdg = inner[..., 0, 0], inner[..., 0, 1]
    ghdg, dghdg = inner[..., 0, 2], inner[..., 1, 2]
    ghg = inner[..., 0, 3] if hg is not None else np.full_like(gg, np.nan)
    ok = (gg > 0) & np.isfinite(gg)
    c = np.asarray(c, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {"lambda_grad_H": np.where(ok, ghg / gg, np.nan),
                "lambda_grad_pre_a": np.where(ok, c * ghdg / gg, np.nan),
                "lambda_grad_pre": np.where(ok, c * dghdg / gdg, np.nan)}


def curvature_along_update(u, hu, d, c) -> np.ndarray:
    """λ_update(Ĥ) = uᵀĤu/‖u‖² = c uᵀ D H u/‖u‖², the paper's curvature along Adam's update
    u = m̂/(√v̂ + ε) (v1, §5.1), from u and the product H u.

    Vectors have shape (..., n); ``d`` is D's diagonal (None: D = I); ``c`` a float or an array
    of the leading shape. A float64 NumPy array of the leading shape; NaN where u = 0 or is not
    finite."""
    du = u if d is None else d.to(u) * u
    uu = (u * u).sum(-1).to(torch.float64).cpu().numpy()
    uhu = (du * hu).sum(-1).to(torch.float64).cpu().numpy()
    c = np.asarray(c, dtype=np.float64)
    ok = (uu > 0) & np.isfinite(uu)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ok, c * uhu / uu, np.nan)


def alignment(gradient: torch.Tensor, top: EigenResult,
              operator: PreconditionedHessian) -> dict[str, float]:
    """How far the gradient g points along the top eigendirection of Ĥ.

    ``cos_grad_top``: |cos(g, D^{1/2} u)|, the angle in parameter space between g and the
    top right-eigenvector of Ĥ = c D H. ``cos_grad_top_sym``: |cos(D^{1/2} g, u)|, the same
    in the coordinates where Ĥ is symmetric (form (B) of λ_grad tends to λ_max(Ĥ) as it → 1).
    """
    g = gradient.detach().to(torch.float64).cpu()
    u = top.vector
    gn = g.norm()
    if gn == 0 or not torch.isfinite(gn):
        return {"cos_grad_top": float("nan"), "cos_grad_top_sym": float("nan")}
    r = top.right_vector
    sd = (torch.ones_like(g) if operator.sqrt_d is None
          else operator.sqrt_d.to(torch.float64).cpu())
    gs = sd * g
    return {"cos_grad_top": abs(float(g @ r)) / float(gn),
            "cos_grad_top_sym": abs(float(gs @ u)) / float(gs.norm())}
