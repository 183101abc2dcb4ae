"""One training run: validated parameters in, a tidy per-step table and output files out.

    config = RunConfig(model="mlp", model_kwargs={"width": 64}, data="sin", lr=0.01, steps=2000)
    result = run(config)            # progress bar; stops cleanly on NaN/inf
    result.metrics                  # pandas DataFrame, one row per step
    result.save("out/", verdicts)   # metrics.csv + summary.json

The loss is the mean squared error over samples and outputs (:func:`utils.training.losses.mse`)
for every data set but the anchor-function tasks, whose loss is the cross-entropy (the data set's
``info["loss"]``, :func:`utils.training.losses.loss_for`); the quadratic model's output is its
loss. Training is full batch, and the
curvature is measured on that same full batch, unless ``batch_size`` is set: then each update
uses a mini-batch drawn for its step, while the ``loss`` column, the spikes and every curvature
quantity are measured on the full data set, the fixed evaluation batch (``batch_loss`` holds
the mini-batch's loss; ``grad_norm`` is the mini-batch gradient's norm, the one Adam used).
"""
from __future__ import annotations

import copy
import json
import math
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from utils import __version__
from utils.training.data import DATASETS, load_dataset
from utils.training.losses import loss_for
from utils.curvature.hvp import HVP_METHODS, LossHessian, loss_of_params, math_attention
from utils.training.models import MODELS, build_model
from utils.training.threads import set_threads
from utils.training.optimizers import (CLIPPERS, OPTIMIZERS, PRECONDITIONED, build_clipper,
                                       build_optimizer, state_reader)
from utils.events.spikes import SPIKE_FACTOR, SPIKE_WINDOW, Spike, detect_events, float_floor
from utils.curvature.preconditioned import gradient_curvatures
from utils.curvature.tracker import (MEASUREMENTS, TRACKER_SOLVERS, CurvatureTracker,
                                    uncertified_steps)
from utils.validation import check_adam_hyperparameters, check_choice, check_number, resolve_dtype


