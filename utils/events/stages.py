"""The life of one spike in five stages, located on a measured run.

The ICML version of the paper describes five stages of a spike without naming them in our
sources; this is the book's reconstruction, consistent with the mechanism:

1. stable descent: g² is comparable to v, so v tracks the squared gradient;
2. decoupling: g² ≪ v, v decays like β2^t and λ_max(Ĥ) rises;
3. λ_max(Ĥ) is above 2/η while the loss is still low;
4. the loss grows (the spike, from its start to its peak);
5. g² catches up with v, v jumps, λ_max(Ĥ) falls back below 2/η and the loss recovers (to
   within ``recovered_factor`` of where the spike started).

All steps are training steps t; boundaries are taken from tracked rows, so they are accurate to
the run's ``track_every``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from utils.events.spikes import Spike, sustained_crossings


@dataclass(frozen=True)
class SpikeStages:
    """Boundaries of the five stages of ``spike``: stage k spans [bounds[k-1], bounds[k]]."""

    spike: Spike
    bounds: tuple[int, int, int, int, int, int]  # window start, decoupled, crossed, rise, peak, recovered

    @property
    def crossing(self) -> int:
        """The step at which λ_max(Ĥ) rose above 2/η before this spike."""
        return self.bounds[2]

    @property
    def recovered(self) -> int:
        """The first tracked step after the peak with λ_max(Ĥ) back below 2/η and the loss
        back near where the spike started."""
        return self.bounds[5]


def spike_stages(result, *, coupled: float = 0.1, max_lead: int = 200, lead_in: int = 60,
                 recovered_factor: float = 2.0) -> SpikeStages | None:
    """The stages of the first spike that λ_max(Ĥ) crossed 2/η for, at most ``max_lead`` steps
    before its peak; None if no spike qualifies.

    ``result`` is a :class:`~utils.training.runs.RunResult` with ``lambda_max_pre`` and the
    decoupling statistics tracked. Decoupling starts after the last tracked step before the
    crossing with
    median g²/v ≥ ``coupled``; the window opens ``lead_in`` steps before that.
    """
    threshold = 2.0 / result.config.lr
    m = result.metrics.dropna(subset=["lambda_max_pre", "g2_over_v_median"])
    steps, lam = m["step"].to_numpy(), m["lambda_max_pre"].to_numpy()
    crossings = sustained_crossings(lam, steps, threshold)
    for spike in (s for s in result.spikes if not s.diverged):
        before = [c for c in crossings if spike.peak - max_lead <= c.start <= spike.peak]
        back = m["loss"].to_numpy() <= recovered_factor * spike.start_loss
        after = steps[(steps > spike.peak) & (lam < threshold) & back]
        if not before or not len(after):
            continue
        crossed = before[-1].start
        coupled_rows = steps[(steps < crossed) & (m["g2_over_v_median"].to_numpy() >= coupled)]
        decoupled = int(coupled_rows[-1]) if len(coupled_rows) else int(steps[0])
        start = max(int(steps[0]), decoupled - lead_in)
        rise = int(np.clip(spike.start, crossed, spike.peak))
        return SpikeStages(spike, (start, decoupled, crossed, rise, spike.peak, int(after[0])))
    return None
