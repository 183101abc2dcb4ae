"""The paper's statements beside our measurements: one row per statement of the v1 text.

A chapter's "The paper's Figure N, reproduced" section lists the statements that the paper's text
makes about that figure (:class:`PaperStatement`), each with

* the quantity behind it, measured on our default run and on each seed of our ensemble;
* a tolerance, written in the chapter before the run, as a predicate on that quantity;
* a verdict by the book's one rule (:func:`~utils.studies.verdicts.judge_share`): the
  statement is a share-of-seeds claim, k of n, n being the seeds with the event (a finite
  value), that the tolerance holds in at least :data:`~utils.studies.ensemble.ENSEMBLE_SHARE`
  of them; *reproduced* when the 95 % Wilson interval of k/n lies at or above that share,
  *not reproduced* when it lies below, *inconclusive* otherwise. The seeds' median with its
  interval is shown beside it.

A number that depends on the initialisation (an epoch) is compared as the quantity behind it
(a lag, a duration), never as the same epoch. The verdict is decided on the ensemble, not on the
default run, so it does not need a bit-identical trajectory; the default run is an illustration.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from utils.studies.ensemble import ENSEMBLE_SHARE, bootstrap_ci
from utils.studies.verdicts import FAILS, HOLDS, INCONCLUSIVE, Verdict, judge_share

REPRODUCED, NOT_REPRODUCED = "reproduced", "not reproduced"
WORDS = {HOLDS: REPRODUCED, FAILS: NOT_REPRODUCED, INCONCLUSIVE: INCONCLUSIVE}
"""The one rule's outcomes in the words of a paper statement."""


@dataclass
class PaperStatement:
    """One statement of the paper's text and the quantity that tests it.

    ``key``: the statement's number in the book ("2.1"); ``figure``: the paper's figure;
    ``statement``: what the text says (v1); ``quantity``: what we measure, with units;
    ``default``: its value on our default run; ``seeds``: its value on each seed (NaN where a
    seed has no such event); ``tolerance``: the rule as the chapter writes it; ``holds``: the
    rule as a predicate on one value; ``digits``: significant digits shown.
    """

    key: str
    figure: str
    statement: str
    quantity: str
    default: float
    seeds: np.ndarray
    tolerance: str
    holds: Callable[[float], bool]
    digits: int = 3
    numbers: dict = field(default_factory=dict)

    def __post_init__(self):
        self.seeds = np.asarray(self.seeds, dtype=float).reshape(-1)

    @property
    def summary(self) -> tuple[float, float, float]:
        """(median, low, high) over the seeds: the median with its 95 % bootstrap interval."""
        return bootstrap_ci(self.seeds)

    @property
    def with_event(self) -> np.ndarray:
        """The seeds' values where the seed has the event (finite)."""
        return self.seeds[np.isfinite(self.seeds)]

    @property
    def holding(self) -> int:
        """k: the seeds with the event where the tolerance holds."""
        return int(sum(self._holds(x) for x in self.with_event))

    @property
    def share(self) -> float:
        """k/n over the seeds with the event (NaN without one)."""
        n = len(self.with_event)
        return self.holding / n if n else math.nan

    @property
    def judged(self) -> tuple[str, float, float]:
        """(outcome, low, high): k of n against :data:`ENSEMBLE_SHARE` by the one rule."""
        return judge_share(self.holding, len(self.with_event), ENSEMBLE_SHARE)

    @property
    def outcome(self) -> str:
        return self.judged[0]

    @property
    def reproduced(self) -> bool:
        """Whether the statement is reproduced (its outcome holds)."""
        return self.outcome == HOLDS

    def _holds(self, x: float) -> bool:
        return bool(math.isfinite(x) and self.holds(x))

    def verdict(self) -> Verdict:
        """The statement as a :class:`~utils.studies.verdicts.Verdict` named ``paper_<key>``."""
        median, low, high = self.summary
        outcome, share_low, share_high = self.judged
        return Verdict(f"paper_{self.key.replace('.', '_')}",
                       f"(the paper, {self.figure}) {self.statement}", outcome == HOLDS,
                       {"default": self.default, "median": median, "ci_low": low,
                        "ci_high": high, "share_holding": self.share, "holding": self.holding,
                        "seeds_with_event": len(self.with_event), "share_ci_low": share_low,
                        "share_ci_high": share_high, "bar": ENSEMBLE_SHARE, **self.numbers},
                       outcome)


def seed_value(table: pd.DataFrame, column: str, seed: int) -> float:
    """``column`` of the row of ``seed`` in a per-seed table (NaN if there is none): the
    "our default run" column of a table read from a stored sweep."""
    row = table[table["seed"] == seed]
    return float(row[column].iloc[0]) if len(row) else math.nan


def seed_statements(table: pd.DataFrame, default_seed: int = 0):
    """A builder of the statements of a chapter's "paper vs book" table from its stored sweep
    (one row per seed, with ``seed`` and ``n_spikes``): ``row(key, figure, statement, quantity,
    column, tolerance, holds, **kw)`` makes a :class:`PaperStatement` of ``column`` over every
    seed (the quantity's name says over how many, and how many spiked), with seed
    ``default_seed``'s value as "our default run"."""
    n_spiked = int((table["n_spikes"] > 0).sum())
    over = f"over the {len(table)} seeds ({n_spiked} with a spike)"

    def row(key, figure, statement, quantity, column, tolerance, holds, **kw):
        return PaperStatement(key, figure, statement, f"{quantity}, {over}",
                              seed_value(table, column, default_seed),
                              table[column].to_numpy(dtype=float), tolerance, holds, **kw)

    return row


def _fmt(x: float, digits: int) -> str:
    if not math.isfinite(x):
        return "–"
    return f"{x:.{digits}g}"


def paper_table(statements: list[PaperStatement]) -> pd.DataFrame:
    """One row per statement: the paper's text, the quantity, our default run, our seeds'
    median with its 95 % interval, k of n seeds with the event where the tolerance holds, the
    tolerance, and the verdict (reproduced, not reproduced or inconclusive). Numbers are
    rounded to each statement's digits so that the table reads the same on another machine's
    ensemble of the same quantities."""
    rows = []
    for s in statements:
        median, low, high = s.summary
        rows.append({
            "#": s.key, "the paper (v1)": f"{s.figure}: {s.statement}",
            "quantity": s.quantity,
            "our default run": _fmt(s.default, s.digits),
            "our seeds: median [95 % CI]": (f"{_fmt(median, s.digits)} "
                                           f"[{_fmt(low, s.digits)}, {_fmt(high, s.digits)}]"),
            "seeds holding": f"{s.holding} of {len(s.with_event)}",
            "tolerance (fixed before the run)": s.tolerance,
            "verdict": WORDS[s.outcome],
        })
    return pd.DataFrame(rows).set_index("#")
