"""Many seeds of one run on every core: :func:`utils.training.seeds.run_seeds` chunks as Dask tasks.

    results = run_seeds_parallel(config, range(16))            # local cluster, one worker per core
    results = run_seeds_parallel(config, range(64), scheduler="tcp://host:8786")

:func:`~utils.training.seeds.run_seeds` trains K seeds as one stacked model in one process, which
keeps one core busy. Here the seeds are split into chunks, each chunk is one batched ``run_seeds``
call in its own single-threaded worker process, and the results come back in seed order. The
numbers are those of the serial run: a seed's loss and gradient do not depend on which seeds
share its batch, and the eigen-solves agree to their tolerance (``config.eig_tol``).

The cluster is a :class:`distributed.LocalCluster` started for the call (one process per
worker, one thread each) unless a scheduler address is given, by argument or by the
environment variable ``DASK_SCHEDULER``. Local worker processes are *spawned*, so a script that
calls this at import time needs the usual ``if __name__ == "__main__":`` guard.
"""
from __future__ import annotations

import math
import os
from contextlib import contextmanager
from dataclasses import replace
from unittest.mock import patch

from tqdm import tqdm

from utils.training.runs import RunConfig, RunResult
from utils.training.seeds import check_seed_run, run_seeds
from utils.validation import check_number

SCHEDULER_ENV = "DASK_SCHEDULER"
"""Environment variable holding the address of a running Dask scheduler (``tcp://host:8786``)."""

WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
"""Set in every local worker process before it imports torch: one BLAS/OpenMP thread per worker.
Dask sets the same by default, but a variable of this process's environment (``make`` exports
OMP_NUM_THREADS=2) overrides its config; only the cluster's ``env`` argument overrides both. Workers of an
external scheduler are started by whoever runs them, who should set the same; their torch
threads are set to 1 by ``run_seeds`` in any case (``config.threads``)."""


LOCAL_CONFIG = {"distributed.worker.profile.enabled": False,
                "distributed.nanny.pre-spawn-environ": {k: int(v) for k, v in WORKER_ENV.items()}}
"""Dask settings of a local cluster (its worker processes inherit them), measured on chapter 1's
training runs, which are made of many small torch calls: Dask's default
``MALLOC_TRIM_THRESHOLD_=65536`` for its workers (returning freed memory to the system at once)
made such a run take 1.9x as long as in a plain process, so the workers keep glibc's own
default; and the statistical profiler, which samples the task thread's stack every 10 ms, is off
(about 10 % more)."""


SEEDS_PER_TASK = 8
"""Seeds batched in one task by default. Measured in one process on chapter 1's model (1,000
steps, tracked every 5th step, one torch thread), ``run_seeds`` took per seed 1.46 s with
K = 1, 0.71-0.75 s (4), 0.62-0.79 s (8), 0.64-0.69 s (16) and 0.77-0.80 s (32), against
1.08-1.41 s for a plain ``run`` of one seed: batching shares each step's fixed overhead, but the
products of the tracked steps grow with K. On two workers 4, 8 and 16 seeds per task gave
2.3-2.4x the seeds per minute of one plain run; 8 keeps the tasks small enough to balance the
workers."""


def _check_count(name: str, value) -> int | None:
    """None, or a positive integer; ValueError naming ``name`` otherwise."""
    return None if value is None else check_number(name, value, low=1, integer=True)


def _scheduler_address(scheduler) -> str | None:
    """The scheduler to connect to: ``scheduler``, else ``$DASK_SCHEDULER``, else None (local)."""
    if scheduler is not None and not (isinstance(scheduler, str) and scheduler.strip()):
        raise ValueError(f"scheduler must be an address such as 'tcp://host:8786', "
                         f"got {scheduler!r}")
    return (scheduler or os.environ.get(SCHEDULER_ENV, "")).strip() or None