@dataclass
class RunConfig:
    """Every knob of a run. Units: ``lr`` is η; steps count optimizer updates (t = 1..steps).

    ``track_every`` = k measures the curvature at steps k, 2k, ... (0: never);
    ``grad_every`` = j > 0 also measures λ_grad(Ĥ) (forms A and B, one Hessian-vector product)
    at the steps j, 2j, ... in between, where the eigenvalues are not solved (0: only at tracked
    steps; it needs ``"lambda_grad"`` in ``measure``). ``data`` is
    ignored by the quadratic model. ``threads`` is passed to ``torch.set_num_threads``, capped
    by ``ADAM_SPIKES_MAX_THREADS`` (:mod:`utils.training.threads`).
    ``spike_factor``, ``spike_window`` and ``spike_floor`` are the book's one event definition
    (:mod:`utils.events.spikes`); ``spike_floor`` is relative to the first loss, and None means the
    float floor of ``dtype`` (:func:`utils.events.spikes.float_floor`).
    ``device`` is where the model, the data and every curvature computation live ("cpu",
    "cuda", "cuda:1", ...). ``batch_size`` = B > 0 trains on B samples per step, drawn without
    replacement under (seed, step) (:func:`minibatch`); 0 is full batch. ``optimizer`` names
    ``torch.optim.Adam`` (``"adam"``), ``torch.optim.SGD`` (``"gd"``) or a library's optimizer,
    and ``clip`` a library's gradient clipper applied before each step
    (:mod:`utils.training.optimizers`). ``warmup`` = w > 0 warms η up linearly, η t / w at the
    steps t ≤ w, and holds it at η after (:func:`lr_at`; the ``lr`` column then holds η_t, and
    the threshold of a step is 2/η_t, the constant 2/η after the warm-up); 0 is a constant η.
    ``schedule`` = "cosine" decays η after the warm-up along a half cosine to η/10 at the last
    step (nanoGPT's floor; the paper's Transformers use a warm-up then a cosine decay and give
    no floor); "constant" holds it. ``decay_steps`` = T > 0 puts the cosine's end at step T
    instead of the last step (so that the first steps of a longer run are a run of their own,
    as the stored prefixes train them; 0: T = ``steps``).
    ``eval_size`` = m > 0 (with ``batch_size``) measures the ``loss`` column, the spikes and
    every curvature quantity on the first m samples of the data set, a fixed evaluation batch,
    instead of on all of it (the samples are drawn i.i.d., so the first m are a random subset;
    0: the whole data set). ``grad_on_batch`` (with ``batch_size`` and λ_grad measured) also
    measures λ_grad(Ĥ) on the step's own mini-batch, at θ_t with Adam's v̂_t, into the columns
    ``batch_lambda_grad_pre_a`` and ``batch_lambda_grad_pre`` (one more Hessian-vector product).
    """

    model: str = "mlp"
    model_kwargs: dict = field(default_factory=dict)
    data: str = "sin"
    data_kwargs: dict = field(default_factory=dict)
    optimizer: str = "adam"
    lr: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    steps: int = 1000
    seed: int = 0
    track_every: int = 10
    grad_every: int = 0
    measure: tuple = MEASUREMENTS
    dtype: str = "float64"
    hvp_method: str = "autograd"
    eig_solver: str = "engine"
    eig_tol: float = 1e-3
    spike_factor: float = SPIKE_FACTOR
    spike_window: int = SPIKE_WINDOW
    spike_floor: float | None = None
    threads: int = 1
    device: str = "cpu"
    batch_size: int = 0
    clip: str = "none"
    warmup: int = 0
    schedule: str = "constant"
    decay_steps: int = 0
    eval_size: int = 0
    grad_on_batch: bool = False
    progress: bool = True

    def validate(self) -> "RunConfig":
        """Raise ``ValueError`` naming the first bad parameter; return self when all are fine."""
        check_choice("model", self.model, MODELS)
        if self.model != "quadratic":
            check_choice("data", self.data, DATASETS)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("clip", self.clip, CLIPPERS)
        check_adam_hyperparameters(self.lr, self.beta1, self.beta2, self.eps)
        check_number("steps", self.steps, low=1, integer=True)
        check_number("seed", self.seed, low=0, integer=True)
        check_number("track_every", self.track_every, low=0, integer=True)
        check_number("grad_every", self.grad_every, low=0, integer=True)
        if self.grad_every and "lambda_grad" not in self.measure:
            raise ValueError("grad_every: measuring λ_grad(Ĥ) between tracked steps needs "
                             f"'lambda_grad' in measure, got {tuple(self.measure)}")
        for m in self.measure:
            check_choice("measure", m, MEASUREMENTS)
        resolve_dtype(self.dtype)
        check_choice("hvp_method", self.hvp_method, HVP_METHODS)
        check_choice("eig_solver", self.eig_solver, TRACKER_SOLVERS)
        check_number("eig_tol", self.eig_tol, low=0, low_open=True, high=1, high_open=True)
        check_number("spike_factor", self.spike_factor, low=1, low_open=True)
        check_number("spike_window", self.spike_window, low=1, integer=True)
        if self.spike_floor is not None:
            check_number("spike_floor", self.spike_floor, low=0, high=1, high_open=True)
        check_number("threads", self.threads, low=1, integer=True)
        check_device(self.device)
        check_number("batch_size", self.batch_size, low=0, integer=True)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_number("warmup", self.warmup, low=0, integer=True)   # > steps: the start of a
        # longer run (its first steps, as the stored prefixes train them)
        check_number("decay_steps", self.decay_steps, low=0, integer=True)
        if self.decay_steps and self.decay_steps <= self.warmup:
            raise ValueError(f"decay_steps must exceed warmup={self.warmup} (or be 0), "
                             f"got {self.decay_steps}")
        check_number("eval_size", self.eval_size, low=0, integer=True)
        if self.batch_size and self.model == "quadratic":
            raise ValueError("batch_size: the quadratic model has no data to batch; use 0")
        if self.eval_size and not self.batch_size:
            raise ValueError("eval_size: a fixed evaluation batch goes with mini-batches "
                             "(batch_size > 0); use 0 for full-batch training")
        if self.grad_on_batch and not (self.batch_size and "lambda_grad" in self.measure):
            raise ValueError("grad_on_batch: λ_grad(Ĥ) on the step's batch needs batch_size > 0 "
                             f"and 'lambda_grad' in measure, got batch_size={self.batch_size}, "
                             f"measure={tuple(self.measure)}")
        return self


@dataclass(frozen=True)
class Checkpoint:
    """Where a run stood after update ``step``: copies of the parameters (name -> tensor) and
    of the optimizer's ``state_dict()``. :func:`run` continues from it bit for bit."""

    step: int
    params: dict
    optimizer: dict


