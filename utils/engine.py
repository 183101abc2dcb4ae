"""The fast tracking engine: every curvature quantity of a step from a few batched HVP rounds.

Per tracked step, with H = ∇²L(θ_t), g = ∇L(θ_t), Adam's D_t (``d``) and c_t (``c``):

* λ_grad(H), form (A) and form (B) of λ_grad(Ĥ) need H g and H (D g): two products, exact.
* λ_max(Ĥ) is the top eigenvalue of S = c D^{1/2} H D^{1/2}. It is found by LOBPCG iterations
  (block size one) warm-started from the previous step's eigenvector x and the direction p in
  which it last moved, with D^{1/2} g (whose image S D^{1/2} g the λ_grad(B) product already
  gives) as a free extra search direction. The first round applies H to all of these at once;
  when the Ritz pair's relative residual ‖S u − θ u‖ / |θ| is not yet below ``tol``, each
  further round costs one product (the residual's image), and images of every other basis
  vector follow by linearity.
* λ_max(H) (optional) is tracked the same way with D = I, c = 1, in the same rounds.

All products of one round go through one batched backward pass
(:meth:`~utils.hvp.LossHessian.matmat`), so a round costs about one HVP in time on small
models. Every vector carries a leading seed axis: shape (K, n) for K independent models
whose Hessian is block diagonal (:mod:`utils.seeds`); K = 1 for a single model. The small
Rayleigh–Ritz problems are solved per seed in float64.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .curvature import curvatures_along_gradient
from .validation import check_number

BIG = 1e300


@dataclass
class EigenTrack:
    """Warm-start state of one tracked top eigenpair: ``x`` (K, n), ``p`` (K, n) or None."""

    x: torch.Tensor | None = None
    p: torch.Tensor | None = None


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


def _dot(a, b):
    return (a * b).sum(-1)


def _unit(a):
    norm = a.norm(dim=-1, keepdim=True)
    return torch.where(norm > 0, a / norm.clamp_min(1e-300), a)


def _normalised(basis, images):
    """Scale each basis vector (K, b, n) to unit norm, and its image with it."""
    norm = basis.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    return basis / norm, images / norm


def rayleigh_ritz(basis: torch.Tensor, images: torch.Tensor):
    """Top Ritz pair of a symmetric S on span(basis), per seed.

    basis, images: (K, b, n) with images = S basis. Returns θ (K,), u (K, n) unit, S u (K, n).
    Directions that are (numerically) dependent on the others are dropped.
    """
    b64, s64 = basis.to(torch.float64), images.to(torch.float64)
    gram = b64 @ b64.transpose(1, 2)
    proj = b64 @ s64.transpose(1, 2)
    proj = (proj + proj.transpose(1, 2)) / 2
    evals, evecs = torch.linalg.eigh(gram)
    keep = evals > 1e-10 * evals[:, -1:].clamp_min(1e-300)
    w = evecs / evals.clamp_min(1e-300).sqrt().unsqueeze(1) * keep.unsqueeze(1)
    small = w.transpose(1, 2) @ proj @ w
    small = small - torch.diag_embed((~keep).to(small.dtype) * BIG)
    theta, z = torch.linalg.eigh(small)
    y = (w @ z[:, :, -1:]).squeeze(-1).to(basis.dtype)  # (K, b)
    u = torch.einsum("kb,kbn->kn", y, basis)
    su = torch.einsum("kb,kbn->kn", y, images)
    norm = u.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    return theta[:, -1].to(basis.dtype), u / norm, su / norm


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
        self.tracks = {"pre": EigenTrack(), "H": EigenTrack()}

    def _start(self, track: EigenTrack, shape, like):
        if track.x is None or track.x.shape != shape or not bool(torch.isfinite(track.x).all()):
            gen = torch.Generator().manual_seed(self.seed)
            track.x = _unit(torch.randn(shape, generator=gen, dtype=torch.float64).to(like))
            track.p = None

    def step(self, apply_h, gradient: torch.Tensor, d: torch.Tensor | None,
             c: torch.Tensor | float = 1.0) -> StepCurvature:
        """Measure one step.

        apply_h: V (m, K, n) -> H V (m, K, n), one batched pass. gradient: g, (K, n).
        d: the diagonal of D, (K, n) (None: D = I). c: c_t, a float or (K,).
        """
        g = gradient
        K, n = g.shape
        d = torch.ones_like(g) if d is None else d.to(g)
        c = torch.as_tensor(c, dtype=g.dtype, device=g.device).reshape(-1, 1).expand(K, 1)
        sd = d.sqrt()
        ops = {"pre": (sd, c)}
        if self.track_raw:
            ops["H"] = (torch.ones_like(g), torch.ones_like(c))
        for key in ops:
            self._start(self.tracks[key], g.shape, g)

        # Round 1: H g, H (D g), and H applied to every track's warm basis.
        requests = [g, d * g]
        layout = {}
        for key, (s, _) in ops.items():
            t = self.tracks[key]
            vecs = [t.x] + ([t.p] if t.p is not None else [])
            layout[key] = (len(requests), len(vecs))
            requests += [s * v for v in vecs]
        out = apply_h(torch.stack(requests))
        hvps, rounds = len(requests) * K, 1
        hg, hdg = out[0], out[1]
        lam_grad = curvatures_along_gradient(g, d * g, hg, hdg, c[:, 0])

        state = {}
        for key, (s, ck) in ops.items():
            t = self.tracks[key]
            start, count = layout[key]
            basis = [t.x] + ([t.p] if t.p is not None else [])
            images = [ck * s * out[start + i] for i in range(count)]
            if key == "pre":  # D^{1/2} g and its image c D^{1/2} H D g come free
                basis.append(sd * g)
                images.append(ck * sd * hdg)
            else:             # g and H g, likewise
                basis.append(g)
                images.append(hg)
            basis, images = _normalised(torch.stack(basis, 1), torch.stack(images, 1))
            theta, u, su = rayleigh_ritz(basis, images)
            state[key] = [theta, u, su, None, None]  # θ, u, S u, previous u, previous S u

        for _ in range(self.max_rounds - 1):
            pending = {}
            for key, (theta, u, su, _, _) in state.items():
                r = su - theta[:, None] * u
                res = r.norm(dim=-1) / theta.abs().clamp_min(1e-300)
                if bool((res > self.tol).any()):
                    pending[key] = _unit(r)
            if not pending:
                break
            keys = list(pending)
            out = apply_h(torch.stack([ops[k][0] * pending[k] for k in keys]))
            hvps, rounds = hvps + len(keys) * K, rounds + 1
            for i, key in enumerate(keys):
                s, ck = ops[key]
                theta, u, su, u_prev, su_prev = state[key]
                w, sw = pending[key], ck * s * out[i]
                basis, images = [u, w], [su, sw]
                if u_prev is not None:
                    basis.append(u - u_prev)
                    images.append(su - su_prev)
                new = rayleigh_ritz(*_normalised(torch.stack(basis, 1), torch.stack(images, 1)))
                state[key] = [*new, u, su]

        results = {}
        for key, (theta, u, su, _, _) in state.items():
            t = self.tracks[key]
            res = (su - theta[:, None] * u).norm(dim=-1) / theta.abs().clamp_min(1e-300)
            finite = torch.isfinite(u).all(dim=-1, keepdim=True)
            t.p = torch.where(finite, u - t.x, torch.zeros_like(u)) if t.x is not None else None
            t.x = torch.where(finite, u, t.x)
            results[key] = (theta, res, u)

        theta, res, u = results["pre"]
        right = _unit(sd * u)
        gn = g.norm(dim=-1).clamp_min(1e-300)
        gs = sd * g
        return StepCurvature(
            lambda_max_pre=theta, residual_pre=res, vector_pre=u, right_vector_pre=right,
            **lam_grad,
            cos_grad_top=_dot(g, right).abs() / gn,
            cos_grad_top_sym=_dot(gs, u).abs() / gs.norm(dim=-1).clamp_min(1e-300),
            hvps=hvps, rounds=rounds, converged=res <= self.tol,
            lambda_max_H=results["H"][0] if "H" in results else None,
            residual_H=results["H"][1] if "H" in results else None)
