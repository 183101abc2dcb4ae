"""The chapters' stored seed ensembles: read a chapter's sweep under its default parameters,
run it under others, and the introduction's table of every judged claim (the judging itself is
:mod:`utils.studies.ensemble`)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from utils.book.sweeps import CACHE_DIR, Sweep, load_sweep, run_sweep
from utils.studies.alignment import alignment_verdicts, figure6_statements
from utils.studies.ensemble import ENSEMBLE_SHARE, JUDGED, bootstrap_ci, ensemble_verdicts
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
    paper's statement as written, or ours, beyond the paper), the seeds it is judged over, the
    share of them in which it holds with its 95 % interval, and whether it is reproduced (the
    introduction's table). Chapter 1 is read from its stored 16-seed sweep (a verdict is
    reproduced when it holds in at least ``share`` of the seeds that spiked), and so are chapter
    3's alignment tests; chapters 2, 3 and 4's statements from their stored sweeps and chapter 0's from its 16 starting points, run here
    (seconds; the quadratic in float64 gives the same numbers on every machine), each
    reproduced when its tolerance holds at the seeds' median."""
    rows = [_statement_row("00_counterexample", s) for s in _quadratic_statements()]
    for chapter in JUDGED:
        for v in ensemble_verdicts(load_sweep(chapter), chapter, share):
            n = v.numbers
            name = v.name.removeprefix("ensemble_")
            rows.append({"chapter": chapter, "verdict": name,
                         "test": PAPERS,
                         "seeds": f"{n['seeds_spiked']} of {n['seeds']} (spiked)",
                         "share holding": round(n["share"], 2),
                         "95 % interval": f"{n['share_ci_low']:.2f}–{n['share_ci_high']:.2f}",
                         "reproduced": "yes" if v.passed else "no"})
    figure5 = load_sweep("02_lambda_max_crossing")
    rows += [_statement_row("02_lambda_max_crossing", s) for s in figure5_statements(figure5)]
    rows += [_stricter_row("02_lambda_max_crossing", v, len(figure5))
             for v in crossing_stricter(figure5)]
    figure6 = load_sweep("03_gradient_alignment")
    rows += [_statement_row("03_gradient_alignment", s) for s in figure6_statements(figure6)]
    rows += [_stricter_row("03_gradient_alignment", v, len(figure6),
                           PAPERS if v.name == "onset_alignment_large" else BEYOND)
             for v in alignment_verdicts(figure6)]
    table = load_sweep("04_spike_onset")
    adam, gd = table[table["optimizer"] == "adam"], table[table["optimizer"] == "gd"]
    rows += [_statement_row("04_spike_onset", s) for s in figure4_statements(adam, gd)]
    rows += [_pooled_row("04_spike_onset", v, len(adam)) for v in stricter_verdicts(adam)]
    table = pd.DataFrame(rows).sort_values("chapter", kind="stable")   # chapters in order
    return table.set_index(["chapter", "verdict"])


def _stricter_row(chapter: str, verdict, n_seeds: int, test: str | None = None) -> dict:
    """A test judged by a share of the seeds with a spike (by default one of our stricter
    tests) as a summary row."""
    n = verdict.numbers
    return {"chapter": chapter, "verdict": verdict.name, "test": test or BEYOND,
            "seeds": f"{n['seeds']} of {n_seeds} (spiked)", "share holding": round(n["share"], 2),
            "95 % interval": f"{n['ci_low']:.2f}–{n['ci_high']:.2f}",
            "reproduced": "yes" if verdict.passed else "no"}


def _pooled_row(chapter: str, verdict, n_seeds: int) -> dict:
    """A test judged on counts pooled over every seed (the book's scoring rules) as a summary
    row: its pooled values in place of a share of seeds."""
    n = verdict.numbers
    values = (f"precision {n['precision']:.2f} [{n['ci95_low']:.2f}, {n['ci95_high']:.2f}] "
              f"vs chance {n['chance']:.2f}" if "chance" in n else
              f"precision {n['precision_grad']:.2f} vs {n['precision_max']:.2f}")
    return {"chapter": chapter, "verdict": verdict.name, "test": BEYOND,
            "seeds": f"all {n_seeds} (pooled)", "share holding": math.nan,
            "95 % interval": values, "reproduced": "yes" if verdict.passed else "no"}


PAPERS, BEYOND = "the paper's", "ours, beyond the paper"


def _statement_row(chapter: str, statement) -> dict:
    """A :class:`~utils.studies.paper.PaperStatement` as a row of :func:`ensemble_summary`."""
    holds = np.array([statement.holds(x) if np.isfinite(x) else False for x in statement.seeds],
                     dtype=float)
    point, lo, hi = bootstrap_ci(holds, np.mean)
    return {"chapter": chapter, "verdict": f"paper_{statement.key.replace('.', '_')}",
            "test": PAPERS, "seeds": f"{len(statement.seeds)} (judged at the median)",
            "share holding": round(point, 2), "95 % interval": f"{lo:.2f}–{hi:.2f}",
            "reproduced": "yes" if statement.reproduced else "no"}


def _quadratic_statements() -> list:
    """Chapter 0's statements of the paper's Figures 2, 3 and D2 at its default parameters."""
    runs = runs_for_parameters(chapter_defaults("00_counterexample"))
    return quadratic_statements(runs["fig2"], runs["gd"], runs["fig3"], runs["d2"])
