"""K seeds of one run trained at once, as one model with stacked parameters and one Adam.

Adam is elementwise, so K independent models whose parameters are stacked along a leading axis
(``torch.func.stack_module_state``), trained on the *sum* of their K losses by one
``torch.optim.Adam``, are K independent Adam runs: the gradient of the sum with respect to
seed k's parameters is that seed's own gradient, and every Adam quantity (m, v, D, c_t) is
per coordinate. The Hessian of the sum is block diagonal, one block per seed, so one batched
Hessian-vector product on the stacked parameters gives every seed's product at once, and the
tracking engine (:mod:`utils.curvature.engine`) measures all seeds in the same rounds.

Vectors of the stacked model are flat of length K·n in parameter order; the engine sees them
"seed-major", shape (K, n), each row in the single model's parameter order.
"""
from __future__ import annotations

import copy
import time
from dataclasses import replace

import pandas as pd
import torch
from torch.func import functional_call, stack_module_state, vmap
from tqdm import tqdm

from utils.curvature.adam_state import decoupling_statistics, read_adam_state, v_hat_norms
from utils.curvature.engine import TrackingEngine
from utils.training.losses import loss_for
from utils.training.runs import (RunConfig, RunResult, build_data, build_model_for, find_events,
                                 load_gradients, step_gradient)
from utils.training.threads import set_threads
from utils.curvature.tracker import engine_columns
from utils.validation import check_number


class SeedLayout:
    """Converts between the stacked model's flat vectors (K·n,) and seed-major (K, n) rows."""

    def __init__(self, stacked: dict[str, torch.Tensor]):
        self.K = next(iter(stacked.values())).shape[0]
        self.sizes = [p[0].numel() for p in stacked.values()]
        self.n = sum(self.sizes)
        self.blocks = dict(zip(stacked, self.sizes))
        """One model's parameter tensors: name -> size, in the seed-major rows' order."""

    def to_seeds(self, flat: torch.Tensor) -> torch.Tensor:
        """(..., K·n) in stacked-parameter order -> (..., K, n)."""
        lead = flat.shape[:-1]
        chunks = flat.split([self.K * s for s in self.sizes], dim=-1)
        return torch.cat([c.reshape(*lead, self.K, s) for c, s in zip(chunks, self.sizes)], dim=-1)

    def from_seeds(self, rows: torch.Tensor) -> torch.Tensor:
        """(..., K, n) -> (..., K·n), the inverse of :meth:`to_seeds`."""
        lead = rows.shape[:-2]
        chunks = rows.split(self.sizes, dim=-1)
        return torch.cat([c.reshape(*lead, self.K * s) for c, s in zip(chunks, self.sizes)], dim=-1)


def stacked_problem(config: RunConfig, seeds):
    """The K models of ``config`` under ``seeds`` (each with its own data draw), stacked.

    Returns (params, losses): ``params`` maps each parameter name to a leaf tensor of shape
    (K, *shape); ``losses(params)`` is the vector (K,) of the seeds' full-batch losses.
    """
    if config.model == "quadratic":
        raise ValueError("model: seed batching needs a model with data, not 'quadratic'")
    configs = [replace(config, seed=int(s)) for s in seeds]
    datas = [build_data(c) for c in configs]
    models = [build_model_for(c, d) for c, d in zip(configs, datas)]
    params, _ = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    inputs = torch.stack([d.inputs for d in datas])
    targets = torch.stack([d.targets for d in datas])
    loss = loss_for(datas[0].info)

    def one(p, x, y):
        return loss(functional_call(base, p, (x,)), y)

    def losses(stacked):
        return vmap(one)(stacked, inputs, targets)

    return params, losses


