"""What curvature tracking costs, measured side by side in one process (``make bench``).

1. Tracking cost per step on the fully connected chapter model (chapter 1's defaults): a plain
   Adam step, then the same steps tracked by our engine (λ_max(Ĥ) warm-started, λ_grad in all
   forms, alignment), by a cold ``eigsh`` per step, and by cold power iteration to a relative
   change of 1e-3 (PyHessian's rule) — each from the same snapshot of model and optimizer, so
   every method follows the same trajectory. Every tracked λ_max(Ĥ) is compared with a dense
   eigendecomposition of the same step's Ĥ (computed outside the timers).
2. K seeds batched into one run (``utils.training.seeds``) against one seed, K = 1, 4, 16, 64.
3. Every chapter model (:data:`MODELS`) at its chapter settings: a window of tracked training at
   the chapter's tracking interval, the engine deciding the side of 2/η at each tracked step,
   with its products and rounds per tracked step, its uncertified steps, its wrong-side
   decisions and its largest errors (within ±10 % of 2/η and elsewhere) against a cold tight
   ``eigsh`` at every tracked step (in an untimed replay of the same trajectory), and the wall
   time of a tracked step over a plain Adam step and over its floor (the passes a tracked step
   cannot do without).
4. Seeds per minute on every core (worker processes of a Dask ``LocalCluster``, seeds batched
   in each) over one unbatched single-seed process.
5. The wall time of each chapter's default papermill run (``--chapters``).
6. The spike monitor (``utils.monitor``) at ``every=10``: a plain training loop against the same
   loop with the monitor attached, side by side in interleaved chunks, on the chapter models
   (full batch), on the chapter-9 language model and on chapter 11's 8-layer anchor-function
   Transformer (mini-batches); ``monitor_overhead`` is the ratio of their wall times on the
   language model, ``monitor_overhead_anchor`` on the anchor Transformer (``..._finite_difference``:
   the same with finite-difference products).

Timings are medians of per-step times, with ``torch.set_num_threads`` fixed; ratios, not
seconds, are what transfers between machines. Results: ``_build/bench/results.json``.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.sparse.linalg import eigsh

from utils.curvature.adam_state import read_adam_state
from utils.studies.settings import CNN_DIGITS, TRANSFORMER, chapter_config
from utils.curvature.preconditioned import (PreconditionedHessian, gradient_curvatures,
                                            linear_operator, top_eigenpair)
from utils.curvature.engine import TrackingEngine, single_model
from utils.curvature.hvp import LossHessian, loss_of_params, math_attention
from utils.training.losses import mse
from utils.book.rerun import chapter_names
from utils.training.runs import REPO_ROOT, RunConfig, build_data, build_problem, check_device
from utils.training.seeds import run_seeds

OUT = REPO_ROOT / "_build" / "bench" / "results.json"
INTERLEAVE_CHUNK = 20
"""Steps each method takes before the next method's turn (see :func:`interleaved`)."""
EIGENTHINGS_STEPS = 20
"""Lanczos steps for hessian-eigenthings (it runs a fixed number; 20 is its default for k = 10)."""

try:  # benchmarks/requirements.txt; `make bench` installs it
    import hessian_eigenthings
except ImportError:  # pragma: no cover - the benchmark then says it was not measured
    hessian_eigenthings = None


MODELS = {"mlp": "01_v_decay", "cnn": CNN_DIGITS, "transformer": TRANSFORMER,
          "fig5_net": "02_lambda_max_crossing", "fig6_cnn": "03_gradient_alignment",
          "fig4_net": "04_spike_onset", "anchor": "10_spike_types"}
"""The chapter models of ``models`` in results.json, by the chapter whose settings they take:
chapter 1's MLP, the frozen small CNN and one-layer Transformer of chapters 5-8, and the
paper-setting models: chapter 2's network of width 1,000 (the paper's Figure 5), chapter 3's
CNN of 512k parameters (Figure 6), chapter 4's tanh network (Figure 4) and chapter 10's 4-layer
anchor-function Transformer (Figure D1; see :func:`model_config`). The chapters not here track
no λ_max(Ĥ) with the engine: chapter 0's quadratic is solved densely, chapter 9's language
model and chapter 11's 8-layer Transformer measure λ_grad(Ĥ) only (their cost is the
monitor's, section 6)."""
MODEL_WINDOWS = {"mlp": (1200, 120), "cnn": (400, 120), "transformer": (400, 120),
                 "fig5_net": (150, 120), "fig6_cnn": (200, 24), "fig4_net": (200, 120),
                 "anchor": (300, 24)}
