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


def report_verdicts(verdicts: list[Verdict], strict: bool,
                    not_reproduced: tuple = ()) -> pd.DataFrame:
    """The verdict table. With ``strict`` (the chapter's default parameters) every verdict must
    come out as the chapter's prose states it: true, except those named in ``not_reproduced``,
    which the prose reports as claims that did not hold and which must be false. Raises
    ``AssertionError`` naming every verdict that came out otherwise, so a claim that starts (or
    stops) holding cannot go unnoticed."""
    unexpected = [v.name for v in verdicts if bool(v.passed) == (v.name in not_reproduced)]
    unknown = set(not_reproduced) - {v.name for v in verdicts}
    if strict and (unexpected or unknown):
        raise AssertionError(
            f"verdicts not as the chapter states them under the default parameters: {unexpected}"
            + (f"; not_reproduced names no verdict: {sorted(unknown)}" if unknown else ""))
    return verdict_table(verdicts)

