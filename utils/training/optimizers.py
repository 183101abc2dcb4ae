"""The optimizers and the gradient clipper a run can train with, built from the libraries.

    opt = build_optimizer(config, params)     # torch.optim.Adam, or the library's own class
    clipper = build_clipper(config)           # zclip.ZClip, or None
    state = state_reader(config)(opt)         # an AdamState with that optimizer's D and c_t

Nothing here re-implements an optimizer: each name of :data:`OPTIMIZERS` is a class of
``torch.optim`` or of its library, pinned in ``requirements.txt``:

* ``adam``: ``torch.optim.Adam``; ``gd``: ``torch.optim.SGD``.
* ``stableadamw``: ``optimi.StableAdamW`` (torch-optimi; Wortsman et al. 2023): Adam whose
  learning rate is divided, per tensor, by max(1, RMS(g²/max(v̂, ε²))).
* ``spam``: ``pytorch_optimizer.SPAM`` (pytorch-optimizer; Huang et al. 2025): Adam that clips
  coordinates with g² > 5000 v, resets m and v every 500 steps and warms the step size up again
  over 50 steps (cosine).
* ``adam_atan2``: ``adam_atan2_pytorch.AdamAtan2`` (adam-atan2-pytorch; Everett et al. 2024):
  the update a·atan2(m̂, b·sqrt(v̂)) with a = 1.27, b = 1, no ε.

and :data:`CLIPPERS` names the clippers applied to the gradient before the step: ``zclip``,
``zclip.ZClip`` (Kumar et al. 2025) with its defaults (EMA α = 0.97, z > 2.5 after 25 warm-up
steps, adaptive scaling, and a maximal gradient norm of 1).

Every library optimizer gets the run's η, (β1, β2) and, where it has one, ε, and no weight
decay; everything else is at the library's default. The state readers give, for the optimizers
whose update is η c-scaled D m̂ with Adam's diagonal D = 1/(sqrt(v̂)+ε') (``adam``,
``stableadamw``, ``spam``), an :class:`~utils.curvature.adam_state.AdamState` whose
``preconditioner`` is exactly that D (tested against each optimizer's own next step);
``adam_atan2`` and ``gd`` have
none, and the tracker measures only raw curvature for them.
"""
from __future__ import annotations

import math

import torch

from utils.curvature.adam_state import AdamState, read_adam_state

OPTIMIZERS = ("adam", "gd", "stableadamw", "spam", "adam_atan2")
CLIPPERS = ("none", "zclip")
PRECONDITIONED = ("adam", "stableadamw", "spam")
"""The optimizers with Adam's diagonal preconditioner D, so that λ_max(Ĥ) = λ_max(c D H)."""
LIBRARIES = {"stableadamw": "torch-optimi", "spam": "pytorch-optimizer",
             "adam_atan2": "adam-atan2-pytorch", "zclip": "zclip"}
"""The PyPI package behind each library optimizer or clipper."""


def build_optimizer(config, params) -> torch.optim.Optimizer:
    """The optimizer named by ``config.optimizer`` over ``params`` (an iterable of tensors),
    with the run's lr, betas and eps (see the module docstring)."""
    params = list(params)
    betas = (config.beta1, config.beta2)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, betas=betas, eps=config.eps)
    if config.optimizer == "gd":
        return torch.optim.SGD(params, lr=config.lr)
    if config.optimizer == "stableadamw":
        from optimi import StableAdamW

        return StableAdamW(params, lr=config.lr, betas=betas, eps=config.eps, weight_decay=0.0)
    if config.optimizer == "spam":
        from pytorch_optimizer import SPAM

        return SPAM(params, lr=config.lr, betas=betas, eps=config.eps, weight_decay=0.0)
    if config.optimizer == "adam_atan2":
        from adam_atan2_pytorch import AdamAtan2

        return AdamAtan2(params, lr=config.lr, betas=betas, weight_decay=0.0)
    raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {config.optimizer!r}")


def build_clipper(config):
    """The gradient clipper named by ``config.clip`` (a ``zclip.ZClip`` with its defaults,
    called as ``clipper.step(model)`` before each optimizer step), or None."""
    if config.clip == "none":
        return None
    if config.clip == "zclip":
        from zclip import ZClip

        return ZClip()
    raise ValueError(f"clip must be one of {list(CLIPPERS)}, got {config.clip!r}")


def _flat(opt, key: str) -> torch.Tensor:
    params = [p for g in opt.param_groups for p in g["params"]]
    return torch.cat([opt.state[p][key].detach().reshape(-1) for p in params])


def _hyper(opt, keys) -> tuple:
    """The shared value of ``keys`` over the parameter groups; ValueError if they differ."""
    values = {tuple(tuple(g[k]) if isinstance(g[k], (list, tuple)) else g[k] for k in keys)
              for g in opt.param_groups}
    if len(values) != 1:
        raise ValueError(f"optimizer: all parameter groups must share {', '.join(keys)}")
    return values.pop()


def read_stableadamw_state(opt) -> AdamState:
    """The :class:`AdamState` of an ``optimi.StableAdamW``. It keeps m̂ and v̂ themselves
    (``exp_avg``, ``exp_avg_sq``, updated with debiased betas), so m = m̂ (1-β1^t) and
    v = v̂ (1-β2^t); D = 1/(sqrt(v̂)+ε) is the D of its update, whose η is then divided per
    tensor by max(1, RMS)."""
    lr, beta1, beta2, eps = _hyper(opt, ("lr", "beta1", "beta2", "eps"))
    step = int(opt.param_groups[0].get("step", 0))
    if step < 1:
        raise ValueError("optimizer has no state yet: call optimizer.step() at least once")
    m = _flat(opt, "exp_avg") * (1 - beta1 ** step)
    v = _flat(opt, "exp_avg_sq") * (1 - beta2 ** step)
    return AdamState(step=step, m=m, v=v, lr=float(lr), beta1=float(beta1), beta2=float(beta2),
                     eps=float(eps))


def read_spam_state(opt) -> AdamState:
    """The :class:`AdamState` of a ``pytorch_optimizer.SPAM``. Its step is
    η sqrt(1-β2^t)/(1-β1^t) m/(sqrt(v)+ε), times its warm-up factor, with t the group's step
    (never reset), which is η m̂ D with D = 1/(sqrt(v̂) + ε/sqrt(1-β2^t)): the state carries
    that ε' so its ``preconditioner`` is the D of the update."""
    lr, betas, eps = _hyper(opt, ("lr", "betas", "eps"))
    beta1, beta2 = betas
    step = int(opt.param_groups[0].get("step", 0))
    if step < 1:
        raise ValueError("optimizer has no state yet: call optimizer.step() at least once")
    m, v = _flat(opt, "exp_avg"), _flat(opt, "exp_avg_sq")
    n = sum(p.numel() for g in opt.param_groups for p in g["params"])
    if m.numel() != n:
        raise ValueError("optimizer: SPAM with a density below 1 keeps a sparse state; use 1")
    return AdamState(step=step, m=m, v=v, lr=float(lr), beta1=float(beta1), beta2=float(beta2),
                     eps=float(eps) / math.sqrt(1 - beta2 ** step))


READERS = {"adam": read_adam_state, "stableadamw": read_stableadamw_state,
           "spam": read_spam_state}


def state_reader(config):
    """The function opt -> AdamState for ``config.optimizer`` (its D and c_t), or None where
    the optimizer has no diagonal preconditioner of Adam's form."""
    return READERS.get(config.optimizer)
