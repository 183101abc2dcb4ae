"""What a ``torch.optim.Adam`` holds, read back as flat vectors in parameter order.

Notation (see the book's conventions page): step t = 1, 2, ...,

    m_t = β1 m_{t-1} + (1-β1) g_t,     v_t = β2 v_{t-1} + (1-β2) g_t²,
    v̂_t = v_t / (1-β2^t),             D_t = 1 / (sqrt(v̂_t) + ε),
    c_t = (1-β1) / ((1+β1)(1-β1^t)).

Nothing here re-implements Adam: m, v and t are read from the optimizer's own state.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def momentum_factor(beta1: float, step: int) -> float:
    """c_t = (1-β1) / ((1+β1)(1-β1^t)), the factor that folds momentum into Ĥ_t = c_t D_t H_t
    (t ≥ 1)."""
    return (1.0 - beta1) / ((1.0 + beta1) * (1.0 - beta1 ** step))


@dataclass(frozen=True)
class AdamState:
    """A snapshot of Adam's state after ``step`` updates.

    ``m`` and ``v`` are flat 1-D tensors of length n (the number of trainable parameters),
    in the order of the optimizer's parameters; they are copies, not views.
    """

    step: int
    m: torch.Tensor
    v: torch.Tensor
    lr: float
    beta1: float
    beta2: float
    eps: float

    @property
    def bias_correction1(self) -> float:
        """1 - β1^t."""
        return 1.0 - self.beta1 ** self.step

    @property
    def bias_correction2(self) -> float:
        """1 - β2^t."""
        return 1.0 - self.beta2 ** self.step

    @property
    def m_hat(self) -> torch.Tensor:
        """m̂_t = m_t / (1-β1^t), shape (n,)."""
        return self.m / self.bias_correction1

    @property
    def v_hat(self) -> torch.Tensor:
        """v̂_t = v_t / (1-β2^t), shape (n,)."""
        return self.v / self.bias_correction2

    @property
    def preconditioner(self) -> torch.Tensor:
        """D_t = 1 / (sqrt(v̂_t) + ε), the diagonal of the preconditioner, shape (n,)."""
        return 1.0 / (self.v_hat.sqrt() + self.eps)

    @property
    def c(self) -> float:
        """c_t = (1-β1) / ((1+β1)(1-β1^t)): momentum folded into Ĥ_t = c_t D_t H_t."""
        return momentum_factor(self.beta1, self.step)

    @property
    def update(self) -> torch.Tensor:
        """The step Adam takes from this state: -η m̂_t / (sqrt(v̂_t) + ε), shape (n,)."""
        return -self.lr * self.m_hat * self.preconditioner


def read_adam_state(optimizer: torch.optim.Optimizer) -> AdamState:
    """Read m, v and t from a real ``torch.optim.Adam`` as flat vectors in parameter order.

    All parameter groups must share lr, betas and eps (the book's runs use one group);
    amsgrad and maximize are not supported. Raises ``ValueError`` before the first step,
    when no state exists yet.
    """
    if not isinstance(optimizer, torch.optim.Adam):
        raise ValueError(f"optimizer must be a torch.optim.Adam, got {type(optimizer).__name__}")
    groups = optimizer.param_groups
    hyper = {(g["lr"], *g["betas"], g["eps"]) for g in groups}
    if len(hyper) != 1:
        raise ValueError("optimizer: all parameter groups must share lr, betas and eps")
    if any(g.get("amsgrad") or g.get("maximize") for g in groups):
        raise ValueError("optimizer: amsgrad and maximize are not supported")
    lr, beta1, beta2, eps = hyper.pop()
    params = [p for g in groups for p in g["params"]]
    states = [optimizer.state.get(p, {}) for p in params]
    if not states or any("step" not in s for s in states):
        raise ValueError("optimizer has no state yet: call optimizer.step() at least once")
    steps = {int(s["step"]) for s in states}
    if len(steps) != 1:
        raise ValueError(f"optimizer: parameters are at different steps {sorted(steps)}")
    m = torch.cat([s["exp_avg"].detach().reshape(-1) for s in states])
    v = torch.cat([s["exp_avg_sq"].detach().reshape(-1) for s in states])
    return AdamState(step=steps.pop(), m=m, v=v, lr=float(lr), beta1=float(beta1),
                     beta2=float(beta2), eps=float(eps))


def g2_over_v_statistics(g: torch.Tensor, v_prev: torch.Tensor,
                         small: float = 1e-2) -> dict[str, float]:
    """Summaries of ρ_t = g_t² / v_{t-1}, elementwise over the coordinates with v_{t-1} > 0
    (flat tensors of shape (n,)): its median and 10 % / 90 % quantiles and
    ``g2_over_v_frac_small``, the fraction of coordinates with ρ_t < ``small``; NaN where every
    v_{t-1} is 0."""
    keep = v_prev > 0
    if not bool(keep.any()):
        return dict.fromkeys(["g2_over_v_median", "g2_over_v_q10", "g2_over_v_q90",
                              "g2_over_v_frac_small"], float("nan"))
    rho = (g[keep] ** 2 / v_prev[keep]).double()
    q10, median, q90 = _quantiles(rho, QUANTILES)
    return {"g2_over_v_median": median, "g2_over_v_q10": q10, "g2_over_v_q90": q90,
            "g2_over_v_frac_small": float((rho < small).double().mean())}


def decoupling_statistics(g: torch.Tensor, v_prev: torch.Tensor, v_new: torch.Tensor,
                          small: float = 1e-2) -> dict[str, float]:
    """Summaries of ρ_t = g_t² / v_{t-1} and of v_t / v_{t-1}, elementwise over coordinates.

    g, v_prev (= v_{t-1}) and v_new (= v_t) are flat tensors of shape (n,). Coordinates with
    v_{t-1} = 0 are left out. Returns the median and the 10 % / 90 % quantiles of both ratios
    and ``g2_over_v_frac_small``, the fraction of coordinates with ρ_t < ``small``
    (:func:`g2_over_v_statistics`).
    """
    out = g2_over_v_statistics(g, v_prev, small)
    keep = v_prev > 0
    if not bool(keep.any()):
        return {**out, **dict.fromkeys(["v_ratio_median", "v_ratio_q10", "v_ratio_q90"],
                                       float("nan"))}
    q10, median, q90 = _quantiles((v_new[keep] / v_prev[keep]).double(), QUANTILES)
    return {**out, "v_ratio_median": median, "v_ratio_q10": q10, "v_ratio_q90": q90}


def v_hat_norms(v_hat: torch.Tensor, blocks: dict[str, int]) -> dict[str, float]:
    """‖√v̂‖₂ over all coordinates (``sqrt_v_hat_norm``, the scale the paper sets beside ‖g‖)
    and over each parameter tensor (``sqrt_v_hat_norm.<name>``, the paper's Figure 5(c)).
    ‖√v̂‖² = Σ v̂ decays at β2 per step (times the bias correction's change) where every
    coordinate does. ``v_hat``: flat (n,) in parameter order; ``blocks``: name -> number of
    coordinates, in the same order, summing to n."""
    if sum(blocks.values()) != v_hat.numel():
        raise ValueError(f"blocks must cover v_hat's {v_hat.numel()} coordinates, "
                         f"got {sum(blocks.values())}")
    out = {"sqrt_v_hat_norm": float(v_hat.clamp_min(0).sum().sqrt())}
    for name, chunk in zip(blocks, v_hat.split(list(blocks.values()))):
        out[f"sqrt_v_hat_norm.{name}"] = float(chunk.clamp_min(0).sum().sqrt())
    return out


QUANTILES = (0.1, 0.5, 0.9)


def _quantiles(x: torch.Tensor, q) -> list[float]:
    """The elements of rank round(q (n − 1)) of x, by selection: the same values as indexing
    the sorted x, without its O(n log n) sort (torch.quantile refuses inputs above 16M
    elements; selection has no limit). On the CPU one ``numpy.partition`` selects every rank
    at once (half the time of a ``kthvalue`` per rank on 0.8M values); elsewhere ``kthvalue``
    runs where x lives."""
    idx = [int(i) for i in (torch.tensor(q, dtype=torch.float64) * (len(x) - 1)).round().long()]
    if x.device.type == "cpu":
        part = np.partition(x.detach().numpy(), idx)
        return [float(part[i]) for i in idx]
    return [float(x.kthvalue(i + 1).values) for i in idx]
