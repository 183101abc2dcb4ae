"""The fast tracking engine: every curvature quantity of a step from a few batched HVP rounds.

Per tracked step, with H = ∇²L(θ_t), g = ∇L(θ_t), Adam's D_t (``d``) and c_t (``c``):

* Forms (A) and (B) of λ_grad(Ĥ) both follow from the one product H (D g), by the symmetry of
  H: gᵀ D H g = gᵀ H (D g). The raw λ_grad(H) needs H g as well; it is computed only when
  asked for (``raw_gradient``) or when λ_max(H) is tracked, whose free direction it is.
* λ_max(Ĥ) is the top eigenvalue of S = c D^{1/2} H D^{1/2}. The engine carries a *block* of
  the top ``block`` Ritz vectors X of S from one tracked step to the next. The first round
  takes S X (``block`` products) in the same batched pass as H (D g), and solves the
  Rayleigh–Ritz problem on the span of X and D^{1/2} g (whose image S D^{1/2} g = c D^{1/2} H D g
  is the λ_grad product: a free direction). While the top Ritz pair's relative residual
  ‖S u − θ u‖ / |θ| exceeds ``tol``, each further round costs one product (the residual's
  image) and solves on the span of the block's Ritz vectors, the residual and the top Ritz
  vector's last move (LOBPCG); the images of all but the residual follow by linearity.
* Why a block: with one vector, a residual below ``tol`` certifies *an* eigenpair, not the top
  one. When the top two eigenvalues swap, a single warm vector keeps following the old branch
  (its residual stays small) unless the gradient happens to point along the new top. The
  second Ritz vector of the block follows the runner-up, so a swap of the top two is caught by
  the Rayleigh–Ritz step itself; on clustered spectra the block also spans the rotation of the
  top eigenvector within the cluster, which a single vector has to chase with extra rounds.
* The guard against an eigenvalue rising from further down (which no warm block can see): every
  ``check_every`` tracked steps a *cold* track of the same kind starts from fresh random vectors
  in the same rounds and runs to the same tolerance; its top pair then joins the block's
  Rayleigh–Ritz problem. A seed where the cold start found a larger eigenvalue (by more than
  ``tol``) is reported as ``corrected``.
* λ_max(H) (optional) is tracked the same way with D = I, c = 1, in the same rounds.

A step's λ_max(Ĥ) is *certified* when its relative residual is within ``tol`` (then an
eigenvalue of S lies within ``tol`` of it); a step that hits ``max_rounds`` first is reported
as not certified (``converged`` False), never silently accepted.

*Certifying the side of 2/η instead* (``threshold`` given to :meth:`TrackingEngine.step`): the
book's claims ask whether λ_max(Ĥ) is above 2/η, so a step may stop as soon as two bounds
settle the side and are close enough for the digits the book quotes (:func:`top_bounds`): the
top Ritz value from below (a Rayleigh quotient never exceeds λ_max), and from above the
Kato–Temple bound θ_1 + r_1²/δ, with the gap δ = θ_1 − (θ_2 + r_2) to the upper end of the
second Ritz pair's residual interval, or θ_1 + r_1 where there is no such gap. A step is
settled when the lower bound is above the threshold ("above") or the upper bound below it
("below"), and decided when, in addition, the relative width of the bounds is within
``zone_tol[0]`` where λ_max is within ``zone`` of the threshold and within ``zone_tol[1]``
elsewhere. A step the bounds cannot settle is refined to ``tol`` as without a threshold
("unsettled"). The upper bound, like the residual certificate, assumes the block holds the top
eigenvalue (an eigenvalue rising from further down is the cold starts' to catch).

All products of one round go through one batched backward pass
(:meth:`~utils.curvature.hvp.LossHessian.matmat`). Every vector carries a leading seed axis: shape
(K, n) for K independent models whose Hessian is block diagonal (:mod:`utils.training.seeds`); K =
1 for a
single model. The small Rayleigh–Ritz problems are solved per seed in NumPy float64.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from utils.curvature.preconditioned import curvature_along_update, curvatures_along_gradient
from utils.validation import check_number

BIG = 1e300


@dataclass
class StepCurvature:
    """What one engine step measured, per seed (tensors of shape (K,) unless noted).

    lambda_max_pre: λ_max(Ĥ). residual_pre: its relative residual. vector_pre: the unit top
    eigenvector u of S (K, n). right_vector_pre: the unit right-eigenvector D^{1/2} u of Ĥ.
    second_pre: the block's second Ritz value of Ĥ (a lower bound on the second eigenvalue;
    NaN with ``block`` = 1). lambda_max_H, residual_H: the same for H when tracked (else None).
    lambda_grad_H (NaN unless H g was computed), lambda_grad_pre_a, lambda_grad_pre: the
    gradient-directional curvatures. cos_grad_top, cos_grad_top_sym: the alignment cosines.
    lambda_update_pre: λ_update(Ĥ) = uᵀĤu/‖u‖² along Adam's update u (NaN unless ``update``
    was given). cos_top_consecutive: |cos| between this step's top right-eigenvector of Ĥ and
    the previous step's (NaN at the first step). cos_top_consecutive_H, cos_grad_top_H: the
    same drift for H's top eigenvector, and |cos(g, H's top eigenvector)| (when H is tracked).
    lower_pre, upper_pre, side_pre (with a ``threshold`` only): the bounds on λ_max(Ĥ) of
    :func:`top_bounds` and, per seed, the side of the threshold they certify: "above", "below
    (Temple)", "below (residual)" or "unsettled".
    hvps: Hessian-vector products this step, summed over seeds (one product on the stacked
    model counts K). rounds: batched passes this step. converged: λ_max(Ĥ)'s relative residual
    is within ``tol``, or, with a ``threshold``, its side is decided (the step is certified). checked: a cold start ran this step. corrected:
    the cold start found a larger eigenvalue than the warm block.
    """

    lambda_max_pre: torch.Tensor
    residual_pre: torch.Tensor
    vector_pre: torch.Tensor
    right_vector_pre: torch.Tensor
    second_pre: torch.Tensor
    lambda_grad_H: torch.Tensor
    lambda_grad_pre_a: torch.Tensor
    lambda_grad_pre: torch.Tensor
    cos_grad_top: torch.Tensor
    cos_grad_top_sym: torch.Tensor
    hvps: int
    rounds: int
    converged: torch.Tensor
    checked: bool
    corrected: torch.Tensor
    lambda_max_H: torch.Tensor | None = None
    residual_H: torch.Tensor | None = None
    converged_H: torch.Tensor | None = None
    lambda_update_pre: torch.Tensor | None = None
    cos_top_consecutive: torch.Tensor | None = None
    cos_top_consecutive_H: torch.Tensor | None = None
    cos_grad_top_H: torch.Tensor | None = None
    lower_pre: torch.Tensor | None = None
    upper_pre: torch.Tensor | None = None
    side_pre: list[str] | None = None


def single_model(hessian):
    """``apply_h`` for one model (K = 1) from a :class:`~utils.curvature.hvp.LossHessian`:
    V (m, 1, n) -> H V (m, 1, n) through :meth:`~utils.curvature.hvp.LossHessian.matmat`."""
    return lambda v: hessian.matmat(v[:, 0]).unsqueeze(1)


def _unit(a):
    norm = a.norm(dim=-1, keepdim=True)
    return torch.where(norm > 0, a / norm.clamp_min(1e-300), a)


def rayleigh_ritz(pairs: torch.Tensor, top: int = 1):
    """The top Ritz pairs of a symmetric S on the span of a few basis vectors, per seed.

    pairs: (K, b, 2n), each row a basis vector v (first n entries) followed by its image S v.
    top: how many Ritz pairs to return (≤ b).
    Returns θ (K, top), a NumPy float64 array in descending order, and the pairs [u, S u]
    (K, top, 2n) of the Ritz vectors u, each of unit norm.
    Directions that are (numerically) dependent on the others are dropped; where fewer than
    ``top`` remain, the missing pairs are zero with θ = -inf. A seed whose rows are not finite
    gets NaN. The inner products are taken in float64, whatever the model's dtype; the b×b
    problems are solved in NumPy: for so few rows NumPy's per-call cost is below the dispatch
    cost of the dozen torch ops it replaces, and on a GPU one small transfer replaces as many
    tiny kernel launches.
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
    theta, z = theta[:, ::-1][:, :top].copy(), z[:, :, ::-1][:, :, :top]
    y = (w @ z) * scale[:, :, None]  # (K, b, top): coefficients on the rows as given
    norms = np.sqrt(np.maximum(np.einsum("kit,kij,kjt->kt", y, gram, y), 0))
    y = np.where(norms[:, None, :] > 0, y / np.maximum(norms, 1e-300)[:, None, :], 0)  # ‖u‖ = 1
    theta[theta < -BIG / 2] = -np.inf
    theta[bad], y[bad] = np.nan, np.nan
    return theta, torch.from_numpy(y).to(pairs).transpose(1, 2) @ pairs


