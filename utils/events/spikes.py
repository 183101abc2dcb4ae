"""One definition of loss events for the whole book: spikes, their start, peak and end, and
crossings of a threshold. Every chapter, the introduction and the sweeps use these functions;
the book's "Definitions" page states them in words.

**Trend and detection.** The loss's *trend* at recorded step s is the median of the W
(``window``) losses before s. An event is detected at step i when the loss rises to at least
``factor`` (K) times its trend.

**Start.** Where the loss left its trend: the last step s before detection (and after the
previous event ended) at which the loss was at or below its trend. From the start on, the loss stays above its trend until it is detected. The
median makes the start robust to the period-2 oscillations of full-batch training (an
oscillating loss keeps returning below its median), and a slow creep above the trend before
the rise counts as part of the event, so the start is never later than the rise.

**Peak and end.** The peak is the largest loss before the end; the event ends at the first
later step where the loss is back below K × (the trend at detection). A new event detected
within W steps of that end is the same event (an aftershock) and extends it. A non-finite loss
(NaN/inf) is a divergence: it ends the scan, and the event in progress, or a new one, is
reported with ``diverged=True`` and no end.

**What counts as a spike.** An event counts when its peak is at least K times its start loss
(``height`` ≥ K) and its start loss is at least ``floor`` × the run's initial loss (the first
recorded loss). Events below that floor start where the loss is dominated by floating-point
rounding (an MSE of residuals within about 100 ulp of the targets is ~1e-28 of the initial loss
in float64: :func:`float_floor`); they are kept, as *excluded* events with the reason, and never
counted. :func:`detect_events` returns every event, :func:`detect_spikes` the counted ones.

**Crossings.** A series crosses a threshold (2/η) at the first recorded step above it and stays
crossed until it falls below threshold × (1 − ``hysteresis``), with one hysteresis for the whole
book, :data:`CROSSING_HYSTERESIS` (:func:`sustained_crossings`).

**Onset windows.** A window that judges what happened before a spike ends at the spike's start
(:func:`onset_window`); leads are measured from the start, positive when the signal came first.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from utils.validation import check_number

SPIKE_FACTOR = 10.0
"""K: the loss must rise by at least this factor over its trend, and its peak over its start."""
SPIKE_WINDOW = 50
"""W: the number of previous recorded steps whose median is the loss's trend."""
ULP_MARGIN = 100
"""The float floor is the loss of residuals of ``ULP_MARGIN`` units in the last place."""
CROSSING_HYSTERESIS = 0.01
"""A crossing of a threshold T lasts until the series falls below T × (1 − 0.01)."""
SPIKE_FACTORS = (3.0, 10.0, 30.0)
"""The spike factors every chapter's sensitivity table reports (the default in the middle)."""
HYSTERESES = (0.0, 0.01, 0.05)
"""The crossing hystereses every chapter's sensitivity table reports."""


def float_floor(dtype: str = "float64") -> float:
    """The smallest loss, relative to the initial loss, at which a spike may start: the MSE of
    residuals of ``ULP_MARGIN`` units of rounding, (100 ε)², with ε the dtype's machine epsilon
    (4.9e-28 in float64, 1.4e-10 in float32)."""
    import torch

    eps = torch.finfo(getattr(torch, dtype)).eps
    return float((ULP_MARGIN * eps) ** 2)


SPIKE_FLOOR = float_floor("float64")
"""The default relative floor (float64)."""


@dataclass(frozen=True)
class Spike:
    """One loss event; all steps are values of the ``steps`` axis given to the detector.

    ``excluded`` is empty for a counted spike, else why it does not count ("float floor":
    it starts below the floor; "below factor": its peak is less than K × its start loss)."""

    start: int
    detected: int
    peak: int
    end: int | None
    baseline: float
    start_loss: float
    peak_loss: float
    diverged: bool = False
    excluded: str = ""

    @property
    def height(self) -> float:
        """peak loss / loss at the start (inf for a divergence or a zero start loss)."""
        return self.peak_loss / self.start_loss if self.start_loss > 0 else float("inf")

    @property
    def counted(self) -> bool:
        return not self.excluded


