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

