"""Which signal warns of a spike: the runs, scores and comparisons of the predictors chapter.

The sweep ``predictors`` (:func:`predictor_rows`) trains :data:`PREDICTOR_SEEDS` seeds of each
setting of :data:`SETTINGS` with a :class:`~utils.signals.SignalRecorder` attached, and scores
every signal of :data:`utils.detectors.SIGNALS` at every threshold and horizon
(:func:`utils.detectors.score_alarms`): one row per (architecture, setting, seed, signal,
threshold, horizon). Each row also carries the score of random alarms placed on the same
steps at the signal's own count (``chance_precision``, ``chance_recall``; the mean over
:data:`CHANCE_DRAWS` draws) and the signal's cost per training step.

The chapter's comparisons (:func:`signal_table`, :func:`pr_curves`, :func:`under_budget`,
:func:`predictor_verdicts`) pool the seeds: precision = Σ hits / Σ alarms, recall = Σ warned
spikes / Σ spikes, false alarms per 1,000 calm steps = 1000 Σ false alarms / Σ calm steps, with
95 % bootstrap intervals that resample seeds (scipy.stats.bootstrap, paired).
"""
from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import pandas as pd

from .detectors import SIGNALS, score_alarms, signal_alarms

HORIZONS = (5, 20, 100)
"""h: an alarm is a hit when it fires in [start − h, start) of a spike."""
JUDGED_HORIZON = 20
"""The horizon of the chapter's table and verdicts."""
LEAD_HORIZON = 100
"""The horizon at which lead times are compared (the widest, so leads are least truncated)."""
FALSE_ALARM_BUDGET = 10.0
"""False alarms per 1,000 calm steps a practitioner is taken to tolerate (:func:`under_budget`)."""
CHANCE_DRAWS = 10
PREDICTOR_SEEDS = 20
CURVATURE = ("lambda_max_pre", "alignment", "lambda_grad")
"""What the tracker measures in every predictor run (λ_max(Ĥ), the alignment, λ_grad(Ĥ))."""
SETTINGS = {
    ("mlp", "full batch"): ("01_v_decay", {}),
    ("cnn", "full batch"): ("03_gradient_alignment", {}),
    ("transformer", "full batch"): ("04_spike_onset", {}),
    ("transformer", "batch 64"): ("04_spike_onset", {"batch_size": 64, "lr": 0.02,
                                                     "steps": 3000}),
}
"""(architecture, setting) -> (the chapter whose default run it is, what changes). The
mini-batch setting trains chapter 4's Transformer on 64 of the 121 sequences per step at
η = 0.02 for 3,000 steps; its loss, spikes and curvature are measured on all 121, the fixed
evaluation batch (:mod:`utils.runs`)."""


def predictor_config(architecture: str, setting: str, **overrides):
    """The :class:`~utils.runs.RunConfig` of one setting of :data:`SETTINGS` (its chapter's
    default run measuring :data:`CURVATURE`, no progress bar), with ``overrides``."""
    from .chapters import chapter_config

    if (architecture, setting) not in SETTINGS:
        raise ValueError(f"(architecture, setting) must be one of {list(SETTINGS)}, "
                         f"got {(architecture, setting)!r}")
    chapter, changes = SETTINGS[(architecture, setting)]
    return chapter_config(chapter, progress=False, measure=CURVATURE,
                          **{**changes, **overrides})


def setting_of(config) -> tuple[str, str]:
    """(architecture, setting) of a run's config: the model and "full batch" or "batch B"."""
    return config.model, f"batch {config.batch_size}" if config.batch_size else "full batch"


def predictor_rows(config, seeds) -> list[dict]:
    """The sweep's evaluate function (``trains=True``): train each seed of ``config`` with a
    :class:`~utils.signals.SignalRecorder` and score it (:func:`score_run`)."""
    from .runs import run
    from .signals import SignalRecorder

    rows = []
    for seed in seeds:
        recorder = SignalRecorder()
        result = run(dataclasses.replace(config, seed=int(seed)), signals=recorder,
                     spot_checks=False)
        rows += score_run(result, recorder)
    return rows