def detect_spikes(loss, steps=None, **kwargs) -> list[Spike]:
    """The counted spikes of a loss curve (:func:`detect_events` without the excluded ones)."""
    return [e for e in detect_events(loss, steps, **kwargs) if e.counted]


def detect_events(loss, steps=None, *, factor: float = SPIKE_FACTOR, window: int = SPIKE_WINDOW,
                  floor: float = SPIKE_FLOOR) -> list[Spike]:
    """Every loss event of a curve, counted or excluded (see the module docstring).

    Parameters
    ----------
    loss: 1-D array of losses, one per recorded step.
    steps: the step number of each entry (default 0, 1, ...); the returned events use it.
    factor: K > 1. window: W ≥ 1 steps. floor: in [0, 1), relative to the first loss.
    """
    check_number("factor", factor, low=1, low_open=True)
    check_number("window", window, low=1, integer=True)
    check_number("floor", floor, low=0, high=1, high_open=True)
    loss = np.asarray(loss, dtype=float).reshape(-1)
    steps = np.arange(len(loss)) if steps is None else np.asarray(steps).reshape(-1)
    if len(steps) != len(loss):
        raise ValueError(f"steps must have the length of loss ({len(loss)}), got {len(steps)}")
    floor_loss = floor * loss[0] if len(loss) and np.isfinite(loss[0]) else 0.0
    trend = _running_median(loss, window)

    events: list[Spike] = []
    active = None  # (detection index, baseline) of the event in progress
    calm_from, peak = 0, 0  # where the current calm stretch began; peak of the active event
    prev_detect = prev_calm = prev_peak = last_end = 0  # the last closed event, for merging

    def close(i_peak, i_end, peak_loss, diverged=False):
        d, base = active
        s = _trend_exit(loss, trend, calm_from, d)
        start_loss = float(loss[s])
        reason = ("float floor" if start_loss < floor_loss
                  else "below factor" if not diverged and peak_loss < factor * start_loss else "")
        events.append(Spike(int(steps[s]), int(steps[d]), int(steps[i_peak]),
                            None if i_end is None else int(steps[i_end]), float(base),
                            start_loss, float(peak_loss), diverged, reason))

    for i in range(1, len(loss)):
        if not np.isfinite(loss[i]):
            if active is None:
                active = (i, trend[i])
            close(i, None, float("inf"), diverged=True)
            return events
        if active is None:
            base = trend[i]
            if loss[i] > 0 and loss[i] >= factor * base:
                if events and not events[-1].diverged and i - last_end <= window:
                    # an aftershock: reopen the previous event
                    prev = events.pop()
                    active, calm_from = (prev_detect, prev.baseline), prev_calm
                    peak = prev_peak if loss[prev_peak] >= loss[i] else i
                else:
                    active, peak = (i, base), i
        else:
            if loss[i] > loss[peak]:
                peak = i
            if loss[i] < factor * active[1]:
                close(peak, i, loss[peak])
                prev_detect, prev_calm, prev_peak, last_end = active[0], calm_from, peak, i
                active, calm_from = None, i
    if active is not None:
        close(peak, None, loss[peak])
    return events


def _running_median(loss: np.ndarray, window: int) -> np.ndarray:
    """trend[s] = median of the finite values of loss[s-window:s]; loss[0] at s = 0."""
    padded = pd.Series(np.where(np.isfinite(loss), loss, np.nan))
    trend = padded.shift(1).rolling(window, min_periods=1).median().to_numpy(copy=True)
    trend[0] = loss[0] if len(loss) else np.nan
    return trend


def _trend_exit(loss: np.ndarray, trend: np.ndarray, lo: int, hi: int) -> int:
    """The last index s in [lo, hi) with loss[s] <= trend[s] (where the loss left its trend);
    the last minimum of loss[lo:hi] if there is none."""
    below = np.flatnonzero(loss[lo:hi] <= trend[lo:hi])
    return lo + int(below[-1]) if len(below) else _last_argmin(loss, lo, hi)


def _last_argmin(loss: np.ndarray, lo: int, hi: int) -> int:
    """Index of the last minimum of the finite values of loss[lo:hi] (lo if none)."""
    seg = np.where(np.isfinite(loss[lo:hi]), loss[lo:hi], np.inf)
    if not len(seg):
        return lo
    return lo + len(seg) - 1 - int(np.argmin(seg[::-1]))


