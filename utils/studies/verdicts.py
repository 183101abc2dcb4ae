"""Named verdicts: a claim, its outcome under the book's one rule, and the numbers behind it.

The rule (:func:`judge`, stated on the Definitions page): a claim compares a quantity with a bar
stated before the run. It **holds** when the quantity's whole interval clears the bar on the
claimed side, it **does not hold** when the whole interval lies on the other side, and it is
**inconclusive** otherwise (the interval contains the bar, or there is nothing to judge). A
share-of-seeds claim is k of n against a threshold, judged on k/n's 95 % Wilson interval
(:func:`judge_share`). A quantity computed exactly (a count, a deterministic run) is its own
interval.

A chapter's last cell prints :func:`verdict_table` and, under its default parameters, calls
:func:`report_verdicts` with ``strict=True`` so that an outcome other than the one the prose
states fails the notebook.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from utils.studies.scoring import wilson_interval

HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"
OUTCOMES = (HOLDS, FAILS, INCONCLUSIVE)
SIDES = (">", ">=", "<", "<=")


def _satisfies(x: float, bar: float, side: str) -> bool:
    return {">": x > bar, ">=": x >= bar, "<": x < bar, "<=": x <= bar}[side]


def judge(low: float, high: float, bar: float, side: str = ">") -> str:
    """The outcome of the claim "the quantity is ``side`` ``bar``" (``side`` one of
    :data:`SIDES`) given the quantity's interval [``low``, ``high``]: :data:`HOLDS` when both
    ends satisfy it, :data:`FAILS` when neither does, :data:`INCONCLUSIVE` when the interval
    straddles the bar or an end is NaN."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    ends = [float(low), float(high)]
    if any(math.isnan(x) for x in (*ends, float(bar))):
        return INCONCLUSIVE
    met = [_satisfies(x, float(bar), side) for x in ends]
    return HOLDS if all(met) else FAILS if not any(met) else INCONCLUSIVE


def judge_share(k: int, n: int, threshold: float) -> tuple[str, float, float]:
    """(outcome, low, high): the claim "it holds in at least ``threshold`` of the n cases" with
    k of them holding, judged by :func:`judge` on the 95 % Wilson interval of k/n (no case:
    inconclusive)."""
    if not n:
        return INCONCLUSIVE, math.nan, math.nan
    low, high = wilson_interval(k, n)
    return judge(low, high, threshold, ">="), low, high


@dataclass
class Verdict:
    """A claim and its outcome (one of :data:`OUTCOMES`); ``passed`` is whether it holds;
    ``numbers`` holds the measured values it was decided on (with the interval and the bar
    for a verdict made by :meth:`judged`). A verdict built from a bool has the outcome
    :data:`HOLDS` or :data:`FAILS`."""

    name: str
    claim: str
    passed: bool
    numbers: dict = field(default_factory=dict)
    outcome: str = ""

    def __post_init__(self):
        self.passed = bool(self.passed)
        if not self.outcome:
            self.outcome = HOLDS if self.passed else FAILS
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {self.outcome!r}")
        if self.passed != (self.outcome == HOLDS):
            raise ValueError(f"{self.name}: passed={self.passed} contradicts {self.outcome!r}")

    @classmethod
    def judged(cls, name: str, claim: str, estimate: float, low: float, high: float,
               bar: float, side: str = ">", numbers: dict | None = None) -> "Verdict":
        """The claim "the quantity is ``side`` ``bar``", judged by :func:`judge` on
        [``low``, ``high``]; ``numbers`` gain ``estimate``, ``ci_low``, ``ci_high``, ``bar``."""
        outcome = judge(low, high, bar, side)
        return cls(name, claim, outcome == HOLDS,
                   {"estimate": estimate, "ci_low": low, "ci_high": high, "bar": bar,
                    **(numbers or {})}, outcome)

    def to_dict(self) -> dict:
        return {"claim": self.claim, "outcome": self.outcome, "passed": self.passed,
                "numbers": self.numbers}


def verdict_table(verdicts: list[Verdict], digits: int = 3) -> pd.DataFrame:
    """One row per verdict: name, claim, outcome, passed, and the numbers rounded to ``digits``
    significant digits (rounded so that the table reads the same on another machine)."""
    def fmt(x):
        if isinstance(x, float) and math.isfinite(x):
            return float(f"{x:.{digits}g}")
        return x
    return pd.DataFrame([{"verdict": v.name, "claim": v.claim, "outcome": v.outcome,
                          "passed": v.passed,
                          "numbers": ", ".join(f"{k}={fmt(x)}" for k, x in v.numbers.items())}
                         for v in verdicts]).set_index("verdict")


def report_verdicts(verdicts: list[Verdict], strict: bool, not_reproduced: tuple = (),
                    inconclusive: tuple = ()) -> pd.DataFrame:
    """The verdict table. With ``strict`` (the chapter's default parameters) every verdict must
    come out as the chapter's prose states it: :data:`HOLDS`, except those named in
    ``not_reproduced`` (:data:`FAILS`) and in ``inconclusive`` (:data:`INCONCLUSIVE`). Raises
    ``AssertionError`` naming every verdict that came out otherwise, so an outcome that changes
    cannot go unnoticed."""
    stated = {**{name: FAILS for name in not_reproduced},
              **{name: INCONCLUSIVE for name in inconclusive}}
    unexpected = [f"'{v.name}': {v.outcome}" for v in verdicts
                  if v.outcome != stated.get(v.name, HOLDS)]
    unknown = set(stated) - {v.name for v in verdicts}
    if strict and (unexpected or unknown):
        raise AssertionError(
            f"verdicts not as the chapter states them under the default parameters: {unexpected}"
            + (f"; a stated outcome names no verdict: {sorted(unknown)}" if unknown else ""))
    return verdict_table(verdicts)