def score_run(result, recorder) -> list[dict]:
    """Every signal of :data:`~utils.detectors.SIGNALS` at every threshold and horizon of
    :data:`HORIZONS`, scored on one run (rows as in the module docstring)."""
    m = result.metrics
    config = result.config
    architecture, setting = setting_of(config)
    steps = m["step"].to_numpy()
    costs = signal_costs(result, recorder)
    rows = []
    for i, (name, sig) in enumerate(SIGNALS.items()):
        eligible = (np.isfinite(m[sig.column].to_numpy(dtype=float)) if sig.tracked
                    and sig.column in m else np.ones(len(m), dtype=bool))
        for j, threshold in enumerate(sig.thresholds):
            tick = time.perf_counter()
            alarms = signal_alarms(name, m, config.lr, threshold, seed=config.seed * 1000 + j)
            costs.setdefault(name, _cost(0, 0, (time.perf_counter() - tick) / len(m),
                                         result))
            for h in HORIZONS:
                s = score_alarms(steps, alarms, result.spikes, h)
                rng = np.random.default_rng([config.seed, i, j, h])
                chance = matched_chance(steps, eligible, int(alarms.sum()), result.spikes, h,
                                        rng)
                rows.append({
                    "seed": int(config.seed), "architecture": architecture, "setting": setting,
                    "signal": name, "threshold": float(threshold),
                    "default": threshold == sig.default, "horizon": h,
                    "tracked": sig.tracked, "steps": len(m), "spikes": s.spikes,
                    "warned": len(s.leads), "alarms": s.alarms, "hits": s.hits,
                    "false_alarms": s.false_alarms, "calm_steps": s.calm_steps,
                    "precision": s.precision, "recall": s.recall, "f1": s.f1,
                    "false_alarms_per_1000": s.false_alarms_per_1000,
                    "median_lead": s.median_lead, "leads": " ".join(map(str, s.leads)),
                    "chance_precision": chance[0], "chance_recall": chance[1],
                    **costs[name], "diverged": result.diverged_at is not None})
    return rows


def _cost(hvps: float, forwards: float, seconds: float, result) -> dict:
    plain = result.timings.get("plain_step_s", math.nan)
    return {"hvps_per_step": float(hvps), "forwards_per_step": float(forwards),
            "time_ratio": float(seconds / plain) if plain > 0 else math.nan}


def signal_costs(result, recorder) -> dict:
    """Per signal: Hessian-vector products and forward passes per training step, and its wall
    time per step over a plain step's (``time_ratio``). The curvature signals cost the tracked
    steps' extra time spread over ``track_every`` steps; λ_grad(Ĥ) alone, one product per
    tracked step, is charged that product's share of it. The recorder's signals cost what it
    timed; the rules on the loss and gradient norm cost the time to compute their alarms
    (:func:`score_run`), plus, with mini-batches, the evaluation loss's forward pass for the
    loss-rise baseline."""
    m, config = result.metrics, result.config
    n, k = len(m), max(config.track_every, 1)
    t = result.timings
    extra = t.get("tracked_step_s", math.nan) - t.get("plain_step_s", math.nan)
    hvps = float(m["hvps"].mean()) if "hvps" in m else math.nan
    costs = {}
    for name in SIGNALS:
        if name.startswith(("lambda_max", "alignment")):
            costs[name] = _cost(hvps / k, 0, extra / k, result)
        elif name.startswith("lambda_grad"):
            costs[name] = _cost(1 / k, 0, extra / hvps / k, result)
    seconds = recorder.seconds
    costs["secant"] = _cost(0, 0, seconds["secant"] / n, result)
    costs["spam"] = _cost(0, 0, seconds["spam"] / n, result)
    costs["stableadamw"] = _cost(0, 0, seconds["stableadamw"] / n, result)
    forwards = float(m["critical_forwards"].mean()) if "critical_forwards" in m else math.nan
    costs["critical_step"] = _cost(0, forwards, seconds["critical_step"] / n, result)
    if config.batch_size:
        per_forward = seconds["critical_step"] / (n * forwards) if forwards else math.nan
        costs["loss_rose"] = _cost(0, 1, per_forward, result)  # the evaluation loss
    return costs


