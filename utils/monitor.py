"""A spike monitor for anyone's PyTorch training loop.

    monitor = SpikeMonitor(model, optimizer, loss_fn, every=10, log_dir="runs/monitor")
    for batch in loader:
        optimizer.zero_grad(); loss_fn(model, batch).backward()
        monitor.observe(batch)            # after backward, before optimizer.step()
        optimizer.step()
        monitor.after_step()
    monitor.close()                       # prints and returns its cost

``loss_fn(model, batch)`` returns the scalar loss of ``batch``; the monitor calls it with a
stand-in for ``model`` that runs the same module on copies of its parameters (in float32 or
higher), so the loop's model, its gradients and its optimizer are never touched. It works with
``torch.optim.Adam`` and ``torch.optim.AdamW`` (decoupled weight decay leaves D alone), with
several parameter groups that share betas and ε (η may differ: each coordinate's η is folded
into D, and the threshold is 2/η of the first group), on CPU and CUDA.

What it logs (one CSV row per step; TensorBoard scalars under ``monitor/``; the latest values
in a tqdm postfix when given the loop's bar):

* every step: ``secant``, c_{t−1} (g_t − g_{t−1})ᵀΔθ / (Δθᵀ D_{t−1}⁻¹ Δθ), the free estimate
  of the preconditioned curvature along the last update (:func:`utils.events.detectors.
  secant_curvature`; with mini-batches g_t and g_{t−1} come from different batches);
* every ``every`` steps, on the batch it is given or on ``eval_batch``: ``lambda_grad_pre_a``,
  the paper's λ_grad(Ĥ_t) = c_t gᵀ D H g/‖g‖² (form A), and ``lambda_grad_pre``, form (B)
  c_t (Dg)ᵀH(Dg)/(gᵀDg), both from one Hessian-vector product;
  optionally ``lambda_max_pre`` (λ_max(Ĥ_t), warm-started by the book's engine); the g²/v
  summaries (:func:`utils.curvature.adam_state.g2_over_v_statistics`: the median and 10 % / 90 %
  quantiles of g²/v_{t−1} and the share below 1e-2, over a fixed sample of
  :data:`STATS_SAMPLE` coordinates on larger models); ``update_rms/<name>``, the RMS
  of each tensor's update; and ``hvp``, which product the row used;
* ``threshold`` (2/η at that step) and ``alarm``, by the rule :class:`AlarmRule` names
  (default: the paper's λ_grad(Ĥ), form A, above 2/η on one measurement).

D_t is Adam's preconditioner for the update about to be taken, 1/(sqrt(v̂_t) + ε) with
v_t = β2 v_{t−1} + (1 − β2) g_t², from the optimizer's own v_{t−1} and the gradient in ``.grad``
(known before the step; ``tests/test_monitor.py`` checks it against the state Adam holds after
the step).

Where a double backward pass does not fit (``hvp="finite_difference"``, or an out-of-memory
error or a kernel without double backward caught once with ``hvp="auto"``), the products are
central differences of gradients; the log says so once and every row records its product.
"""
from __future__ import annotations

import csv
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.func import functional_call

from utils.curvature.adam_state import g2_over_v_statistics, momentum_factor
from utils.curvature.preconditioned import curvatures_along_gradient
from utils.events.detectors import secant_curvature
from utils.curvature.hvp import LossHessian, flatten
from utils.validation import check_choice, check_number

MONITOR_HVPS = ("auto", "autograd", "finite_difference")
STATS_SAMPLE = 65_536
"""The most coordinates the g²/v summaries are taken over: a larger model's are taken over a
fixed random sample of this many (drawn once), which puts each quantile within about ±0.4 %
in rank (two standard errors) of the whole model's, at a small fraction of the cost of
selecting ranks among all its coordinates (16 ms of a 98-ms measured step on chapter 9's
0.8M-parameter model)."""
ALARM_SIGNALS = ("lambda_grad_pre_a", "lambda_grad_pre", "lambda_max_pre", "secant")
"""The columns an :class:`AlarmRule` may watch: λ_grad(Ĥ) in the paper's form (A) or in form
(B), λ_max(Ĥ) (with ``lambda_max=True``) and the secant estimate."""


