"""How the book scores an alarm against the spikes: the one set of rules of chapters 4, 6 and 9.

The rules, fixed before any result is shown (the Definitions page states them too):

* **the alarm unit** is a step: a signal raises its alarm at a step, from what is known before
  that step's update; a threshold rule raises one at every step at which its quantity is above
  the threshold, a sustained rule at the last step of the run of steps it needs;
* **the window**: an alarm is a *hit* when it fires in [start − h, start) of a counted spike,
  for a horizon h (:data:`JUDGED_HORIZON` in the chapters' verdicts); an alarm at or after a
  spike's start is never a hit;
* **alarms inside a spike** (from its start to its end) are neither hits nor false alarms, and
  those steps are not calm;
* **matched chance**: the same number of alarms placed uniformly at random on the steps where
  the signal could fire, scored alike (:func:`matched_chance`);
* **pooling**: counts summed over seeds before dividing (precision = Σ hits / Σ alarms, recall
  = Σ warned spikes / Σ spikes), with 95 % bootstrap intervals that resample seeds
  (:func:`pool`, :func:`pooled_difference`).

:func:`utils.events.detectors.score_alarms` scores one run at one horizon; :func:`score_signal`
adds matched chance and gives the row every chapter stores.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from utils.events.detectors import f1_score, score_alarms

JUDGED_HORIZON = 20
"""The horizon h of the chapters' scored tables and verdicts."""
CHANCE_DRAWS = 10
"""Draws of random alarms behind each matched-chance score."""


def score_signal(steps, fired, eligible, spikes, horizon: int, rng,
                 draws: int = CHANCE_DRAWS, **rules) -> dict:
    """One signal on one run at ``horizon``, scored by the module's rules: ``fired`` (bool per
    step of ``steps``) against ``spikes``, with matched chance over the ``eligible`` steps (where
    the signal could fire) drawn from ``rng``. The columns every chapter stores: spikes,
    warned, alarms, hits, false_alarms, calm_steps, precision, recall, f1,
    false_alarms_per_1000, median_lead, leads (space-separated), chance_precision,
    chance_recall. ``rules``: :func:`~utils.events.detectors.score_alarms`'s keywords, for
    chapter 4's account of its former rule only."""
    fired = np.asarray(fired, dtype=bool)
    s = score_alarms(steps, fired, spikes, horizon, **rules)
    chance = matched_chance(steps, eligible, int(fired.sum()), spikes, horizon, rng, draws,
                            **rules)
    return {"spikes": s.spikes, "warned": len(s.leads), "alarms": s.alarms, "hits": s.hits,
            "false_alarms": s.false_alarms, "calm_steps": s.calm_steps,
            "precision": s.precision, "recall": s.recall, "f1": s.f1,
            "false_alarms_per_1000": s.false_alarms_per_1000, "median_lead": s.median_lead,
            "leads": " ".join(map(str, s.leads)), "chance_precision": chance[0],
            "chance_recall": chance[1]}


def matched_chance(steps, eligible, n_alarms: int, spikes, horizon: int, rng,
                   draws: int = CHANCE_DRAWS, **rules) -> tuple[float, float]:
    """(precision, recall) of ``n_alarms`` alarms placed uniformly at random on the ``eligible``
    steps (the steps where the signal could fire), scored like the signal; the mean over
    ``draws`` draws (``rules``: :func:`~utils.events.detectors.score_alarms`'s keywords). NaN
    without alarms or spikes."""
    candidates = np.flatnonzero(eligible)
    if n_alarms == 0 or not spikes or not len(candidates):
        return math.nan, math.nan
    precision, recall = [], []
    for _ in range(draws):
        alarms = np.zeros(len(steps), dtype=bool)
        alarms[rng.choice(candidates, size=min(n_alarms, len(candidates)), replace=False)] = True
        s = score_alarms(steps, alarms, spikes, horizon, **rules)
        precision.append(s.precision)
        recall.append(s.recall)
    return float(np.nanmean(precision)) if np.isfinite(precision).any() else math.nan, \
        float(np.mean(recall))


def wilson_interval(k: int, n: int) -> tuple[float, float]:
    """The 95 % Wilson interval of a share of k successes in n trials (scipy.stats.binomtest):
    the interval of every share the book reports over forks, spikes or windows. (NaN, NaN)
    without trials."""
    from scipy.stats import binomtest

    if not n:
        return math.nan, math.nan
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


# ------------------------------------------------------------------------------- pooling

def _pooled(hits, alarms, warned, spikes, false, calm, chance_hits, axis=-1) -> tuple:
    """Pooled precision, recall, F1 (0 when no spike was warned of), false alarms per 1,000
    calm steps and matched-chance precision of per-run counts (arrays over runs, or batches
    of resamples along ``axis``)."""
    precision = hits.sum(axis) / alarms.sum(axis)
    recall = warned.sum(axis) / spikes.sum(axis)
    return (precision, recall, f1_score(precision, recall),
            1000 * false.sum(axis) / calm.sum(axis), chance_hits.sum(axis) / alarms.sum(axis))