def matched_chance(steps, eligible, n_alarms: int, spikes, horizon: int, rng,
                   draws: int = CHANCE_DRAWS) -> tuple[float, float]:
    """(precision, recall) of ``n_alarms`` alarms placed uniformly at random on the ``eligible``
    steps (the steps where the signal could fire), scored like the signal; the mean over
    ``draws`` draws. NaN without alarms or spikes."""
    candidates = np.flatnonzero(eligible)
    if n_alarms == 0 or not spikes or not len(candidates):
        return math.nan, math.nan
    precision, recall = [], []
    for _ in range(draws):
        alarms = np.zeros(len(steps), dtype=bool)
        alarms[rng.choice(candidates, size=min(n_alarms, len(candidates)), replace=False)] = True
        s = score_alarms(steps, alarms, spikes, horizon)
        precision.append(s.precision)
        recall.append(s.recall)
    return float(np.nanmean(precision)) if np.isfinite(precision).any() else math.nan, \
        float(np.mean(recall))


# ------------------------------------------------------------------------------- pooling

KEYS = ["architecture", "setting", "signal", "threshold", "horizon"]


def _pooled(hits, alarms, warned, spikes, false, calm, chance_hits, axis=-1) -> tuple:
    precision = hits.sum(axis) / alarms.sum(axis)
    recall = warned.sum(axis) / spikes.sum(axis)
    return (precision, recall, 2 * precision * recall / (precision + recall),
            1000 * false.sum(axis) / calm.sum(axis), chance_hits.sum(axis) / alarms.sum(axis))


POOLED = ("precision", "recall", "f1", "false_alarms_per_1000", "chance_precision")


def pool(group: pd.DataFrame, intervals: bool = False) -> dict:
    """The seeds of one (architecture, setting, signal, threshold, horizon) pooled: precision,
    recall, F1, false alarms per 1,000 calm steps and the matched-chance precision, the median
    and quartiles of all leads, the alarms per 1,000 steps; with ``intervals``, a 95 %
    bootstrap interval over seeds for each pooled ratio (``<name>_low``, ``<name>_high``)."""
    arrays = [group[c].to_numpy(dtype=float) for c in
              ("hits", "alarms", "warned", "spikes", "false_alarms", "calm_steps")]
    chance_hits = np.nan_to_num(group["chance_precision"].to_numpy(dtype=float)) * arrays[1]
    arrays.append(chance_hits)
    with np.errstate(divide="ignore", invalid="ignore"):
        values = _pooled(*arrays)
    leads = [int(x) for s in group["leads"].fillna("").astype(str) for x in s.split()]
    out = dict(zip(POOLED, (float(v) for v in values)))
    out.update(seeds=len(group), spikes=int(arrays[3].sum()), alarms=int(arrays[1].sum()),
               alarms_per_1000=1000 * arrays[1].sum() / group["steps"].sum(),
               median_lead=float(np.median(leads)) if leads else math.nan,
               lead_q25=float(np.percentile(leads, 25)) if leads else math.nan,
               lead_q75=float(np.percentile(leads, 75)) if leads else math.nan)
    if intervals:
        out.update(_intervals(arrays))
    return out


def _intervals(arrays, n_resamples: int = 2000, seed: int = 0) -> dict:
    """Percentile bootstrap intervals of the pooled ratios, resampling seeds (paired)."""
    import warnings

    from scipy.stats import bootstrap

    out = {}
    for i, name in enumerate(POOLED):
        if len(arrays[0]) < 2:
            lo = hi = math.nan
        else:
            with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
                warnings.simplefilter("ignore")
                res = bootstrap(tuple(arrays), lambda *a, axis=-1, i=i: _pooled(*a, axis=axis)[i],
                                paired=True, vectorized=True, n_resamples=n_resamples,
                                method="percentile", random_state=np.random.default_rng(seed))
            lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        out[f"{name}_low"], out[f"{name}_high"] = lo, hi
    return out


def pooled_scores(table: pd.DataFrame, intervals: bool = False, **select) -> pd.DataFrame:
    """:func:`pool` for every (architecture, setting, signal, threshold, horizon) of the rows
    matching ``select`` (column -> value), indexed by those keys."""
    rows = table
    for column, value in select.items():
        rows = rows[rows[column] == value]
    out = [{**dict(zip(KEYS, key)), **pool(g, intervals)}
           for key, g in rows.groupby(KEYS, sort=False)]
    return pd.DataFrame(out).set_index(KEYS)
