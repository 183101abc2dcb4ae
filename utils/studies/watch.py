"""Chapter 9's run: a language model the book has not used, trained the way people train
(mini-batches, a learning-rate warm-up), watched by :class:`utils.monitor.SpikeMonitor`, and
the monitor's alarms scored against the spikes the run had.

    run = train_watched(seed=0, out_dir="runs/watch")   # the loop, the monitor in three lines
    events = read_tensorboard(run.log_dirs["batch"])    # the scalars back from the event file
    rows = score_watch(run.tables, seed=0)              # each signal scored against the spikes

The scoring is the book's one set of rules (:mod:`utils.studies.scoring`, chapters 4 and 6's
too: an alarm is a hit when it fires in [start − h, start) of a counted spike, alarms inside a
spike are neither hits nor false alarms, and random alarms at each signal's own count on the
steps where it could fire are its chance baseline), with the spikes of the book's one rule
(:func:`utils.events.spikes.detect_spikes`) at the factor :data:`WATCH_FACTOR`, stated before
any run (the reason is in its docstring), found on the loss of a fixed evaluation batch
computed at every step (not on each mini-batch's own loss, which moves with the batch drawn).
``python -m utils.book.watch_sweep`` trains :data:`WATCH_SEEDS` one after another (each row
times the monitor, so no two run at once) and writes ``data/sweeps/watch.csv.gz`` with the
provenance of every run.
"""
from __future__ import annotations

import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from utils.events.detectors import loss_rose, sustained
from utils.training.lm import CharData, TinyGPT, lm_loss, repeated_corpus
from utils.training.models import perturb_initial
from utils.monitor import AlarmRule, SpikeMonitor
from utils.studies.predictors import HORIZONS
from utils.studies.scoring import JUDGED_HORIZON, score_signal
from utils.events.spikes import SPIKE_FACTORS, SPIKE_WINDOW, detect_spikes
from utils.validation import check_number

WATCH = {"n_sentences": 8, "context": 32, "batch_size": 16, "lr": 1e-2, "warmup": 100,
         "steps": 2000, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "every": 10,
         "eval_windows": 32}
"""The chapter-9 run: :func:`utils.training.lm.repeated_corpus` of ``n_sentences`` sentences as
characters, windows of ``context`` characters, ``batch_size`` windows a step, Adam at peak
η = ``lr`` after a linear warm-up over ``warmup`` steps (then constant), ``steps`` updates, the
monitor measuring every ``every`` steps (on each measured step's own batch, or on a fixed
evaluation batch of ``eval_windows`` windows). Chosen on this
2-core machine as a setting that spikes within the chapter's budget (η = 3e-3 did not spike in
2,000 steps, η = 2e-2 left the model at a loss of about 1.8 nats after its first spike)."""

WATCH_SEEDS = tuple(range(8))
"""The seeds of the stored table (model initialisation and batch order)."""

WATCH_FACTOR = 3.0
"""K of the book's spike rule for this chapter, the smallest of :data:`utils.events.spikes.
SPIKE_FACTORS`, stated before any run. A cross-entropy loss is bounded in practice by a model
that has forgotten what it learned: from about 0.1 nats, where this run trains, a spike to the
unigram loss (about 2.5 nats) is a 25-fold rise, but the spikes of the prototypes peaked at
0.4–1.2 nats (4–12 times their start), so the default K = 10 would miss most of them. The
chapter reports the counts at every factor of SPIKE_FACTORS too."""

WATCH_SIGNALS = ("monitor", "monitor_w3", "monitor_eval", "monitor_eval_w3", "secant",
                 "loss_rose")
"""The signals scored: the monitor's alarm (the paper's λ_grad(Ĥ), form A, above 2/η on one
measurement, the rule :class:`~utils.monitor.AlarmRule` defaults to) measured on each step's
own batch, and the paper's sustained rule (the minimum of three measurements in a row above
2/η, raised at the third, ``_w3``); the same two measured on the fixed evaluation batch
(``_eval``); the secant estimate above 2/η (every step, free); and the baseline "the
evaluation loss rose over the last step" (on the loss the spikes are found on)."""

RECOMPUTE_STEP = 200
"""The step whose loss and λ_grad(Ĥ) each stored row also keeps, so that a test can recompute
the first steps of a run and compare (a whole run takes minutes)."""


