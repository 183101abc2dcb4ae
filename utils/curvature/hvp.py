"""Hessian-vector products of a loss on one fixed batch.

The loss is given as a function of a dict of parameter tensors (``torch.func.functional_call``
style), so that the same operator serves any ``nn.Module`` and the 1-D quadratic alike.
Two methods, one interface:

* ``"autograd"`` (default): double backward. The graph of ∇L is built once; each product
  Hv is one more backward pass through it.
* ``"func"``: ``torch.func`` forward-over-reverse (``jvp`` of ``grad``); each product
  re-runs the forward pass.
* ``"finite_difference"``: the central difference of two gradients,
  Hv ≈ (∇L(θ + h v) − ∇L(θ − h v)) / 2h, h = ε_dtype^{1/3} (1 + ‖θ‖) / ‖v‖: no graph of ∇L is
  kept, so it fits where a double backward pass does not (two gradients per product; an error
  of order h² ‖∇³L‖ plus rounding of order ε_dtype^{2/3}).

Fused scaled-dot-product-attention kernels support neither double backward nor forward-mode
AD, so every evaluation runs under :func:`math_attention`.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import contextmanager

import torch
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from utils.validation import check_choice

HVP_METHODS = ("autograd", "func", "finite_difference")
BATCHED_HVP_MAX_ENTRIES = 10_000_000
"""Up to k·n = this, k products share one batched backward pass; above it they run one after
another. A memory guard, not a speed rule: the batched pass holds about k times the
intermediate tensors of one product. On 2 CPU cores three batched products took 0.65x the
time of three passes on chapter 1's MLP (n = 301), 0.75x on chapter 4's Transformer
(n = 3,739), 0.8x on chapter 3's CNN (n = 1,954) and 0.95x on 16 stacked MLP seeds
(n = 4,816)."""
LossOfParams = Callable[[Mapping[str, torch.Tensor]], torch.Tensor]


@contextmanager
def math_attention():
    """Force the math backend of ``scaled_dot_product_attention`` (twice differentiable)."""
    with sdpa_kernel(SDPBackend.MATH):
        yield


def loss_of_params(model: torch.nn.Module, criterion, inputs, targets) -> LossOfParams:
    """The loss on a fixed batch as a function of a dict of parameters (names as in the model)."""
    def loss(params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return criterion(functional_call(model, dict(params), (inputs,)), targets)
    return loss


def flatten(tensors) -> torch.Tensor:
    """Concatenate tensors into one flat vector, in the given order."""
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(vector: torch.Tensor, shapes) -> list[torch.Tensor]:
    """Split a flat vector into views of the given ``shapes``, in order (:func:`flatten`'s
    inverse)."""
    shapes = [torch.Size(s) for s in shapes]
    return [c.view(s) for c, s in zip(vector.split([s.numel() for s in shapes]), shapes)]


class LossHessian:
    """H = ∇²L(θ) at fixed θ on a fixed batch, as a symmetric linear operator on flat vectors.

    Parameters
    ----------
    loss_fn: maps a dict ``{name: tensor}`` of parameters to a scalar loss.
    params: the point θ at which H is taken; copied, so later changes to the originals
        (an optimizer step, for instance) leave this operator valid.
    method: ``"autograd"`` (double backward), ``"func"`` (forward-over-reverse) or
        ``"finite_difference"`` (central differences of gradients).
    gradient: ∇L(θ), flat, shape (n,), where the caller already has it (a training loop's
        ``.grad``); with ``"finite_difference"`` no graph is needed, so the gradient pass is
        skipped and ``loss`` is NaN. Ignored by the other methods, which need the graph.

    Attributes
    ----------
    loss: L(θ), a 0-d tensor. gradient: ∇L(θ), flat, shape (n,).
    n: number of parameters. n_hvps: Hessian-vector products computed so far.
    """

    def __init__(self, loss_fn: LossOfParams, params: Mapping[str, torch.Tensor],
                 method: str = "autograd", gradient: torch.Tensor | None = None):
        self.method = check_choice("method", method, HVP_METHODS)
        self.loss_fn = loss_fn
        self.theta = {k: p.detach().clone().requires_grad_(True) for k, p in params.items()}
        self.shapes = [p.shape for p in self.theta.values()]
        self.n = sum(p.numel() for p in self.theta.values())
        self.n_hvps = 0
        leaves = list(self.theta.values())
        if gradient is not None and method == "finite_difference":
            if gradient.shape != (self.n,):
                raise ValueError(f"gradient must have shape ({self.n},), got "
                                 f"{tuple(gradient.shape)}")
            self.gradient = gradient.detach().to(leaves[0].dtype)
            self._grads = self.unflatten(self.gradient)
            self.loss = torch.tensor(float("nan"), dtype=self.gradient.dtype)
            return
        with math_attention():
            loss = loss_fn(self.theta)
            grads = torch.autograd.grad(loss, leaves, create_graph=(method == "autograd"),
                                        allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(leaves, grads)]
        self._grads = grads
        self.loss = loss.detach()
        self.gradient = flatten(grads).detach()

    @property
    def dtype(self) -> torch.dtype:
        return self.gradient.dtype

    @property
    def device(self) -> torch.device:
        return self.gradient.device

    def unflatten(self, vector: torch.Tensor) -> list[torch.Tensor]:
        """Split a flat vector of shape (n,) into tensors shaped like the parameters."""
        return unflatten(vector, self.shapes)

    def matvec(self, vector: torch.Tensor) -> torch.Tensor:
        """H v for a flat vector v of shape (n,); returns shape (n,)."""
        if vector.shape != (self.n,):
            raise ValueError(f"vector must have shape ({self.n},), got {tuple(vector.shape)}")
        self.n_hvps += 1
        vector = vector.to(dtype=self.dtype, device=self.device)
        if self.method == "autograd":
            return self._hvp_autograd(vector)
        if self.method == "finite_difference":
            return self._hvp_finite_difference(vector)
        return self._hvp_func(vector)

    __matmul__ = matvec

    def matmat(self, vectors: torch.Tensor, batched: bool = True) -> torch.Tensor:
        """H V for k flat vectors at once: ``vectors`` of shape (k, n) -> (k, n); k products.

        With ``"autograd"``, ``batched`` and k·n up to :data:`BATCHED_HVP_MAX_ENTRIES` the k
        products share one batched backward pass through the graph of ∇L
        (``is_grads_batched``), which on a single model costs less than k passes; otherwise,
        and with ``"func"``, it applies :meth:`matvec` per row. Pass ``batched=False`` where
        the loss is itself vmapped (:mod:`utils.training.seeds`): there the batched pass nests a
        second vmap and cost more than the k passes.
        """
        if vectors.dim() != 2 or vectors.shape[1] != self.n:
            raise ValueError(f"vectors must have shape (k, {self.n}), got {tuple(vectors.shape)}")
        if (not batched or self.method != "autograd" or len(vectors) == 1
                or self.n * len(vectors) > BATCHED_HVP_MAX_ENTRIES):
            return torch.stack([self.matvec(v) for v in vectors])
        self.n_hvps += len(vectors)
        return self._double_backward(vectors.to(dtype=self.dtype, device=self.device))

    def _hvp_autograd(self, vector):
        return self._double_backward(vector[None])[0]

    def _double_backward(self, vectors):
        """H V by backward passes through the graph of ∇L: V (k, n) -> (k, n); for k > 1 one
        batched pass (``is_grads_batched``)."""
        k, batched = len(vectors), len(vectors) > 1
        pieces = [c.reshape(k, *s) if batched else c.reshape(s)
                  for c, s in zip(vectors.split([s.numel() for s in self.shapes], dim=1),
                                  self.shapes)]
        live = [(g, v) for g, v in zip(self._grads, pieces) if g.requires_grad]
        if not live:
            return torch.zeros_like(vectors)
        leaves = list(self.theta.values())
        with math_attention():
            out = torch.autograd.grad([g for g, _ in live], leaves, grad_outputs=[v for _, v in live],
                                      retain_graph=True, allow_unused=True, is_grads_batched=batched)
        return torch.cat([(torch.zeros(k, p.numel(), dtype=self.dtype, device=self.device)
                           if o is None else o.reshape(k, -1))
                          for p, o in zip(leaves, out)], dim=1).detach()

    def _gradient_at(self, flat: torch.Tensor) -> torch.Tensor:
        point = {k: p.detach().requires_grad_(True)
                 for k, p in zip(self.theta, self.unflatten(flat))}
        with math_attention():
            grads = torch.autograd.grad(self.loss_fn(point), list(point.values()),
                                        allow_unused=True)
        return flatten([torch.zeros_like(p) if g is None else g
                        for p, g in zip(point.values(), grads)]).detach()

    def _hvp_finite_difference(self, vector):
        norm = float(vector.norm())
        if norm == 0:
            return torch.zeros_like(vector)
        theta = flatten([p.detach() for p in self.theta.values()])
        h = torch.finfo(self.dtype).eps ** (1 / 3) * (1 + float(theta.norm())) / norm
        return (self._gradient_at(theta + h * vector)
                - self._gradient_at(theta - h * vector)) / (2 * h)

    def _hvp_func(self, vector):
        primal = {k: p.detach() for k, p in self.theta.items()}
        tangent = dict(zip(self.theta, self.unflatten(vector)))
        with math_attention():
            _, hv = torch.func.jvp(torch.func.grad(self.loss_fn), (primal,), (tangent,))
        return flatten(hv.values()).detach()

    def dense(self) -> torch.Tensor:
        """The full matrix H, shape (n, n), from n products with unit vectors (tiny models only),
        column i = H e_i; the products go through :meth:`matmat` in batches it can batch."""
        eye = torch.eye(self.n, dtype=self.dtype, device=self.device)
        rows = max(1, min(self.n, 64, BATCHED_HVP_MAX_ENTRIES // self.n))
        return torch.cat([self.matmat(eye[i:i + rows]) for i in range(0, self.n, rows)]).T