def spikes_table(spikes: list[Spike]) -> pd.DataFrame:
    """The spikes as a tidy table, one row per spike, with their height."""
    cols = [f for f in Spike.__dataclass_fields__] + ["height"]
    return pd.DataFrame([{**asdict(s), "height": s.height} for s in spikes], columns=cols)


@dataclass(frozen=True)
class Crossing:
    """An interval [start, end] of recorded steps during which a series stayed above a threshold."""

    start: int
    end: int

    @property
    def duration(self) -> int:
        return self.end - self.start


def sustained_crossings(series, steps, threshold: float, *, min_duration: int = 0,
                        hysteresis: float = CROSSING_HYSTERESIS) -> list[Crossing]:
    """Intervals where ``series`` rose above ``threshold`` and stayed there.

    An interval opens at the first recorded step with value > threshold and closes at the last
    step before the value falls below threshold × (1 - hysteresis); NaN entries are skipped.
    Intervals shorter than ``min_duration`` steps are dropped. Returns them in order.
    """
    check_number("threshold", threshold)
    check_number("min_duration", min_duration, low=0)
    check_number("hysteresis", hysteresis, low=0, high=1, high_open=True)
    values = np.asarray(series, dtype=float).reshape(-1)
    steps = np.asarray(steps).reshape(-1)
    keep = np.isfinite(values)
    values, steps = values[keep], steps[keep]
    out, start, last = [], None, None
    for s, x in zip(steps, values):
        if start is None:
            if x > threshold:
                start, last = s, s
        elif x >= threshold * (1 - hysteresis):
            last = s
        else:
            out.append(Crossing(int(start), int(last)))
            start = None
    if start is not None:
        out.append(Crossing(int(start), int(last)))
    return [c for c in out if c.duration >= min_duration]


def onset_window(spike: Spike, before: int) -> tuple[int, int]:
    """The steps [spike.start - before, spike.start] that judge a spike's onset: they end at
    its start, never later (no peeking at the spike itself)."""
    check_number("before", before, low=0)
    return spike.start - before, spike.start


@dataclass(frozen=True)
class PredictorScore:
    """How well threshold crossings announce spikes.

    A spike is *matched* when a crossing starts in its onset window [start - max_lead, start]
    (:func:`onset_window`); a crossing is a *hit* when it matches some spike. ``leads``:
    start - crossing.start for each matched spike's earliest matching crossing (≥ 0: the
    crossing came first). ``signed_leads``: the same for the first crossing that starts
    anywhere in [start - max_lead, peak], negative when it came after the start (reported,
    never used to match).
    """

    n_spikes: int
    n_crossings: int
    matched_spikes: int
    hit_crossings: int
    leads: tuple
    signed_leads: tuple = ()

    @property
    def recall(self) -> float:
        return self.matched_spikes / self.n_spikes if self.n_spikes else float("nan")

    @property
    def precision(self) -> float:
        return self.hit_crossings / self.n_crossings if self.n_crossings else float("nan")


def score_predictor(crossings: list[Crossing], spikes: list[Spike], *,
                    max_lead: int, overlap: bool = False) -> PredictorScore:
    """Match crossings of a predictor to spikes (see :class:`PredictorScore`). With
    ``overlap``, a crossing matches when its whole interval [start, end] meets the onset window
    (the quantity was above the threshold at some step of the window, though it may have
    crossed earlier): a test of a condition that holds at the onset rather than of an alarm
    raised there."""
    check_number("max_lead", max_lead, low=0)
    hits, leads, signed = set(), [], []
    for s in spikes:
        lo, hi = onset_window(s, max_lead)
        matching = [i for i, c in enumerate(crossings)
                    if (c.start <= hi and c.end >= lo if overlap else lo <= c.start <= hi)]
        if matching:
            hits.update(matching)
            leads.append(s.start - crossings[matching[0]].start)
        late = [c.start for c in crossings if lo <= c.start <= s.peak]
        if late:
            signed.append(s.start - late[0])
    return PredictorScore(len(spikes), len(crossings), len(leads), len(hits), tuple(leads),
                          tuple(signed))