SCHEDULES = ("constant", "cosine")
"""What η does after the warm-up (:func:`lr_at`)."""
COSINE_FLOOR = 0.1
"""The cosine schedule ends at this fraction of η."""


def lr_at(config: RunConfig, step: int) -> float:
    """η_t, the step size of update ``step`` (t = 1, 2, ...): η t / w during a warm-up of w =
    ``config.warmup`` steps; after it η ("constant"), or ("cosine") η_min + (η − η_min)
    (1 + cos(π (t − w) / (T − w))) / 2 with η_min = :data:`COSINE_FLOOR` η and T =
    ``config.decay_steps`` or else ``config.steps``, η at the warm-up's end and η_min from
    step T on."""
    w, lr = config.warmup, config.lr
    if w and step < w:
        return lr * step / w
    horizon = config.decay_steps or config.steps
    if config.schedule == "cosine" and horizon > w:
        floor = COSINE_FLOOR * lr
        progress = min(max(step - w, 0) / (horizon - w), 1.0)
        return floor + (lr - floor) * (1 + math.cos(math.pi * progress)) / 2
    return lr


def take_checkpoint(step: int, params: dict, opt) -> Checkpoint:
    """A :class:`Checkpoint` of ``params`` and ``opt`` after update ``step`` (deep copies)."""
    return Checkpoint(step, {n: p.detach().clone() for n, p in params.items()},
                      copy.deepcopy(opt.state_dict()))


@dataclass
class RunResult:
    """What a run leaves: the config, the per-step metrics, the spikes and the final model."""

    config: RunConfig
    metrics: pd.DataFrame
    spikes: list[Spike]
    diverged_at: int | None
    model: torch.nn.Module
    seconds: float
    spot_checks: list = field(default_factory=list)
    """The engine against a cold solve
    (:meth:`~utils.curvature.tracker.CurvatureTracker.spot_checks`)."""
    excluded: list = field(default_factory=list)
    """Loss events that do not count as spikes (at the float floor, or a rise below the factor)."""
    checkpoints: dict = field(default_factory=dict)
    """step -> :class:`Checkpoint`, for the steps asked of :func:`run` (0: before training)."""
    timings: dict = field(default_factory=dict)
    """Median wall time of a step in seconds, untracked (``plain_step_s``) and tracked
    (``tracked_step_s``, the measurements included), without the ``signals`` recorder's time."""

    @property
    def threshold(self) -> float:
        """The stability threshold 2/η on Ĥ."""
        return 2.0 / self.config.lr

    def instrument(self) -> dict:
        """How far the curvature measurements can be trusted: tracked steps, steps whose
        λ_max(Ĥ) is not certified (:data:`~utils.curvature.tracker.CERTIFICATES`), cold starts that
        found a larger eigenvalue than the warm block, and the spot checks against a cold solve
        with their largest relative error (None without checks)."""
        m = self.metrics
        cert = m["eig_certificate"].dropna() if "eig_certificate" in m else pd.Series(dtype=str)
        errors = [c["rel_error"] for c in self.spot_checks]
        return {"tracked_steps": int(len(cert)),
                "uncertified_steps": uncertified_steps(m),
                "cold_start_corrections": int(m["eig_corrected"].fillna(0).sum())
                if "eig_corrected" in m else 0,
                "spot_checks": len(errors),
                "spot_check_max_rel_error": max(errors) if errors else None}

    def summary(self, verdicts=None) -> dict:
        """Parameters, versions, spikes and verdicts as a JSON-ready dict."""
        return {
            "parameters": asdict(self.config),
            "library_version": __version__,
            "torch_version": torch.__version__,
            "python_version": platform.python_version(),
            "threshold_2_over_lr": self.threshold,
            "steps_run": int(self.metrics["step"].max()) if len(self.metrics) else 0,
            "diverged_at": self.diverged_at,
            "spikes": [asdict(s) for s in self.spikes],
            "excluded_events": [asdict(s) for s in self.excluded],
            "instrument": self.instrument(),
            "spot_checks": self.spot_checks,
            "verdicts": {v.name: v.to_dict() for v in (verdicts or [])},
        }

    def save(self, output_dir, verdicts=None) -> Path:
        """Write ``metrics.csv`` and ``summary.json`` into ``output_dir`` (created if needed)."""
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.metrics.to_csv(out / "metrics.csv", index=False)
        with open(out / "summary.json", "w") as fh:
            json.dump(_jsonable(self.summary(verdicts)), fh, indent=2)
        return out


