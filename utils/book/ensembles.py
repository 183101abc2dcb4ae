"""The chapters' stored seed ensembles: read a chapter's sweep under its default parameters,
run it under others, and the introduction's table of every judged claim (the judging itself is
:mod:`utils.studies.ensemble`)."""
from __future__ import annotations

import pandas as pd

from utils.book.sweeps import CACHE_DIR, Sweep, load_sweep, run_sweep
from utils.studies.ensemble import ENSEMBLE_SHARE, JUDGED, ensemble_verdicts
from utils.studies.settings import chapter_evaluate, chapter_runs


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
    sweep = Sweep(name=f"{chapter}_custom", configs=chapter_runs(chapter, params, progress=False),
                  seeds=tuple(int(s) for s in seeds), evaluate=chapter_evaluate(chapter),
                  seeds_per_task=4)
    return run_sweep(sweep, workers=workers, out=out or CACHE_DIR / f"{chapter}_custom.csv.gz")


def ensemble_summary(share: float = ENSEMBLE_SHARE) -> pd.DataFrame:
    """Every judged claim of chapters 1-4 over its stored 16-seed sweep: one row per verdict
    with the share of the seeds that spiked in which it holds, its 95 % interval, and whether
    it reaches ``share`` (the introduction's table)."""
    rows = []
    for chapter in JUDGED:
        for v in ensemble_verdicts(load_sweep(chapter), chapter, share):
            n = v.numbers
            rows.append({"chapter": chapter, "verdict": v.name.removeprefix("ensemble_"),
                         "seeds spiked": f"{n['seeds_spiked']} of {n['seeds']}",
                         "share holding": round(n["share"], 2),
                         "95 % interval": f"{n['share_ci_low']:.2f}–{n['share_ci_high']:.2f}",
                         "reproduced": "yes" if v.passed else "no"})
    return pd.DataFrame(rows).set_index(["chapter", "verdict"])