def check_watch(settings: dict) -> dict:
    """The settings of :data:`WATCH` with ``settings`` over them, each checked: ValueError naming
    the first bad one and its allowed range, before anything trains."""
    unknown = set(settings) - set(WATCH)
    if unknown:
        raise ValueError(f"unknown setting(s) {sorted(unknown)}; the settings are {sorted(WATCH)}")
    s = {**WATCH, **settings}
    for name in ("n_sentences", "context", "batch_size", "steps", "every", "eval_windows"):
        check_number(name, s[name], low=1, integer=True)
    check_number("warmup", s["warmup"], low=0, integer=True)
    check_number("lr", s["lr"], low=0, low_open=True)
    check_number("beta1", s["beta1"], low=0, high=1, high_open=True)
    check_number("beta2", s["beta2"], low=0, high=1, high_open=True)
    check_number("eps", s["eps"], low=0)
    return s


def watch_problem(seed: int = 0, **settings):
    """(data, model, optimizer, schedule) of the run under ``seed`` (the model's initialisation
    and the batches): the repeated corpus as characters, :class:`~utils.training.lm.TinyGPT` (4
    layers, d = 128, about 0.8M parameters), ``torch.optim.Adam`` and a ``LambdaLR`` warm-up."""
    check_number("seed", seed, low=0, integer=True)
    s = check_watch(settings)
    data = CharData(repeated_corpus(s["n_sentences"]), context=s["context"], seed=seed)
    model = perturb_initial(TinyGPT(data.vocab_size, context=s["context"], seed=seed), seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=s["lr"], betas=(s["beta1"], s["beta2"]),
                                 eps=s["eps"])
    warmup = max(s["warmup"], 1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: min(1.0, (t + 1) / warmup))
    return data, model, optimizer, schedule


MEASURE_ON = ("batch", "eval")
"""Where a monitor measures: ``"batch"``, each measured step's own training batch (the gradient
the loop has); ``"eval"``, a fixed evaluation batch of ``eval_windows`` windows drawn once
under the seed (:func:`eval_batch`)."""


def eval_batch(data: CharData, windows: int):
    """The fixed evaluation batch: ``windows`` windows drawn once, under the data's seed and a
    step no training batch uses."""
    return data.batch(int(windows), step=-1)


@dataclass
class WatchedRun:
    """A monitored run: per place a monitor measured (``"batch"``, ``"eval"``), its rows
    (``tables``, one per step, as its CSV holds them), its cost report and its TensorBoard
    folder; the settings and seed, the step at which the loss became non-finite (None if it
    never did), and the wall time of the loop with every monitor attached."""

    tables: dict
    reports: dict
    log_dirs: dict
    settings: dict
    seed: int
    diverged_at: int | None = None
    seconds: float = 0.0
    eval_seconds: float = 0.0

    @property
    def loop_seconds(self) -> float:
        """The loop's own time: the wall time less every monitor's and the evaluation loss's."""
        return (self.seconds - self.eval_seconds
                - sum(r["monitor_seconds"] for r in self.reports.values()))

    def overhead(self, where: str) -> float:
        """Wall time with only the monitor measuring on ``where`` over the loop's own time."""
        loop = self.loop_seconds
        return (loop + self.reports[where]["monitor_seconds"]) / loop if loop > 0 else math.nan


