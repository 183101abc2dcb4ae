"""Claims judged over seeds: each seed's verdicts (and how they move with the event
definition), pooled statistics with bootstrap intervals, and ensemble verdicts.

A chapter's seed sweep (:mod:`utils.book.sweeps`) stores one row per seed, made by
:func:`seed_row`: the number of spikes, every verdict of the chapter as a boolean column, the
numbers behind them (``<verdict>.<number>``), and the verdicts and spike counts again under each
other spike factor (``<verdict>@K3``, ``n_spikes@K30``) and crossing hysteresis
(``<verdict>@h0``) of :data:`~utils.events.spikes.SPIKE_FACTORS` and
:data:`~utils.events.spikes.HYSTERESES`.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
from scipy import stats

from utils.studies.claims import v_decay_verdicts
from utils.curvature.tracker import uncertified_steps
from utils.training.runs import find_events
from utils.events.spikes import CROSSING_HYSTERESIS, HYSTERESES, SPIKE_FACTOR, SPIKE_FACTORS
from utils.studies.verdicts import HOLDS, Verdict, judge_share
from utils.validation import check_number

ENSEMBLE_SHARE = 0.75
"""Stated before the sweeps ran: a claim holds for the ensemble when its verdict holds in at
least 75 % of the seeds that spiked (a seed without the verdict's numbers counts as not holding)."""

JUDGED = {
    "01_v_decay": ("decoupled", "crossing_predicted_by_decay", "lambda_pre_rises_at_decay_rate",
                   "lambda_H_flat_below_threshold"),
}
"""The verdicts of each chapter that are judged over seeds (preconditions such as
"the run has spikes" are not). Chapters 2, 3 and 4 judge the paper's statements about its
Figures 5, 6 and 4 instead (:mod:`utils.studies.crossing`, :mod:`utils.studies.alignment`,
:mod:`utils.studies.onset`)."""


def chapter_verdicts(chapter: str, result, hysteresis: float = CROSSING_HYSTERESIS) -> list[Verdict]:
    """The verdicts of ``chapter`` (one of :data:`JUDGED`) on one run."""
    if chapter == "01_v_decay":
        return v_decay_verdicts(result, hysteresis=hysteresis)
    raise ValueError(f"chapter must be one of {list(JUDGED)}, got {chapter!r}")


def with_factor(result, factor: float):
    """``result`` with its spikes found again under spike factor ``factor``."""
    spikes, excluded = find_events(result.metrics, result.config, factor=factor)
    return replace(result, spikes=spikes, excluded=excluded)


def seed_row(chapter: str, result) -> dict:
    """One seed's row of a chapter sweep (see the module docstring)."""
    row = {"n_spikes": len(result.spikes), "n_excluded": len(result.excluded),
           "diverged": result.diverged_at is not None,
           "uncertified_steps": uncertified_steps(result.metrics)
           if "eig_certificate" in result.metrics else 0}
    for v in chapter_verdicts(chapter, result):
        row[v.name] = bool(v.passed)
        row.update({f"{v.name}.{k}": _number(x) for k, x in v.numbers.items()})
    default_factor = result.config.spike_factor
    for factor in SPIKE_FACTORS:
        if factor != default_factor:
            other = with_factor(result, factor)
            row[f"n_spikes@K{factor:g}"] = len(other.spikes)
            row.update({f"{v.name}@K{factor:g}": bool(v.passed)
                        for v in chapter_verdicts(chapter, other)})
    for h in HYSTERESES:
        if h != CROSSING_HYSTERESIS:
            row.update({f"{v.name}@h{h:g}": bool(v.passed)
                        for v in chapter_verdicts(chapter, result, hysteresis=h)})
    return row


def _number(x):
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x)
    return None if x is None else str(x)


def seeds_01(results):
    """Sweep rows of chapter 1 (the ``evaluate`` of its seed sweep)."""
    return [seed_row("01_v_decay", r) for r in results]