@dataclass(frozen=True)
class AlarmRule:
    """An alarm when ``signal`` exceeds ``threshold`` × 2/η on ``sustain`` measurements in a
    row, raised at the last of them. The default, the paper's λ_grad(Ĥ) (form A) > 2/η on one
    measurement, is chapter 6's predictor on full-batch runs; the paper's rule for mini-batches
    sustains it (``sustain=3``: the minimum of three measurements in a row above 2/η)."""

    signal: str = "lambda_grad_pre_a"
    threshold: float = 1.0
    sustain: int = 1

    def __post_init__(self):
        check_choice("alarm signal", self.signal, ALARM_SIGNALS)
        check_number("alarm threshold", self.threshold, low=0, low_open=True)
        check_number("alarm sustain", self.sustain, low=1, integer=True)


class _StandIn:
    """Calls ``module`` with the parameters and buffers of ``tensors`` (functional_call), so
    that ``loss_fn(stand_in, batch)`` is the loss at those tensors."""

    def __init__(self, module, tensors, dtype):
        self.module, self.tensors, self.dtype = module, tensors, dtype

    def __call__(self, *args, **kwargs):
        cast = lambda x: x.to(self.dtype) if torch.is_tensor(x) and x.is_floating_point() else x
        return functional_call(self.module, self.tensors, tuple(map(cast, args)),
                               {k: cast(v) for k, v in kwargs.items()})


def _is_oom_or_no_double_backward(err: BaseException) -> bool:
    text = str(err).lower()
    return (isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in text
            or ("derivative" in text and "not implemented" in text)
            or "double backward" in text)