def train_watched(seed: int = 0, out_dir=None, *, measure_on=("batch",),
                  alarm: AlarmRule | None = None, hvp: str = "auto", progress: bool = True,
                  **settings) -> WatchedRun:
    """Train the chapter-9 run under ``seed`` with a monitor attached for each place of
    ``measure_on`` (:data:`MEASURE_ON`), each writing its CSV and TensorBoard events under
    ``out_dir/<place>/`` (a temporary folder if ``out_dir`` is None). The monitors read the
    model and the optimizer and change neither, so every one sees the same run. Before each
    update the loss of the fixed evaluation batch (:func:`eval_batch`) is computed without a
    graph and added to every table as ``eval_loss`` (timed apart, ``eval_seconds``). A
    non-finite loss stops the run and is recorded, not raised."""
    from tqdm import tqdm

    s = check_watch(settings)
    places = tuple(measure_on)
    if not places or len(set(places)) != len(places) or set(places) - set(MEASURE_ON):
        raise ValueError(f"measure_on must name distinct places among {MEASURE_ON}, "
                         f"got {measure_on!r}")
    data, model, optimizer, schedule = watch_problem(seed, **settings)
    out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="watch-"))
    bar = tqdm(range(s["steps"]), desc=f"seed {seed}", disable=not progress, mininterval=1)
    evaluation = eval_batch(data, s["eval_windows"])
    monitors = {}
    for place in places:
        shutil.rmtree(out / place, ignore_errors=True)   # one event file: this run's
        monitors[place] = SpikeMonitor(
            model, optimizer, lm_loss, every=s["every"], alarm=alarm, hvp=hvp,
            eval_batch=evaluation if place == "eval" else None,
            csv_path=out / place / "monitor.csv", log_dir=out / place / "tensorboard",
            progress=bar if place == places[0] else None)
    diverged_at, eval_losses, eval_seconds = None, [], 0.0
    t0 = time.perf_counter()
    for step in bar:
        tick = time.perf_counter()
        with torch.no_grad():                     # the loss the spikes are found on
            eval_losses.append(float(lm_loss(model, evaluation)))
        eval_seconds += time.perf_counter() - tick
        batch = data.batch(s["batch_size"], step)
        optimizer.zero_grad()
        loss = lm_loss(model, batch)
        if not torch.isfinite(loss):
            diverged_at = step + 1
            break
        loss.backward()
        for monitor in monitors.values():
            monitor.observe(batch, loss=loss)     # 1: after backward, before the step
        optimizer.step()
        schedule.step()
        for monitor in monitors.values():
            monitor.after_step()                  # 2: after the step
    seconds = time.perf_counter() - t0
    reports = {place: m.close() for place, m in monitors.items()}   # 3: files flushed, costs
    tables = {p: pd.read_csv(out / p / "monitor.csv") for p in places}
    for table in tables.values():
        table["eval_loss"] = eval_losses[:len(table)]
    return WatchedRun(tables, reports, {p: out / p / "tensorboard" for p in places}, s,
                      int(seed), diverged_at, seconds, eval_seconds)


def read_tensorboard(log_dir) -> pd.DataFrame:
    """Every scalar of a TensorBoard event folder, read with TensorBoard's own reader: one row
    per step, one column per tag (the ``monitor/`` prefix dropped), NaN where a tag has no
    value at a step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0}).Reload()
    series = {tag.removeprefix("monitor/"): pd.Series({e.step: e.value for e in
                                                       events.Scalars(tag)})
              for tag in events.Tags()["scalars"]}
    table = pd.DataFrame(series)
    table.index.name = "step"
    return table.sort_index()


SUSTAIN = 3
"""The paper's sustained rule: λ_grad(Ĥ) above 2/η on this many measurements in a row (the
minimum of λ_grad at t−1, t and t+1), raised at the last of them."""


def _curvature_alarms(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(the monitor's alarm where raised, the paper's λ_grad(Ĥ) > 2/η on :data:`SUSTAIN`
    measurements in a row, the measured steps) over the rows of one monitor's table. The alarm
    counts where it is raised, on a measured step (the monitor's ``alarm`` column stays up
    until the next measurement)."""
    lam = table["lambda_grad_pre_a"].to_numpy(dtype=float)
    measured = np.isfinite(lam)
    above = np.nan_to_num(lam, nan=-np.inf) > table["threshold"].to_numpy(dtype=float)
    alarm = table["alarm"].astype(str).str.lower().eq("true").to_numpy()
    held = np.zeros(len(table), dtype=bool)
    held[measured] = sustained(above[measured], SUSTAIN)
    return alarm & measured, held, measured