def check_seeds(seeds) -> list[int]:
    """``seeds`` as a list of ints; ValueError unless they are distinct non-negative integers
    (at least one)."""
    seeds = [int(check_number("seeds", s, low=0, integer=True)) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct non-negative integers, got {seeds}")
    return seeds


def check_seed_run(config: RunConfig, seeds) -> list[int]:
    """Validate a batched run before anything starts: ``config`` (Adam, a model with data) and
    ``seeds`` (distinct non-negative integers). Returns the seeds as ints; ValueError naming
    the parameter otherwise."""
    config.validate()
    seeds = check_seeds(seeds)
    if config.optimizer != "adam":
        raise ValueError("optimizer: seed batching runs Adam only")
    if config.clip != "none":
        raise ValueError("clip: seed batching runs without a gradient clipper (a clipper sees "
                         "the norm of all K seeds' gradients together)")
    if config.model == "quadratic":
        raise ValueError("model: seed batching needs a model with data, not 'quadratic'")
    return seeds


def batchable(config: RunConfig) -> bool:
    """Whether :func:`run_seeds` can train ``config``: torch's Adam, no clipper, full batch, a
    model with data, λ_grad(Ĥ) only at tracked steps, a constant η and no held-out set (the
    other runs are trained one seed at a time by :func:`utils.training.runs.run`)."""
    return (config.optimizer == "adam" and config.clip == "none" and not config.batch_size
            and config.model != "quadratic" and not config.grad_every and not config.warmup
            and config.schedule == "constant"
            and not config.data_kwargs.get("n_test"))


def run_seeds(config: RunConfig, seeds) -> list[RunResult]:
    """Train ``config`` under each of ``seeds`` at once; one :class:`RunResult` per seed.

    Same measurements as :func:`utils.training.runs.run` (Adam only, tracked with the engine), with
    one engine step per tracked step for all seeds together. The result's ``seconds`` is the
    wall time of the whole batch.

    Why a second loop beside :func:`~utils.training.runs.run`: here the K seeds are one stacked
    parameter set trained on the sum of their losses (vmap), so a step's bookkeeping is per
    seed (each seed's loss, gradient norm, divergence, and the engine's K Rayleigh–Ritz
    problems), and what ``run`` offers that a batch cannot (checkpoints and resumes,
    interventions, mini-batches, signals, other optimizers, clippers) is refused up front. The
    step itself is shared: the loss and gradient come from
    :func:`~utils.training.runs.step_gradient` and the update from
    :func:`~utils.training.runs.load_gradients` and ``torch.optim.Adam.step`` in both, and
    ``tests/test_seeds.py`` checks that the two give the same steps (to 1e-9 over 40 steps;
    ``tests/test_chaos.py``: over 100 steps of a chapter's run).
    """
    seeds = check_seed_run(config, seeds)
    if config.batch_size:
        raise ValueError("batch_size: seed batching trains full batch (0); run mini-batches "
                         "with utils.training.runs.run")
    if config.grad_every:
        raise ValueError("grad_every: seed batching measures λ_grad(Ĥ) at tracked steps only "
                         "(0); run utils.training.runs.run for λ_grad between them")
    set_threads(config.threads)
    params, losses = stacked_problem(config, seeds)
    layout = SeedLayout(params)
    opt = torch.optim.Adam(params.values(), lr=config.lr, betas=(config.beta1, config.beta2),
                           eps=config.eps)
    measure = set(config.measure)
    engine = TrackingEngine(tol=config.eig_tol, track_raw="lambda_max_H" in measure,
                            raw_gradient="lambda_grad_H" in measure, seed=config.seed)
    rows = {s: [] for s in seeds}
    alive = torch.ones(len(seeds), dtype=torch.bool)
    per_seed = {}

    def total(p):
        each = losses(p)
        per_seed["loss"] = each.detach()
        return each.sum()

    t0 = time.perf_counter()
    bar = tqdm(range(1, config.steps + 1), disable=not config.progress, mininterval=1.0,
               desc=f"{len(seeds)} seeds of {config.model} lr={config.lr:g}")
    for step in bar:
        tracked = config.track_every > 0 and step % config.track_every == 0
        hessian, _, grads = step_gradient(total, params, tracked, config.hvp_method)
        flat_grad = hessian.gradient if tracked else torch.cat([g.reshape(-1) for g in grads])
        g = layout.to_seeds(flat_grad)
        seed_loss = per_seed["loss"]
        grad_norm = g.norm(dim=-1)
        finite = torch.isfinite(seed_loss).cpu() & torch.isfinite(grad_norm).cpu()
        v_prev = layout.to_seeds(read_adam_state(opt).v) if tracked and step > 1 else None
        load_gradients(params, grads)
        opt.step()
        measured = {}
        if tracked:
            state = read_adam_state(opt)
            d = layout.to_seeds(state.preconditioner)
            update = (layout.to_seeds(state.m_hat * state.preconditioner)
                      if "lambda_update" in measure else None)
            # products one pass each: a batched pass would nest a second vmap in the vmapped loss
            out = engine.step(lambda v: layout.to_seeds(hessian.matmat(layout.from_seeds(v),
                                                                       batched=False)),
                              g, d, state.c, update=update)
            measured = _per_seed_columns(out, measure, g, v_prev, layout.to_seeds(state.v))
            if "v_norms" in measure:
                v_hat = layout.to_seeds(state.v_hat)
                norms = [v_hat_norms(v_hat[k], layout.blocks) for k in range(len(seeds))]
                measured.update({key: [n[key] for n in norms] for key in norms[0]})
        for k, s in enumerate(seeds):
            if not alive[k]:
                continue
            row = {"step": step, "loss": float(seed_loss[k]), "grad_norm": float(grad_norm[k])}
            if not finite[k]:
                alive[k] = False
            else:
                row.update({name: values[k] for name, values in measured.items()})
            rows[s].append(row)
        if not bool(alive.any()):
            break
    bar.close()
    seconds = time.perf_counter() - t0
    results = []
    for k, s in enumerate(seeds):
        metrics = pd.DataFrame(rows[s])
        spikes, excluded = find_events(metrics, config)
        diverged = None if alive[k] else int(metrics["step"].iloc[-1])
        results.append(RunResult(replace(config, seed=s), metrics, spikes, diverged, None, seconds,
                                 excluded=excluded))
    return results


def _per_seed_columns(out, measure, g, v_prev, v_new) -> dict[str, list[float]]:
    """The engine's per-seed tensors as metric columns (lists of K floats), as ``run`` names them."""
    cols = engine_columns(out, measure)
    K = g.shape[0]
    if "decoupling" in measure and v_prev is not None:
        stats = [decoupling_statistics(g[k], v_prev[k], v_new[k]) for k in range(K)]
        for key in stats[0]:
            cols[key] = [st[key] for st in stats]
    cols["hvps"] = [out.hvps / K] * K
    return cols
