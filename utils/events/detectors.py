"""Spike warning signals and how they are scored (the predictors chapter; work in progress).

Every signal is a boolean alarm per recorded step t, computed from what is known at step t
before the update of step t is applied: the loss and gradient at θ_t, and the history before
it. Scoring (:func:`score_alarms`) is fixed before any result is shown:

* an alarm is a *hit* when it fires in [start − h, start) of a counted spike, for a horizon h;
  an alarm at or after a spike's start is never a hit;
* alarms inside a spike (from its start to its end) are neither hits nor false alarms: every
  signal fires there, and the question is whether it fired *before*;
* every other alarm is a *false alarm*; ``false_alarms_per_1000`` counts them per 1,000 steps
  outside spikes;
* recall is the share of spikes with at least one hit; precision the share of alarms outside
  spikes that are hits; the lead of a spike is start − (its first hit), in steps.

Signals here: the baselines (:func:`loss_rose`, :func:`random_alarms`), threshold crossings
(:func:`above`, :func:`sustained`), and the running z-score rules of large training runs
(:func:`olmo_skip`, OLMo-core's skip step; :func:`ema_zscore`, ZClip's detector, tested against
the ``zclip`` package), and the rules that read Adam's per-coordinate state
(:func:`spam_spike`, :func:`stableadamw_rms`, tested against ``pytorch_optimizer.SPAM`` and
``optimi.StableAdamW``). :func:`secant_curvature` estimates λ_grad(Ĥ) from two consecutive
gradients, for free; :func:`critical_step` finds, in a few forward passes, the step size at
which the loss would rise. :data:`SIGNALS` names every signal the predictors chapter scores,
with its thresholds and source; :func:`signal_alarms` turns a run's metrics into its alarms
(the per-step values come from :class:`utils.training.signals.SignalRecorder` and the tracker).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from utils.validation import check_number


def loss_rose(loss, rise: float = 0.0) -> np.ndarray:
    """The baseline "the loss rose over the last step": alarm at t when
    loss_t > (1 + ``rise``) · loss_{t-1} (both known before the update of step t).
    Shape (T,), False at t = 0."""
    check_number("rise", rise, low=0)
    loss = np.asarray(loss, dtype=float)
    out = np.zeros(len(loss), dtype=bool)
    out[1:] = loss[1:] > (1 + rise) * loss[:-1]
    return out


def above(values, threshold: float) -> np.ndarray:
    """Alarm where ``values`` > ``threshold`` (NaN: no alarm), e.g. λ_grad(Ĥ) > 2/η."""
    values = np.asarray(values, dtype=float)
    return np.nan_to_num(values, nan=-np.inf) > threshold


def sustained(alarms, w: int) -> np.ndarray:
    """Alarm at t when ``alarms`` fired at t and at each of the w − 1 entries before it (the
    paper's "sustained over w measurements" rule; w = 1 is the alarm itself)."""
    check_number("w", w, low=1, integer=True)
    a = np.asarray(alarms, dtype=bool)
    run = np.zeros(len(a), dtype=int)
    for t, fired in enumerate(a):
        run[t] = run[t - 1] + 1 if fired and t else int(fired)
    return run >= w


def olmo_skip(x, window: int = 128, threshold: float = 6.0, warmup: int = 64) -> np.ndarray:
    """OLMo-core's skip-step rule: alarm at t when |x_t − mean| / std > ``threshold``, mean and
    std over the previous ``window`` values, once at least ``warmup`` values are known. Applied
    to the loss and to the gradient norm."""
    check_number("window", window, low=2, integer=True)
    check_number("warmup", warmup, low=2, integer=True)
    x = np.asarray(x, dtype=float)
    out = np.zeros(len(x), dtype=bool)
    for t in range(len(x)):
        past = x[max(0, t - window):t]
        past = past[np.isfinite(past)]
        if len(past) >= warmup:
            std = past.std()
            out[t] = std > 0 and abs(x[t] - past.mean()) / std > threshold
    return out


def ema_zscore(x, alpha: float = 0.97, threshold: float = 2.5, warmup: int = 25,
               eps: float = 1e-6) -> np.ndarray:
    """ZClip's detector on the gradient norm (``zclip`` 1.0.0, its default z-score mode with
    adaptive scaling; :class:`zclip.ZClip`): the first ``warmup`` values initialise a mean and a
    (population) variance; from then on, z = (x_t − mean) / (std + ``eps``) and the alarm fires
    when z > ``threshold``. The statistics are then updated as exponential moving averages
    (decay ``alpha``, the variance about the updated mean) with x_t, or, after an alarm, with
    ZClip's clip value mean + threshold·std / (z / threshold). tests/test_detectors.py checks
    that this fires exactly where ``zclip.ZClip`` clips."""
    check_number("alpha", alpha, low=0, high=1, low_open=True, high_open=True)
    check_number("warmup", warmup, low=1, integer=True)
    x = np.asarray(x, dtype=float)
    out = np.zeros(len(x), dtype=bool)
    if len(x) <= warmup:
        return out
    mean = sum(x[:warmup].tolist()) / warmup
    var = sum((v - mean) ** 2 for v in x[:warmup].tolist()) / warmup
    for t in range(warmup, len(x)):
        std = var ** 0.5
        z = (x[t] - mean) / (std + eps)
        out[t] = z > threshold
        value = mean + threshold * std / (z / threshold) if out[t] else x[t]
        mean = alpha * mean + (1 - alpha) * value
        var = alpha * var + (1 - alpha) * (value - mean) ** 2
    return out


def spam_spike(grads, v_prev, threshold: float = 5000.0) -> bool:
    """SPAM's spike rule (Huang et al. 2025; ``pytorch_optimizer.SPAM``): some coordinate has
    g² > threshold · v, with v Adam's second moment *before* this step's update (lists of
    tensors, one per parameter tensor, or single tensors)."""
    grads, v_prev = _as_list(grads), _as_list(v_prev)
    return any(bool((g.pow(2) > threshold * v).any()) for g, v in zip(grads, v_prev))


def stableadamw_rms(grads, v, eps: float = 1e-6) -> float:
    """StableAdamW's stabilisation term (Wortsman et al. 2023; ``optimi.StableAdamW``): the
    largest over parameter tensors of RMS(g² / max(v, ε²)), with v the second moment *after*
    this step's update. StableAdamW divides that tensor's step size by it where it exceeds 1,
    which is the alarm."""
    grads, v = _as_list(grads), _as_list(v)
    return max(float(g.pow(2).div(vv.maximum(vv.new_tensor(eps * eps))).mean().sqrt())
               for g, vv in zip(grads, v))


def secant_curvature(dg, dtheta, d, c: float, *, inverse: bool = False) -> float:
    """A free estimate of λ_grad(Ĥ) from the last update, with no Hessian-vector product:

        c · (g_t − g_{t−1})ᵀ Δθ / (Δθᵀ D⁻¹ Δθ),    Δθ = θ_t − θ_{t−1},

    the Rayleigh quotient of c D^{1/2} H D^{1/2} along D^{-1/2} Δθ with (g_t − g_{t−1}) standing
    for H Δθ (exact on a quadratic with a fixed batch). When the update is a preconditioned
    gradient step, Δθ ∝ D g, this is form (B) of λ_grad(Ĥ), c (Dg)ᵀH(Dg)/(gᵀDg); with momentum,
    it is the curvature along the direction actually taken. ``dg``, ``dtheta``, ``d``: flat
    tensors (n,), D the preconditioner of the last update (``inverse``: ``d`` holds D⁻¹,
    which saves a division); ``c`` = c_t."""
    dtheta = dtheta.reshape(-1)
    weighted = dtheta * d.reshape(-1) if inverse else dtheta / d.reshape(-1)
    denom = float(torch.dot(weighted, dtheta))
    return c * float(torch.dot(dg.reshape(-1), dtheta)) / denom if denom > 0 else math.nan


def critical_step(loss_along, lr: float, max_evals: int = 10) -> tuple[float, int]:
    """Critical sharpness's line search (Kalra et al., 2026): the smallest step size s along
    the update direction at which the loss rises above its value at s = 0, to compare with η.

    ``loss_along(s)`` is the loss at θ + s·u (u the update direction, one forward pass each);
    the search starts at s = ``lr``, halves or doubles until the rise is bracketed, then bisects,
    all within ``max_evals`` forward passes besides s = 0. Returns (s, passes used), s being the
    smallest step seen that raised the loss (inf if none did): an alarm when s ≤ η.
    """
    check_number("lr", lr, low=0, low_open=True)
    check_number("max_evals", max_evals, low=2, integer=True)
    f0, evals = loss_along(0.0), 0
    lo, hi, s = 0.0, math.inf, lr
    while evals < max_evals and (hi == math.inf or lo == 0.0) and s > 0:
        evals += 1
        if loss_along(s) > f0:
            hi, s = s, s / 2
            if lo > 0:
                break
        else:
            lo, s = s, s * 2
            if hi < math.inf:
                break
    while evals < max_evals and hi < math.inf:
        mid = (lo + hi) / 2
        evals += 1
        if loss_along(mid) > f0:
            hi = mid
        else:
            lo = mid
    return hi, evals


def _as_list(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def random_alarms(n: int, rate: float, seed: int = 0) -> np.ndarray:
    """The baseline that fires at random: each step independently with probability ``rate``."""
    check_number("rate", rate, low=0, high=1)
    return np.random.default_rng(seed).random(n) < rate


def f1_score(precision, recall):
    """2PR/(P + R), elementwise for arrays: 0 where no spike was warned of (R = 0, even with
    no alarm to give P), NaN where R is (no spikes)."""
    p, r = np.asarray(precision, dtype=float), np.asarray(recall, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(r == 0, 0.0, 2 * p * r / (p + r))


@dataclass(frozen=True)
class Score:
    """A signal scored against the spikes of one run at one horizon (see the module docstring)."""

    horizon: int
    spikes: int
    alarms: int
    hits: int
    false_alarms: int
    calm_steps: int
    leads: tuple

    @property
    def recall(self) -> float:
        return len(self.leads) / self.spikes if self.spikes else math.nan

    @property
    def precision(self) -> float:
        return self.hits / self.alarms if self.alarms else math.nan

    @property
    def f1(self) -> float:
        """:func:`f1_score` of this precision and recall."""
        return float(f1_score(self.precision, self.recall))

    @property
    def false_alarms_per_1000(self) -> float:
        return 1000 * self.false_alarms / self.calm_steps if self.calm_steps else math.nan

    @property
    def median_lead(self) -> float:
        return float(np.median(self.leads)) if self.leads else math.nan


def score_alarms(steps, alarms, spikes, horizon: int, *, count_inside: bool = False,
                 include_start: bool = False) -> Score:
    """Score a boolean alarm per recorded step (``steps``, ``alarms``: shape (T,)) against the
    counted ``spikes`` of the run at ``horizon`` h (module docstring).

    The two keywords exist only to show, in chapter 4, what an earlier rule measured; the book
    scores with both off: ``count_inside`` counts alarms inside a spike as false alarms (and
    its steps as calm), ``include_start`` makes the window [start − h, start], the start's own
    step a hit."""
    check_number("horizon", horizon, low=1, integer=True)
    steps = np.asarray(steps)
    alarms = np.asarray(alarms, dtype=bool)
    if steps.shape != alarms.shape:
        raise ValueError(f"alarms must have the shape of steps {steps.shape}, got {alarms.shape}")
    inside = np.zeros(len(steps), dtype=bool)
    hit = np.zeros(len(steps), dtype=bool)
    leads = []
    for s in spikes:
        end = s.end if s.end is not None else steps.max()
        inside |= (steps >= s.start) & (steps <= end)
        window = (steps >= s.start - horizon) & ((steps <= s.start) if include_start
                                                 else (steps < s.start))
        fired = steps[window & alarms]
        hit |= window & alarms
        if len(fired):
            leads.append(int(s.start - fired.min()))
    counted_steps = np.ones(len(steps), dtype=bool) if count_inside else ~inside
    counted = alarms & counted_steps
    return Score(int(horizon), len(spikes), int(counted.sum()), int((hit & counted_steps).sum()),
                 int((counted & ~hit).sum()), int(counted_steps.sum()), tuple(leads))


# ------------------------------------------------------------------------- the catalogue

@dataclass(frozen=True)
class Signal:
    """One warning signal as the predictors chapter scores it.

    ``column``: the metrics column it reads. ``thresholds``: the values swept for the
    precision-recall curve, ``default`` among them (the rule as its source states it).
    ``tracked``: measured on tracked steps only (the curvature quantities), else every step.
    ``meaning``: the alarm in words, with ``thr`` for the threshold; ``source``: where the rule
    comes from.
    """

    name: str
    column: str
    thresholds: tuple
    default: float
    tracked: bool
    meaning: str
    source: str


_RATIO = (0.5, 0.75, 1.0, 1.5, 2.0)
SIGNALS = {s.name: s for s in (
    Signal("lambda_grad", "lambda_grad_pre_a", _RATIO, 1.0, True,
           "λ_grad(Ĥ) = gᵀĤg/‖g‖² > thr · 2/η", "Bai et al. 2026 (the paper's predictor, form A)"),
    Signal("lambda_grad_w3", "lambda_grad_pre_a", _RATIO, 1.0, True,
           "min of λ_grad(Ĥ) over 3 tracked steps in a row > thr · 2/η, raised at the third",
           "Bai et al. 2026 (the sustained predictor min(λ(t−1), λ(t), λ(t+1)), raised at t+1; "
           "their rule for mini-batches)"),
    Signal("lambda_grad_w10", "lambda_grad_pre_a", _RATIO, 1.0, True,
           "λ_grad(Ĥ) > thr · 2/η on 10 tracked steps in a row", "Bai et al. 2026 (sustained)"),
    Signal("lambda_grad_b", "lambda_grad_pre", _RATIO, 1.0, True,
           "λ_grad(Ĥ) in form (B), c(Dg)ᵀH(Dg)/(gᵀDg), > thr · 2/η",
           "this book (the Rayleigh quotient of Ĥ's symmetric form along D^{1/2}g)"),
    Signal("lambda_max", "lambda_max_pre", _RATIO, 1.0, True,
           "λ_max(Ĥ) > thr · 2/η", "Bai et al. 2026; Cohen et al. 2022"),
    Signal("lambda_max_w3", "lambda_max_pre", _RATIO, 1.0, True,
           "λ_max(Ĥ) > thr · 2/η on 3 tracked steps in a row", "Bai et al. 2026 (sustained)"),
    Signal("lambda_max_w10", "lambda_max_pre", _RATIO, 1.0, True,
           "λ_max(Ĥ) > thr · 2/η on 10 tracked steps in a row", "Bai et al. 2026 (sustained)"),
    Signal("alignment", "cos_grad_top", (0.1, 0.3, 0.5, 0.7, 0.9), 0.5, True,
           "|cos(g, u_top)| > thr while λ_max(Ĥ) > 2/η", "Bai et al. 2026 (alignment)"),
    Signal("secant", "secant", _RATIO, 1.0, False,
           "secant curvature along the last update > thr · 2/η", "this book (secant_curvature)"),
    Signal("critical_step", "critical_step", (0.25, 0.5, 1.0, 2.0, 4.0), 1.0, False,
           "the loss rises along the update at a step ≤ thr · η",
           "Kalra et al. 2026 (critical sharpness)"),
    Signal("spam", "spam_ratio", (50.0, 500.0, 5000.0, 50000.0, 500000.0), 5000.0, False,
           "some coordinate has g² > thr · v", "Huang et al. 2025 (SPAM; pytorch-optimizer)"),
    Signal("stableadamw", "stableadamw_rms", (1.0, 1.5, 2.0, 4.0, 8.0), 1.0, False,
           "some tensor has RMS(g² / max(v̂, ε²)) > thr",
           "Wortsman et al. 2023 (StableAdamW; torch-optimi)"),
    Signal("zclip", "grad_norm", (1.5, 2.0, 2.5, 3.0, 4.0), 2.5, False,
           "EMA z-score of the gradient norm > thr", "Kumar et al. 2025 (ZClip; zclip)"),
    Signal("olmo_loss", "batch_loss", (2.0, 3.0, 4.0, 6.0, 8.0), 6.0, False,
           "|loss − mean| / std > thr over the last 128 training losses",
           "OLMo-core (skip step)"),
    Signal("olmo_grad_norm", "grad_norm", (2.0, 3.0, 4.0, 6.0, 8.0), 6.0, False,
           "|‖g‖ − mean| / std > thr over the last 128 gradient norms", "OLMo-core (skip step)"),
    Signal("loss_rose", "loss", (0.0, 0.01, 0.05, 0.2, 1.0), 0.0, False,
           "loss_t > (1 + thr) · loss_{t−1}", "baseline"),
    Signal("random", "loss", (0.001, 0.003, 0.01, 0.03, 0.1), 0.01, False,
           "fires at random with probability thr per step", "baseline"),
)}
"""Every signal the predictors chapter scores, by name (in the order of its tables)."""


def signal_alarms(name: str, metrics, lr: float, threshold: float, seed: int = 0) -> np.ndarray:
    """The alarms of signal ``name`` (:data:`SIGNALS`) at ``threshold`` on a run's ``metrics``
    (a DataFrame with one row per step), as booleans of shape (rows,). A tracked signal fires
    only on tracked rows (where its column is measured); "sustained" counts tracked rows.
    ``lr`` is η (the curvature thresholds are multiples of 2/η); ``seed`` seeds ``random``."""
    if name not in SIGNALS:
        raise ValueError(f"signal must be one of {list(SIGNALS)}, got {name!r}")
    sig = SIGNALS[name]
    column = sig.column
    if column == "batch_loss" and column not in metrics:
        column = "loss"  # full batch: the training loss is the loss
    n = len(metrics)
    if name == "random":
        return random_alarms(n, threshold, seed)
    if column not in metrics:
        return np.zeros(n, dtype=bool)
    x = metrics[column].to_numpy(dtype=float)
    if sig.tracked:
        measured = np.isfinite(x)
        scale = 1.0 if name == "alignment" else lr / 2
        fired = above(x[measured] * scale, threshold)
        if name == "alignment":
            lam = metrics["lambda_max_pre"].to_numpy(dtype=float)[measured]
            fired &= above(lam * lr / 2, 1.0)
        w = int(name.rpartition("_w")[2]) if "_w" in name else 1
        out = np.zeros(n, dtype=bool)
        out[measured] = sustained(fired, w)
        return out
    if name == "secant":
        return above(x * lr / 2, threshold)
    if name == "critical_step":
        return np.nan_to_num(x, nan=np.inf) <= threshold
    if name in ("spam", "stableadamw"):
        return above(x, threshold)
    if name == "zclip":
        return ema_zscore(x, threshold=threshold)
    if name.startswith("olmo_"):
        return olmo_skip(x, threshold=threshold)
    if name == "loss_rose":
        return loss_rose(x, threshold)
    raise AssertionError(name)  # every signal of SIGNALS is handled above