def bootstrap_ci(values, statistic=np.median, level: float = 0.95,
                 n_resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(statistic, low, high): the statistic of the finite ``values`` with a percentile
    bootstrap interval at ``level`` (scipy.stats.bootstrap, a fixed seed, so the interval is
    reproducible); NaN where there are fewer than two values or all are equal."""
    from scipy.stats import bootstrap

    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    point = float(statistic(x))
    if len(x) < 2 or np.all(x == x[0]):
        return point, point, point
    res = bootstrap((x,), statistic, confidence_level=level, n_resamples=n_resamples,
                    method="percentile", random_state=np.random.default_rng(seed))
    return point, float(res.confidence_interval.low), float(res.confidence_interval.high)


def share_verdict(name: str, claim: str, holds: pd.Series,
                  share: float = ENSEMBLE_SHARE) -> Verdict:
    """A test over the seeds with a spike: ``holds`` is one boolean per such seed, and the
    claim is that it holds in at least ``share`` of them, judged by the book's one rule on the
    95 % Wilson interval of k of n (:func:`~utils.studies.verdicts.judge_share`). Numbers: the
    share with its interval, ``holding`` (k), ``seeds`` (n) and the ``bar``. No seed:
    inconclusive."""
    k, n = int(np.sum(np.asarray(holds, dtype=float))), len(holds)
    outcome, low, high = judge_share(k, n, share)
    return Verdict(name, claim, outcome == HOLDS,
                   {"share": k / n if n else math.nan, "ci_low": low, "ci_high": high,
                    "holding": k, "seeds": n, "bar": share}, outcome)


def share_holding(table: pd.DataFrame, column: str, spiked: str = "n_spikes") -> pd.Series:
    """The verdict ``column`` over the seeds with a spike (by ``spiked``), missing as False."""
    rows = table[table[spiked] > 0]
    return rows[column].astype("boolean").fillna(False).astype(float) if column in rows else \
        pd.Series(0.0, index=rows.index)


def ensemble_verdicts(table: pd.DataFrame, chapter: str,
                      share: float = ENSEMBLE_SHARE) -> list[Verdict]:
    """For each judged verdict of ``chapter``: it holds in at least ``share`` of the seeds that
    spiked, judged by the one rule on k of n (:func:`share_verdict`); numbers: seeds, seeds that
    spiked, the share holding with its 95 % Wilson interval. If the claim held only in the one
    run a chapter shows, the share would be low and this does not hold."""
    out = []
    n_spiked = int((table["n_spikes"] > 0).sum())
    for name in JUDGED[chapter]:
        v = share_verdict(f"ensemble_{name}",
                          f"{name} holds in ≥ {share:.0%} of the seeds that spiked",
                          share_holding(table, name), share)
        n = v.numbers
        out.append(replace(v, numbers={"seeds": len(table), "seeds_spiked": n_spiked,
                                       "share": n["share"], "share_ci_low": n["ci_low"],
                                       "share_ci_high": n["ci_high"], "holding": n["holding"],
                                       "bar": share}))
    return out


def pooled_table(table: pd.DataFrame, quantities: dict[str, str]) -> pd.DataFrame:
    """One row per quantity (label -> column of per-seed values): the seeds with a value, the
    median over seeds and its 95 % bootstrap interval."""
    rows = []
    for label, column in quantities.items():
        values = table[column] if column in table else pd.Series(dtype=float)
        point, lo, hi = bootstrap_ci(values)
        rows.append({"quantity": label, "seeds": int(np.isfinite(values.astype(float)).sum()),
                     "median": point, "ci95_low": lo, "ci95_high": hi})
    return pd.DataFrame(rows).set_index("quantity")


def sensitivity_table(table: pd.DataFrame, chapter: str) -> pd.DataFrame:
    """How the ensemble moves with the event definition: one row per spike factor and per
    crossing hysteresis (the default row reads the plain columns); columns: the mean number of
    spikes per seed, the seeds that spiked, and for each judged verdict the share of those
    seeds in which it holds."""
    settings = [(f"spike_factor = {k:g}", "" if k == SPIKE_FACTOR else f"@K{k:g}",
                 "n_spikes" if k == SPIKE_FACTOR else f"n_spikes@K{k:g}") for k in SPIKE_FACTORS]
    settings += [(f"hysteresis = {h:g}", "" if h == CROSSING_HYSTERESIS else f"@h{h:g}",
                  "n_spikes") for h in HYSTERESES]
    rows = []
    for label, suffix, spikes_col in settings:
        row = {"setting": label + (" (default)" if not suffix else ""),
               "spikes per seed": float(table[spikes_col].mean()),
               "seeds spiked": int((table[spikes_col] > 0).sum())}
        for name in JUDGED[chapter]:
            held = share_holding(table, name + suffix, spikes_col)
            row[name] = float(held.mean()) if len(held) else math.nan
        rows.append(row)
    return pd.DataFrame(rows).set_index("setting")


def glue_ensemble(verdicts: list[Verdict], pooled: pd.DataFrame | None = None) -> None:
    """Glue the ensemble's numbers for the prose, rounded to 3 significant digits (they are
    read from the stored table, so nbval compares them exactly): ``n_seeds``, ``seeds_spiked``,
    ``share_<verdict>`` with ``_lo`` and ``_hi`` (its 95 % interval), and for each pooled
    quantity ``ens_<quantity>`` with ``_lo``, ``_hi`` and ``_seeds`` (the prefix keeps them
    apart from the single run's numbers on the same page), and ``holding_<verdict>`` (k)."""
    from myst_nb import glue

    def r3(x):
        return float(f"{x:.3g}") if isinstance(x, float) and math.isfinite(x) else x

    if verdicts:
        glue("n_seeds", verdicts[0].numbers["seeds"], display=False)
        glue("seeds_spiked", verdicts[0].numbers["seeds_spiked"], display=False)
        glue("ensemble_share", ENSEMBLE_SHARE, display=False)
    for v in verdicts:
        name = v.name.removeprefix("ensemble_")
        glue(f"holding_{name}", v.numbers.get("holding", "–"), display=False)
        glue(f"share_{name}", r3(v.numbers["share"]), display=False)
        glue(f"share_{name}_lo", r3(v.numbers["share_ci_low"]), display=False)
        glue(f"share_{name}_hi", r3(v.numbers["share_ci_high"]), display=False)
    for quantity, row in ([] if pooled is None else pooled.iterrows()):
        glue(f"ens_{quantity}", r3(row["median"]), display=False)
        glue(f"ens_{quantity}_lo", r3(row["ci95_low"]), display=False)
        glue(f"ens_{quantity}_hi", r3(row["ci95_high"]), display=False)
        glue(f"ens_{quantity}_seeds", int(row["seeds"]), display=False)


RECOMPUTE_FALSE_FAILURE = 1e-3
"""The largest probability, stated before any check ran, that a correct recompute on another
machine fails a check against the stored seeds (all of a check's quantities together)."""


def prediction_interval(seeds, false_failure: float = RECOMPUTE_FALSE_FAILURE,
                        log: bool = True) -> tuple[float, float]:
    """The two-sided prediction interval for one more run of the process that gave ``seeds``
    (1-D, at least 3 finite values; positive where ``log``), missed by a new run with
    probability ``false_failure`` (in (0, 0.5)): mean ± t · s · sqrt(1 + 1/n), with Student's t
    at n − 1 degrees of freedom, on the logarithms where ``log``. It assumes the values (or
    their logarithms) are normal across seeds. A range of n exchangeable seeds is missed with
    probability 2/(n + 1) instead (2/9 for 8 seeds), whatever the distribution."""
    check_number("false_failure", false_failure, low=0, high=0.5, low_open=True, high_open=True)
    x = np.asarray(seeds, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) < 3:
        raise ValueError(f"seeds must hold at least 3 finite values, got {len(x)}")
    if log and (x <= 0).any():
        raise ValueError("seeds must be positive on a log scale (log=True)")
    y = np.log(x) if log else x
    half = (stats.t.ppf(1 - false_failure / 2, len(y) - 1) * y.std(ddof=1)
            * math.sqrt(1 + 1 / len(y)))
    lo, hi = y.mean() - half, y.mean() + half
    return (math.exp(lo), math.exp(hi)) if log else (lo, hi)


def outside_seed_intervals(values: dict, seeds: dict,
                           false_failure: float = RECOMPUTE_FALSE_FAILURE,
                           log: bool = True) -> dict:
    """Of ``values`` (name -> a recomputed number), those outside the prediction interval of
    their stored ``seeds`` (name -> the seeds' values), as name -> (value, (low, high)); empty
    when every value lies inside. The ``false_failure`` is split evenly between the names
    (Bonferroni), so a correct recompute fails any of them with at most that probability."""
    if set(values) != set(seeds):
        raise ValueError(f"values and seeds must name the same quantities, got "
                         f"{sorted(values)} and {sorted(seeds)}")
    share = false_failure / len(values)
    intervals = {k: prediction_interval(seeds[k], share, log) for k in values}
    return {k: (float(values[k]), intervals[k]) for k in values
            if not intervals[k][0] <= values[k] <= intervals[k][1]}


def glue_illustration(values: dict, stored: pd.DataFrame | None,
                      columns: dict) -> pd.DataFrame:
    """Glue each of the live run's ``values`` (name -> number) for the prose, as an
    illustration, and set it beside the stored seeds: ``columns`` maps a name to the sweep column
    holding the same quantity (None where the sweep has none). Returns one row per number: the
    value, the seeds' minimum, median and maximum, and whether the value lies within the seeds'
    range (NaN where there is nothing to compare).

    Nothing is asserted. A spike's timing is chaotic: on another machine (or under the switch
    ``ADAM_SPIKES_PERTURB``) the live run is another sample, and the stored seeds were trained
    batched, another path again, so one run's numbers can fall outside the range of 16 seeds
    without anything being wrong. The claims are judged over the stored seeds instead."""
    from myst_nb import glue

    rows = []
    for name, value in values.items():
        glue(name, value, display=False)
        column = columns.get(name)
        x = (pd.to_numeric(stored[column], errors="coerce").to_numpy(dtype=float)
             if stored is not None and column in stored else np.array([]))
        x = x[np.isfinite(x)]
        v = float(value) if value is not None else math.nan
        lo, mid, hi = (float(x.min()), float(np.median(x)), float(x.max())) if len(x) else \
            (math.nan,) * 3
        rows.append({"number": name, "this run": value, "seeds min": lo, "seeds median": mid,
                     "seeds max": hi,
                     "within the seeds' range": bool(lo <= v <= hi) if len(x) and v == v
                     else math.nan})
    return pd.DataFrame(rows).set_index("number")


def glue_checked(values: dict, bands: dict, strict: bool) -> pd.DataFrame:
    """Glue each of the single run's ``values`` (name -> number) for the prose, and check it
    against its tolerance band (name -> (low, high), stated in the chapter). Under the default
    parameters (``strict``) a value outside its band raises ``AssertionError``, since the prose
    quoting it may no longer hold. Returns the table
    of values, bands and whether each is inside."""
    from myst_nb import glue

    rows = []
    for name, value in values.items():
        glue(name, value, display=False)
        lo, hi = bands.get(name, (-math.inf, math.inf))
        x = float(value) if value is not None else math.nan
        rows.append({"number": name, "value": value, "band_low": lo, "band_high": hi,
                     "inside": bool(lo <= x <= hi)})
    out = pd.DataFrame(rows).set_index("number")
    missing = sorted(set(values) - set(bands))
    outside = list(out.index[~out["inside"]])
    if strict and (outside or missing):
        raise AssertionError(f"numbers quoted in the prose outside their stated bands: {outside}"
                             + (f"; numbers without a band: {missing}" if missing else ""))
    return out
