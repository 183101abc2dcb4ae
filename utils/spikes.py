"""One definition of a loss spike, used by every chapter.

A spike is detected at step t when the loss rises to at least ``factor`` times its minimum
over the previous ``window`` recorded steps (the *baseline*) and is above ``floor``. Its
``start`` is the step of the lowest loss since the previous spike ended (or since the first
step): where the rise began, which for a slow geometric rise can be long before detection. It
ends at the first later step where the loss is back below ``factor`` × baseline; a new spike
can only begin after that. A spike detected within ``window`` steps of the previous one's end
is the same event (the loss oscillating on its way down) and extends it. A non-finite loss (NaN/inf) is a divergence: it ends the scan, and the
spike in progress, or a new one, is reported with ``diverged=True`` and no end.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from .validation import check_number

SPIKE_FACTOR = 10.0
"""K: the loss must rise by at least this factor over its recent minimum."""
SPIKE_WINDOW = 50
"""W: the number of previous recorded steps over which the minimum is taken."""
SPIKE_FLOOR = 0.0
"""An absolute floor: losses at or below it never count as spikes (guards losses near 0)."""


@dataclass(frozen=True)
class Spike:
    """One loss spike; all steps are values of the ``steps`` axis given to the detector."""

    start: int
    detected: int
    peak: int
    end: int | None
    baseline: float
    start_loss: float
    peak_loss: float
    diverged: bool = False

    @property
    def height(self) -> float:
        """peak loss / loss at the start (inf for a divergence or a zero start loss)."""
        return self.peak_loss / self.start_loss if self.start_loss > 0 else float("inf")


def detect_spikes(loss, steps=None, *, factor: float = SPIKE_FACTOR, window: int = SPIKE_WINDOW,
                  floor: float = SPIKE_FLOOR) -> list[Spike]:
    """Find the spikes of a loss curve.

    Parameters
    ----------
    loss: 1-D array of losses, one per recorded step.
    steps: the step number of each entry (default 0, 1, ...); the returned spikes use it.
    factor: K > 1. window: W ≥ 1 steps. floor: ≥ 0, in loss units.
    """
    check_number("factor", factor, low=1, low_open=True)
    check_number("window", window, low=1, integer=True)
    check_number("floor", floor, low=0)
    loss = np.asarray(loss, dtype=float).reshape(-1)
    steps = np.arange(len(loss)) if steps is None else np.asarray(steps).reshape(-1)
    if len(steps) != len(loss):
        raise ValueError(f"steps must have the length of loss ({len(loss)}), got {len(steps)}")

    spikes: list[Spike] = []
    active = None  # (detection index, baseline) of the spike in progress
    calm_from, peak = 0, 0  # where the current calm stretch began; peak of the active spike
    prev_detect = prev_calm = prev_peak = last_end = 0  # the last closed spike, for merging

    def close(i_peak, i_end, peak_loss, diverged=False):
        d, base = active
        s = _last_argmin(loss, calm_from, d)
        spikes.append(Spike(int(steps[s]), int(steps[d]), int(steps[i_peak]),
                            None if i_end is None else int(steps[i_end]), float(base),
                            float(loss[s]), float(peak_loss), diverged))

    for i in range(1, len(loss)):
        if not np.isfinite(loss[i]):
            if active is None:
                active = (i, _window_min(loss, i, window))
            close(i, None, float("inf"), diverged=True)
            return spikes
        if active is None:
            base = _window_min(loss, i, window)
            if loss[i] > floor and loss[i] >= factor * base:
                if spikes and not spikes[-1].diverged and i - last_end <= window:
                    # an aftershock: reopen the previous spike
                    prev = spikes.pop()
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
    return spikes


def _window_min(loss: np.ndarray, i: int, window: int) -> float:
    """Minimum of the finite values of loss[i-window:i] (inf if there are none)."""
    seg = loss[max(0, i - window):i]
    seg = seg[np.isfinite(seg)]
    return float(seg.min()) if len(seg) else float("inf")


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
                        hysteresis: float = 0.0) -> list[Crossing]:
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


@dataclass(frozen=True)
class PredictorScore:
    """How well threshold crossings announce spikes.

    A spike is *matched* when a crossing starts in [spike.start - max_lead, spike.peak]; a
    crossing is a *hit* when it matches some spike. ``leads``: spike.start - crossing.start for
    each matched spike's earliest matching crossing (positive: the crossing came first).
    """

    n_spikes: int
    n_crossings: int
    matched_spikes: int
    hit_crossings: int
    leads: tuple

    @property
    def recall(self) -> float:
        return self.matched_spikes / self.n_spikes if self.n_spikes else float("nan")

    @property
    def precision(self) -> float:
        return self.hit_crossings / self.n_crossings if self.n_crossings else float("nan")


def score_predictor(crossings: list[Crossing], spikes: list[Spike], *,
                    max_lead: int) -> PredictorScore:
    """Match crossings of a predictor to spikes (see :class:`PredictorScore`)."""
    check_number("max_lead", max_lead, low=0)
    hits, leads = set(), []
    for s in spikes:
        matching = [i for i, c in enumerate(crossings) if s.start - max_lead <= c.start <= s.peak]
        if matching:
            hits.update(matching)
            leads.append(s.start - crossings[matching[0]].start)
    return PredictorScore(len(spikes), len(crossings), len(leads), len(hits), tuple(leads))
