"""The paper's experiments on the 1-D quadratic f(θ) = aθ²/2 (its Figures 2, 3 and D2, v1).

Adam is elementwise, so one ``torch.optim.Adam`` on a vector θ of K coordinates, trained on
Σ aθ_k²/2, is K independent runs of the 1-D quadratic, one per starting point θ_1 = θ_k: the
gradient of coordinate k is aθ_k and every Adam quantity is per coordinate.
:func:`train_quadratic` trains K starting points at once and reads v̂_t from the real optimizer's
state after each step; with a 1 × 1 Hessian a, λ_max(Ĥ_t) = c_t a / (√v̂_t + ε) exactly
(:class:`~utils.curvature.adam_state.AdamState`'s ``c`` and ``preconditioner``).
``tests/test_quadratic.py`` checks this against the tracked run of :func:`utils.training.runs.run`.

:func:`trajectory_summary` reads one starting point's trajectory as the paper's figures do:
the first spike (the book's spike rule, float floor 0: aθ²/2 subtracts nothing, so float64
keeps full relative precision down to 1e-308), the first sustained crossing of 2/η, √v̂ and
η/√v̂ at the spike's start, ‖g‖/√v̂ the step before it, and v̂'s decay rate. The decay rate α is
the least-squares fit of log v̂_t = log A + t log α over the second half of the descent,
t ∈ [t_min/2, t_min], where t_min is the step of the lowest loss before the first spike's start
(of the whole run where there is none: so that rate depends on the run's length, and chapter 0
runs Figure 3 for the lengths of the paper's panels, :data:`FIG3_STEPS`). A running-minimum rule
does not work here: with momentum θ swings through 0, and the loss dips by orders of magnitude
at each swing. :func:`quadratic_statements` turns the summaries into the rows
of the chapter's "paper vs book" table.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from utils.curvature.adam_state import read_adam_state
from utils.events.spikes import detect_events, sustained_crossings
from utils.studies.paper import PaperStatement
from utils.training.models import perturb_initial
from utils.validation import check_choice, check_number

FIG2_LRS = (1.0, 0.5, 0.1, 0.01, 0.001)
"""Figure 2's step sizes for Adam (β = (0.9, 0.99), ε = 1e-8)."""
FIG2_GD_LR = 1.99
"""Figure 2's step size for gradient descent (its limit is 2/a = 2)."""
FIG3_BETA2 = (0.99, 0.9)
"""Figure 3's two values of β2 (β1 = 0.9)."""
FIG3_STEPS = {0.99: 2000, 0.9: 800}
"""The lengths of Figure 3's panels, in steps, per β2."""
FIG3_LR = 0.1
"""Figure 3's η is not stated in v1; the book uses 0.1, one of Figure 2's step sizes."""
D2_SETTINGS = ((0.15, 0.9, 0.999), (0.25, 0.9, 0.999), (0.15, 0.95, 0.999), (0.15, 0.9, 0.99))
"""Figure D2's four (η, β1, β2)."""


@dataclass
class QuadraticRuns:
    """K runs of one optimizer on aθ²/2, one per starting point; arrays of shape (T, K), row
    t−1 for step t = 1..T.

    ``loss``: aθ_t²/2 before the update of step t; ``grad``: |g_t| = a|θ_t|; ``v_hat``: Adam's
    v̂_t after step t (the v̂ its update from θ_t used; None for GD); ``lambda_max_pre``:
    λ_max(Ĥ_t) = c_t a / (√v̂_t + ε) (None for GD)."""

    optimizer: str
    lr: float
    beta1: float
    beta2: float
    eps: float
    curvature: float
    theta0: np.ndarray
    loss: np.ndarray
    grad: np.ndarray
    v_hat: np.ndarray | None
    lambda_max_pre: np.ndarray | None

    @property
    def steps(self) -> np.ndarray:
        """The step numbers 1..T, shape (T,)."""
        return np.arange(1, self.loss.shape[0] + 1)

    @property
    def threshold(self) -> float:
        """2/η."""
        return 2.0 / self.lr