def _jsonable(obj):
    """Replace non-finite floats by None (JSON has no NaN) and tuples by lists."""
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def check_device(device: str) -> str:
    """ValueError naming ``device`` unless torch can place tensors there."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:<index>', got {device!r}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} is not available: torch finds no CUDA GPU here")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:<index>', got {device!r}")
    return device


def build_data(config: RunConfig):
    """The full training batch of ``config`` (a :class:`~utils.training.data.Dataset` with its
    tensors on ``config.device``), or None for the quadratic, which has no data."""
    if config.model == "quadratic":
        return None
    data = load_dataset(config.data, **{"seed": config.seed, "dtype": config.dtype,
                                        **config.data_kwargs})
    data.inputs, data.targets = data.inputs.to(config.device), data.targets.to(config.device)
    return data


def build_model_for(config: RunConfig, data) -> torch.nn.Module:
    """The model of ``config``, sized to ``data``, initialised under ``config.seed``, on its device."""
    dtype = resolve_dtype(config.dtype)
    kwargs = dict(config.model_kwargs)
    if config.model == "mlp":
        kwargs.setdefault("in_dim", data.inputs.shape[1])
        kwargs.setdefault("out_dim", data.targets.shape[1])
    elif config.model in ("cnn", "lenet"):
        kwargs.setdefault("n_classes", data.targets.shape[1])
        if config.model == "lenet":
            kwargs.setdefault("in_channels", data.inputs.shape[1])
            kwargs.setdefault("image_size", data.inputs.shape[-1])
    elif config.model == "transformer":
        kwargs.setdefault("vocab_size", data.info["vocab_size"])
        kwargs.setdefault("seq_len", data.info["seq_len"])
        kwargs.setdefault("out_dim", data.targets.shape[1] if data.targets.dim() > 1
                          else data.info["n_classes"])
    return build_model(config.model, seed=config.seed, dtype=dtype, **kwargs).to(config.device)


def build_problem(config: RunConfig):
    """The model and the loss of θ on the full batch, or on the fixed evaluation batch of
    ``config.eval_size`` samples (a ``loss_of_params`` function)."""
    data = build_data(config)
    model = build_model_for(config, data)
    if data is None:
        return model, loss_of_params(model, lambda out, _y: out, None, None)
    m = config.eval_size or len(data)
    return model, loss_of_params(model, loss_for(data.info), data.inputs[:m], data.targets[:m])


def minibatch_indices(config: RunConfig, n: int, step: int) -> torch.Tensor:
    """The indices (``config.batch_size``,) into ``n`` samples of step ``step``'s mini-batch,
    drawn without replacement by a generator seeded with (seed, step), so that a resumed run
    draws the same batches; on ``config.device``."""
    gen = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
    return torch.randperm(n, generator=gen)[:config.batch_size].to(config.device)


def minibatch(config: RunConfig, model, data, step: int):
    """The loss of ``model``'s θ on step ``step``'s mini-batch (a ``loss_of_params`` function):
    the ``config.batch_size`` samples of ``data`` at :func:`minibatch_indices`."""
    idx = minibatch_indices(config, len(data), step)
    return loss_of_params(model, loss_for(data.info), data.inputs[idx], data.targets[idx])


def held_out_loss(config: RunConfig, model):
    """The loss of ``model``'s θ on the held-out ``test`` set of ``config``'s data set (a
    ``loss_of_params`` function), or None where it has none (no ``n_test`` in ``data_kwargs``:
    the data set is then not built a second time)."""
    if not config.data_kwargs.get("n_test"):
        return None
    test = build_data(config).test
    if test is None:
        return None
    inputs, targets = test.inputs.to(config.device), test.targets.to(config.device)
    return loss_of_params(model, loss_for(test.info), inputs, targets)


def parameter_count(config: RunConfig) -> int:
    """n, the number of trained parameters of ``config``'s model (built, not trained)."""
    model, _ = build_problem(config)
    return sum(p.numel() for p in model.parameters())