POOLED = ("precision", "recall", "f1", "false_alarms_per_1000", "chance_precision")


def pool(group: pd.DataFrame, intervals: bool = False) -> dict:
    """The seeds of one (architecture, setting, signal, threshold, horizon) pooled: precision,
    recall, F1, false alarms per 1,000 calm steps and the matched-chance precision, the median
    and quartiles of all leads, the alarms per 1,000 steps; with ``intervals``, a 95 %
    bootstrap interval over seeds for each pooled ratio (``<name>_low``, ``<name>_high``)."""
    arrays = _arrays(group)
    with np.errstate(divide="ignore", invalid="ignore"):
        values = _pooled(*arrays)
    leads = [x for row in lead_lists(group["leads"]) for x in row]
    out = dict(zip(POOLED, (float(v) for v in values)))
    out.update(seeds=len(group), spikes=int(arrays[3].sum()), alarms=int(arrays[1].sum()),
               alarms_per_1000=1000 * arrays[1].sum() / group["steps"].sum(),
               median_lead=float(np.median(leads)) if leads else math.nan,
               lead_q25=float(np.percentile(leads, 25)) if leads else math.nan,
               lead_q75=float(np.percentile(leads, 75)) if leads else math.nan)
    if intervals:
        for i, name in enumerate(POOLED):
            out[f"{name}_low"], out[f"{name}_high"] = _interval(
                arrays, lambda *a, axis=-1, i=i: _pooled(*a, axis=axis)[i])
    return out


def lead_lists(leads: pd.Series) -> list[list[int]]:
    """The ``leads`` column (space-separated integers per row; empty, NaN, or a lone number
    that the CSV reader made a float) as a list of integer lists."""
    return [[int(float(x)) for x in str(v).split()] if v == v and str(v).strip() else []
            for v in leads]


def _arrays(rows: pd.DataFrame) -> list:
    """The per-run counts :func:`_pooled` takes: hits, alarms, warned spikes, spikes, false
    alarms, calm steps, and the hits expected of matched random alarms."""
    arrays = [rows[c].to_numpy(dtype=float) for c in
              ("hits", "alarms", "warned", "spikes", "false_alarms", "calm_steps")]
    arrays.append(np.nan_to_num(rows["chance_precision"].to_numpy(dtype=float)) * arrays[1])
    return arrays


def _interval(arrays, statistic, n_resamples: int = 2000, seed: int = 0) -> tuple:
    """95 % percentile bootstrap interval of ``statistic(*arrays, axis)``, resampling runs
    (the arrays stay paired; scipy.stats.bootstrap with a fixed seed). NaN below two runs."""
    import warnings

    from scipy.stats import bootstrap

    if len(arrays[0]) < 2:
        return math.nan, math.nan
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")
        res = bootstrap(tuple(arrays), statistic, paired=True, vectorized=True,
                        n_resamples=n_resamples, method="percentile",
                        random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def pooled_difference(table: pd.DataFrame, signal: str, baseline: str, statistic: str = "f1",
                      horizon: int = JUDGED_HORIZON) -> tuple[float, float, float]:
    """(difference, low, high): ``statistic`` (a pooled ratio of :data:`POOLED`) of ``signal``
    minus that of ``baseline``, both at their default thresholds and ``horizon``, pooled over
    all rows given, with a 95 % percentile bootstrap interval that resamples runs (a run's
    two rows stay paired)."""
    rows = table[table["default"].astype(bool) & (table["horizon"] == horizon)]
    run = ["architecture", "setting", "seed"]
    a = rows[rows["signal"] == signal].set_index(run).sort_index()
    b = rows[rows["signal"] == baseline].set_index(run).reindex(a.index)
    i = POOLED.index(statistic)
    arrays = _arrays(a) + _arrays(b)

    def difference(*x, axis=-1):
        return _pooled(*x[:7], axis=axis)[i] - _pooled(*x[7:], axis=axis)[i]

    with np.errstate(divide="ignore", invalid="ignore"):
        point = float(difference(*arrays))
    lo, hi = _interval(arrays, difference)
    return point, float(lo), float(hi)


def pooled_ratio(numerators, denominators) -> tuple[float, float, float]:
    """(Σ numerators / Σ denominators, low, high): a share pooled over runs (one entry per
    run), with the 95 % percentile bootstrap interval that resamples runs, as :func:`pool`'s
    ratios have (NaN interval below two runs)."""
    num, den = np.asarray(numerators, dtype=float), np.asarray(denominators, dtype=float)

    def ratio(a, b, axis=-1):
        return a.sum(axis) / b.sum(axis)

    with np.errstate(divide="ignore", invalid="ignore"):
        point = float(num.sum() / den.sum()) if den.sum() else math.nan
        low, high = _interval([num, den], ratio)
    return point, low, high
