"""The claims of the paper as checks on measured runs: one function per chapter.

Each takes :class:`~utils.training.runs.RunResult` objects and returns a list of
:class:`~utils.studies.verdicts.Verdict`, each with the numbers it was decided on. Thresholds that a
verdict uses are arguments with documented defaults, so that a reader can see and vary them.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from utils.events.spikes import CROSSING_HYSTERESIS, Spike, sustained_crossings
from utils.validation import check_number
from utils.studies.verdicts import Verdict


def spikes_after_first_crossing(result) -> tuple[int | None, list[Spike]]:
    """The step at which λ_max(Ĥ) first exceeded 2/η (None if never), and the spikes whose
    peak comes at or after it."""
    m = result.metrics.dropna(subset=["lambda_max_pre"])
    crossings = sustained_crossings(m["lambda_max_pre"], m["step"], 2.0 / result.config.lr)
    first = crossings[0].start if crossings else None
    return first, [s for s in result.spikes if first is not None and s.peak >= first]


def counterexample_verdicts(adam, gd) -> list[Verdict]:
    """Chapter 0: on f(θ) = aθ²/2 GD is smooth at η ≪ 2/a while Adam spikes at the same η.

    ``adam`` and ``gd`` are :class:`~utils.training.runs.RunResult` of the two optimizers on the
    same quadratic. A spike counts for Adam when its peak comes after λ_max(Ĥ) first exceeded 2/η.
    If sharpness explained the spike, a·η/2 would be near 1 (``sharpness_far_below_limit``
    fails) and GD would rise too (``gd_smooth`` fails); if Adam's preconditioner did not grow,
    λ_max(Ĥ) would stay below 2/η and no spike would follow (``adam_crosses`` and
    ``adam_spikes`` fail).
    """
    lr, a = adam.config.lr, adam.config.model_kwargs.get("curvature", 1.0)
    threshold = 2.0 / lr
    gd_loss = gd.metrics["loss"].to_numpy()
    rises = int((gd_loss[1:] > gd_loss[:-1]).sum())
    m = adam.metrics.dropna(subset=["lambda_max_pre"])
    first, late = spikes_after_first_crossing(adam)
    return [
        Verdict("sharpness_far_below_limit", "λ_max(H) = a stays far below 2/η (a·η/2 < 0.5)",
                a * lr / 2 < 0.5, {"a": a, "two_over_lr": threshold, "a_lr_over_2": a * lr / 2}),
        Verdict("gd_smooth", "GD's loss never rises and has no spike",
                rises == 0 and not gd.spikes and gd.diverged_at is None,
                {"loss_rises": rises, "gd_spikes": len(gd.spikes)}),
        Verdict("adam_crosses", "Adam's λ_max(Ĥ) crosses 2/η although a is constant",
                first is not None, {"first_crossing_step": first,
                                    "max_lambda_pre_over_threshold":
                                        float(m["lambda_max_pre"].max() / threshold)}),
        Verdict("adam_spikes", "Adam spikes after that crossing",
                len(late) > 0, {"spikes_after_crossing": len(late),
                                "first_spike_start": late[0].start if late else None}),
    ]


def calm_stretches(metrics: pd.DataFrame, spikes: list[Spike], *, length: int = 150,
                   settle: int = 20, column: str = "lambda_max_pre",
                   keep_empty: bool = False) -> list:
    """For each spike, the tracked rows of the calm stretch before it.

    The stretch runs from ``length`` steps before the spike's start (but no earlier than
    ``settle`` steps after the previous spike ended) up to the step before the start. Only rows
    where ``column`` was measured are kept; stretches with fewer than 3 rows are dropped, or,
    with ``keep_empty``, returned as ``None`` so that the list matches ``spikes`` one to one.
    """
    tracked = metrics.dropna(subset=[column])
    out, prev_end = [], -math.inf
    for s in spikes:
        lo = max(s.start - length, prev_end + settle)
        rows = tracked[(tracked["step"] >= lo) & (tracked["step"] < s.start)]
        if len(rows) >= 3:
            out.append(rows)
        elif keep_empty:
            out.append(None)
        prev_end = s.end if s.end is not None else math.inf
    return out


def predicted_decay_growth(steps, beta2: float) -> np.ndarray:
    """d ln λ_max(Ĥ) / dt if H is frozen and v_t = β2 v_{t-1} (g² ≪ v), per step.

    λ_max(Ĥ) ∝ v̂_t^{-1/2} with v̂_t = v_t / (1-β2^t), so the rate is
    -½ (ln β2 + β2^t ln β2 / (1-β2^t)) (the second term is the bias correction's drift).
    """
    t = np.asarray(steps, dtype=float)
    lb = math.log(beta2)
    return -0.5 * (lb + beta2 ** t * lb / (1 - beta2 ** t))


def _slope(x, y) -> float:
    return float(np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)[0])


def decay_crossing_step(lambda0: float, t0: int, threshold: float, beta1: float, beta2: float,
                        horizon: int) -> int | None:
    """The step at which λ_max(Ĥ) reaches ``threshold`` if, from step ``t0`` on, H stays as it
    was at t0 and v only decays (v_t = β2 v_{t-1}, g² ≪ v), or None within ``horizon`` steps.

    Every coordinate of v̂ then shrinks by the same factor, so Ĥ = c_t D_t H scales as a whole:
    λ_max(Ĥ_t) = λ0 · sqrt(v̂_t0 / v̂_t) · c_t / c_t0, with v̂_t ∝ β2^t / (1 - β2^t) and
    c_t = (1-β1) / ((1+β1)(1-β1^t)) (ε neglected beside sqrt(v̂)).
    """
    t = np.arange(t0, t0 + horizon + 1, dtype=float)
    log_vhat = t * math.log(beta2) - np.log1p(-beta2 ** t)
    log_c = -np.log1p(-beta1 ** t)
    lam = lambda0 * np.exp(-0.5 * (log_vhat - log_vhat[0]) + (log_c - log_c[0]))
    above = np.flatnonzero(lam >= threshold)
    return int(t[above[0]]) if len(above) else None


def v_decay_verdicts(result, *, calm_length: int = 300, min_decoupled: float = 0.9,
                     max_crossing_error: float = 0.25, growth_band=(0.7, 1.5),
                     flat_tolerance: float = 0.1,
                     hysteresis: float = CROSSING_HYSTERESIS) -> list[Verdict]:
    """Chapter 1: once g² ≪ v, v decays like β2^t and that decay alone carries λ_max(Ĥ) to 2/η,
    while λ_max(H) is flat.

    Measured over the calm stretch before each spike (:func:`calm_stretches`, up to
    ``calm_length`` steps):

    ``decoupled``: the median fraction of coordinates with g²/v < 1e-2 is ≥ ``min_decoupled``.
    If g² kept pace with v, the fraction would be near 0 and this fails.

    ``crossing_predicted_by_decay``: the prediction. At the first tracked step t0 of the stretch
    where the fraction is ≥ ``min_decoupled`` and λ_max(Ĥ) is below 2/η, predict the step of
    the crossing of 2/η from v's β2-decay alone with H frozen at t0
    (:func:`decay_crossing_step`), and compare it with the measured crossing (the first crossing
    after t0, with the book's hysteresis). Holds when the median over stretches of
    |predicted − measured| / (measured − t0) is ≤ ``max_crossing_error``. If v did not decay
    at β2 (or the Hessian's change drove λ_max(Ĥ)), the crossing would come at another time:
    the error would be of order 1, or the crossing would not come (counted as an error of 1).

    ``lambda_pre_rises_at_decay_rate``: the fitted slope of ln λ_max(Ĥ) over the stretch over
    the slope that pure β2-decay predicts (:func:`predicted_decay_growth`) has a median within
    ``growth_band``. If λ_max(Ĥ) were flat or followed H, the ratio would be near 0.

    ``lambda_H_flat_below_threshold``: over each stretch λ_max(H) varies by less than
    ``flat_tolerance`` (relative) and stays below 2/η; a sharpening Hessian fails it.
    """
    cfg = result.config
    threshold = 2.0 / cfg.lr
    spikes = [s for s in result.spikes if not s.diverged]
    stretches = calm_stretches(result.metrics, spikes, length=calm_length)
    n = len(stretches)
    if n == 0:
        return [Verdict("calm_stretches_found", "there are spikes with a calm stretch before them",
                        False, {"spikes": len(spikes)})]
    frac = [float(r["g2_over_v_frac_small"].median()) for r in stretches]
    predictions = [_predict_crossing(r, cfg, threshold, min_decoupled, hysteresis)
                   for r in stretches]
    errors = [p["rel_error"] for p in predictions if p is not None]
    growth = [_slope(r["step"], np.log(r["lambda_max_pre"]))
              / float(predicted_decay_growth(r["step"], cfg.beta2).mean()) for r in stretches]
    flat = [float((r["lambda_max_H"].max() - r["lambda_max_H"].min()) / r["lambda_max_H"].mean())
            for r in stretches]
    h_max = max(float(r["lambda_max_H"].max()) for r in stretches)
    g_med = float(np.median(growth))
    err_med = float(np.median(errors)) if errors else math.nan
    signed = [p["signed_error"] for p in predictions if p is not None]
    return [
        Verdict("decoupled", f"before spikes, most coordinates have g²/v < 1e-2 (median fraction ≥ {min_decoupled})",
                float(np.median(frac)) >= min_decoupled,
                {"stretches": n, "median_fraction_decoupled": float(np.median(frac))}),
        Verdict("crossing_predicted_by_decay",
                f"v's β2-decay alone predicts when λ_max(Ĥ) reaches 2/η (median error ≤ {max_crossing_error:.0%} of the time to it)",
                bool(errors) and err_med <= max_crossing_error,
                {"stretches_predicted": len(errors), "median_relative_error": err_med,
                 "median_signed_error": float(np.median(signed)) if signed else math.nan,
                 "median_steps_to_crossing": float(np.median(
                     [p["measured"] - p["t0"] for p in predictions if p and p["measured"]]
                     or [math.nan]))}),
        Verdict("lambda_pre_rises_at_decay_rate",
                "ln λ_max(Ĥ) grows at the rate β2-decay of v predicts",
                growth_band[0] <= g_med <= growth_band[1],
                {"median_growth_over_predicted": g_med, "min": float(min(growth)),
                 "max": float(max(growth))}),
        Verdict("lambda_H_flat_below_threshold", "meanwhile λ_max(H) is flat and below 2/η",
                max(flat) < flat_tolerance and h_max < threshold,
                {"max_relative_change_H": max(flat), "max_lambda_H_over_threshold":
                 h_max / threshold}),
    ]


def _predict_crossing(rows, cfg, threshold, min_decoupled, hysteresis) -> dict | None:
    """Predicted against measured crossing step over one calm stretch (None when the stretch
    has no decoupled tracked step below 2/η)."""
    start = rows[(rows["g2_over_v_frac_small"] >= min_decoupled)
                 & (rows["lambda_max_pre"] < threshold)]
    if start.empty:
        return None
    t0, lam0 = int(start["step"].iloc[0]), float(start["lambda_max_pre"].iloc[0])
    after = rows[rows["step"] >= t0]
    crossings = sustained_crossings(after["lambda_max_pre"], after["step"], threshold,
                                    hysteresis=hysteresis)
    measured = crossings[0].start if crossings else None
    horizon = int(rows["step"].max()) - t0 + 10_000
    predicted = decay_crossing_step(lam0, t0, threshold, cfg.beta1, cfg.beta2, horizon)
    if measured is None or predicted is None or measured == t0:
        return {"t0": t0, "measured": measured, "predicted": predicted, "rel_error": 1.0,
                "signed_error": math.nan}
    signed = (predicted - measured) / (measured - t0)
    return {"t0": t0, "measured": measured, "predicted": predicted,
            "rel_error": min(abs(signed), 1.0), "signed_error": signed}


def random_direction_cosine(n: int, q: float = 0.5) -> float:
    """The ``q`` quantile of |cos(z, u)| for z uniform on the sphere of R^n and a fixed unit u:
    z1²/‖z‖² ~ Beta(1/2, (n-1)/2), so the median is about 0.674/√n. The baseline against
    which "the gradient is not aligned" is judged."""
    from scipy.stats import beta

    check_number("n", n, low=2, integer=True)
    return float(math.sqrt(beta.ppf(q, 0.5, (n - 1) / 2)))


def instrument_verdict(result, *, max_error: float = 1e-3) -> Verdict:
    """Every chapter: the curvature instrument can be trusted on this run.

    Holds when no tracked λ_max(Ĥ) is uncertified (its relative residual above the solver's
    tolerance: :data:`~utils.curvature.tracker.CERTIFICATES`) and every spot check against a cold,
    tight ``eigsh`` (every :data:`~utils.curvature.tracker.SPOT_CHECK_EVERY`-th tracked step and
    each spike's
    start) agrees within ``max_error`` relative. If the engine had locked onto a lower
    eigenvalue, or stopped short, this would measure uncertified steps or a spot-check error
    above ``max_error``, and fail.
    """
    info = result.instrument()
    err = info["spot_check_max_rel_error"]
    return Verdict("instrument_trusted",
                   f"every tracked λ_max(Ĥ) is certified and within {max_error:g} of a cold eigsh "
                   "at every spot check",
                   info["uncertified_steps"] == 0 and info["spot_checks"] > 0
                   and err is not None and err <= max_error,
                   {k: v for k, v in info.items() if k != "tracked_steps"})