def step_gradient(loss_fn, params: dict, tracked: bool, method: str = "autograd"):
    """The loss and gradient of one full-batch step at θ, for both training loops (:func:`run`
    and :func:`utils.training.seeds.run_seeds`): through a :class:`~utils.curvature.hvp.
    LossHessian` when the step is ``tracked`` (its products then reuse the graph), else one
    backward pass under the same attention kernel, so tracking never changes the path.
    Returns (hessian or None, loss tensor, per-parameter gradients, None where unused)."""
    if tracked:
        hessian = LossHessian(loss_fn, params, method=method)
        return hessian, hessian.loss, hessian.unflatten(hessian.gradient)
    with math_attention():
        loss = loss_fn(params)
        return None, loss, torch.autograd.grad(loss, list(params.values()), allow_unused=True)


def load_gradients(params: dict, grads) -> None:
    """Set each parameter's ``.grad`` to a copy of its gradient (None stays None), as the
    optimizer's step reads them: the one update of both training loops."""
    for p, g in zip(params.values(), grads):
        p.grad = None if g is None else g.detach().clone()


def run(config: RunConfig, *, resume: Checkpoint | None = None, checkpoint_steps=(),
        checkpoint_every: int = 0, intervention=None, spot_checks: bool = True,
        signals=None) -> RunResult:
    """Train one model under ``config`` and measure it; see the module docstring.

    ``resume``: continue from a :class:`Checkpoint` (its step + 1 up to ``config.steps``),
    which reproduces the original run bit for bit. ``checkpoint_steps`` (and every
    ``checkpoint_every``-th step, and step 0) are kept in ``result.checkpoints``.
    ``intervention`` (:class:`utils.studies.interventions.Intervention`) changes the run at the
    start and after every optimizer step. ``spot_checks``: compare the engine with a cold solve.
    ``signals`` (:class:`utils.training.signals.SignalRecorder`) adds its per-step columns: it is
    called with the step's gradient before the update and with the loss of the update's batch after.
    """
    config.validate()
    check_number("checkpoint_every", checkpoint_every, low=0, integer=True)
    if resume is not None and config.clip != "none":
        raise ValueError(f"resume: a checkpoint does not hold the state of clip={config.clip!r}; "
                         "resume runs without a clipper")
    if resume is not None and not 0 <= resume.step < config.steps:
        raise ValueError(f"resume: the checkpoint's step must be in [0, steps={config.steps}), "
                         f"got {resume.step}")
    set_threads(config.threads)
    model, loss_fn = build_problem(config)
    data = build_data(config) if config.batch_size else None
    held_out = held_out_loss(config, model)
    if data is not None and max(config.batch_size, config.eval_size) > len(data):
        name = "batch_size" if config.batch_size > len(data) else "eval_size"
        raise ValueError(f"{name} must be in [0, {len(data)}] (the data set's size), "
                         f"got {getattr(config, name)}")
    params = dict(model.named_parameters())
    opt = build_optimizer(config, params.values())
    clipper = build_clipper(config)
    preconditioned = config.optimizer in PRECONDITIONED
    measure = (config.measure if preconditioned
               else [m for m in config.measure if m in ("lambda_max_H", "lambda_grad")])
    tracker = CurvatureTracker(measure, tol=config.eig_tol, solver=config.eig_solver,
                               seed=config.seed)
    first = 1
    if resume is not None:
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(resume.params[name])
        opt.load_state_dict(copy.deepcopy(resume.optimizer))
        first = resume.step + 1
    keep = set(checkpoint_steps) | ({0} if resume is None else set())
    checkpoints = {0: take_checkpoint(0, params, opt)} if 0 in keep else {}
    read_state = state_reader(config)
    if intervention is not None:
        opt = intervention.prepare(opt, params)
        read_state = intervention.state
    rows, diverged_at, times = [], None, {True: [], False: []}
    t0 = time.perf_counter()
    bar = tqdm(range(first, config.steps + 1), disable=not config.progress, mininterval=1.0,
               desc=f"{config.model} {config.optimizer} lr={config.lr:g}")
    for step in bar:
        t_step = time.perf_counter()
        tracked = config.track_every > 0 and step % config.track_every == 0
        grad_only = (not tracked and preconditioned and config.grad_every > 0
                     and step % config.grad_every == 0)
        hessian, update_loss = None, loss_fn
        if tracked or grad_only or data is None:
            hessian, loss, grad = step_gradient(loss_fn, params, tracked or grad_only,
                                                config.hvp_method)
        else:
            with math_attention(), torch.no_grad():
                loss = loss_fn(params)
        row = {"step": step, "loss": float(loss.detach())}
        t_eval = time.perf_counter()
        if held_out is not None:    # the held-out loss at θ_t, timed apart from the step
            with math_attention(), torch.no_grad():
                row["test_loss"] = float(held_out(params))
        t_eval = time.perf_counter() - t_eval
        batch_hessian = None
        if data is not None:
            update_loss = minibatch(config, model, data, step)
            if config.grad_on_batch and (tracked or grad_only):
                batch_hessian, batch_loss, grad = step_gradient(update_loss, params, True,
                                                                config.hvp_method)
            else:
                with math_attention():
                    batch_loss = update_loss(params)
                    grad = torch.autograd.grad(batch_loss, list(params.values()),
                                               allow_unused=True)
            row["batch_loss"] = float(batch_loss.detach())
        loss = row["loss"]
        grad_norm = math.sqrt(sum(float((g ** 2).sum()) for g in grad if g is not None))
        row["grad_norm"] = grad_norm
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            rows.append(row)
            diverged_at = step
            bar.set_postfix_str(f"diverged at step {step}", refresh=False)
            break
        v_prev = read_state(opt).v if tracked and preconditioned and step > 1 else None
        load_gradients(params, grad)
        t_signals = 0.0
        if signals is not None:
            t_signals = time.perf_counter()
            row.update(signals.before_update(step, params, grad, opt))
            t_signals = time.perf_counter() - t_signals
        if clipper is not None:
            clipper.step(model)
        if config.warmup or config.schedule != "constant":
            row["lr"] = lr_at(config, step)
            for group in opt.param_groups:
                group["lr"] = row["lr"]
        opt.step()
        if intervention is not None:
            intervention.after_step(opt)
        if signals is not None:
            t_after = time.perf_counter()
            row.update(signals.after_update(step, params, opt, update_loss))
            t_signals += time.perf_counter() - t_after
        if step in keep or (checkpoint_every and step % checkpoint_every == 0):
            checkpoints[step] = take_checkpoint(step, params, opt)
        if tracked:
            state = read_state(opt) if preconditioned else None
            row.update(tracker.measure(hessian, state, v_prev, step=step))
        elif grad_only:
            state = read_state(opt)
            row.update(gradient_curvatures(hessian, state.preconditioner, state.c,
                                           raw=False))
        if batch_hessian is not None and preconditioned:   # the step's batch, with v̂_t
            row.update({f"batch_{k}": v for k, v in gradient_curvatures(
                batch_hessian, state.preconditioner, state.c, raw=False).items()})
        times[tracked].append(time.perf_counter() - t_step - t_signals - t_eval)
        rows.append(row)
        if step % 100 == 0:
            bar.set_postfix(loss=f"{loss:.3g}", refresh=False)
    bar.close()
    metrics = pd.DataFrame(rows)
    spikes, excluded = find_events(metrics, config)
    checks = (tracker.spot_checks(loss_fn, tracker.spot_check_steps([s.start for s in spikes]))
              if spot_checks else [])
    if checks:
        errors = pd.Series({c["step"]: c["rel_error"] for c in checks})
        metrics["eig_spot_rel_error"] = metrics["step"].map(errors)
    timings = {f"{name}_step_s": statistics.median(times[key])
               for name, key in (("plain", False), ("tracked", True)) if times[key]}
    return RunResult(config, metrics, spikes, diverged_at, model, time.perf_counter() - t0,
                     checks, excluded, checkpoints, timings)


def find_events(metrics: pd.DataFrame, config: RunConfig, **overrides) -> tuple[list, list]:
    """The loss events of a run's ``metrics`` under the event definition of ``config``
    (``spike_factor``, ``spike_window``, ``spike_floor``; ``overrides`` replace them by the
    names ``factor``, ``window``, ``floor``): (counted spikes, excluded events)."""
    floor = float_floor(config.dtype) if config.spike_floor is None else config.spike_floor
    kwargs = dict(factor=config.spike_factor, window=config.spike_window, floor=floor)
    events = detect_events(metrics["loss"].to_numpy(), metrics["step"].to_numpy(),
                           **{**kwargs, **overrides})
    return [e for e in events if e.counted], [e for e in events if not e.counted]


REPO_ROOT = Path(__file__).resolve().parents[2]


def default_output_dir(chapter: str) -> Path:
    """Where a chapter's run writes when ``output_dir`` is not given: ``_build/runs/<chapter>``."""
    return REPO_ROOT / "_build" / "runs" / chapter


def display_path(path) -> str:
    """``path`` relative to the repository when inside it (stable across clones), else absolute."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)