"""Per chapter model, (untimed warm-up steps, tracked steps of the window): the dearer models
(a cold ``eigsh`` of the 512k-parameter CNN or of the anchor Transformer takes 6-8 s here)
get fewer tracked steps."""
ANCHOR_TRACK_EVERY = 5
"""Chapter 10 measures λ_grad(Ĥ) only (no tracking interval); the benchmark tracks its model
every 5 steps."""


def model_config(name: str, device: str) -> RunConfig:
    """The run of the chapter model ``name`` (:data:`MODELS`). Chapter 10's anchor Transformer
    runs in float64 here (the chapter trains in float32; a cold ``eigsh`` to 1e-10 needs the
    float64 operator), tracked every :data:`ANCHOR_TRACK_EVERY` steps."""
    if name == "anchor":
        from utils.studies.spike_types import anchor_config

        return anchor_config(4, device=device, dtype="float64", track_every=ANCHOR_TRACK_EVERY)
    return chapter_config(MODELS[name], device=device, progress=False)


def chapter1_config(device: str) -> RunConfig:
    """The fully connected chapter model: chapter 1's parameters cell, as its notebook builds it."""
    return chapter_config("01_v_decay", device=device, progress=False)


def machine(threads: int, device: str) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": threads,
            "python": platform.python_version(), "torch": torch.__version__,
            "platform": platform.platform(), "device": device}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ---- 1. tracking cost ----------------------------------------------------------------------

def power_iteration(op, n, tol=1e-3, max_iter=1000, seed=0):
    """PyHessian's rule: power iteration from a random vector until the eigenvalue estimate
    changes by less than ``tol`` relative. Returns (value, products)."""
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(n, generator=gen, dtype=torch.float64)
    v = v / v.norm()
    value, used = None, 0
    for _ in range(max_iter):
        w = op.matvec(v.to(op.hessian.dtype)).to(torch.float64).cpu()
        used += 1
        new = float(v @ w)
        v = w / w.norm()
        if value is not None and abs(new - value) <= tol * abs(value) + 1e-30:
            return new, used
        value = new
    return value, used


def dense_top(hessian, d, c):
    """λ_max(Ĥ) from the dense Hessian (outside every timer)."""
    h = hessian.dense()
    sd = d.sqrt()
    s = c * sd[:, None] * h * sd[None, :]
    return float(torch.linalg.eigvalsh((s + s.T) / 2)[-1])


