"""Which signal warns of a spike: the runs, scores and comparisons of the predictors chapter.

The sweep ``predictors`` (:func:`predictor_rows`) trains :data:`PREDICTOR_SEEDS` seeds of each
setting of :data:`SETTINGS` with a :class:`~utils.training.signals.SignalRecorder` attached, and
scores every signal of :data:`utils.events.detectors.SIGNALS` at every threshold and horizon
(:func:`utils.studies.scoring.score_signal`, the book's one set of scoring rules): one row per
(architecture, setting, seed, signal, threshold, horizon). Each row also carries the score of random alarms placed on the same
steps at the signal's own count (``chance_precision``, ``chance_recall``; the mean over
:data:`~utils.studies.scoring.CHANCE_DRAWS` draws) and the signal's cost per training step.

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

from utils.events.detectors import SIGNALS, signal_alarms
from utils.studies.scoring import JUDGED_HORIZON, pool, pooled_difference, score_signal

HORIZONS = (5, 20, 100)
"""h: an alarm is a hit when it fires in [start − h, start) of a spike."""
LEAD_HORIZON = 100
"""The horizon at which lead times are compared (the widest, so leads are least truncated)."""
FALSE_ALARM_BUDGET = 10.0
"""False alarms per 1,000 calm steps a practitioner is taken to tolerate (:func:`under_budget`)."""
MIN_RECALL = 0.5
"""A signal "warns" of a setting's spikes when it warns of at least this share of them
(:func:`earliest_warning`)."""
PREDICTOR_SEEDS = 20
CURVATURE = ("lambda_max_pre", "alignment", "lambda_grad")
"""What the tracker measures in every predictor run (λ_max(Ĥ), the alignment, λ_grad(Ĥ))."""
SETTINGS = {
    ("mlp", "full batch"): ("01_v_decay", {}),
    ("fnn_fig5", "full batch"): ("02_lambda_max_crossing", {"steps": 1000}),
    ("transformer", "full batch"): ("transformer_mod11", {}),
    ("transformer", "batch 64"): ("transformer_mod11", {"batch_size": 64, "lr": 0.02,
                                                     "steps": 3000}),
}
"""(architecture, setting) -> (the chapter whose default run it is, what changes): the same
three settings as chapter 5 forks (:data:`utils.studies.interventions.ARCHITECTURES`).
Chapter 2's network (the paper's Figure 5) runs 1,000 steps instead of the chapter's 400, so
that most seeds spike twice (its first spike comes at steps 170-610). The mini-batch setting
trains the book's one-layer Transformer (:data:`utils.studies.settings.TRANSFORMER`) on 64 of
the 121 sequences per step at η = 0.02 for 3,000 steps; its loss, spikes and curvature are
measured on all 121, the fixed evaluation batch (:mod:`utils.training.runs`). Chapter 3's CNN
of the paper's Figure 6 is not a setting: at about 2 min per tracked seed, 20 seeds would take
the whole sweep's budget."""


def predictor_config(architecture: str, setting: str, **overrides):
    """The :class:`~utils.training.runs.RunConfig` of one setting of :data:`SETTINGS` (its chapter's
    default run measuring :data:`CURVATURE`, no progress bar), with ``overrides``."""
    from utils.studies.settings import chapter_config

    if (architecture, setting) not in SETTINGS:
        raise ValueError(f"(architecture, setting) must be one of {list(SETTINGS)}, "
                         f"got {(architecture, setting)!r}")
    chapter, changes = SETTINGS[(architecture, setting)]
    return chapter_config(chapter, **{"progress": False, "measure": CURVATURE, **changes,
                                      **overrides})


def setting_of(config) -> tuple[str, str]:
    """(architecture, setting) of a run's config: the key of :data:`SETTINGS` whose run it is
    (matched on model, data, their arguments and batch size; other fields, the seed included,
    may differ), else its model class and "full batch" or "batch B"."""
    def identity(c):
        return (c.model, c.model_kwargs, c.data, c.data_kwargs, c.batch_size)

    for key in SETTINGS:
        if identity(predictor_config(*key)) == identity(config):
            return key
    return config.model, f"batch {config.batch_size}" if config.batch_size else "full batch"


def predictor_rows(config, seeds) -> list[dict]:
    """The sweep's evaluate function (``trains=True``): train each seed of ``config`` with a
    :class:`~utils.training.signals.SignalRecorder` and score it (:func:`score_run`)."""
    from utils.training.runs import run
    from utils.training.signals import SignalRecorder

    rows = []
    for seed in seeds:
        recorder = SignalRecorder()
        result = run(dataclasses.replace(config, seed=int(seed)), signals=recorder,
                     spot_checks=False)
        rows += score_run(result, recorder)
    return rows


