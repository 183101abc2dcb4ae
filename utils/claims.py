"""The claims of the paper as checks on measured runs: one function per chapter.

Each takes :class:`~utils.runs.RunResult` objects and returns a list of
:class:`~utils.verdicts.Verdict`, each with the numbers it was decided on. Thresholds that a
verdict uses are arguments with documented defaults, so that a reader can see and vary them.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .spikes import Spike, score_predictor, sustained_crossings
from .verdicts import Verdict


def spikes_after_first_crossing(result) -> tuple[int | None, list[Spike]]:
    """The step at which λ_max(Ĥ) first exceeded 2/η (None if never), and the spikes whose
    peak comes at or after it."""
    m = result.metrics.dropna(subset=["lambda_max_pre"])
    crossings = sustained_crossings(m["lambda_max_pre"], m["step"], 2.0 / result.config.lr)
    first = crossings[0].start if crossings else None
    return first, [s for s in result.spikes if first is not None and s.peak >= first]


def counterexample_verdicts(adam, gd) -> list[Verdict]:
    """Chapter 0: on f(θ) = aθ²/2 GD is smooth at η ≪ 2/a while Adam spikes at the same η.

    ``adam`` and ``gd`` are :class:`~utils.runs.RunResult` of the two optimizers on the same
    quadratic. A spike counts for Adam when its peak comes after λ_max(Ĥ) first exceeded 2/η.
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