def tracking_cost(config: RunConfig, warmup: int, steps: int, cold_steps: int, tol: float):
    """Per-step medians (ms), HVPs per step and max relative error vs dense, per method."""
    torch.manual_seed(0)
    model, loss_fn = build_problem(config)
    params = dict(model.named_parameters())
    opt = torch.optim.Adam(params.values(), lr=config.lr, betas=(config.beta1, config.beta2),
                           eps=config.eps)
    for _ in range(warmup):  # into the regime the chapters study: v decaying, spikes
        with math_attention():
            grads = torch.autograd.grad(loss_fn(params), list(params.values()))
        for p, g in zip(params.values(), grads):
            p.grad = g
        opt.step()
    snapshot = (copy.deepcopy(model), copy.deepcopy(opt.state_dict()))

    data = build_data(config)

    def fresh():
        """Model, optimizer and loss restored from the snapshot: every method starts here."""
        m = copy.deepcopy(snapshot[0])
        ps = dict(m.named_parameters())
        o = torch.optim.Adam(ps.values(), lr=config.lr, betas=(config.beta1, config.beta2),
                             eps=config.eps)
        o.load_state_dict(copy.deepcopy(snapshot[1]))
        return ps, o, loss_of_params(m, mse, data.inputs, data.targets)

    def plain():
        """Plain Adam steps: yields (seconds, loss, None, 0) per step."""
        ps, o, lf = fresh()
        while True:
            _sync(config.device)
            a = time.perf_counter()
            with math_attention():
                loss = lf(ps)
                grads = torch.autograd.grad(loss, list(ps.values()))
            for p, g in zip(ps.values(), grads):
                p.grad = g
            o.step()
            _sync(config.device)
            yield time.perf_counter() - a, float(loss.detach()), None, 0

    def tracked(measure_fn):
        """Tracked steps: yields (seconds, loss, λ_max(Ĥ) measured, HVPs) per step."""
        ps, o, lf = fresh()
        while True:
            _sync(config.device)
            a = time.perf_counter()
            hessian, state = hessian_step(lf, ps, o)
            value = measure_fn(hessian, state)
            _sync(config.device)
            yield time.perf_counter() - a, float(hessian.loss), value, hessian.n_hvps

    # The dense reference, in a pass of its own: its n products between two timed steps
    # would leave the caches cold for the next one.
    reference = reference_values(fresh, steps)

    engine = TrackingEngine(tol=tol)

    def ours(hessian, state):
        out = engine.step(single_model(hessian), hessian.gradient[None],
                          state.preconditioner[None], state.c)
        return float(out.lambda_max_pre)

    def cold_eigsh(hessian, state):
        res = top_eigenpair(PreconditionedHessian(hessian, state.preconditioner, state.c),
                            None, tol=tol, solver="eigsh")
        gradient_curvatures(hessian, state.preconditioner, state.c)
        return res.value

    def cold_power(hessian, state):
        value, _ = power_iteration(PreconditionedHessian(hessian, state.preconditioner, state.c),
                                   hessian.n, tol=tol)
        gradient_curvatures(hessian, state.preconditioner, state.c)
        return value

    def cold_eigenthings(hessian, state):
        op = PreconditionedHessian(hessian, state.preconditioner, state.c)
        operator = hessian_eigenthings.LambdaOperator(op.matvec, op.n, device=hessian.device,
                                                      dtype=hessian.dtype)
        res = hessian_eigenthings.lanczos(operator, k=1, max_iter=EIGENTHINGS_STEPS, tol=tol,
                                          which="LA", seed=0)
        gradient_curvatures(hessian, state.preconditioner, state.c)
        return float(res.eigenvalues[0])

    runners = {"plain": (plain(), steps), "ours": (tracked(ours), steps),
               "cold_eigsh": (tracked(cold_eigsh), cold_steps),
               "cold_power": (tracked(cold_power), cold_steps)}
    if hessian_eigenthings is not None:
        runners["cold_eigenthings"] = (tracked(cold_eigenthings), cold_steps)
    records = interleaved(runners, chunk=INTERLEAVE_CHUNK)

    results = {}
    for name, rows in records.items():
        seconds, losses, values, hvps = (list(col) for col in zip(*rows))
        # the same trajectory for every method, or the comparison is invalid
        if not np.allclose(losses, reference["losses"][:len(losses)], rtol=1e-12, atol=0):
            raise RuntimeError(f"{name} left the reference trajectory: the comparison is invalid")
        results[name] = {"ms_per_step": 1e3 * statistics.median(seconds), "steps": len(rows)}
        if name != "plain":
            top = reference["lambda_max_pre"]
            results[name].update(
                hvps_per_step=float(np.mean(hvps)),
                max_rel_error_lambda_max=max(abs(v - top[t]) / abs(top[t])
                                             for t, v in enumerate(values)),
                cost_ratio=results[name]["ms_per_step"] / results["plain"]["ms_per_step"])
    return results


def interleaved(runners: dict, chunk: int) -> dict[str, list]:
    """Take ``chunk`` steps of each runner in turn until each has taken its count: slow drifts
    of the machine's speed then fall on every method alike. runners: name -> (generator,
    steps). Returns name -> the list of what its generator yielded."""
    records = {name: [] for name in runners}
    while any(len(records[k]) < n for k, (_, n) in runners.items()):
        for name, (gen, n) in runners.items():
            for _ in range(min(chunk, n - len(records[name]))):
                records[name].append(next(gen))
    return records


def hessian_step(loss_fn, params, opt):
    """One Adam step as a tracked training step takes it: H at θ_t (whose gradient the step
    uses), the step, and Adam's state after it. Returns (hessian, state)."""
    hessian = LossHessian(loss_fn, params)
    for p, g in zip(params.values(), hessian.unflatten(hessian.gradient)):
        p.grad = g.detach().clone()
    opt.step()
    return hessian, read_adam_state(opt)


def reference_values(fresh, steps: int) -> dict[str, list[float]]:
    """The tracked trajectory's losses and dense λ_max(Ĥ) at each of its first ``steps``
    steps (untimed; the step as in the timed runs, so the trajectory is the same)."""
    ps, o, lf = fresh()
    out = {"losses": [], "lambda_max_pre": []}
    for _ in range(steps):
        hessian, state = hessian_step(lf, ps, o)
        out["losses"].append(float(hessian.loss))
        out["lambda_max_pre"].append(dense_top(hessian, state.preconditioner, state.c))
    return out