def starting_points(n: int, seed: int = 0, low: float = 0.5, high: float = 2.0) -> np.ndarray:
    """``n`` starting points θ_1, log-uniform in [low, high] under ``seed`` (the paper does not
    state its θ_1; the book's default run starts at 1)."""
    check_number("n", n, low=1, integer=True)
    check_number("low", low, low=0, low_open=True)
    check_number("high", high, low=low)
    rng = np.random.default_rng(seed)
    return np.exp(rng.uniform(math.log(low), math.log(high), size=n))


def train_quadratic(lr: float, theta0, *, optimizer: str = "adam", beta1: float = 0.9,
                    beta2: float = 0.99, eps: float = 1e-8, steps: int = 1000,
                    curvature: float = 1.0) -> QuadraticRuns:
    """Train ``optimizer`` ("adam": ``torch.optim.Adam``; "gd": ``torch.optim.SGD``) on
    aθ²/2 in float64 from each starting point in ``theta0`` (a number or a 1-D array, K ≥ 1
    values), all at once (module docstring). ValueError naming the parameter on bad input."""
    check_choice("optimizer", optimizer, ("adam", "gd"))
    check_number("lr", lr, low=0, low_open=True)
    check_number("beta1", beta1, low=0, high=1, high_open=True)
    check_number("beta2", beta2, low=0, high=1, high_open=True)
    check_number("eps", eps, low=0)
    check_number("steps", steps, low=1, integer=True)
    check_number("curvature", curvature, low=0, low_open=True)
    start = np.asarray(theta0, dtype=float).reshape(-1)
    if not len(start) or not np.all(np.isfinite(start)) or np.any(start == 0):
        raise ValueError(f"theta0 must be finite and non-zero (at least one), got {theta0!r}")
    holder = torch.nn.Module()   # so that the "another machine" switch reaches θ_1 as well
    holder.theta = torch.nn.Parameter(torch.tensor(start, dtype=torch.float64))
    theta = perturb_initial(holder, seed=0).theta
    adam = optimizer == "adam"
    opt = (torch.optim.Adam([theta], lr=lr, betas=(beta1, beta2), eps=eps) if adam
           else torch.optim.SGD([theta], lr=lr))
    K, T = len(start), int(steps)
    loss, grad = np.empty((T, K)), np.empty((T, K))
    v_hat = np.empty((T, K)) if adam else None
    lam = np.empty((T, K)) if adam else None
    for t in range(T):
        with torch.no_grad():
            g = curvature * theta
            loss[t] = (0.5 * g * theta).numpy()
            grad[t] = g.abs().numpy()
        theta.grad = g.clone()
        opt.step()
        if adam:
            state = read_adam_state(opt)
            v_hat[t] = state.v_hat.numpy()
            lam[t] = (state.c * curvature * state.preconditioner).numpy()
    return QuadraticRuns(optimizer, float(lr), float(beta1), float(beta2), float(eps),
                         float(curvature), start, loss, grad, v_hat, lam)


def fitted_rate(values) -> float:
    """α of the least-squares fit log x_t = log A + t log α over consecutive steps (the finite
    values of ``values``, one per step); NaN with fewer than 3 of them."""
    y = np.log(np.asarray(values, dtype=float))
    ok = np.isfinite(y)
    if ok.sum() < 3:
        return math.nan
    return float(math.exp(np.polyfit(np.arange(len(y))[ok], y[ok], 1)[0]))


def decay_rate(v_hat: np.ndarray, first: int, last: int) -> float:
    """α of :func:`fitted_rate` over steps first..last (inclusive; v̂ of shape (T,), row t−1
    for step t); NaN with fewer than 3 steps."""
    return fitted_rate(v_hat[first - 1:last]) if last - first >= 2 else math.nan


def worst_lag_fraction(spikes, crossing_starts) -> float:
    """The largest |spike start − nearest crossing start| / that crossing's step over the
    ``spikes`` (inf where a spike has no crossing at all; NaN without spikes)."""
    if not spikes:
        return math.nan
    if not crossing_starts:
        return math.inf
    starts = np.asarray(crossing_starts, dtype=float)
    worst = 0.0
    for spike in spikes:
        nearest = starts[np.argmin(np.abs(starts - spike.start))]
        worst = max(worst, abs(spike.start - nearest) / nearest)
    return worst


