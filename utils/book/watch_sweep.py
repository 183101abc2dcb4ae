"""Chapter 9's stored table: its seeds trained one after another with the spike monitor, each
row timing it, cached per seed and written with provenance to ``data/sweeps/watch.csv.gz``
(``python -m utils.book.watch_sweep``; ``make sweep NAME=watch``). The run and its scoring are
:mod:`utils.studies.watch`."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from utils import __version__
from utils.book.sweeps import (CACHE_DIR, SWEEP_DIR, provenance, provenance_columns, source_hash,
                               write_atomic, write_table)
from utils.studies.watch import WATCH, WATCH_FACTOR, WATCH_SEEDS, watch_rows
from utils.validation import check_number


WATCH_TABLE = "watch"
"""The stem of the stored table, ``data/sweeps/watch.csv.gz``."""


def run_watch_sweep(seeds=WATCH_SEEDS, out=None, cache_dir=None, progress=True,
                    threads: int = 2) -> pd.DataFrame:
    """Train ``seeds`` one after another (each row times the monitor), cache each seed's rows
    as it finishes (``_build/sweeps/watch/seed_<n>.json``, keyed by the settings, the utils
    version and the :func:`~utils.book.sweeps.source_hash` of the ``utils`` modules this one
    imports, so an edit of their code recomputes), and write the table with the provenance
    columns of :mod:`utils.book.sweeps`."""
    seeds = [int(s) for s in seeds]
    for s in seeds:
        check_number("seed", s, low=0, integer=True)
    check_number("threads", threads, low=1, integer=True)
    torch.set_num_threads(threads)
    folder = Path(cache_dir or CACHE_DIR) / WATCH_TABLE
    folder.mkdir(parents=True, exist_ok=True)
    key = {"settings": WATCH, "factor": WATCH_FACTOR, "utils_version": __version__,
           "sources": source_hash("utils.studies.watch:watch_rows")}
    rows = []
    for seed in tqdm(seeds, desc="watch: seeds", disable=not progress):
        path = folder / f"seed_{seed}.json"
        record = json.loads(path.read_text()) if path.exists() else None
        if record is None or record["key"] != key:
            prov = provenance()
            record = {"key": key, "rows": watch_rows(seed), "provenance": prov}
            write_atomic(path, json.dumps(record).encode())
        rows += [{"sweep": WATCH_TABLE, **row, "settings": json.dumps(WATCH, sort_keys=True),
                  **provenance_columns(record["provenance"])} for row in record["rows"]]
    table = pd.DataFrame(rows)
    out = Path(out or SWEEP_DIR / f"{WATCH_TABLE}.csv.gz")
    write_table(table, out)
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.book.watch_sweep",
                                     description="Train chapter 9's seeds with the spike "
                                                 "monitor and write data/sweeps/watch.csv.gz")
    parser.add_argument("--seeds", type=int, default=len(WATCH_SEEDS),
                        help="seeds 0..N-1 (default: %(default)s)")
    args = parser.parse_args(argv)
    check_number("--seeds", args.seeds, low=1, integer=True)
    t0 = time.perf_counter()
    table = run_watch_sweep(range(args.seeds))
    print(f"watch: {table['seed'].nunique()} seeds, {len(table)} rows in "
          f"{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
