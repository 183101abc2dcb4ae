"""Seeds trained as Dask tasks on a local cluster equal the same seeds trained serially."""
import distributed
import numpy as np
import pytest

from utils.book.parallel import chunk_seeds, dask_client, run_seeds_parallel
from utils.training.runs import RunConfig
from utils.training.seeds import run_seeds

CONFIG = RunConfig(model="mlp", model_kwargs=dict(width=8), data="sin",
                   data_kwargs=dict(n_points=32), lr=0.02, steps=20, track_every=4,
                   progress=False, measure=("lambda_max_pre", "lambda_grad"))
EXACT = ["loss", "grad_norm", "lambda_grad_pre"]
SOLVED = ["lambda_max_pre"]  # each eigen-solve is accurate to its tolerance, not bitwise


def compare(got, want, seeds):
    assert [r.config.seed for r in got] == seeds
    for a, b in zip(got, want):
        assert a.model is None
        assert a.config.threads == 1 and not a.config.progress
        assert list(a.metrics["step"]) == list(b.metrics["step"])
        for col in EXACT:
            np.testing.assert_allclose(a.metrics[col], b.metrics[col], rtol=1e-9, atol=1e-13,
                                       err_msg=col)
        for col in SOLVED:
            np.testing.assert_allclose(a.metrics[col], b.metrics[col], rtol=1e-5, err_msg=col)


def test_parallel_seeds_equal_serial_seeds(monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER", raising=False)
    seeds = [0, 1, 2, 3]
    got = run_seeds_parallel(CONFIG, seeds, workers=2, progress=False)
    compare(got, run_seeds(CONFIG, seeds), seeds)


def test_external_scheduler_one_seed_per_task_keeps_seed_order(monkeypatch):
    seeds = [3, 0, 2, 1]
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        monkeypatch.setenv("DASK_SCHEDULER", cluster.scheduler_address)
        got = run_seeds_parallel(CONFIG, seeds, seeds_per_task=1, progress=False)
    compare(got, run_seeds(CONFIG, seeds), seeds)


@pytest.mark.parametrize("kwargs, name", [
    (dict(workers=0), "workers"),
    (dict(workers=-2), "workers"),
    (dict(workers=1.5), "workers"),
    (dict(workers="2"), "workers"),
    (dict(workers=True), "workers"),
    (dict(seeds_per_task=0), "seeds_per_task"),
    (dict(seeds_per_task=2.5), "seeds_per_task"),
    (dict(scheduler=""), "scheduler"),
])
def test_bad_arguments_are_refused_before_any_cluster_starts(no_cluster, kwargs, name):
    with pytest.raises(ValueError, match=name):
        run_seeds_parallel(CONFIG, [0, 1], progress=False, **kwargs)


def test_bad_seeds_and_config_are_refused_before_any_cluster_starts(no_cluster):
    for seeds in ([1, 1], [-1], [], [0.5]):
        with pytest.raises(ValueError, match="seeds"):
            run_seeds_parallel(CONFIG, seeds, workers=2)
    with pytest.raises(ValueError, match="lr"):
        run_seeds_parallel(RunConfig(lr=-1.0), [0], workers=2)
    with pytest.raises(ValueError, match="workers"):
        with dask_client(workers=0):
            pass


def test_chunks_are_contiguous_and_balanced():
    assert chunk_seeds([0, 1, 2, 3], 2) == [[0, 1], [2, 3]]
    assert chunk_seeds(list(range(7)), 3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert chunk_seeds([5, 9], 4) == [[5], [9]]


def _worker_settings():
    import os

    import dask

    return ({k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MALLOC_TRIM_THRESHOLD_")},
            dask.config.get("distributed.worker.profile.enabled"))


def test_local_workers_run_single_threaded_without_dasks_slow_defaults():
    """One OpenMP thread, glibc's own malloc trimming (Dask's MALLOC_TRIM_THRESHOLD_ made our
    runs 1.9x slower) and no statistical profiler in every local worker."""
    from utils.book.parallel import dask_client

    with dask_client(workers=1) as client:
        env, profiling = client.submit(_worker_settings).result()
    assert env == {"OMP_NUM_THREADS": "1", "MALLOC_TRIM_THRESHOLD_": None} and profiling is False