def pass_costs(config: RunConfig, repeats: int = 200) -> dict:
    """Median time (ms) of the passes a step is made of, at the initial parameters; the
    engine's first round is three products (H D g and a block of two)."""
    model, loss_fn = build_problem(config)
    passes = pass_costs_at(loss_fn, dict(model.named_parameters()), config.device, repeats, 3)
    passes["three_hvps_batched"] = passes.pop("first_round")
    return passes


# ---- 3. every chapter model -----------------------------------------------------------------

def model_costs(name: str, device: str, warmup: int, tracked_steps: int, tol: float,
                repeats: int) -> dict:
    """The engine on one chapter model at its chapter settings (tracking interval included),
    deciding the side of 2/η (its ``threshold``; :mod:`utils.curvature.engine`).

    After ``warmup`` plain steps, a window of ``tracked_steps`` tracked steps: every step is
    timed (the plain ones give the plain step's median; tracked every step, as chapter 2 is, the
    plain step is timed over as many steps after the window). The window is then replayed, untimed,
    and every tracked step's λ_max(Ĥ) is solved cold by ``eigsh`` (tol 1e-10). The floor of a
    tracked step is what it cannot do without, each pass timed alone at the window's end: the
    plain step, less its gradient, plus the gradient with its graph and one batched pass of
    the first round's products (H D g and the block).
    """
    config = model_config(name, device)
    chapter = MODELS[name]
    every = config.track_every

    def trajectory():
        model, loss_fn = build_problem(config)
        params = dict(model.named_parameters())
        opt = torch.optim.Adam(params.values(), lr=config.lr,
                               betas=(config.beta1, config.beta2), eps=config.eps)
        return model, loss_fn, params, opt

    def plain_step(loss_fn, params, opt):
        with math_attention():
            grads = torch.autograd.grad(loss_fn(params), list(params.values()))
        for p, g in zip(params.values(), grads):
            p.grad = g
        opt.step()

    def window(measure):
        """Warm up, then run the window; ``measure(step, hessian, state)`` at tracked steps."""
        model, loss_fn, params, opt = trajectory()
        for _ in range(warmup):
            plain_step(loss_fn, params, opt)
        plain_ms = []

        def timed_plain_step():
            _sync(device)
            a = time.perf_counter()
            plain_step(loss_fn, params, opt)
            _sync(device)
            plain_ms.append(1e3 * (time.perf_counter() - a))

        for step in range(warmup + 1, warmup + tracked_steps * every + 1):
            if step % every:
                timed_plain_step()
            else:
                _sync(device)
                a = time.perf_counter()
                hessian, state = hessian_step(loss_fn, params, opt)
                measure(step, hessian, state, a)
        for _ in range(0 if plain_ms else tracked_steps):   # tracked every step: time plain
            timed_plain_step()                               # steps after the window
        return plain_ms, (loss_fn, params, opt)

    engine = TrackingEngine(tol=tol)
    threshold = 2 / config.lr   # the window's η is constant (no schedule in the benchmark)
    timed = []

    def ours(step, hessian, state, started):
        out = engine.step(single_model(hessian), hessian.gradient[None],
                          state.preconditioner[None], state.c, threshold=threshold)
        _sync(device)
        timed.append((1e3 * (time.perf_counter() - started), out.lambda_max_pre.item(),
                      out.hvps, bool(out.converged), float(hessian.loss), out.side_pre[0],
                      out.rounds))

    plain_ms, (loss_fn, params, opt) = window(ours)
    reference = []

    def cold(step, hessian, state, started):
        op = linear_operator(PreconditionedHessian(hessian, state.preconditioner, state.c))
        v0 = np.random.default_rng(step).standard_normal(op.shape[0])
        top2 = eigsh(op, k=2, which="LA", tol=1e-10, v0=v0, maxiter=10_000,
                     return_eigenvectors=False)
        reference.append((max(top2), float(hessian.loss), min(top2) / max(top2)))

    window(cold)
    if [r[1] for r in reference] != [t[4] for t in timed]:
        raise RuntimeError(f"{chapter}: the replay left the timed trajectory")
    ms, values, hvps, certified, _, sides, rounds = zip(*timed)
    errors = [abs(v - r[0]) / abs(r[0]) for v, r in zip(values, reference)]
    near = [abs(r[0] - threshold) <= engine.zone * threshold for r in reference]
    plain = statistics.median(plain_ms)
    # at most about 2 s of plain steps' worth of repeats per pass on the dearer models
    repeats = max(3, min(repeats, round(2000 / max(plain, 1e-3))))
    passes = pass_costs_at(loss_fn, params, device, repeats, 1 + engine.block)
    floor = plain - passes["gradient"] + passes["graph_for_hvps"] + passes["first_round"]
    tracked = statistics.median(ms)
    return {"chapter": chapter, "n_params": passes["n_params"], "dtype": config.dtype,
            "track_every": every,
            "warmup_steps": warmup, "tracked_steps": len(ms),
            "hvps_per_tracked_step": float(np.mean(hvps)),
            "rounds_per_tracked_step": float(np.mean(rounds)),
            "decided_in_first_round": float(np.mean([r == 1 for r in rounds])),
            "max_rel_error_lambda_max": max(errors),
            "uncertified_steps": int(sum(not c for c in certified)),
            "threshold": threshold,
            "wrong_side_decisions": int(sum((v > threshold) != (r[0] > threshold)
                                            for v, r in zip(values, reference))),
            "zone_steps_near": int(sum(near)),
            "zone_max_error_near": max([e for e, z in zip(errors, near) if z], default=None),
            "zone_max_error_far": max([e for e, z in zip(errors, near) if not z], default=None),
            "zone_tol": list(engine.zone_tol),
            "certificates": {k: sides.count(k) for k in sorted(set(sides))},
            "lambda2_over_lambda1_median": float(np.median([r[2] for r in reference])),
            "tracked_ms": tracked, "plain_ms": plain, "floor_ms": floor,
            "tracked_over_plain": tracked / plain, "tracked_over_floor": tracked / floor,
            "pass_ms": passes}


