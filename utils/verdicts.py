"""Named verdicts: a claim, whether it held, and the numbers behind it.

A chapter's last cell prints :func:`verdict_table` and, under its default parameters, calls
:func:`report_verdicts` with ``strict=True`` so that a false verdict fails the notebook.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd


@dataclass
class Verdict:
    """``passed`` is a plain bool; ``numbers`` holds the measured values it was decided on."""

    name: str
    claim: str
    passed: bool
    numbers: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"claim": self.claim, "passed": bool(self.passed), "numbers": self.numbers}


def verdict_table(verdicts: list[Verdict], digits: int = 3) -> pd.DataFrame:
    """One row per verdict: name, claim, passed, and the numbers rounded to ``digits``
    significant digits (rounded so that the table reads the same on another machine)."""
    def fmt(x):
        if isinstance(x, float) and math.isfinite(x):
            return float(f"{x:.{digits}g}")
        return x
    return pd.DataFrame([{"verdict": v.name, "claim": v.claim, "passed": bool(v.passed),
                          "numbers": ", ".join(f"{k}={fmt(x)}" for k, x in v.numbers.items())}
                         for v in verdicts]).set_index("verdict")


def report_verdicts(verdicts: list[Verdict], strict: bool) -> pd.DataFrame:
    """The verdict table; with ``strict`` raise ``AssertionError`` naming every false verdict."""
    failed = [v.name for v in verdicts if not v.passed]
    if strict and failed:
        raise AssertionError(f"verdicts false under the default parameters: {failed}")
    return verdict_table(verdicts)


def counterexample_verdicts(adam, gd) -> list[Verdict]:
    """Chapter 0: on f(θ) = aθ²/2 GD is smooth at η ≪ 2/a while Adam spikes at the same η.

    ``adam`` and ``gd`` are :class:`~utils.runs.RunResult` of the two optimizers on the same
    quadratic. A spike counts for Adam when its peak comes after λ_max(Ĥ) first exceeded 2/η.
    """
    from .spikes import sustained_crossings

    lr, a = adam.config.lr, adam.config.model_kwargs.get("curvature", 1.0)
    threshold = 2.0 / lr
    gd_loss = gd.metrics["loss"].to_numpy()
    rises = int((gd_loss[1:] > gd_loss[:-1]).sum())
    m = adam.metrics.dropna(subset=["lambda_max_pre"])
    crossings = sustained_crossings(m["lambda_max_pre"], m["step"], threshold)
    first = crossings[0].start if crossings else None
    late = [s for s in adam.spikes if first is not None and s.peak >= first]
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