def top_bounds(theta: np.ndarray, r_norm: np.ndarray):
    """Bounds on the top eigenvalue of a symmetric T from its block's Ritz pairs, per seed.

    theta: the Ritz values (K, b), descending; r_norm: their residual norms ‖T u − θ u‖ (K, b).
    Returns (lower, upper, temple), each (K,): lower = θ_1; upper = θ_1 + r_1²/δ (Kato–Temple,
    ``temple`` True) where the gap δ = θ_1 − (θ_2 + r_2) is positive, else θ_1 + r_1. Both
    upper bounds hold when the top Ritz pair approximates the top eigenvalue (and, for Temple,
    the second pair the second): the assumption of every warm-started solve.
    """
    lower, r1 = theta[:, 0], r_norm[:, 0]
    gap = (theta[:, 0] - theta[:, 1] - r_norm[:, 1]) if theta.shape[1] > 1 \
        else np.full(len(lower), np.nan)
    temple = np.isfinite(gap) & (gap > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        upper = lower + np.where(temple, np.minimum(r1, r1 ** 2 / np.where(temple, gap, 1)), r1)
    return lower, upper, temple


def side_of(theta, r_norm, rel, threshold, *, tol, zone, zone_tol, certify_side=True):
    """Where the top eigenvalue of T lies against ``threshold`` (K,), from :func:`top_bounds`.

    Returns (done, side, lower, upper): done (K,) bool, the step may stop: the side is settled
    (unless ``certify_side`` is False) and the bounds' relative width is within ``zone_tol[0]``
    where θ_1 is within ``zone`` (relative) of the threshold, else ``zone_tol[1]``; or the top's
    relative residual ``rel`` (K,) is within ``tol`` (refined as without a threshold). side: a
    list of "above", "below (Temple)", "below (residual)" or "unsettled"."""
    lower, upper, temple = top_bounds(theta, r_norm)
    with np.errstate(divide="ignore", invalid="ignore"):
        width = (upper - lower) / np.abs(lower)
        near = np.abs(lower - threshold) <= zone * np.abs(threshold)
    above, below = lower > threshold, upper < threshold
    settled = (above | below) if certify_side else np.ones(len(lower), dtype=bool)
    done = (settled & (width <= np.where(near, zone_tol[0], zone_tol[1]))) | (rel <= tol)
    side = ["above" if a else ("below (Temple)" if t else "below (residual)") if b
            else "unsettled" for a, b, t in zip(above, below, temple)]
    return done, side, lower, upper


class _Track:
    """One eigen-track's state within a step: the Ritz values θ (K, b), the pairs [u, T u]
    (K, b, 2n), the top pair's previous value, and every pair's residual, relative to |θ_1|."""

    def __init__(self, scale, block, n, block_tol):
        self.scale, self.block, self.n, self.block_tol = scale, block, n, block_tol
        self.theta = self.pairs = self.previous = None

    def image(self, products):
        """T v from H (s v): products (m, K, n) -> (K, m, n)."""
        products = products.transpose(0, 1)
        return products if self.scale is None else self.scale.unsqueeze(1) * products

    def solve(self, rows):
        self.previous = None if self.pairs is None else self.pairs[:, 0]
        self.theta, self.pairs = rayleigh_ritz(rows, self.block)
        n, theta = self.n, torch.from_numpy(np.nan_to_num(self.theta, neginf=0.0))
        self.r = self.pairs[:, :, n:] - theta.to(self.pairs).unsqueeze(-1) * self.pairs[:, :, :n]
        self.r_norm = self.r.norm(dim=-1)
        self.rel = self.r_norm.cpu().numpy() / np.maximum(np.abs(self.theta[:, :1]), 1e-300)

    def pending(self, tol, top_done=None) -> list[int]:
        """The block vectors that need another round: the top while its relative residual
        exceeds ``tol`` (or, given ``top_done`` (K,), while it is not done), the others while
        theirs exceeds the track's ``block_tol`` (any seed)."""
        finite = np.isfinite(self.theta[:, 0])
        limits = np.array([tol] + [self.block_tol] * (self.block - 1))
        open_ = ~(self.rel <= limits) & finite[:, None]
        if top_done is not None:
            open_[:, 0] = ~top_done & finite
        return [j for j in range(self.block) if open_[:, j].any()]

    def r_norms(self) -> np.ndarray:
        return self.r_norm.to(torch.float64).cpu().numpy()

    def directions(self, which):
        """The unit residuals of the Ritz pairs ``which``: (K, len(which), n)."""
        return (self.r[:, which] / self.r_norm[:, which].clamp_min(1e-300).unsqueeze(-1))

    def refine(self, w, image_w):
        """One LOBPCG round: Rayleigh–Ritz on the block, the new directions [w, T w] (K, m, n)
        each, and the top's last move."""
        rows = [self.pairs, torch.cat([w, image_w], -1)]
        if self.previous is not None:
            rows.append((self.pairs[:, 0] - self.previous).unsqueeze(1))
        self.solve(torch.cat(rows, 1))


class TrackingEngine:
    """Warm-started curvature tracking over a training run (see the module docstring).

    Parameters
    ----------
    tol: relative residual at which an eigenpair is accepted (default 1e-3).
    max_rounds: cap on the rounds of one step; a step that reaches it is not certified.
    block: Ritz vectors carried per track (1 is plain warm-started LOBPCG).
    block_tol: relative residual (to |θ_1|) to which the block's other vectors are refined: they
        need only follow their eigenvectors closely enough to take over the top when it swaps.
    check_every: a cold start from random vectors every this many steps (the first step is
        always cold; 0: never again).
    track_raw: also track λ_max(H) (and compute λ_grad(H), whose product H g it needs).
    raw_gradient: compute λ_grad(H) (one more product per step unless ``track_raw``).
    seed: seeds the random start vectors.
    zone, zone_tol: with a ``threshold`` (:meth:`step`), the bounds' relative width required
        within ``zone`` of it (``zone_tol[0]``) and elsewhere (``zone_tol[1]``).
    certify_side: with a ``threshold``, stop only once the bounds settle its side (False: at
        the zone's width alone, the benchmark's ablation; never the book's setting).
    """

    def __init__(self, *, tol: float = 1e-3, max_rounds: int = 100, block: int = 2,
                 block_tol: float = 0.1, check_every: int = 100, track_raw: bool = False,
                 raw_gradient: bool = False, seed: int = 0, zone: float = 0.1,
                 zone_tol: tuple[float, float] = (1e-3, 1e-2), certify_side: bool = True):
        self.tol = check_number("tol", tol, low=0, low_open=True, high=1, high_open=True)
        self.block_tol = check_number("block_tol", block_tol, low=0, low_open=True, high=1,
                                      high_open=True)
        self.max_rounds = check_number("max_rounds", max_rounds, low=1, integer=True)
        self.block = check_number("block", block, low=1, high=8, integer=True)
        self.check_every = check_number("check_every", check_every, low=0, integer=True)
        self.track_raw = track_raw
        self.raw_gradient = raw_gradient or track_raw
        self.seed = seed
        self.zone = check_number("zone", zone, low=0, high=1, high_open=True)
        self.zone_tol = tuple(check_number("zone_tol", t, low=0, low_open=True, high=1,
                                           high_open=True) for t in zone_tol)
        self.certify_side = certify_side
        self.steps = 0
        self.vectors: dict[str, torch.Tensor] = {}
        """The block of each track ("pre": S, "H": H), (K, block, n): the next warm start."""
        self.right: torch.Tensor | None = None
        """The last step's unit top right-eigenvectors of Ĥ, (K, n)."""
        self.raw_top: torch.Tensor | None = None
        """The last step's unit top eigenvectors of H, (K, n), when H is tracked."""

    def _random(self, shape, like):
        gen = torch.Generator().manual_seed(self.seed + 7919 * self.steps)
        return _unit(torch.randn(shape, generator=gen, dtype=torch.float64).to(like))

    def _start(self, key: str, like: torch.Tensor) -> torch.Tensor:
        """The warm block of ``key`` (K, b, n); random rows where there is none (or a zero row)."""
        shape = (*like.shape[:1], self.block, like.shape[1])
        x = self.vectors.get(key)
        if x is None or x.shape != shape:
            return self._random(shape, like)
        usable = (x.norm(dim=-1, keepdim=True) > 0) & torch.isfinite(x).all(-1, keepdim=True)
        return x if bool(usable.all()) else torch.where(usable, x, self._random(shape, like))

    def step(self, apply_h, gradient: torch.Tensor, d: torch.Tensor | None,
             c: torch.Tensor | float = 1.0, update: torch.Tensor | None = None,
             threshold: torch.Tensor | float | None = None) -> StepCurvature:
        """Measure one step.

        apply_h: V (m, K, n) -> H V (m, K, n), one batched pass. gradient: g, (K, n).
        d: the diagonal of D, (K, n) (None: D = I). c: c_t > 0, a float or (K,).
        update: Adam's update direction u = m̂/(√v̂ + ε), (K, n), for λ_update(Ĥ) (one more
        product, in the first pass), or None. threshold: 2/η_t for λ_max(Ĥ), a float or (K,):
        stop once its side is certified (module docstring); None: refine to ``tol``.
        The scalar results are float64 CPU tensors of shape (K,); the vectors are like g.
        """
        g = gradient
        K, n = g.shape
        c = np.broadcast_to(torch.as_tensor(c, dtype=torch.float64).cpu().numpy().reshape(-1), (K,))
        sd = None if d is None else d.to(g).sqrt()
        dg = g if d is None else d.to(g) * g
        gs = g if sd is None else sd * g
        checked = self.steps > 0 and self.check_every > 0 and self.steps % self.check_every == 0
        # Each track iterates on T = s H s (s = D^{1/2} for Ĥ, s = 1 for H); S = c T for Ĥ has
        # the same eigenvectors and c times the eigenvalues, applied at the end.
        # A cold block (the first step's, a check's) is refined to ``tol`` throughout, so that
        # its second vector starts on the runner-up, not on whatever lower pair it met first.
        tracks = {key: _Track(scale, self.block, n,
                              self.block_tol if key in self.vectors else self.tol)
                  for key, scale in [("pre", sd)] + ([("H", None)] if self.track_raw else [])}
        if checked:
            for key in list(tracks):
                tracks[key + ":cold"] = _Track(tracks[key].scale, self.block, n, self.tol)
        starts = {k: (self._random((K, self.block, n), g) if k.endswith(":cold")
                      else self._start(k, g)) for k in tracks}

        # Round 1, one batched pass: H (D g), H g where needed (the same product when D = I),
        # and H s x for every vector x of every track's block.
        head = [g] if d is None else [g, dg] if self.raw_gradient else [dg]
        hdg_at, hg_at = len(head) - 1, (0 if d is None or self.raw_gradient else None)
        hu_at = None
        if update is not None:
            head, hu_at = head + [update.to(g)], len(head)
        blocks = [x if tracks[k].scale is None else tracks[k].scale.unsqueeze(1) * x
                  for k, x in starts.items()]  # each (K, b, n)
        out = apply_h(torch.cat([torch.stack(head)] + [x.transpose(0, 1) for x in blocks]))
        hvps, rounds = out.shape[0] * K, 1
        lam_grad = curvatures_along_gradient(g, dg, None if hg_at is None else out[hg_at],
                                             out[hdg_at], c)
        lam_update = (None if hu_at is None else
                      curvature_along_update(update.to(g), out[hu_at], d, c))

        at = len(head)
        for key, track in tracks.items():
            x = starts[key]
            rows = [torch.cat([x, track.image(out[at:at + self.block])], -1)]
            at += self.block
            if not key.endswith(":cold"):  # the free direction: s g (T s g = s H D g) or g (H g)
                free_image = track.image(out[hdg_at:hdg_at + 1] if track.scale is not None
                                         else out[hg_at:hg_at + 1])
                rows.append(torch.cat([(gs if track.scale is not None else g).unsqueeze(1),
                                       free_image], -1))
            track.solve(torch.cat(rows, 1))

        # the threshold on T = S / c, per seed
        limit = (None if threshold is None else np.broadcast_to(
            torch.as_tensor(threshold, dtype=torch.float64).cpu().numpy().reshape(-1), (K,)) / c)

        def decided(track):
            return side_of(track.theta, track.r_norms(), track.rel[:, 0], limit, tol=self.tol,
                           zone=self.zone, zone_tol=self.zone_tol,
                           certify_side=self.certify_side)

        for _ in range(self.max_rounds - 1):
            pending = {k: which for k, t in tracks.items() if (which := t.pending(
                self.tol, decided(t)[0] if limit is not None and k == "pre" else None))}
            if not pending:
                break
            directions = {k: tracks[k].directions(which) for k, which in pending.items()}
            requests = [w if tracks[k].scale is None else tracks[k].scale.unsqueeze(1) * w
                        for k, w in directions.items()]
            out = apply_h(torch.cat([w.transpose(0, 1) for w in requests]))
            hvps, rounds = hvps + out.shape[0] * K, rounds + 1
            at = 0
            for key, w in directions.items():
                m = w.shape[1]
                tracks[key].refine(w, tracks[key].image(out[at:at + m]))
                at += m

        previous_right = self.right
        corrected = np.zeros(K, dtype=bool)
        for key in [k for k in tracks if not k.endswith(":cold")]:
            track, cold = tracks[key], tracks.get(key + ":cold")
            if cold is not None:  # the cold start's block joins the warm block's problem
                found = cold.theta[:, 0] > track.theta[:, 0] + self.tol * np.abs(track.theta[:, 0])
                if key == "pre":
                    corrected = found
                track.previous = None
                track.solve(torch.cat([track.pairs, cold.pairs], 1))
            u = track.pairs[:, :, :n]
            finite = torch.from_numpy(np.isfinite(track.theta[:, 0])).to(u.device)
            # a seed whose pairs are not finite keeps its previous block
            self.vectors[key] = torch.where(finite[:, None, None], u, starts[key])
        self.steps += 1

        pre = tracks["pre"]
        theta, res = pre.theta[:, 0], pre.rel[:, 0]
        converged = res <= self.tol
        lower = upper = side = None
        if limit is not None:
            converged, side, lower, upper = decided(pre)
        u = pre.pairs[:, 0, :n]
        right = u if sd is None else sd * u
        gs_u = (gs * u).sum(-1).abs()
        norms = torch.stack([right.norm(dim=-1), gs_u, g.norm(dim=-1), gs.norm(dim=-1)])
        right_norm, gs_u, g_norm, gs_norm = norms.to(torch.float64).cpu().numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            cos_top, cos_sym = gs_u / right_norm / g_norm, gs_u / gs_norm
        second = pre.theta[:, 1] if self.block > 1 else np.full(K, np.nan)

        def tensor(a):
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))

        right_unit = right / torch.from_numpy(np.maximum(right_norm, 1e-300)).to(right)[:, None]
        self.right = right_unit
        consecutive = (np.full(K, np.nan) if previous_right is None
                       or previous_right.shape != right_unit.shape else
                       (previous_right * right_unit).sum(-1).abs().to(torch.float64).cpu().numpy())

        raw = tracks.get("H")
        drift_h = cos_g_h = None
        if raw is not None:
            top_h = _unit(raw.pairs[:, 0, :n])
            previous_h, self.raw_top = self.raw_top, top_h
            drift_h = (np.full(K, np.nan) if previous_h is None or previous_h.shape != top_h.shape
                       else (previous_h * top_h).sum(-1).abs().to(torch.float64).cpu().numpy())
            with np.errstate(divide="ignore", invalid="ignore"):
                cos_g_h = ((g * top_h).sum(-1).abs().to(torch.float64).cpu().numpy() / g_norm)
        return StepCurvature(
            lambda_max_pre=tensor(c * theta), residual_pre=tensor(res), vector_pre=u,
            right_vector_pre=right_unit,
            second_pre=tensor(c * second),
            **{k: tensor(v) for k, v in lam_grad.items()},
            cos_grad_top=tensor(cos_top), cos_grad_top_sym=tensor(cos_sym),
            hvps=hvps, rounds=rounds, converged=torch.from_numpy(np.asarray(converged)),
            checked=checked,
            corrected=torch.from_numpy(corrected),
            lambda_max_H=None if raw is None else tensor(raw.theta[:, 0]),
            residual_H=None if raw is None else tensor(raw.rel[:, 0]),
            converged_H=None if raw is None else tensor(raw.rel[:, 0]) <= self.tol,
            lambda_update_pre=None if lam_update is None else tensor(lam_update),
            cos_top_consecutive=tensor(consecutive),
            cos_top_consecutive_H=None if drift_h is None else tensor(drift_h),
            cos_grad_top_H=None if cos_g_h is None else tensor(cos_g_h),
            lower_pre=None if lower is None else tensor(c * lower),
            upper_pre=None if upper is None else tensor(c * upper), side_pre=side)