def v_decay_verdicts(result, *, calm_length: int = 150, min_decoupled: float = 0.9,
                     rate_tolerance: float = 0.05, growth_band=(0.7, 1.5),
                     flat_tolerance: float = 0.1) -> list[Verdict]:
    """Chapter 1: once g² ≪ v, v decays at rate β2 and λ_max(Ĥ) rises while λ_max(H) is flat.

    Measured over the calm stretch before each spike (:func:`calm_stretches`):
    ``decoupled``: the median fraction of coordinates with g²/v < 1e-2 reaches ``min_decoupled``.
    ``v_decays_at_beta2``: where that fraction is ≥ ``min_decoupled``, the median v_t/v_{t-1}
    differs from β2 by less than ``rate_tolerance`` × (1-β2).
    ``lambda_pre_rises_at_decay_rate``: the fitted slope of ln λ_max(Ĥ) over the stretch,
    divided by the slope predicted from pure β2-decay (:func:`predicted_decay_growth`), has a
    median within ``growth_band``.
    ``lambda_H_flat_below_threshold``: over each stretch λ_max(H) varies by less than
    ``flat_tolerance`` (relative), and stays below 2/η.
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
    decoupled_rows = pd.concat(stretches)
    decoupled_rows = decoupled_rows[decoupled_rows["g2_over_v_frac_small"] >= min_decoupled]
    ratio = float(decoupled_rows["v_ratio_median"].median()) if len(decoupled_rows) else math.nan
    growth = [_slope(r["step"], np.log(r["lambda_max_pre"]))
              / float(predicted_decay_growth(r["step"], cfg.beta2).mean()) for r in stretches]
    flat = [float((r["lambda_max_H"].max() - r["lambda_max_H"].min()) / r["lambda_max_H"].mean())
            for r in stretches]
    h_max = max(float(r["lambda_max_H"].max()) for r in stretches)
    g_med = float(np.median(growth))
    return [
        Verdict("decoupled", f"before spikes, most coordinates have g²/v < 1e-2 (median fraction ≥ {min_decoupled})",
                float(np.median(frac)) >= min_decoupled,
                {"stretches": n, "median_fraction_decoupled": float(np.median(frac))}),
        Verdict("v_decays_at_beta2", "where decoupled, v_t/v_{t-1} = β2",
                abs(ratio - cfg.beta2) < rate_tolerance * (1 - cfg.beta2),
                {"median_v_ratio": ratio, "beta2": cfg.beta2,
                 "deviation_in_units_of_1_minus_beta2": (ratio - cfg.beta2) / (1 - cfg.beta2)}),
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


def crossing_verdicts(result, *, min_lead: int = 5, hysteresis: float = 0.01,
                      warmup: int = 50) -> list[Verdict]:
    """Chapter 2: λ_max(Ĥ) crosses 2/η and stays above before each spike; λ_max(H) stays below.

    Crossings of 2/η by λ_max(Ĥ) are taken with a relative ``hysteresis`` (see
    :func:`~utils.spikes.sustained_crossings`). ``crossing_precedes_every_spike``: for every
    spike, a crossing began at least ``min_lead`` steps before the spike was detected and was
    still going on then. ``raw_curvature_below``: after ``warmup`` steps, λ_max(H) < 2/η.
    """
    threshold = 2.0 / result.config.lr
    m = result.metrics.dropna(subset=["lambda_max_pre"])
    crossings = sustained_crossings(m["lambda_max_pre"], m["step"], threshold,
                                    hysteresis=hysteresis)
    spikes = [s for s in result.spikes if not s.diverged]
    leads = []
    for s in spikes:
        ongoing = [c for c in crossings if c.start <= s.detected <= c.end + result.config.track_every]
        leads.append(s.detected - ongoing[0].start if ongoing else None)
    ok = [x for x in leads if x is not None and x >= min_lead]
    raw = m[m["step"] > warmup]["lambda_max_H"]
    return [
        Verdict("spikes_found", "the run has spikes", len(spikes) > 0, {"spikes": len(spikes)}),
        Verdict("crossing_precedes_every_spike",
                f"before each spike λ_max(Ĥ) had crossed 2/η and stayed above for ≥ {min_lead} steps",
                len(spikes) > 0 and len(ok) == len(spikes),
                {"spikes_preceded": len(ok), "crossings": len(crossings),
                 "median_lead_steps": float(np.median(ok)) if ok else math.nan,
                 "min_lead_steps": float(min(ok)) if ok else math.nan}),
        Verdict("raw_curvature_below", "λ_max(H) stays below 2/η",
                bool(len(raw)) and float(raw.max()) < threshold,
                {"max_lambda_H_over_threshold": float(raw.max()) / threshold if len(raw)
                 else math.nan}),
    ]


def alignment_phases(result, *, onset_before: int = 10, calm_length: int = 150,
                     quiet: int = 300, column: str = "cos_grad_top_sym") -> pd.DataFrame:
    """Tracked rows of the stretches around each spike, labelled by ``phase``:

    * ``"calm"``: the calm stretch before a spike (:func:`calm_stretches`, minus its last
      ``onset_before`` steps) when at least ``quiet`` steps separate it from the previous spike's
      end and from the start of training (the initial transient);
    * ``"between close spikes"``: the same for spikes closer than that, where the previous
      spike's oscillation is still decaying;
    * ``"onset"``: from ``onset_before`` steps before a spike's start to its peak.

    A ``spike`` column numbers the spike each row belongs to.
    """
    m = result.metrics.dropna(subset=[column])
    spikes = [s for s in result.spikes if not s.diverged]
    stretches = calm_stretches(m, spikes, length=calm_length, column=column, keep_empty=True)
    rows, prev_end = [], 0
    for k, (s, stretch) in enumerate(zip(spikes, stretches)):
        if stretch is not None:
            label = "calm" if s.start - prev_end >= quiet else "between close spikes"
            rows.append(stretch[stretch["step"] < s.start - onset_before].assign(phase=label,
                                                                                  spike=k))
        rows.append(m[(m["step"] >= s.start - onset_before) & (m["step"] <= s.peak)]
                    .assign(phase="onset", spike=k))
        prev_end = s.end if s.end is not None else math.inf
    return pd.concat(rows) if rows else m.iloc[:0].assign(phase=[], spike=[])


def alignment_verdicts(result, *, calm_max: float = 0.1, onset_min: float = 0.9,
                       onset_before: int = 10, quiet: int = 300) -> list[Verdict]:
    """Chapter 3: |cos| between the gradient and the top eigendirection of Ĥ is near 0 in calm
    phases and near 1 at spike onset.

    The cosine is ``cos_grad_top_sym`` = |cos(D^{1/2} g, u)|, taken where Ĥ is symmetric (u is
    the top eigenvector of c D^{1/2} H D^{1/2}; equivalently g against the left eigenvector
    D^{-1/2} u of Ĥ). Phases as in :func:`alignment_phases`.
    ``calm_alignment_small``: the median over "calm" rows is < ``calm_max``.
    ``onset_alignment_large``: the median over spikes of the largest cosine in the onset window
    is > ``onset_min``. The median over "between close spikes" rows is reported, not judged.
    """
    ph = alignment_phases(result, onset_before=onset_before, quiet=quiet)
    calm = ph[ph["phase"] == "calm"]
    between = ph[ph["phase"] == "between close spikes"]
    onset = ph[ph["phase"] == "onset"].groupby("spike")
    onset_max = onset["cos_grad_top_sym"].max()

    def med(x):
        return float(x.median()) if len(x) else math.nan

    return [
        Verdict("quiet_spikes_found", f"some spike follows ≥ {quiet} quiet steps",
                calm["spike"].nunique() > 0,
                {"spikes": len(onset_max), "spikes_after_quiet": int(calm["spike"].nunique())}),
        Verdict("calm_alignment_small", f"in calm phases the cosine is near 0 (median < {calm_max})",
                med(calm["cos_grad_top_sym"]) < calm_max,
                {"median_calm_cos": med(calm["cos_grad_top_sym"]),
                 "median_calm_cos_parameter_space": med(calm["cos_grad_top"]),
                 "median_between_close_spikes_cos": med(between["cos_grad_top_sym"])}),
        Verdict("onset_alignment_large", f"at onset the cosine rises toward 1 (median peak > {onset_min})",
                med(onset_max) > onset_min,
                {"median_onset_peak_cos": med(onset_max),
                 "median_onset_peak_cos_parameter_space": med(onset["cos_grad_top"].max())}),
    ]


def onset_verdicts(result, *, max_lead: int = 50, min_recall: float = 0.75,
                   min_ratio: float = 3.0) -> list[Verdict]:
    """Chapter 4: spikes start when λ_grad(Ĥ) exceeds 2/η; λ_max(Ĥ) crosses far more often.

    Crossings of 2/η by λ_grad(Ĥ) (form B, ``lambda_grad_pre``) and by λ_max(Ĥ) are scored
    against the spikes with :func:`~utils.spikes.score_predictor` (a crossing matches a spike
    when it starts between ``max_lead`` steps before the spike's start and its peak).
    ``lambda_grad_marks_onsets``: the recall of λ_grad crossings is ≥ ``min_recall``.
    ``lambda_max_fires_more_often``: λ_max(Ĥ) crosses at least ``min_ratio`` times as often as
    there are spikes. ``lambda_grad_more_precise``: a larger share of λ_grad's crossings than of
    λ_max's come with a spike.
    """
    threshold = 2.0 / result.config.lr
    m = result.metrics.dropna(subset=["lambda_max_pre"])
    spikes = [s for s in result.spikes if not s.diverged]
    scores = {col: score_predictor(sustained_crossings(m[col], m["step"], threshold), spikes,
                                   max_lead=max_lead)
              for col in ("lambda_grad_pre", "lambda_max_pre")}
    grad, lmax = scores["lambda_grad_pre"], scores["lambda_max_pre"]
    ratio = lmax.n_crossings / len(spikes) if spikes else math.nan
    return [
        Verdict("spikes_found", "the run has spikes", len(spikes) > 0, {"spikes": len(spikes)}),
        Verdict("lambda_grad_marks_onsets",
                f"λ_grad(Ĥ) crosses 2/η at the onset of ≥ {min_recall:.0%} of spikes",
                len(spikes) > 0 and grad.recall >= min_recall,
                {"spikes_matched": grad.matched_spikes, "recall": grad.recall,
                 "median_lead_steps": float(np.median(grad.leads)) if grad.leads else math.nan}),
        Verdict("lambda_max_fires_more_often",
                f"λ_max(Ĥ) crosses 2/η ≥ {min_ratio:g}× as often as spikes occur",
                ratio >= min_ratio, {"lambda_max_crossings": lmax.n_crossings,
                                     "crossings_per_spike": ratio}),
        Verdict("lambda_grad_more_precise",
                "a larger share of λ_grad's crossings than of λ_max's come with a spike",
                grad.precision > lmax.precision,
                {"precision_lambda_grad": grad.precision, "precision_lambda_max": lmax.precision,
                 "lambda_grad_crossings": grad.n_crossings}),
    ]


def instrument_verdict(result, *, max_error: float = 1e-3) -> Verdict:
    """Every chapter: the curvature instrument can be trusted on this run.

    Holds when no tracked λ_max(Ĥ) is uncertified (its relative residual above the solver's
    tolerance: :data:`~utils.tracker.CERTIFICATES`) and every spot check against a cold, tight
    ``eigsh`` (every :data:`~utils.tracker.SPOT_CHECK_EVERY`-th tracked step and each spike's
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