def watch_alarms(tables) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (alarms, eligible), boolean arrays over the steps of a run: what each signal of
    :data:`WATCH_SIGNALS` raised at each step, and the steps where it could fire (the measured
    steps for the curvature rules). ``tables``: place -> that monitor's table
    (:attr:`WatchedRun.tables`; a single table is the ``"batch"`` monitor's); the signals of a
    place not monitored are left out. The secant and the loss come from the first table (every
    monitor logs the same ones); "the loss rose" reads :func:`spike_loss`."""
    tables = {"batch": tables} if isinstance(tables, pd.DataFrame) else dict(tables)
    first = next(iter(tables.values()))
    out = {}
    for place, suffix in (("batch", ""), ("eval", "_eval")):
        if place in tables:
            alarm, held, measured = _curvature_alarms(tables[place])
            out[f"monitor{suffix}"] = (alarm, measured)
            out[f"monitor{suffix}_w{SUSTAIN}"] = (held, measured)
    secant = first["secant"].to_numpy(dtype=float)
    threshold = first["threshold"].to_numpy(dtype=float)
    out["secant"] = (np.nan_to_num(secant, nan=-np.inf) > threshold, np.isfinite(secant))
    out["loss_rose"] = (loss_rose(spike_loss(first)), np.arange(len(first)) > 0)
    return out


def spike_loss(table: pd.DataFrame) -> np.ndarray:
    """The loss series the spikes are found on: the fixed evaluation batch's (``eval_loss``,
    computed at every step before the update), or the training loss of a table without it."""
    column = "eval_loss" if "eval_loss" in table else "loss"
    return table[column].to_numpy(dtype=float)


def score_watch(tables, seed: int = 0, factors=SPIKE_FACTORS,
                horizons=HORIZONS) -> list[dict]:
    """Each signal of :func:`watch_alarms` scored against the run's spikes at each spike factor
    K of ``factors`` and horizon h of ``horizons``: rows with the columns of chapter 6's table
    (spikes, warned, alarms, hits, false_alarms, calm_steps, precision, recall, f1,
    false_alarms_per_1000, median_lead, leads, chance_precision, chance_recall), ``default``
    true at K = :data:`WATCH_FACTOR`. ``tables`` as for :func:`watch_alarms`."""
    first = tables if isinstance(tables, pd.DataFrame) else next(iter(tables.values()))
    steps = first["step"].to_numpy()
    loss = spike_loss(first)
    alarms = watch_alarms(tables)
    rows = []
    for k, factor in enumerate(factors):
        spikes = detect_spikes(loss, steps, factor=factor, window=SPIKE_WINDOW)
        for i, (name, (fired, eligible)) in enumerate(alarms.items()):
            for h in horizons:
                rng = np.random.default_rng([seed, k, WATCH_SIGNALS.index(name), h])
                rows.append({
                    "seed": int(seed), "architecture": "lm", "setting": "watch",
                    "signal": name, "threshold": 1.0, "factor": float(factor),
                    "default": factor == WATCH_FACTOR, "horizon": h, "steps": len(first),
                    **score_signal(steps, fired, eligible, spikes, h, rng)})
    return rows


def signal_table(table: pd.DataFrame, horizon: int = JUDGED_HORIZON,
                 factor: float = WATCH_FACTOR) -> pd.DataFrame:
    """The stored seeds pooled per signal at ``factor`` and ``horizon`` (chapter 6's pooling:
    counts summed over seeds before dividing), each ratio with its 95 % bootstrap interval over
    seeds, as numbers: one row per signal of :data:`WATCH_SIGNALS`
    (:func:`utils.studies.predictors.display_table` formats it)."""
    from utils.studies.scoring import pool

    rows = table[(table["factor"] == factor) & (table["horizon"] == horizon)]
    out = {name: pool(rows[rows["signal"] == name], intervals=True) for name in WATCH_SIGNALS
           if (rows["signal"] == name).any()}
    return pd.DataFrame(out).T.rename_axis("signal")


def run_summary(run: WatchedRun) -> dict:
    """The per-run columns of a stored row: steps done, the median loss of the last 100 steps,
    the step of divergence (NaN if none), the loop's own seconds, and per monitor (suffix
    ``_eval`` for the evaluation batch's) its cost ratio alone (:meth:`WatchedRun.overhead`),
    its seconds, its product, and λ_grad(Ĥ) (form A) at :data:`RECOMPUTE_STEP`, with the
    training and evaluation losses there (for the recompute test)."""
    first = next(iter(run.tables.values()))
    at = lambda t, col: (float(t.loc[t["step"] == RECOMPUTE_STEP, col].iloc[0])
                         if (t["step"] == RECOMPUTE_STEP).any() else math.nan)
    out = {"steps_done": len(first), "final_loss": float(first["loss"].tail(100).median()),
           "final_eval_loss": float(first["eval_loss"].tail(100).median()),
           "diverged_at": math.nan if run.diverged_at is None else run.diverged_at,
           "run_seconds": run.seconds, "loop_seconds": run.loop_seconds,
           "eval_seconds": run.eval_seconds, "loss_at_recompute": at(first, "loss"),
           "eval_loss_at_recompute": at(first, "eval_loss")}
    for place, table in run.tables.items():
        suffix = "" if place == "batch" else f"_{place}"
        out.update({f"overhead_ratio{suffix}": run.overhead(place),
                    f"monitor_seconds{suffix}": float(run.reports[place]["monitor_seconds"]),
                    f"hvp{suffix}": run.reports[place]["hvp"],
                    f"lambda_grad_at_recompute{suffix}": at(table, "lambda_grad_pre_a")})
    return out


def watch_rows(seed: int, **settings) -> list[dict]:
    """The stored rows of one seed, with a monitor on each place of :data:`MEASURE_ON`:
    :func:`score_watch` with :func:`run_summary` on each."""
    with tempfile.TemporaryDirectory(prefix="watch-") as tmp:
        run = train_watched(seed, tmp, measure_on=MEASURE_ON, progress=False, **settings)
        summary = run_summary(run)
        return [{**row, **summary} for row in score_watch(run.tables, seed)]


# ------------------------------------------------------------------------------ verdicts

def watch_verdicts(table: pd.DataFrame) -> list:
    """The chapter's verdicts over the stored seeds, at K = :data:`WATCH_FACTOR` and
    h = :data:`~utils.studies.predictors.JUDGED_HORIZON`, stated before the table was computed,
    each judged by the book's one rule (:func:`~utils.studies.verdicts.judge`) on a 95 %
    bootstrap interval over seeds (a count is exact). That no alarm at or after a spike's start
    counts as a hit is a property of the scoring (``tests/test_watch.py``), not a verdict.

    ``spikes_to_score``: the seeds spiked at least 10 times in all (else the setting does not
    spike and nothing below is judged on much).
    ``monitor_beats_loss_rose``: the monitor's alarm has a higher pooled F1 than "the loss
    rose over the last step" (their difference above 0); does not hold if the baseline does as
    well.
    ``monitor_beats_chance``: its pooled precision exceeds that of random alarms at its own
    count on the measured steps; does not hold if it were no better than its rate.
    ``monitor_false_alarms_within_budget``: at most :data:`~utils.studies.predictors.
    FALSE_ALARM_BUDGET` false alarms per 1,000 calm steps, the budget of chapter 6; does not
    hold if it floods.
    ``sustained_more_precise_than_single`` (the paper's statement for mini-batches: single
    crossings also come without a spike, the sustained rule does not): the pooled precision of
    the sustained rule (``monitor_w3``) minus that of the single measurement is above 0.
    ``eval_batch_beats_chance`` (where the table has the monitor on the fixed evaluation
    batch): that monitor's pooled precision exceeds its chance precision.
    """
    from utils.studies.predictors import FALSE_ALARM_BUDGET
    from utils.studies.scoring import pool, pooled_difference
    from utils.studies.verdicts import Verdict

    rows = table[table["default"].astype(bool) & (table["horizon"] == JUDGED_HORIZON)]
    judged_on_intervals = ("monitor", "monitor_eval")   # the rest are read as points
    by = {name: pool(rows[rows["signal"] == name], intervals=name in judged_on_intervals)
          for name in WATCH_SIGNALS if (rows["signal"] == name).any()}
    spikes = int(rows[rows["signal"] == "monitor"]["spikes"].sum())
    m, held = by["monitor"], by.get(f"monitor_w{SUSTAIN}")

    def beats_chance(name, claim, pooled):
        return Verdict.judged(name, claim, pooled["precision"], pooled["precision_low"],
                              pooled["precision_high"], pooled["chance_precision"], ">")

    out = [
        Verdict.judged("spikes_to_score", "the seeds have ≥ 10 spikes in all", spikes, spikes,
                       spikes, 10, ">=", {"seeds": int(rows["seed"].nunique())}),
        Verdict.judged("monitor_beats_loss_rose",
                       f"the monitor's alarm has a higher F1 than 'the loss rose' at h = "
                       f"{JUDGED_HORIZON}", *pooled_difference(table, "monitor", "loss_rose",
                                                              "f1"), 0.0, ">"),
        beats_chance("monitor_beats_chance",
                     "the monitor's alarm is more precise than random alarms at its own count", m),
        Verdict.judged("monitor_false_alarms_within_budget",
                       f"at most {FALSE_ALARM_BUDGET:g} false alarms per 1,000 calm steps",
                       m["false_alarms_per_1000"], m["false_alarms_per_1000_low"],
                       m["false_alarms_per_1000_high"], FALSE_ALARM_BUDGET, "<=")]
    if held is not None:
        out.append(Verdict.judged(
            "sustained_more_precise_than_single",
            f"the paper's sustained rule ({SUSTAIN} measurements above 2/η) is more precise "
            "than a single measurement",
            *pooled_difference(table, f"monitor_w{SUSTAIN}", "monitor", "precision"), 0.0, ">",
            {"alarms_sustained": held["alarms"], "alarms_single": m["alarms"]}))
    if "monitor_eval" in by:
        out.append(beats_chance(
            "eval_batch_beats_chance", "on a fixed evaluation batch, the monitor's alarm is more "
            "precise than random alarms at its own count", by["monitor_eval"]))
    return out