def trajectory_summary(runs: QuadraticRuns, k: int = 0) -> dict:
    """The quantities the paper reads off one trajectory (starting point ``k``); see the module
    docstring. Keys: ``n_spikes``, ``spike_start``, ``spike_peak``, ``crossing`` (first
    sustained step with λ_max(Ĥ) > 2/η), ``lag`` (spike start − crossing, steps),
    ``sqrt_v_at_spike``, ``lr_over_sqrt_v`` (η/√v̂ at the spike's start), ``g_over_sqrt_v``
    (|g|/√v̂ the step before it), ``worst_lag_fraction`` (:func:`worst_lag_fraction`, every
    spike), ``t_min``, ``decay_rate``, ``rise_after_min`` (the largest
    loss after t_min over the loss at t_min) and ``loss_rises`` (steps where the loss rose).
    NaN where a run has no such event."""
    loss = runs.loss[:, k]
    steps = runs.steps
    spikes = [s for s in detect_events(loss, steps, floor=0.0) if s.counted]
    first = spikes[0] if spikes else None
    out = {"n_spikes": len(spikes), "spike_start": math.nan, "spike_peak": math.nan,
           "crossing": math.nan, "lag": math.nan, "sqrt_v_at_spike": math.nan,
           "lr_over_sqrt_v": math.nan, "g_over_sqrt_v": math.nan,
           "loss_rises": int((loss[1:] > loss[:-1]).sum())}
    t_min = int(np.argmin(loss[:first.start if first else len(loss)])) + 1
    out["t_min"] = t_min
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        out["rise_after_min"] = float(loss[t_min - 1:].max() / loss[t_min - 1])
    if runs.v_hat is None:
        out["decay_rate"] = math.nan
        return out
    v = runs.v_hat[:, k]
    out["decay_rate"] = decay_rate(v, max(1, t_min // 2), t_min)
    crossings = sustained_crossings(runs.lambda_max_pre[:, k], steps, runs.threshold)
    if crossings:
        out["crossing"] = crossings[0].start
    out["worst_lag_fraction"] = worst_lag_fraction(spikes, [c.start for c in crossings])
    if first is not None:
        i = first.start - 1
        out.update(spike_start=first.start, spike_peak=first.peak,
                   sqrt_v_at_spike=float(math.sqrt(v[i])),
                   lr_over_sqrt_v=float(runs.lr / math.sqrt(v[i])),
                   g_over_sqrt_v=float(runs.grad[i - 1, k] / math.sqrt(v[i - 1])) if i else math.nan)
        if crossings:
            out["lag"] = first.start - crossings[0].start
    return out


def summaries(runs: QuadraticRuns) -> list[dict]:
    """:func:`trajectory_summary` of every starting point."""
    return [trajectory_summary(runs, k) for k in range(runs.loss.shape[1])]


def power_law(lrs, sqrt_v) -> tuple[float, float]:
    """(coefficient C, exponent p) of the least-squares fit log √v̂ = log C + p log η over the
    finite pairs; NaN with fewer than two η."""
    x, y = np.log(np.asarray(lrs, float)), np.log(np.asarray(sqrt_v, float))
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 2 or len(set(x[keep])) < 2:
        return math.nan, math.nan
    p, log_c = np.polyfit(x[keep], y[keep], 1)
    return float(math.exp(log_c)), float(p)


LIMIT_RATIO_TOL = 0.10
"""η/√v̂ at a spike's start must be within 10 % of 2(1+β1)/(1−β1) (38 at β1 = 0.9)."""
SLOPE_TOL = 0.10
"""The exponent of √v̂ at the spike against η must be within ±0.10 of the paper's 1.03."""
COEFFICIENT_FACTOR = 1.5
"""The coefficient must be within a factor 1.5 of the paper's 0.021."""
MUCH_SMALLER = 1e-3
""""≪": a ratio below 1e-3."""
DECAY_TOL = 0.2
"""A decay rate α "≈ β2": the per-step decay 1 − α within 20 % of 1 − β2 (±0.002 at
β2 = 0.99, ±0.0002 at 0.999: a rate of 1, no decay, must fail)."""


def decays_at(alpha: float, beta2: float) -> bool:
    """Whether the decay rate ``alpha`` is β2's within :data:`DECAY_TOL` (relative, on 1 − α)."""
    return abs((1 - alpha) - (1 - beta2)) <= DECAY_TOL * (1 - beta2)


def decay_tolerance_text() -> str:
    """The tolerance of :func:`decays_at` as a table writes it."""
    return f"1 − α within {DECAY_TOL:.0%} of 1 − β2"
NO_PURE_DECAY = 0.01
"""β2 = 0.9's "rate > β2 (no pure decay)": at least β2 + 0.01."""
LAG_FRACTION = 0.02
""""The spike comes where λ_max(Ĥ) crosses 2/η": |spike start − crossing| ≤ 2 % of the
crossing's step (a figure of 10³–10⁴ steps draws both within a line's width)."""
RECOVERY_FACTOR = 1.5
"""Steps from the spike's start to its peak within a factor 1.5 of the paper's 845 − 782 = 63."""


def _statement(key, figure, statement, quantity, values, tolerance, holds, **kw):
    """A :class:`PaperStatement` whose default run is ``values[0]`` and seeds ``values[1:]``."""
    values = np.asarray(values, dtype=float)
    return PaperStatement(key, figure, statement, quantity, float(values[0]), values[1:],
                          tolerance, holds, **kw)


def _per_seed(summ: list[dict], key: str) -> np.ndarray:
    return np.array([s[key] for s in summ], dtype=float)


def quadratic_statements(fig2: dict, gd: QuadraticRuns, fig3: dict, d2: dict) -> list:
    """The rows of chapter 0's "paper vs book" table.

    ``fig2``: η -> :class:`QuadraticRuns` of Adam at β = (0.9, 0.99); ``gd``: GD at η = 1.99;
    ``fig3``: β2 -> Adam runs at Figure 3's η; ``d2``: (η, β1, β2) -> Adam runs. Every run
    holds the same K starting points, the first of which is the default run (θ_1 = 1).
    Returns a list of :class:`~utils.studies.paper.PaperStatement`."""
    beta1 = next(iter(fig2.values())).beta1
    limit = 2 * (1 + beta1) / (1 - beta1)
    s2 = {lr: summaries(r) for lr, r in fig2.items()}
    lrs = sorted(s2)
    K = len(next(iter(s2.values())))
    spiked = np.array([sum(s2[lr][k]["n_spikes"] > 0 for lr in lrs) for k in range(K)], float)
    sqrt_v = np.array([[s2[lr][k]["sqrt_v_at_spike"] for lr in lrs] for k in range(K)])
    fits = [power_law(lrs, row) for row in sqrt_v]
    ratio = np.array([[s2[lr][k]["lr_over_sqrt_v"] for lr in lrs] for k in range(K)])
    worst_ratio = np.array([np.nan if np.isnan(row).any() else row[np.argmax(abs(row / limit - 1))]
                            for row in ratio])
    gd_s = summaries(gd)
    gd_ok = np.array([s["loss_rises"] == 0 and s["n_spikes"] == 0 for s in gd_s], float)
    hi, lo = (summaries(fig3[b]) for b in sorted(fig3, reverse=True))
    b_hi, b_lo = sorted(fig3, reverse=True)
    d2_s = {setting: summaries(r) for setting, r in d2.items()}
    worst_lag = np.array([max(d2_s[st][k]["worst_lag_fraction"] if d2_s[st][k]["n_spikes"]
                              else np.inf for st in d2_s) for k in range(K)])
    recovery = _per_seed(hi, "spike_peak") - _per_seed(hi, "spike_start")
    lag3 = np.abs(_per_seed(hi, "lag")) / _per_seed(hi, "crossing")
    coef, expo = np.array([f[0] for f in fits]), np.array([f[1] for f in fits])
    n_lr = len(lrs)
    return [
        _statement("2.1", "Fig. 2(a)",
                       f"Adam spikes at every η in {{{', '.join(f'{x:g}' for x in lrs[::-1])}}} ≪ 2",
                       f"step sizes (of {n_lr}) with a spike", spiked,
                       f"all {n_lr}", lambda x: x >= n_lr, digits=2),
        _statement("2.2", "Fig. 2(a)", f"GD at η = {gd.lr:g} converges",
                       "1 if GD's loss never rises and has no spike, else 0", gd_ok,
                       "1", lambda x: x >= 1, digits=2),
        _statement("2.3a", "Fig. 2(b)", "√v̂ at the spike ∝ η^1.03: the exponent",
                       "exponent p of the fit √v̂(spike start) = C η^p", expo,
                       f"|p − 1.03| ≤ {SLOPE_TOL:g}", lambda x: abs(x - 1.03) <= SLOPE_TOL),
        _statement("2.3b", "Fig. 2(b)", "the fit's coefficient is 0.021",
                       "coefficient C of that fit", coef,
                       f"within a factor {COEFFICIENT_FACTOR:g} of 0.021",
                       lambda x: 0.021 / COEFFICIENT_FACTOR <= x <= 0.021 * COEFFICIENT_FACTOR,
                       digits=2),
        _statement("2.4", "Fig. 2(c)",
                       "η/√v̂ reaches ≈ 38 = 2(1+β1)/(1−β1) right before every spike",
                       "η/√v̂ at the spike's start, the η farthest from 38",
                       worst_ratio, f"within ±{LIMIT_RATIO_TOL:.0%} of {limit:g} "
                       "at every η", lambda x: abs(x / limit - 1) <= LIMIT_RATIO_TOL),
        _statement("3.1", "Fig. 3(a,b)",
                       f"β2 = {b_hi:g}: ‖g‖ ≈ 1e-15 ≪ √v̂ ≈ 0.1 before the spike",
                       "‖g‖/√v̂ the step before the spike's start",
                       _per_seed(hi, "g_over_sqrt_v"),
                       f"< {MUCH_SMALLER:g}", lambda x: x < MUCH_SMALLER, digits=2),
        _statement("3.2", "Fig. 3(b)",
                       f"β2 = {b_hi:g}: v̂ decays at the fitted rate ≈ {b_hi:g} = β2",
                       "α of v̂_t = Aα^t over [t_min/2, t_min]",
                       _per_seed(hi, "decay_rate"),
                       decay_tolerance_text(), lambda x: decays_at(x, b_hi), digits=4),
        _statement("3.3a", "Fig. 3(a,b)",
                       f"β2 = {b_hi:g}: the spike (epoch 782) comes as λ_max(Ĥ) exceeds 2/η",
                       "|spike start − first crossing| / crossing step", lag3,
                       f"≤ {LAG_FRACTION:g}", lambda x: x <= LAG_FRACTION, digits=2),
        _statement("3.3b", "Fig. 3(a,b)",
                       f"β2 = {b_hi:g}: the loss falls again 63 steps after the spike's onset "
                       "(epochs 782 → 845)", "steps from the spike's start to its peak",
                       recovery, f"within a factor {RECOVERY_FACTOR:g} of 63",
                       lambda x: 63 / RECOVERY_FACTOR <= x <= 63 * RECOVERY_FACTOR),
        _statement("3.4", "Fig. 3(d)",
                       f"β2 = {b_lo:g}: v̂'s fitted rate is 0.93, above β2 (no pure decay)",
                       "α of v̂_t = Aα^t over [t_min/2, t_min]",
                       _per_seed(lo, "decay_rate"),
                       f"α ≥ β2 + {NO_PURE_DECAY:g}", lambda x: x >= b_lo + NO_PURE_DECAY,
                       digits=3),
        _statement("3.5", "Fig. 3(c)",
                       f"β2 = {b_lo:g}: no large spike (a slight rise and oscillation)",
                       "spikes (the book's rule, K = 10)", _per_seed(lo, "n_spikes"), "0", lambda x: x == 0, digits=2,
                       numbers={"rise_after_min_default": lo[0]["rise_after_min"]}),
        _statement("D2", "Fig. D2",
                       "at each of the four (η, β1, β2), the spike comes where λ_max(Ĥ) "
                       "crosses 2/η", "the largest |spike start − nearest crossing| / crossing "
                       "step, over every spike of the four settings", worst_lag,
                       f"≤ {LAG_FRACTION:g}", lambda x: x <= LAG_FRACTION, digits=2),
    ]


def paper_quadratic_runs(theta0, *, lrs=FIG2_LRS, gd_lr: float = FIG2_GD_LR,
                         fig3_lr: float = FIG3_LR, fig3_beta2=FIG3_BETA2, fig3_steps=None,
                         d2_settings=D2_SETTINGS, beta1: float = 0.9, beta2: float = 0.99,
                         eps: float = 1e-8, steps: int = 4000, d2_steps: int = 9000,
                         curvature: float = 1.0) -> dict:
    """Every run of chapter 0's Figures 2, 3 and D2 from the starting points ``theta0``.

    Returns {"fig2": {η: QuadraticRuns}, "gd": QuadraticRuns, "fig3": {β2: QuadraticRuns},
    "d2": {(η, β1, β2): QuadraticRuns}}. Figure 2 runs ``steps`` steps at β = (β1, β2); Figure 3
    runs ``fig3_steps[β2]`` (default :data:`FIG3_STEPS`, else ``steps``) at ``fig3_lr``; D2 runs
    ``d2_steps``. Every setting is checked before the first run starts."""
    lrs = [float(check_number("lrs", x, low=0, low_open=True)) for x in lrs]
    if len(set(lrs)) < 2:
        raise ValueError(f"lrs must hold at least two distinct step sizes (to fit the power "
                         f"law), got {lrs}")
    fig3_steps = {b: (fig3_steps or FIG3_STEPS).get(b, steps) for b in fig3_beta2}
    settings = [tuple(float(x) for x in s) for s in d2_settings]
    if any(len(s) != 3 for s in settings):
        raise ValueError(f"d2_settings must be (η, β1, β2) triples, got {d2_settings}")
    plan = ([dict(lr=lr, beta1=beta1, beta2=beta2, steps=steps) for lr in lrs]
            + [dict(lr=gd_lr, optimizer="gd", steps=steps)]
            + [dict(lr=fig3_lr, beta1=beta1, beta2=b, steps=n) for b, n in fig3_steps.items()]
            + [dict(lr=lr, beta1=b1, beta2=b2, steps=d2_steps) for lr, b1, b2 in settings])
    for kwargs in plan:      # the whole plan is validated on one step before anything trains
        train_quadratic(theta0=theta0, **{**kwargs, "steps": 1}, eps=eps, curvature=curvature)
    runs = [train_quadratic(theta0=theta0, eps=eps, curvature=curvature, **kw) for kw in plan]
    n = len(lrs)
    return {"fig2": dict(zip(lrs, runs[:n])), "gd": runs[n],
            "fig3": dict(zip(fig3_steps, runs[n + 1:n + 1 + len(fig3_steps)])),
            "d2": dict(zip(settings, runs[n + 1 + len(fig3_steps):]))}


def runs_for_parameters(p: dict) -> dict:
    """Chapter 0's runs of the paper's figures under its parameters ``p`` (the notebook's
    values): θ_1 and ``n_seeds`` starting points log-uniform in [θ_1/2, 2θ_1] under ``seed``
    (the first is the default run), through :func:`paper_quadratic_runs` with Figure 3 at
    ``lr`` and β2 ∈ (``beta2``, ``low_beta2``)."""
    starts = [p["theta0"], *starting_points(p["n_seeds"], p["seed"], low=p["theta0"] / 2,
                                            high=2 * p["theta0"])]
    return paper_quadratic_runs(starts, lrs=p["lrs"], gd_lr=p["gd_lr"], fig3_lr=p["lr"],
                                fig3_beta2=(p["beta2"], p["low_beta2"]), beta1=p["beta1"],
                                beta2=p["beta2"], eps=p["eps"], steps=p["fig2_steps"],
                                d2_steps=p["d2_steps"], curvature=p["curvature"])


def figure2_table(fig2: dict, k: int = 0):
    """One row per η of Figure 2 (starting point ``k``): the spike's start, the first
    sustained crossing of 2/η, √v̂ and η/√v̂ at the spike's start (3 significant digits)."""
    rows = []
    for lr in sorted(fig2, reverse=True):
        s = trajectory_summary(fig2[lr], k)
        rows.append({"η": lr, "spike start": s["spike_start"], "crossing of 2/η": s["crossing"],
                     "√v̂ at the start": _sig(s["sqrt_v_at_spike"]),
                     "η/√v̂ at the start": _sig(s["lr_over_sqrt_v"])})
    table = pd.DataFrame(rows).set_index("η")
    return table.astype({"spike start": "Int64", "crossing of 2/η": "Int64"})


def _sig(x: float, digits: int = 3) -> float:
    """``x`` rounded to ``digits`` significant digits (NaN stays NaN)."""
    return float(f"{x:.{digits}g}") if math.isfinite(x) else x
