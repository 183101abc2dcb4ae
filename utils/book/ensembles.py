"""The chapters' stored seed ensembles: read a chapter's sweep under its default parameters,
run it under others, and the introduction's table of every judged claim (the judging itself is
:mod:`utils.studies.ensemble`)."""
from __future__ import annotations

import pandas as pd

from utils.book.sweeps import CACHE_DIR, Sweep, load_sweep, run_sweep
from utils.studies.alignment import alignment_verdicts, figure6_statements
from utils.studies.ensemble import ENSEMBLE_SHARE, JUDGED, ensemble_verdicts
from utils.studies.paper import WORDS
from utils.studies.crossing import figure5_statements
from utils.studies.crossing import stricter_verdicts as crossing_stricter
from utils.studies.onset import figure4_statements, stricter_verdicts
from utils.studies.quadratic import quadratic_statements, runs_for_parameters
from utils.studies.settings import chapter_defaults, chapter_evaluate, chapter_runs


def seed_table(chapter: str, strict: bool, params: dict) -> pd.DataFrame | None:
    """The chapter's stored seed sweep (``data/sweeps/<chapter>.csv.gz``) under its default
    parameters (``strict``). Under other parameters the stored ensemble is not theirs: returns
    None after printing how to run the sweep for ``params`` (:func:`run_ensemble`)."""
    if strict:
        return load_sweep(chapter)
    shown = {k: v for k, v in params.items() if k not in ("output_dir", "seed")}
    print("The stored 16-seed ensemble was run under the default parameters, not these, so it is "
          "not shown.\nTo judge these parameters over seeds (about 1-10 min on 2 cores):\n\n"
          f"    from utils.book.ensembles import run_ensemble\n"
          f"    table = run_ensemble({chapter!r}, {shown!r})\n")
    return None


def run_ensemble(chapter: str, params: dict, seeds=range(16), *, workers=None, out=None):
    """Run ``chapter``'s sweep under ``params`` (the notebook's parameter values) over ``seeds``
    on Dask, into ``_build/sweeps/<chapter>_custom.csv.gz`` (or ``out``); returns the table, the
    same columns as the stored sweep's."""
    params = {k: v for k, v in params.items() if k != "output_dir"}
    evaluate, trains = chapter_evaluate(chapter)
    sweep = Sweep(name=f"{chapter}_custom", configs=chapter_runs(chapter, params, progress=False),
                  seeds=tuple(int(s) for s in seeds), evaluate=evaluate, trains=trains,
                  seeds_per_task=4)
    return run_sweep(sweep, workers=workers, out=out or CACHE_DIR / f"{chapter}_custom.csv.gz")


def ensemble_summary(share: float = ENSEMBLE_SHARE) -> pd.DataFrame:
    """Every judged claim of chapters 0-4: one row per verdict with whose test it is (the
    paper's statement as written, or ours, beyond the paper), k of the n seeds with the event
    in which it holds, with the 95 % Wilson interval of k/n, and its outcome by the book's one
    rule (the introduction's table): a share-of-seeds claim holds when that interval lies at or
    above ``share``, does not hold when it lies below, and is inconclusive otherwise. Chapter 1
    and chapter 3's alignment tests are read from their stored 16-seed sweeps, chapters 2, 3
    and 4's statements from their stored sweeps, and chapter 0's from its 16 starting points,
    run here (seconds; the quadratic in float64 gives the same numbers on every machine).
    Chapter 4's pooled tests are judged on their bootstrap intervals."""
    rows = [_statement_row("00_counterexample", s) for s in _quadratic_statements()]
    for chapter in JUDGED:
        for v in ensemble_verdicts(load_sweep(chapter), chapter, share):
            n = v.numbers
            rows.append(_share_row(chapter, v.name.removeprefix("ensemble_"), PAPERS,
                                   n["holding"], n["seeds_spiked"], n["share_ci_low"],
                                   n["share_ci_high"], v.outcome))
    figure5 = load_sweep("02_lambda_max_crossing")
    rows += [_statement_row("02_lambda_max_crossing", s) for s in figure5_statements(figure5)]
    rows += [_stricter_row("02_lambda_max_crossing", v) for v in crossing_stricter(figure5)]
    figure6 = load_sweep("03_gradient_alignment")
    rows += [_statement_row("03_gradient_alignment", s) for s in figure6_statements(figure6)]
    rows += [_stricter_row("03_gradient_alignment", v,
                           PAPERS if v.name == "onset_alignment_large" else BEYOND)
             for v in alignment_verdicts(figure6)]
    table = load_sweep("04_spike_onset")
    adam, gd = table[table["optimizer"] == "adam"], table[table["optimizer"] == "gd"]
    rows += [_statement_row("04_spike_onset", s) for s in figure4_statements(adam, gd)]
    rows += [_pooled_row("04_spike_onset", v, len(adam)) for v in stricter_verdicts(adam)]
    table = pd.DataFrame(rows).sort_values("chapter", kind="stable")   # chapters in order
    return table.set_index(["chapter", "verdict"])


def _share_row(chapter: str, verdict: str, test: str, k: int, n: int, low: float, high: float,
               outcome: str) -> dict:
    """A share-of-seeds claim as a row of :func:`ensemble_summary`."""
    return {"chapter": chapter, "verdict": verdict, "test": test, "seeds holding": f"{k} of {n}",
            "95 % interval": f"{low:.2f}–{high:.2f}" if n else "–",
            "outcome": WORDS.get(outcome, outcome) if test == PAPERS else outcome}


def _stricter_row(chapter: str, verdict, test: str | None = None) -> dict:
    """A test judged by a share of the seeds with a spike (by default one of our stricter
    tests) as a summary row."""
    n = verdict.numbers
    return _share_row(chapter, verdict.name, test or BEYOND, n["holding"], n["seeds"],
                      n["ci_low"], n["ci_high"], verdict.outcome)


def _pooled_row(chapter: str, verdict, n_seeds: int) -> dict:
    """A test judged on counts pooled over every seed (the book's scoring rules) as a summary
    row: its pooled values and their interval in place of a share of seeds."""
    n = verdict.numbers
    values = (f"precision {n['estimate']:.2f} [{n['ci_low']:.2f}, {n['ci_high']:.2f}] "
              f"vs {n['bar']:.2f}" if "estimate" in n else "–")
    return {"chapter": chapter, "verdict": verdict.name, "test": BEYOND,
            "seeds holding": f"all {n_seeds} pooled", "95 % interval": values,
            "outcome": verdict.outcome}


PAPERS, BEYOND = "the paper's", "ours, beyond the paper"


def _statement_row(chapter: str, statement) -> dict:
    """A :class:`~utils.studies.paper.PaperStatement` as a row of :func:`ensemble_summary`."""
    outcome, low, high = statement.judged
    return _share_row(chapter, f"paper_{statement.key.replace('.', '_')}", PAPERS,
                      statement.holding, len(statement.with_event), low, high, outcome)


def _quadratic_statements() -> list:
    """Chapter 0's statements of the paper's Figures 2, 3 and D2 at its default parameters."""
    runs = runs_for_parameters(chapter_defaults("00_counterexample"))
    return quadratic_statements(runs["fig2"], runs["gd"], runs["fig3"], runs["d2"])