class SpikeMonitor:
    """Watches a training loop for the mechanism's warning signs (module docstring).

    Parameters
    ----------
    model: the ``nn.Module`` being trained (at least one trainable parameter).
    optimizer: its ``torch.optim.Adam`` or ``torch.optim.AdamW`` (groups sharing betas and ε;
        no amsgrad, no maximize).
    loss_fn: ``loss_fn(model, batch)`` -> a scalar tensor.
    every: measure the curvature every this many steps (≥ 1).
    eval_batch: a fixed batch to measure on (default: each measured step's own batch).
    lambda_max: also measure λ_max(Ĥ) with the warm-started engine (more products).
    alarm: the :class:`AlarmRule`.
    csv_path, log_dir: where to write the CSV and the TensorBoard events (None: not written).
    progress: the loop's tqdm bar, to show the latest values in its postfix.
    hvp: ``"auto"`` (double backward, falling back to finite differences once if it fails),
        ``"autograd"`` or ``"finite_difference"``.
    dtype: the floating type of the curvature computation (at least float32).
    eig_tol: relative tolerance of λ_max(Ĥ).
    """

    def __init__(self, model, optimizer, loss_fn, *, every: int = 10, eval_batch=None,
                 lambda_max: bool = False, alarm: AlarmRule | None = None, csv_path=None,
                 log_dir=None, progress=None, hvp: str = "auto", dtype=None,
                 eig_tol: float = 1e-2):
        if not isinstance(model, torch.nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
            raise ValueError(f"optimizer must be a torch.optim.Adam or torch.optim.AdamW, got "
                             f"{type(optimizer).__name__}")
        groups = optimizer.param_groups
        if len({(tuple(g["betas"]), g["eps"]) for g in groups}) != 1:
            raise ValueError("optimizer: every parameter group must share betas and eps, got "
                             f"{[(tuple(g['betas']), g['eps']) for g in groups]}")
        if any(g.get("amsgrad") or g.get("maximize") for g in groups):
            raise ValueError("optimizer: amsgrad and maximize are not supported")
        if not callable(loss_fn):
            raise ValueError("loss_fn must be callable as loss_fn(model, batch)")
        check_number("every", every, low=1, integer=True)
        check_choice("hvp", hvp, MONITOR_HVPS)
        check_number("eig_tol", eig_tol, low=0, low_open=True, high=1, high_open=True)
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        if not self.names:
            raise ValueError("model has no trainable parameter")
        by_id = {id(p): n for n, p in model.named_parameters()}
        self.params = [p for g in groups for p in g["params"] if p.requires_grad]
        missing = set(self.names) - {by_id.get(id(p)) for p in self.params}
        if missing:
            raise ValueError(f"optimizer does not hold the model's parameters {sorted(missing)}")
        self.names = [by_id[id(p)] for p in self.params]   # in the optimizer's order
        first = self.params[0].dtype
        self.dtype = dtype or (first if first in (torch.float32, torch.float64) else torch.float32)
        if self.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {self.dtype}")
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.every, self.eval_batch, self.lambda_max = int(every), eval_batch, lambda_max
        self.alarm_rule = alarm or AlarmRule()
        self.hvp = "autograd" if hvp == "auto" else hvp
        self.fallback = hvp == "auto"
        self.eig_tol = eig_tol
        self.progress = progress
        self.step = 0
        self.rows: list[dict] = []
        self.notes: list[str] = []
        self._above = 0
        self._prev = None          # (g, θ) flat of the last observed step
        self._updated = False      # an update was taken since the last observe()
        self._pending = None
        self._engine = None
        self._sample = None        # the coordinates of the g²/v summaries (_stats_sample)
        self._buffers: dict[str, torch.Tensor] = {}   # flat vectors reused (_flat)
        self.seconds = 0.0
        self._t_start = None
        self.columns = (["step", "loss", "secant", "threshold", "lambda_grad_pre",
                         "lambda_grad_pre_a"] + (["lambda_max_pre"] if lambda_max else [])
                        + ["g2_over_v_median", "g2_over_v_q10", "g2_over_v_q90",
                           "g2_over_v_frac_small", "hvp", "hvps", "alarm"]
                        + [f"update_rms/{n}" for n in self.names])
        self._csv = self._writer = None
        if csv_path is not None:
            Path(csv_path).parent.mkdir(parents=True, exist_ok=True)
            self._csv = open(csv_path, "w", newline="")
            self._writer = csv.DictWriter(self._csv, fieldnames=self.columns, restval="")
            self._writer.writeheader()
        self._tb = None
        if log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(log_dir))
        if eval_batch is not None:
            self._check_loss(eval_batch)

    # ------------------------------------------------------------------------- helpers

    def _check_loss(self, batch) -> None:
        with torch.no_grad():
            loss = self.loss_fn(self._stand_in(self._copies()), batch)
        if not (torch.is_tensor(loss) and loss.numel() == 1 and loss.dim() == 0):
            shape = tuple(loss.shape) if torch.is_tensor(loss) else type(loss).__name__
            raise ValueError(f"loss_fn must return a scalar tensor (shape ()), got {shape}")

    def _copies(self) -> dict:
        """The model's parameters and buffers as ``self.dtype`` tensors by name."""
        tensors = {n: b.detach().to(self.dtype) for n, b in self.model.named_buffers()}
        tensors.update({n: p.detach().to(self.dtype) for n, p in zip(self.names, self.params)})
        return tensors

    def _stand_in(self, tensors):
        return _StandIn(self.model, tensors, self.dtype)

    def _flat_grad(self, key: str | None = None) -> torch.Tensor:
        return self._flat([torch.zeros_like(p) if p.grad is None else p.grad.detach()
                           for p in self.params], key)

    def _flat(self, tensors, key: str | None = None) -> torch.Tensor:
        """``tensors`` concatenated into one flat ``self.dtype`` vector: into the buffer ``key``,
        reused from step to step (a fresh multi-megabyte vector at every step costs the
        allocator's page faults), or a new tensor when ``key`` is None."""
        if key is None:
            return flatten(tensors).to(self.dtype)
        parts = [t.detach().reshape(-1) for t in tensors]
        buf = self._buffer(key, sum(p.numel() for p in parts), parts[0].device)
        if all(p.dtype == self.dtype for p in parts):
            torch.cat(parts, out=buf)
        else:
            buf.copy_(torch.cat(parts))
        return buf

    def _buffer(self, key: str, n: int, device) -> torch.Tensor:
        """The reused flat ``self.dtype`` buffer ``key`` of ``n`` entries on ``device``."""
        buf = self._buffers.get(key)
        if buf is None or buf.numel() != n or buf.device != device:
            buf = self._buffers[key] = torch.empty(n, dtype=self.dtype, device=device)
        return buf

    def _hyper(self) -> tuple[float, float, float]:
        group = self.optimizer.param_groups[0]
        beta1, beta2 = group["betas"]
        return float(beta1), float(beta2), float(group["eps"])

    def _lr_scale(self) -> torch.Tensor | None:
        """Each coordinate's η over the first group's, flat: folded into D, so that one
        threshold 2/η serves every group (None when every group has the same η)."""
        lrs = self.lr_now()
        if len(set(lrs)) == 1:
            return None
        return torch.cat([torch.full((p.numel(),), lr / lrs[0], dtype=self.dtype,
                                     device=p.device) for p, lr in zip(self.params, lrs)])

    def lr_now(self) -> list[float]:
        """Each parameter's current η (schedulers change it)."""
        out = []
        for g in self.optimizer.param_groups:
            out += [float(g["lr"])] * sum(1 for p in g["params"] if p.requires_grad)
        return out

    def preconditioner(self, g: torch.Tensor, state=None) -> tuple:
        """(D_t, c_t, t, v_{t−1}, v_t) for the update about to be taken with gradient ``g``
        (flat, shape (n,)): v_t = β2 v_{t−1} + (1 − β2) g², v̂_t = v_t/(1 − β2^t),
        D_t = 1/(sqrt(v̂_t) + ε), from the optimizer's v_{t−1} (zero before its first step).
        ``state``: (v_{t−1}, t − 1) as :meth:`_state` returns them, if already read."""
        _, beta2, _ = self._hyper()
        v_prev, t = state or self._state(key=None)
        t += 1
        v = beta2 * v_prev + (1 - beta2) * g * g
        d, c = self._d_and_c(v, t)
        return d, c, t, v_prev, v

    def _state(self, key: str | None = "v") -> tuple[torch.Tensor, int]:
        """(v, t): the optimizer's v after its last update (zero before the first), flat in
        ``self.dtype`` (in the reused buffer ``key``; None: a new tensor), and that update's
        step t (0 before the first)."""
        states = [self.optimizer.state.get(p, {}) for p in self.params]
        t = int(states[0]["step"]) if "step" in states[0] else 0
        v = self._flat([s["exp_avg_sq"] if "exp_avg_sq" in s else torch.zeros_like(p)
                        for s, p in zip(states, self.params)], key)
        return v, t

    def _inverse_d(self, v: torch.Tensor, t: int, out=None,
                   scaled: bool = True) -> tuple[torch.Tensor, float]:
        """(D_t⁻¹ = sqrt(v_t/(1 − β2^t)) + ε, and c_t) from v_t (flat) at step t, in three
        passes over v (into ``out`` if given); ``scaled``: with each coordinate's η folded in
        as in :meth:`_lr_scale`."""
        beta1, beta2, eps = self._hyper()
        d_inv = torch.mul(v, 1.0 / (1 - beta2 ** t), out=out).sqrt_().add_(eps)
        scale = self._lr_scale() if scaled else None
        return (d_inv if scale is None else d_inv.div_(scale)), momentum_factor(beta1, t)

    def _d_and_c(self, v: torch.Tensor, t: int) -> tuple[torch.Tensor, float]:
        """(D_t, c_t) from v_t (flat) at step t: D_t = 1/(sqrt(v_t/(1 − β2^t)) + ε)."""
        d_inv, c = self._inverse_d(v, t, scaled=False)
        return d_inv.reciprocal_(), c

    # --------------------------------------------------------------------------- steps

    def observe(self, batch=None, loss=None) -> dict:
        """Call after ``loss.backward()``, before ``optimizer.step()``: the secant (every step)
        and, every ``every`` steps, the curvature on ``batch`` (or ``eval_batch``). ``loss``:
        the loop's loss, logged if given. Returns the step's row so far."""
        tick = time.perf_counter()
        self._t_start = self._t_start or tick
        self.step += 1
        if self.step == 1 and self.eval_batch is None and batch is not None:
            self._check_loss(batch)   # before the loop's first update
        side = self.step % 2     # g and θ alternate between two buffers: the last step's stay
        g = self._flat_grad(f"g{side}")
        theta = self._flat(self.params, f"theta{side}")
        threshold = 2.0 / self.lr_now()[0]
        row = {"step": self.step, "threshold": threshold,
               "loss": float(loss.detach() if torch.is_tensor(loss) else loss)
               if loss is not None else math.nan, "secant": math.nan}
        state = None
        if self._prev is not None and self._updated:
            # the last update's D⁻¹ and c, from the state the optimizer holds until the next
            # update (the v read here also serves a measured step's D_t)
            state = self._state()
        if state is not None and state[1] > 0:
            g_prev, theta_prev = self._prev
            work = [self._buffer(k, len(g), g.device) for k in ("w0", "w1", "w2")]
            d_inv, c_prev = self._inverse_d(*state, out=work[0])
            row["secant"] = secant_curvature(torch.sub(g, g_prev, out=work[1]),
                                             torch.sub(theta, theta_prev, out=work[2]), d_inv,
                                             c_prev, inverse=True)
        if self.step % self.every == 0:
            measured = self.eval_batch if self.eval_batch is not None else batch
            if measured is None:
                raise ValueError("batch: give observe() the step's batch, or the monitor an "
                                 "eval_batch")
            d, c, _, v_prev, _ = self.preconditioner(g, state)
            scale = self._lr_scale()
            row.update(self._curvature(measured, d if scale is None else d * scale, c, g))
            row.update(g2_over_v_statistics(*self._stats_sample(g, v_prev)))
            self._pending = theta
        self._updated = False
        self._prev = (g, theta)
        self._row = row
        self.seconds += time.perf_counter() - tick
        return row

    def _curvature(self, batch, d, c, g) -> dict:
        """λ_grad(Ĥ) (and λ_max(Ĥ)) at the model's θ on ``batch`` with D = ``d``, c = ``c``;
        ``g`` is the loop's gradient, flat."""
        buffers = {n: b.detach().to(self.dtype) for n, b in self.model.named_buffers()}

        def loss_of(params):
            return self.loss_fn(self._stand_in({**buffers, **params}), batch)

        start = {n: p.detach().to(self.dtype) for n, p in zip(self.names, self.params)}
        while True:
            try:
                # finite differences need no graph: the loop's gradient (on this batch, in this
                # dtype) saves the gradient pass; λ_grad(Ĥ) does not change with its scale
                known = (g if self.hvp == "finite_difference" and self.eval_batch is None
                         and self.params[0].dtype == self.dtype else None)
                hessian = LossHessian(loss_of, start, method=self.hvp, gradient=known)
                out = self._products(hessian, d, c)
                break
            except (RuntimeError, NotImplementedError) as err:
                if not (self.fallback and self.hvp == "autograd"
                        and _is_oom_or_no_double_backward(err)):
                    raise
                self.hvp = "finite_difference"
                note = (f"step {self.step}: the double backward pass failed ({type(err).__name__}:"
                        f" {str(err)[:120]}); Hessian-vector products are finite differences "
                        "of gradients from now on")
                self.notes.append(note)
                warnings.warn(note, RuntimeWarning, stacklevel=3)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
        out["hvp"] = self.hvp
        out["hvps"] = hessian.n_hvps
        return out

    def _products(self, hessian, d, c) -> dict:
        g = hessian.gradient
        if self.lambda_max:
            from utils.curvature.engine import TrackingEngine, single_model

            if self._engine is None:
                self._engine = TrackingEngine(tol=self.eig_tol)
            s = self._engine.step(single_model(hessian), g[None], d[None], c)
            return {"lambda_max_pre": float(s.lambda_max_pre[0]),
                    "lambda_grad_pre": float(s.lambda_grad_pre[0]),
                    "lambda_grad_pre_a": float(s.lambda_grad_pre_a[0])}
        dg = d * g
        values = curvatures_along_gradient(g, dg, None, hessian.matvec(dg), c)
        return {"lambda_grad_pre": float(values["lambda_grad_pre"]),
                "lambda_grad_pre_a": float(values["lambda_grad_pre_a"])}

    def after_step(self) -> dict:
        """Call after ``optimizer.step()``: reads D_t from the optimizer for the next secant,
        adds the update RMS on measured steps, decides the alarm, and logs the row."""
        tick = time.perf_counter()
        row = self._row
        self._updated = True
        if self._pending is not None:
            theta_new = flatten([p.detach() for p in self.params]).to(self.dtype)
            start = 0
            for name, p in zip(self.names, self.params):
                n = p.numel()
                du = theta_new[start:start + n] - self._pending[start:start + n]
                row[f"update_rms/{name}"] = float(du.pow(2).mean().sqrt())
                start += n
            self._pending = None
        value = row.get(self.alarm_rule.signal, math.nan)
        if self.alarm_rule.signal == "secant" or self.step % self.every == 0:
            above = value == value and value > self.alarm_rule.threshold * row["threshold"]
            self._above = self._above + 1 if above else 0
        row["alarm"] = self._above >= self.alarm_rule.sustain
        self.rows.append(row)
        self._log(row)
        self.seconds += time.perf_counter() - tick
        return row

    def _stats_sample(self, g: torch.Tensor, v_prev: torch.Tensor) -> tuple:
        """(g, v_{t−1}) on the coordinates the g²/v summaries are taken over: all of them up
        to :data:`STATS_SAMPLE`, else a fixed sample of that many, drawn once (seed 0)."""
        if len(g) <= STATS_SAMPLE:
            return g, v_prev
        if self._sample is None or self._sample.device != g.device:
            gen = torch.Generator().manual_seed(0)
            self._sample = torch.randperm(len(g), generator=gen)[:STATS_SAMPLE].sort().values
            self._sample = self._sample.to(g.device)
        return g[self._sample], v_prev[self._sample]

    def _log(self, row: dict) -> None:
        if self._writer is not None:
            self._writer.writerow({k: row.get(k, "") for k in self.columns})
            self._csv.flush()
        if self._tb is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float, bool)) and (
                        isinstance(value, bool) or math.isfinite(value)):
                    self._tb.add_scalar(f"monitor/{key}", float(value), row["step"])
        if self.progress is not None and self.step % self.every == 0:
            lam = row.get("lambda_grad_pre_a", math.nan)
            self.progress.set_postfix({"λgrad·η/2": f"{lam / row['threshold']:.2f}",
                                       "alarm": bool(row["alarm"])}, refresh=False)

    def report(self) -> dict:
        """The monitor's own cost: its seconds (in observe() and after_step()), the loop's
        seconds without it, and their ratio (wall time of the loop with the monitor over the
        loop alone). The loop's seconds are the wall time since the first observe() less the
        monitor's: whatever else the process does meanwhile counts as the loop's (two loops
        interleaved in one process understate the ratio), and a loop that itself runs slower
        beside the monitor (caches, allocator) is not seen; ``make bench`` measures both side
        by side (``benchmarks/bench_tracking.py``, section 6)."""
        total = (time.perf_counter() - self._t_start) if self._t_start else 0.0
        loop = max(total - self.seconds, 1e-12)
        return {"steps": self.step, "monitor_seconds": self.seconds, "loop_seconds": loop,
                "overhead_ratio": (loop + self.seconds) / loop if total else math.nan,
                "hvp": self.hvp, "notes": list(self.notes),
                "alarms": int(sum(bool(r["alarm"]) for r in self.rows))}

    def close(self) -> dict:
        """Flush and close the CSV and TensorBoard files; return :meth:`report`."""
        if self._csv is not None:
            self._csv.close()
            self._csv = None
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
            self._tb = None
        return self.report()
