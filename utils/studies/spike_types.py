"""What a spike does to the test loss: the four kinds of the paper's Figure D1, by a stated rule.

The paper (v1, Appendix C) names four kinds of spike of a Transformer trained full batch on an
anchor-function task, by the training and test losses before and after it: *neutral* (both
resume their decline), *beneficial* (the test loss, high before, falls quickly after),
*malignant* (the training loss recovers, the test loss does not) and *catastrophic* (neither
recovers). It classifies its examples by eye. This module's rule is ours, fixed before any run
(:func:`classify_spike`); a spike is one of the book's spikes on the training loss
(:mod:`utils.events.spikes`), with ``start``, ``peak`` and ``end``:

* **catastrophic**: the training loss never returns below K × its trend (the spike has no
  ``end``) although at least :data:`WINDOW` steps ran after the peak, or the run diverged;
* **undetermined**: the run ended within :data:`WINDOW` steps of the peak (no end yet) or of
  the end (no window after it);
* otherwise the test loss's median over the :data:`WINDOW` steps before the start (``before``)
  is set against its median over the :data:`WINDOW` steps from the end on (``after``):
  **beneficial** when after ≤ before / :data:`CHANGE`, **malignant** when after ≥
  :data:`CHANGE` × before, **neutral** in between.

**The baseline.** The test loss drifts without any spike (it falls as training goes on, or
rises as the model overfits), so the same rule applied to calm stretches tells how often a
"beneficial" or "malignant" label would come without a spike (:func:`calm_labels`: pseudo-
spikes of the same length placed at random calm steps of the same run).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

TYPES = ("neutral", "beneficial", "malignant", "catastrophic")
"""The paper's four kinds, in its order (Figure D1 a-d)."""
UNDETERMINED = "undetermined"
WINDOW = 20
"""Steps in each window before the start and from the end on."""
CHANGE = 2.0
"""The factor by which the test loss must fall (beneficial) or rise (malignant)."""


def _median(metrics: pd.DataFrame, column: str, lo: int, hi: int) -> float:
    """Median of ``column`` over the rows with lo ≤ step < hi (NaN when none)."""
    steps = metrics["step"].to_numpy()
    values = metrics[column].to_numpy(dtype=float)[(steps >= lo) & (steps < hi)]
    values = values[np.isfinite(values)]
    return float(np.median(values)) if len(values) else math.nan


def classify_spike(metrics: pd.DataFrame, spike, *, window: int = WINDOW,
                   change: float = CHANGE) -> dict:
    """The kind of ``spike`` (a :class:`~utils.events.spikes.Spike` of ``metrics["loss"]``) by
    the module's rule, with the medians it compared: ``type``, ``test_before``, ``test_after``,
    ``train_before``, ``train_after`` (losses; NaN where there is no window) and
    ``test_ratio`` = after / before. ``metrics`` holds ``step``, ``loss`` and ``test_loss``."""
    last = int(metrics["step"].iloc[-1])
    out = {"start": spike.start, "peak": spike.peak, "end": spike.end,
           "train_before": _median(metrics, "loss", spike.start - window, spike.start),
           "test_before": _median(metrics, "test_loss", spike.start - window, spike.start),
           "train_after": math.nan, "test_after": math.nan, "test_ratio": math.nan}
    if spike.diverged or (spike.end is None and last - spike.peak >= window):
        return {**out, "type": "catastrophic"}
    if spike.end is None or last - spike.end + 1 < window:
        return {**out, "type": UNDETERMINED}
    after = {col: _median(metrics, col, spike.end, spike.end + window)
             for col in ("loss", "test_loss")}
    ratio = after["test_loss"] / out["test_before"]
    kind = ("beneficial" if ratio <= 1 / change else "malignant" if ratio >= change
            else "neutral")
    return {**out, "train_after": after["loss"], "test_after": after["test_loss"],
            "test_ratio": ratio, "type": kind}


def classify_run(metrics: pd.DataFrame, spikes, **rule) -> pd.DataFrame:
    """:func:`classify_spike` for every spike of a run: one row per spike."""
    return pd.DataFrame([classify_spike(metrics, s, **rule) for s in spikes],
                        columns=["start", "peak", "end", "train_before", "test_before",
                                 "train_after", "test_after", "test_ratio", "type"])


def calm_labels(metrics: pd.DataFrame, spikes, n: int, rng, *, length: int = 10,
                window: int = WINDOW, change: float = CHANGE) -> pd.Series:
    """The rule's label at ``n`` pseudo-spikes of ``length`` steps, their starts drawn by
    ``rng`` among the calm steps of the run (whose windows, the pseudo-spike and ``window``
    steps on either side, touch no spike): how often "beneficial" or "malignant" comes without
    a spike. Fewer than ``n`` labels where the run has fewer calm steps."""
    from utils.events.spikes import Spike

    steps = metrics["step"].to_numpy()
    first, last = int(steps[0]), int(steps[-1])
    busy = [(s.start - 2 * window - length, (s.end if s.end is not None else last) + window)
            for s in spikes]
    calm = [t for t in range(first + window, last - length - window + 1)
            if not any(lo <= t <= hi for lo, hi in busy)]
    if not calm:
        return pd.Series([], dtype=object)
    starts = rng.choice(calm, size=min(n, len(calm)), replace=False)
    labels = []
    for t in sorted(int(t) for t in starts):
        pseudo = Spike(t, t, t + length // 2, t + length, math.nan, math.nan, math.nan)
        labels.append(classify_spike(metrics, pseudo, window=window, change=change)["type"])
    return pd.Series(labels, dtype=object)