@contextmanager
def dask_client(workers=None, scheduler=None):
    """A :class:`distributed.Client`, closed (with any cluster it started) on exit.

    With ``scheduler`` (an address) or ``$DASK_SCHEDULER`` set, the client connects to that
    scheduler and ``workers`` is ignored (the cluster is not resized). Otherwise a
    ``LocalCluster`` of ``workers`` processes (default ``os.cpu_count()``), one thread each,
    without a dashboard, runs for the duration of the ``with`` block.
    """
    workers = _check_count("workers", workers)
    address = _scheduler_address(scheduler)
    from distributed import Client, LocalCluster  # imported here: starting up is the slow part

    if address is not None:
        with Client(address) as client:
            yield client
        return
    import dask

    # Dask's nannies copy their pre-spawn environment into this process's os.environ, where it
    # overrides the config: a cluster started earlier with Dask's defaults would hand its
    # MALLOC_TRIM_THRESHOLD_ on to ours. It is removed while ours starts; os.environ is
    # restored afterwards.
    with patch.dict(os.environ), dask.config.set(LOCAL_CONFIG):
        os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
        with LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1,
                          processes=True, dashboard_address=None,
                          env=dict(WORKER_ENV)) as cluster, \
                Client(cluster) as client:
            yield client


def chunk_seeds(seeds: list[int], n_chunks: int) -> list[list[int]]:
    """``seeds`` in ``n_chunks`` contiguous chunks whose sizes differ by at most one (at most
    ``len(seeds)`` chunks, none empty)."""
    n_chunks = min(n_chunks, len(seeds))
    size, extra = divmod(len(seeds), n_chunks)
    chunks, start = [], 0
    for i in range(n_chunks):
        stop = start + size + (i < extra)
        chunks.append(seeds[start:stop])
        start = stop
    return chunks


def run_seeds_parallel(config: RunConfig, seeds, *, workers=None, seeds_per_task=None,
                       scheduler=None, progress=True) -> list[RunResult]:
    """Train ``config`` under each of ``seeds`` on a Dask cluster; one RunResult per seed, in
    the order of ``seeds``.

    The seeds are split into ⌈len(seeds)/k⌉ contiguous chunks of at most k =
    ``seeds_per_task`` seeds (default :data:`SEEDS_PER_TASK`), each trained by one task as one
    batched :func:`~utils.training.seeds.run_seeds` call with ``threads=1`` and no per-task progress
    bar; the workers take tasks as they become free.
    ``workers`` also sizes the local cluster; with ``scheduler`` (an address such as
    ``"tcp://host:8786"``) or the environment variable ``DASK_SCHEDULER`` set, the existing
    cluster is used as it is (see :func:`dask_client`). ``progress`` shows a bar over finished
    tasks.

    Each result is that of ``run_seeds``: its ``config`` is ``config`` with ``seed`` set to its
    seed and ``threads=1``, ``progress=False``; its ``metrics`` the per-step table; its
    ``model`` None (the stacked parameters are not returned); its ``seconds`` the wall time, in
    seconds, of the whole chunk it was trained in (not of the call, which adds the cluster's
    start, typically a few seconds). Its ``hvps`` column is the chunk's Hessian-vector
    products divided by the chunk's size, so it depends on the chunking.

    ValueError naming the parameter, before any cluster starts, for a bad ``config``, seeds
    that are not distinct non-negative integers, or a ``workers``/``seeds_per_task`` that is
    not a positive integer; an exception inside a task is raised here.
    """
    seeds = check_seed_run(config, seeds)
    workers = _check_count("workers", workers)
    seeds_per_task = _check_count("seeds_per_task", seeds_per_task)
    _scheduler_address(scheduler)
    if not isinstance(progress, bool):
        raise ValueError(f"progress must be True or False, got {progress!r}")
    task_config = replace(config, threads=1, progress=False)

    with dask_client(workers=workers, scheduler=scheduler) as client:
        from distributed import as_completed

        n_chunks = math.ceil(len(seeds) / (seeds_per_task or SEEDS_PER_TASK))
        chunks = chunk_seeds(seeds, n_chunks)
        futures = [client.submit(run_seeds, task_config, chunk, pure=False) for chunk in chunks]
        index = {f.key: i for i, f in enumerate(futures)}
        done = [None] * len(chunks)
        with tqdm(total=len(futures), disable=not progress, unit="task",
                  desc=f"{len(seeds)} seeds of {config.model} lr={config.lr:g}") as bar:
            for future in as_completed(futures):
                done[index[future.key]] = future.result()
                bar.update(1)
    return [result for chunk in done for result in chunk]
