"""The fast tracking engine: every curvature quantity of a step from a few batched HVP rounds.

Per tracked step, with H = ∇²L(θ_t), g = ∇L(θ_t), Adam's D_t (``d``) and c_t (``c``):

* λ_grad(H), form (A) and form (B) of λ_grad(Ĥ) need H g and H (D g): two products, exact.
* λ_max(Ĥ) is the top eigenvalue of S = c D^{1/2} H D^{1/2}. It is found by LOBPCG iterations
  (block size one) warm-started from the previous step's eigenvector x, with D^{1/2} g as a
  free second search direction: its image S D^{1/2} g = c D^{1/2} H D g is the λ_grad(B)
  product. So the first round is three products, H g, H (D g) and H D^{1/2} x, in one batched
  pass. While the Ritz pair's relative residual ‖S u − θ u‖ / |θ| exceeds ``tol``, each
  further round costs one product (the residual's image) and searches the span of the Ritz
  vector, the residual and the previous Ritz vector; the images of all but the residual
  follow by linearity.
* λ_max(H) (optional) is tracked the same way with D = I, c = 1, in the same rounds.

Measured on chapter 1's MLP (``make bench``): a further warm direction in the first round (the
last move of x, as in LOBPCG) saved fewer second rounds than it cost, 4.2 products per step
against 3.4 without it.

All products of one round go through one batched backward pass
(:meth:`~utils.hvp.LossHessian.matmat`). Every vector carries a leading seed axis: shape (K, n)
for K independent models whose Hessian is block diagonal (:mod:`utils.seeds`); K = 1 for a
single model. The small Rayleigh–Ritz problems are solved per seed in NumPy float64.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .curvature import curvatures_along_gradient
from .validation import check_number

BIG = 1e300


@dataclass
class StepCurvature:
    """What one engine step measured, per seed (tensors of shape (K,) unless noted).

    lambda_max_pre: λ_max(Ĥ). residual_pre: its relative residual. vector_pre: the unit top
    eigenvector u of S (K, n). right_vector_pre: the unit right-eigenvector D^{1/2} u of Ĥ.
    lambda_max_H, residual_H: the same for H when tracked (else None). lambda_grad_H,
    lambda_grad_pre_a, lambda_grad_pre: the gradient-directional curvatures. cos_grad_top,
    cos_grad_top_sym: the alignment cosines. hvps: Hessian-vector products this step, summed
    over seeds (one product on the stacked model counts K). rounds: batched passes this step.
    converged: the relative residual of λ_max(Ĥ) is within ``tol``.
    """

    lambda_max_pre: torch.Tensor
    residual_pre: torch.Tensor
    vector_pre: torch.Tensor
    right_vector_pre: torch.Tensor
    lambda_grad_H: torch.Tensor
    lambda_grad_pre_a: torch.Tensor
    lambda_grad_pre: torch.Tensor
    cos_grad_top: torch.Tensor
    cos_grad_top_sym: torch.Tensor
    hvps: int
    rounds: int
    converged: torch.Tensor
    lambda_max_H: torch.Tensor | None = None
    residual_H: torch.Tensor | None = None


def single_model(hessian):
    """``apply_h`` for one model (K = 1) from a :class:`~utils.hvp.LossHessian`:
    V (m, 1, n) -> H V (m, 1, n) through :meth:`~utils.hvp.LossHessian.matmat`."""
    return lambda v: hessian.matmat(v[:, 0]).unsqueeze(1)


def _unit(a):
    norm = a.norm(dim=-1, keepdim=True)
    return torch.where(norm > 0, a / norm.clamp_min(1e-300), a)


def rayleigh_ritz(pairs: torch.Tensor):
    """Top Ritz pair of a symmetric S on the span of a few basis vectors, per seed.

    pairs: (K, b, 2n), each row a basis vector v (first n entries) followed by its image S v.
    Returns θ (K,), a NumPy float64 array, and the pair [u, S u] (K, 2n) of the top Ritz vector
    u, scaled to unit norm.
    Directions that are (numerically) dependent on the others are dropped; a seed whose rows
    are not finite gets NaN. The inner products are taken in float64, whatever the model's
    dtype; the b×b problems are solved in NumPy: for so few rows NumPy's per-call cost is below
    the dispatch cost of the dozen torch ops it replaces, and on a GPU one small transfer
    replaces as many tiny kernel launches.
    """
    K, b, two_n = pairs.shape
    rows = pairs.to(torch.float64).reshape(K, 2 * b, two_n // 2)  # v_0, S v_0, v_1, S v_1, ...
    m = (rows @ rows.transpose(1, 2)).cpu().numpy()  # (K, 2b, 2b)
    bad = ~np.isfinite(m).all(axis=(1, 2))
    if bad.any():
        m[bad] = np.eye(2 * b)
    gram, proj = m[:, 0::2, 0::2], m[:, 0::2, 1::2]
    scale = 1 / np.sqrt(np.maximum(np.diagonal(gram, axis1=1, axis2=2), 1e-300))  # (K, b)
    outer = scale[:, :, None] * scale[:, None, :]
    evals, evecs = np.linalg.eigh(gram * outer)
    keep = evals > 1e-10 * np.maximum(evals[:, -1:], 1e-300)
    w = evecs * (keep / np.sqrt(np.maximum(evals, 1e-300)))[:, None, :]
    small = w.transpose(0, 2, 1) @ ((proj + proj.transpose(0, 2, 1)) * (outer / 2)) @ w
    if not keep.all():
        small[:, np.arange(b), np.arange(b)] -= (~keep) * BIG
    theta, z = np.linalg.eigh(small)
    y = (w @ z[:, :, -1:])[:, :, 0] * scale  # coefficients on the rows as given
    y /= np.sqrt(np.maximum(np.einsum("ki,kij,kj->k", y, gram, y), 1e-300))[:, None]  # ‖u‖ = 1
    theta = theta[:, -1]
    theta[bad], y[bad] = np.nan, np.nan
    return theta, (torch.from_numpy(y).to(pairs).unsqueeze(1) @ pairs).squeeze(1)


class TrackingEngine:
    """Warm-started curvature tracking over a training run (see the module docstring).

    Parameters
    ----------
    tol: relative residual at which an eigenpair is accepted (default 1e-3).
    max_rounds: cap on the LOBPCG rounds of one step (the first, cold step needs the most).
    track_raw: also track λ_max(H).
    seed: seeds the random start vector of the first step.
    """

    def __init__(self, *, tol: float = 1e-3, max_rounds: int = 200, track_raw: bool = False,
                 seed: int = 0):
        self.tol = check_number("tol", tol, low=0, low_open=True, high=1, high_open=True)
        self.max_rounds = check_number("max_rounds", max_rounds, low=1, integer=True)
        self.track_raw = track_raw
        self.seed = seed
        self.vectors: dict[str, torch.Tensor] = {}
        """The last top eigenvector of each track ("pre": S, "H": H), (K, n): the warm start."""

    def _start(self, key: str, like: torch.Tensor) -> torch.Tensor:
        x = self.vectors.get(key)
        if x is None or x.shape != like.shape:
            gen = torch.Generator().manual_seed(self.seed)
            x = _unit(torch.randn(like.shape, generator=gen, dtype=torch.float64).to(like))
        return x

    def step(self, apply_h, gradient: torch.Tensor, d: torch.Tensor | None,
             c: torch.Tensor | float = 1.0) -> StepCurvature:
        """Measure one step.

        apply_h: V (m, K, n) -> H V (m, K, n), one batched pass. gradient: g, (K, n).
        d: the diagonal of D, (K, n) (None: D = I). c: c_t > 0, a float or (K,).
        The scalar results are float64 CPU tensors of shape (K,); the vectors are like g.
        """
        g = gradient
        K, n = g.shape
        c = np.broadcast_to(torch.as_tensor(c, dtype=torch.float64).cpu().numpy().reshape(-1), (K,))
        sd = None if d is None else d.to(g).sqrt()
        dg = g if d is None else d.to(g) * g
        gs = g if sd is None else sd * g
        # Each track iterates on T = s H s (s = D^{1/2} for Ĥ, s = 1 for H); S = c T for Ĥ has
        # the same eigenvectors and c times the eigenvalues, applied at the end.
        scales = {"pre": sd}
        if self.track_raw:
            scales["H"] = None
        starts = {key: self._start(key, g) for key in scales}

        # Round 1, one batched pass: H g, H (D g) (the same product when D = I), and H s x for
        # every track's warm start x.
        head = [g] if d is None else [g, dg]
        requests = head + [x if scales[k] is None else scales[k] * x for k, x in starts.items()]
        out = apply_h(torch.stack(requests))
        hvps, rounds = len(requests) * K, 1
        hdg_at = len(head) - 1  # index of H (D g) in out
        lam_grad = curvatures_along_gradient(g, dg, out[0], out[hdg_at], c)

        def image(s, products):
            """T v from H (s v): products (m, K, n) -> (K, m, n)."""
            products = products.transpose(0, 1)
            return products if s is None else s.unsqueeze(1) * products

        def residual(theta, pair):
            """r = T u − θ u (K, n), ‖r‖ (K,) and ‖r‖ / |θ| (NumPy, K)."""
            r = pair[:, n:] - torch.from_numpy(theta).to(pair).unsqueeze(1) * pair[:, :n]
            norm = r.norm(dim=-1)
            return r, norm, norm.cpu().numpy() / np.maximum(np.abs(theta), 1e-300)

        state = {}  # per track: θ, [u, T u], the previous [u, T u], r, ‖r‖, relative residual
        for i, (key, s) in enumerate(scales.items()):
            # the free direction: s g for Ĥ (T s g = s H D g), g for H (H g)
            basis = torch.stack([starts[key], gs if key == "pre" else g], 1)
            images = image(s, out[[len(head) + i, hdg_at if key == "pre" else 0]])
            theta, pair = rayleigh_ritz(torch.cat([basis, images], -1))
            state[key] = [theta, pair, None, *residual(theta, pair)]

        for _ in range(self.max_rounds - 1):
            pending = [k for k, st in state.items() if (st[5] > self.tol).any()]
            if not pending:
                break
            directions = {k: state[k][3] / state[k][4].clamp_min(1e-300).unsqueeze(1)
                          for k in pending}
            out = apply_h(torch.stack([w if scales[k] is None else scales[k] * w
                                       for k, w in directions.items()]))
            hvps, rounds = hvps + len(pending) * K, rounds + 1
            for i, key in enumerate(pending):
                theta, pair, previous = state[key][:3]
                w = torch.cat([directions[key], image(scales[key], out[i:i + 1])[:, 0]], -1)
                rows = [pair, w] + ([pair - previous] if previous is not None else [])
                theta, new = rayleigh_ritz(torch.stack(rows, 1))
                state[key] = [theta, new, pair, *residual(theta, new)]

        for key, (theta, pair, *_rest) in state.items():
            finite = np.isfinite(theta)
            u = pair[:, :n]
            if not finite.all():  # a seed whose pair is not finite keeps its previous vector
                u = torch.where(torch.from_numpy(finite).to(u.device).unsqueeze(1), u, starts[key])
            self.vectors[key] = u

        theta, pair, *_, res = state["pre"]
        u = pair[:, :n]
        right = u if sd is None else sd * u
        gs_u = (gs * u).sum(-1).abs()
        norms = torch.stack([right.norm(dim=-1), gs_u, g.norm(dim=-1), gs.norm(dim=-1)])
        right_norm, gs_u, g_norm, gs_norm = norms.to(torch.float64).cpu().numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            cos_top, cos_sym = gs_u / right_norm / g_norm, gs_u / gs_norm

        def tensor(a):
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))

        raw = state.get("H")
        return StepCurvature(
            lambda_max_pre=tensor(c * theta), residual_pre=tensor(res), vector_pre=u,
            right_vector_pre=right / torch.from_numpy(np.maximum(right_norm, 1e-300)).to(right)[:, None],
            **{k: tensor(v) for k, v in lam_grad.items()},
            cos_grad_top=tensor(cos_top), cos_grad_top_sym=tensor(cos_sym),
            hvps=hvps, rounds=rounds, converged=tensor(res) <= self.tol,
            lambda_max_H=None if raw is None else tensor(raw[0]),
            residual_H=None if raw is None else tensor(raw[5]))