def pass_costs_at(loss_fn, params, device, repeats, products) -> dict:
    """Median time (ms) of a gradient, of a gradient with its graph, of one Hessian-vector
    product and of one batched pass of ``products`` of them (``first_round``), at ``params``."""
    hessian = LossHessian(loss_fn, params)
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(products, hessian.n, generator=gen, dtype=torch.float64).to(hessian.gradient)

    def gradient():
        with math_attention():
            torch.autograd.grad(loss_fn(params), list(params.values()))

    def median_ms(fn):
        fn()
        times = []
        for _ in range(repeats):
            _sync(device)
            a = time.perf_counter()
            fn()
            _sync(device)
            times.append(time.perf_counter() - a)
        return 1e3 * statistics.median(times)

    return {"gradient": median_ms(gradient),
            "graph_for_hvps": median_ms(lambda: LossHessian(loss_fn, params)),
            "one_hvp": median_ms(lambda: hessian.matvec(v[0])),
            "first_round": median_ms(lambda: hessian.matmat(v)), "n_params": hessian.n}


# ---- 2. seeds batched ----------------------------------------------------------------------

def seed_batching(config: RunConfig, steps: int, ks=(1, 4, 16, 64)):
    """Wall time of K seeds in one batched run (tracked every step) over that of one seed."""
    cfg = replace(config, steps=steps, track_every=1,
                  measure=("lambda_max_pre", "lambda_grad", "alignment", "decoupling"))
    run_seeds(replace(cfg, steps=5), [0])  # first-call costs (lazy initialisation) untimed
    seconds = {}
    for k in ks:
        _sync(config.device)
        a = time.perf_counter()
        run_seeds(cfg, list(range(k)))
        _sync(config.device)
        seconds[k] = time.perf_counter() - a
    return {str(k): {"seconds": s, "ratio_to_one_seed": s / seconds[ks[0]]}
            for k, s in seconds.items()}


# ---- 4. every core ------------------------------------------------------------------------