def score_run(result, recorder, signals=None) -> list[dict]:
    """Every signal of :data:`~utils.events.detectors.SIGNALS` (or those named in ``signals``)
    at every threshold and horizon of :data:`HORIZONS`, scored on one run (rows as in the
    module docstring)."""
    m = result.metrics
    config = result.config
    architecture, setting = setting_of(config)
    steps = m["step"].to_numpy()
    costs = signal_costs(result, recorder)
    rows = []
    for i, (name, sig) in enumerate(SIGNALS.items()):
        if signals is not None and name not in signals:
            continue
        eligible = (np.isfinite(m[sig.column].to_numpy(dtype=float)) if sig.tracked
                    and sig.column in m else np.ones(len(m), dtype=bool))
        for j, threshold in enumerate(sig.thresholds):
            tick = time.perf_counter()
            alarms = signal_alarms(name, m, config.lr, threshold, seed=config.seed * 1000 + j)
            costs.setdefault(name, _cost(0, 0, (time.perf_counter() - tick) / len(m),
                                         result))
            for h in HORIZONS:
                rng = np.random.default_rng([config.seed, i, j, h])
                rows.append({
                    "seed": int(config.seed), "architecture": architecture, "setting": setting,
                    "signal": name, "threshold": float(threshold),
                    "default": threshold == sig.default, "horizon": h,
                    "tracked": sig.tracked, "steps": len(m),
                    **score_signal(steps, alarms, eligible, result.spikes, h, rng),
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


KEYS = ["architecture", "setting", "signal", "threshold", "horizon"]


def pooled_scores(table: pd.DataFrame, intervals: bool = False, **select) -> pd.DataFrame:
    """:func:`pool` for every (architecture, setting, signal, threshold, horizon) of the rows
    matching ``select`` (column -> value), indexed by those keys."""
    rows = table
    for column, value in select.items():
        rows = rows[rows[column] == value]
    out = [{**dict(zip(KEYS, key)), **pool(g, intervals)}
           for key, g in rows.groupby(KEYS, sort=False)]
    return pd.DataFrame(out).set_index(KEYS)


def signal_table(table: pd.DataFrame, horizon: int = JUDGED_HORIZON) -> pd.DataFrame:
    """Each signal at its default threshold, per (architecture, setting): the pooled scores at
    ``horizon`` with 95 % bootstrap intervals over seeds, and its median cost per step."""
    rows = table[table["default"].astype(bool) & (table["horizon"] == horizon)]
    pooled = pooled_scores(rows, intervals=True).droplevel(["threshold", "horizon"])
    costs = rows.groupby(["architecture", "setting", "signal"], sort=False)[
        ["hvps_per_step", "forwards_per_step", "time_ratio"]].median()
    return pooled.join(costs)


def pr_curves(table: pd.DataFrame, horizon: int = JUDGED_HORIZON) -> pd.DataFrame:
    """Pooled precision and recall of every signal at every threshold, per setting, at
    ``horizon``: the points of the precision-recall figure."""
    return pooled_scores(table, horizon=horizon).reset_index()


def under_budget(table: pd.DataFrame, budget: float = FALSE_ALARM_BUDGET,
                 horizon: int = JUDGED_HORIZON) -> pd.DataFrame:
    """Per (architecture, setting, signal): among its thresholds whose pooled false alarms per
    1,000 calm steps are at most ``budget``, the one with the highest recall at ``horizon``
    (ties: the longer median lead), with that recall, precision and lead. Signals that warn of
    no spike within budget are left out."""
    pooled = pooled_scores(table, horizon=horizon).reset_index()
    ok = pooled[(pooled["false_alarms_per_1000"] <= budget) & (pooled["recall"] > 0)].copy()
    ok["_lead"] = ok["median_lead"].fillna(-np.inf)
    ok = ok.sort_values(["recall", "_lead"], ascending=False, na_position="last")
    best = ok.groupby(["architecture", "setting", "signal"], sort=False).head(1)
    order = pooled[["architecture", "setting", "signal"]].drop_duplicates()
    best = order.merge(best, how="inner")   # the settings' and signals' own order
    return best.set_index(["architecture", "setting", "signal"])[
        ["threshold", "recall", "precision", "false_alarms_per_1000", "median_lead",
         "lead_q25", "lead_q75"]]


def earliest_warning(best: pd.DataFrame, min_recall: float = MIN_RECALL) -> pd.DataFrame:
    """Per (architecture, setting), from :func:`under_budget`'s table: the signal with the
    longest median lead among those that warn of at least ``min_recall`` of the spikes (ties:
    the higher recall); a row of NaN where no signal does."""
    out = {}
    for key, g in best.groupby(level=["architecture", "setting"], sort=False):
        ok = g[g["recall"] >= min_recall].reset_index("signal")
        ok = ok.sort_values(["median_lead", "recall"], ascending=False)
        out[key] = ok.iloc[0] if len(ok) else pd.Series({"signal": None})
    frame = pd.DataFrame(out).T[["signal", "recall", "median_lead", "precision",
                                 "false_alarms_per_1000", "threshold"]]
    frame = frame.astype({c: float for c in frame.columns if c != "signal"})
    frame.index.names = ["architecture", "setting"]
    return frame


def predictor_verdicts(table: pd.DataFrame) -> list:
    """The chapter's verdicts over the stored sweep (horizon :data:`JUDGED_HORIZON`, default
    thresholds, all settings pooled). That every lead lies in [1, h] (no alarm at or after a
    spike's start is a hit) is a property of the scoring, tested on the stored table in
    ``tests/test_predictors.py``, not a verdict.

    ``lambda_grad_beats_loss_rose``: λ_grad(Ĥ) > 2/η has a higher pooled F1 than the baseline
    "the loss rose over the last step"; false if the baseline's is as high.
    ``lambda_grad_beats_chance``: λ_grad(Ĥ)'s pooled precision exceeds that of random alarms
    at its own count on the same steps; false if the signal were no better than its rate.
    ``spikes_to_score``: every setting has at least 10 spikes over its seeds, so that each
    recall rests on more than a handful.
    """
    from utils.studies.verdicts import Verdict

    f1, f1_lo, f1_hi = pooled_difference(table, "lambda_grad", "loss_rose", "f1")
    pooled = pooled_scores(table[table["default"].astype(bool)], horizon=JUDGED_HORIZON,
                           signal="lambda_grad").reset_index()
    all_lg = pool(table[table["default"].astype(bool) & (table["horizon"] == JUDGED_HORIZON)
                        & (table["signal"] == "lambda_grad")])
    spikes = pooled.groupby(["architecture", "setting"])["spikes"].sum()
    return [
        Verdict("lambda_grad_beats_loss_rose",
                f"λ_grad(Ĥ) > 2/η has a higher F1 than 'the loss rose' at h = {JUDGED_HORIZON}",
                f1 > 0, {"f1_difference": f1, "ci95_low": f1_lo, "ci95_high": f1_hi}),
        Verdict("lambda_grad_beats_chance",
                "λ_grad(Ĥ) > 2/η is more precise than random alarms at its own count",
                all_lg["precision"] > all_lg["chance_precision"],
                {"precision": all_lg["precision"], "chance": all_lg["chance_precision"]}),
        Verdict("spikes_to_score", "every setting has ≥ 10 spikes over its seeds",
                bool((spikes >= 10).all()), {"fewest_spikes": int(spikes.min())}),
    ]


# ------------------------------------------------------------------------ the chapter's run

TIMELINE_SIGNALS = ("lambda_grad", "lambda_max", "alignment", "secant", "critical_step",
                    "spam", "stableadamw", "zclip", "olmo_loss", "olmo_grad_norm", "loss_rose")
"""The signals whose alarms the chapter draws under its single run."""


def watch_run(architecture: str, setting: str, seed: int, **overrides):
    """One run of a setting of :data:`SETTINGS` under ``seed`` with every signal recorded
    (progress bar on): (result, recorder)."""
    from utils.training.runs import run
    from utils.training.signals import SignalRecorder

    recorder = SignalRecorder()
    config = predictor_config(architecture, setting, seed=seed, progress=True, **overrides)
    return run(config, signals=recorder, spot_checks=False), recorder


def default_alarms(result, names=TIMELINE_SIGNALS) -> dict:
    """name -> the signal's alarms at its default threshold on ``result``'s metrics."""
    return {name: signal_alarms(name, result.metrics, result.config.lr, SIGNALS[name].default,
                                seed=result.config.seed) for name in names}


def run_scores(result, recorder, horizon: int = JUDGED_HORIZON) -> pd.DataFrame:
    """The single run's scores at every signal's default threshold and ``horizon``."""
    rows = pd.DataFrame(score_run(result, recorder))
    rows = rows[rows["default"] & (rows["horizon"] == horizon)]
    return rows.set_index("signal")[["threshold", "spikes", "alarms", "hits", "false_alarms",
                                     "precision", "recall", "median_lead",
                                     "chance_precision"]]


def display_table(scores: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """:func:`signal_table` for reading: each pooled ratio with its interval as
    "x [low, high]", the lead's median and quartiles, and the cost columns, rounded."""
    def ci(name):
        return [f"{x:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]" if x == x else "–"
                for x, lo, hi in zip(scores[name], scores[f"{name}_low"], scores[f"{name}_high"])]

    out = pd.DataFrame(index=scores.index)
    out["spikes"] = scores["spikes"].astype(int)
    for name, label in (("precision", "precision"), ("recall", "recall"), ("f1", "F1"),
                        ("false_alarms_per_1000", "false alarms / 1000"),
                        ("chance_precision", "chance precision")):
        out[label] = ci(name)
    out["lead (median, IQR)"] = [f"{m:.0f} ({a:.0f}–{b:.0f})" if m == m else "–" for m, a, b in
                                 zip(scores["median_lead"], scores["lead_q25"],
                                     scores["lead_q75"])]
    for column, label in (("hvps_per_step", "HVPs / step"), ("forwards_per_step", "forwards / step"),
                          ("time_ratio", "time / plain step")):
        if column in scores:     # the cost columns, where the table has them
            out[label] = scores[column].round(digits)
    return out