def seeds_per_minute(config: RunConfig, steps: int, n_seeds: int, workers: int) -> dict:
    """Seeds per minute of ``n_seeds`` runs on ``workers`` Dask worker processes (seeds batched
    in tasks of ``utils.book.parallel.SEEDS_PER_TASK``, one torch thread each; cluster start and
    shutdown included) over those of one unbatched single-seed process
    (``utils.training.runs.run``, the faster of 1 and ``workers`` torch threads, median of three
    runs). Both at ``config``'s
    tracking interval and measurements, over ``steps`` steps."""
    from utils.book.parallel import run_seeds_parallel
    from utils.training.runs import run

    cfg = replace(config, steps=steps, progress=False)
    run(replace(cfg, steps=5))  # first-call costs (lazy initialisation) untimed
    single = {}
    for threads in sorted({1, workers}):
        times = []
        for _ in range(3):
            a = time.perf_counter()
            run(replace(cfg, threads=threads))
            times.append(time.perf_counter() - a)
        single[threads] = statistics.median(times)
    a = time.perf_counter()
    run_seeds_parallel(cfg, list(range(n_seeds)), workers=workers, progress=False)
    parallel = time.perf_counter() - a
    best = min(single.values())
    return {"steps": steps, "seeds": n_seeds, "workers": workers,
            "single_seed_seconds": {str(k): v for k, v in single.items()},
            "parallel_seconds": parallel, "seeds_per_minute": 60 * n_seeds / parallel,
            "single_seeds_per_minute": 60 / best, "ratio": n_seeds * best / parallel}


# ---- 6. the spike monitor ------------------------------------------------------------------

MONITOR_MODELS = ("mlp", "cnn", "transformer", "lm", "anchor")
"""The loops the monitor is timed on: three chapter models on their full batch, chapter 9's
language model and chapter 11's 8-layer anchor-function Transformer on mini-batches."""


def _monitor_problem(name: str, device: str):
    """(model, optimizer, loss_fn, batch_of(step)) of a monitored loop: a chapter model on its
    full batch, the chapter-9 language model on mini-batches of its generated corpus, or
    chapter 11's anchor Transformer (the paper's Figure 7 setting, scaled) on mini-batches of
    its sequences, drawn as its runs draw them."""
    from utils.training.lm import lm_loss
    from utils.studies.watch import WATCH, watch_problem

    if name == "lm":
        data, model, opt, _ = watch_problem(0)
        model.to(device)
        return model, opt, lm_loss, lambda step: data.batch(WATCH["batch_size"], step, device)
    if name == "anchor":
        from utils.studies.sustained import fig7_config
        from utils.training.losses import loss_for
        from utils.training.runs import build_model_for, minibatch_indices

        config = fig7_config(device=device)
        data = build_data(config)
        model = build_model_for(config, data)
        opt = torch.optim.Adam(model.parameters(), lr=config.lr,
                               betas=(config.beta1, config.beta2), eps=config.eps)
        loss = loss_for(data.info)

        def batch_of(step):
            idx = minibatch_indices(config, len(data), step)
            return data.inputs[idx], data.targets[idx]

        return model, opt, lambda m, b: loss(m(b[0]), b[1]), batch_of
    config = chapter_config(MODELS[name], device=device, progress=False)
    data = build_data(config)
    model, _ = build_problem(config)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    batch = (data.inputs, data.targets)
    return model, opt, lambda m, b: mse(m(b[0]), b[1]), lambda step: batch


def monitor_overhead(name: str, device: str, steps: int, every: int = 10, chunk: int = 20,
                     hvp: str = "auto"):
    """Wall time of ``steps`` steps of a loop with the monitor at ``every`` over the same loop
    without it (two copies of the same model trained side by side, interleaved in chunks), and
    the monitor's own account of its cost: ``monitor_own_ratio``, the monitored loop's time over
    that time less the monitor's own seconds (:meth:`~utils.monitor.SpikeMonitor.report`), and
    ``loop_slowdown``, the monitored loop's time outside the monitor over the plain loop's time
    (above 1 where the loop itself runs slower beside the monitor)."""
    from utils.monitor import SpikeMonitor

    def loop(monitored: bool):
        model, opt, loss_fn, batch_of = _monitor_problem(name, device)
        monitor = (SpikeMonitor(model, opt, loss_fn, every=every, hvp=hvp) if monitored
                   else None)
        step = 0
        while True:
            step += 1
            batch = batch_of(step)
            t0 = time.perf_counter()
            opt.zero_grad()
            loss_fn(model, batch).backward()
            if monitor is not None:
                monitor.observe(batch)
            opt.step()
            if monitor is not None:
                monitor.after_step()
            yield time.perf_counter() - t0, monitor

    records = interleaved({"plain": (loop(False), steps), "monitored": (loop(True), steps)},
                          chunk)
    plain = sum(t for t, _ in records["plain"])
    monitored = sum(t for t, _ in records["monitored"])
    report = records["monitored"][-1][1].report()
    # report() counts the wall time since the first observe(), which here includes the plain
    # loop's interleaved chunks; its monitor_seconds against the monitored loop's own time is
    # what report() says of a loop that runs alone
    own = monitored / (monitored - report["monitor_seconds"])
    return {"every": every, "steps": steps, "plain_ms_per_step": 1e3 * plain / steps,
            "monitored_ms_per_step": 1e3 * monitored / steps,
            "overhead_ratio": monitored / plain, "monitor_own_ratio": own,
            "loop_slowdown": (monitored - report["monitor_seconds"]) / plain,
            "hvp": report["hvp"]}


# ---- 5. chapters ---------------------------------------------------------------------------

def chapter_times():
    """Wall time of ``papermill`` on each chapter with its defaults (kernel start included)."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in chapter_names():
            a = time.perf_counter()
            subprocess.run([sys.executable, "-m", "papermill", f"notebooks/{name}.ipynb",
                            f"{tmp}/{name}.ipynb", "-k", "python3", "--cwd", "notebooks",
                            "-p", "output_dir", f"{tmp}/{name}", "--log-level", "ERROR"],
                           cwd=REPO_ROOT, check=True, capture_output=True)
            out[name] = time.perf_counter() - a
    return out


def per_model(text: str, option: str) -> dict[str, int]:
    """``"name:n,..."`` (the value of ``option``) as {name: n}; one bare number applies to every
    model of :data:`MODELS`."""
    text = text.strip()
    if not text:
        return {}
    if ":" not in text:
        return {name: int(text) for name in MODELS}
    out = {}
    for item in text.split(","):
        name, _, n = item.partition(":")
        if name not in MODELS:
            raise SystemExit(f"{option}: unknown model {name!r}; choose from {sorted(MODELS)}")
        out[name] = int(n)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1200, help="untimed steps before timing")
    parser.add_argument("--steps", type=int, default=300, help="timed steps (ours, plain)")
    parser.add_argument("--cold-steps", type=int, default=60, help="timed steps (cold methods)")
    parser.add_argument("--seed-steps", type=int, default=100)
    parser.add_argument("--seed-counts", default="1,4,16,64", help="K values, comma-separated")
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--repeats", type=int, default=200, help="timings of each single pass")
    parser.add_argument("--model-warmup", default="",
                        help="untimed steps before a chapter model's window, as name:steps,... "
                             "(default: MODEL_WINDOWS)")
    parser.add_argument("--model-tracked", default="",
                        help="tracked steps in a chapter model's window: one number for every "
                             "model, or name:steps,... (default: MODEL_WINDOWS)")
    parser.add_argument("--models", default=",".join(MODELS), help="chapter models to time")
    parser.add_argument("--parallel-seeds", type=int, default=64,
                        help="seeds run on every core for seeds_per_minute_ratio")
    parser.add_argument("--parallel-steps", type=int, default=1000,
                        help="steps of each of those seeds (chapter 1's model and interval)")
    parser.add_argument("--monitor-steps", type=int, default=400,
                        help="steps of each loop in the monitor's overhead (section 6; at 200 "
                             "one run gave 1.18 on the language model, three runs at 400 "
                             "gave 1.41-1.56)")
    parser.add_argument("--monitor-models", default=",".join(MONITOR_MODELS),
                        help="models of the monitor's overhead ('lm': the chapter-9 model, "
                             "'anchor': chapter 11's)")
    parser.add_argument("--chapters", action="store_true", help="also time every chapter")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    check_device(args.device)
    torch.set_num_threads(args.threads)
    config = chapter1_config(args.device)
    print(f"benchmarking on {args.device} with {args.threads} threads ...", file=sys.stderr)
    passes = pass_costs(config, args.repeats)
    cost = tracking_cost(config, args.warmup, args.steps, args.cold_steps, args.tol)
    seeds = seed_batching(config, args.seed_steps,
                          tuple(int(k) for k in args.seed_counts.split(",")))
    print("  seeds on every core ...", file=sys.stderr)
    per_minute = seeds_per_minute(chapter_config("01_v_decay", device=args.device),
                                  args.parallel_steps, args.parallel_seeds, os.cpu_count())
    names = [m for m in args.models.split(",") if m]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        parser.error(f"--models: unknown {unknown}; choose from {sorted(MODELS)}")
    warmups = per_model(args.model_warmup, "--model-warmup")
    tracked = per_model(args.model_tracked, "--model-tracked")
    models = {}
    for name in names:
        print(f"  chapter model {name} ...", file=sys.stderr)
        models[name] = model_costs(name, args.device, warmups.get(name, MODEL_WINDOWS[name][0]),
                                   tracked.get(name, MODEL_WINDOWS[name][1]), args.tol,
                                   args.repeats)
    monitor = {}
    for name in [m for m in args.monitor_models.split(",") if m]:
        print(f"  the monitor on {name} ...", file=sys.stderr)
        monitor[name] = monitor_overhead(name, args.device, args.monitor_steps)
    for name in [m for m in ("lm", "anchor") if m in monitor]:
        # the product that fits everywhere, on the same models
        monitor[f"{name}_finite_difference"] = monitor_overhead(
            name, args.device, args.monitor_steps, hvp="finite_difference")
    results = {
        "monitor_overhead": monitor["lm"]["overhead_ratio"] if "lm" in monitor else None,
        "monitor_overhead_finite_difference": (monitor["lm_finite_difference"]["overhead_ratio"]
                                               if "lm" in monitor else None),
        "monitor_overhead_anchor": (monitor["anchor"]["overhead_ratio"] if "anchor" in monitor
                                    else None),
        "monitor_overhead_anchor_finite_difference": (
            monitor["anchor_finite_difference"]["overhead_ratio"] if "anchor" in monitor
            else None),
        "monitor": monitor,
        "tracking_cost_ratio": cost["ours"]["cost_ratio"],
        "cold_eigsh_cost_ratio": cost["cold_eigsh"]["cost_ratio"],
        "cold_power_cost_ratio": cost["cold_power"]["cost_ratio"],
        "hvps_per_step": cost["ours"]["hvps_per_step"],
        "cold_eigsh_hvps_per_step": cost["cold_eigsh"]["hvps_per_step"],
        "cold_power_hvps_per_step": cost["cold_power"]["hvps_per_step"],
        "max_rel_error_lambda_max": cost["ours"]["max_rel_error_lambda_max"],
        "seed_batch_ratio_16": seeds["16"]["ratio_to_one_seed"] if "16" in seeds else None,
        "seeds_per_minute_ratio": per_minute["ratio"],
        "models": models,
        "seeds_per_minute": per_minute,
        "machine": machine(args.threads, args.device),
        "model": {"chapter": "01_v_decay", **{k: v for k, v in vars(config).items()
                                              if k in ("model", "model_kwargs", "data",
                                                       "data_kwargs", "lr", "dtype")}},
        "settings": {k: getattr(args, k) for k in ("warmup", "steps", "cold_steps",
                                                   "seed_steps", "tol", "model_warmup",
                                                   "model_tracked", "parallel_seeds",
                                                   "parallel_steps")},
        "tracking": cost,
        "pass_ms": passes,
        "seed_batching": seeds,
        "hessian_eigenthings": (
            f"hessian-eigenthings {hessian_eigenthings.__version__}: lanczos(k=1, which='LA', "
            f"max_iter={EIGENTHINGS_STEPS}) on the same operator Ĥ, cold (random start) each step"
            if hessian_eigenthings is not None else
            "not measured: hessian-eigenthings is not installed (benchmarks/requirements.txt)"),
    }
    if args.chapters:
        results["chapter_seconds"] = chapter_times()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    table = pd.DataFrame({name: {"ms/step": r["ms_per_step"],
                                 "× plain step": r.get("cost_ratio", 1.0),
                                 "HVPs/step": r.get("hvps_per_step", 0.0),
                                 "max rel. error": r.get("max_rel_error_lambda_max", float("nan"))}
                          for name, r in cost.items()}).T
    print(table.to_string(float_format=lambda x: f"{x:.3g}"))
    print(pd.DataFrame(seeds).T.to_string(float_format=lambda x: f"{x:.3g}"))
    print(pd.DataFrame(models).T[["hvps_per_tracked_step", "max_rel_error_lambda_max",
                                  "uncertified_steps", "tracked_over_plain",
                                  "tracked_over_floor"]].to_string(float_format=lambda x: f"{x:.3g}"))
    print(pd.DataFrame(monitor).T.to_string(float_format=lambda x: f"{x:.3g}"))
    if args.chapters:
        print(pd.Series(results["chapter_seconds"], name="seconds").to_string())
    print(f"seeds per minute on {per_minute['workers']} worker processes: "
          f"{per_minute['ratio']:.2f}x one single-seed process")
    print(f"wrote {args.out}")


if __name__ == "__main__":  # Dask's local workers are spawned processes
    main()
