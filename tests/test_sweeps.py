"""Seed sweeps: one row per run, cached tasks, resume after a failure, same bytes twice."""
import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from utils.book import sweeps
from utils.training.runs import RunResult
from utils.book.sweeps import (PROVENANCE_COLUMNS, SWEEPS, SweepTaskError, basic_columns,
                               load_sweep, run_sweep, sweep_tasks, task_key)

ROOT = Path(__file__).resolve().parents[1]
TINY = SWEEPS["tiny"]
EVALUATED = ["n_spikes", "final_loss", "max_lambda_max_pre", "diverged"]
COLUMNS = ["sweep", "config_index", "seed", *EVALUATED, *PROVENANCE_COLUMNS]


@pytest.fixture
def dirs(tmp_path):
    """Cache folder and output file of a test."""
    return dict(cache_dir=tmp_path / "cache", out=tmp_path / "out" / "tiny.csv.gz")


@pytest.fixture
def counted(monkeypatch):
    """Count the calls of run_task (by their seeds); ``fail`` makes the calls for those seeds raise."""
    calls, fail, real = [], set(), sweeps.run_task

    def wrapper(config, seeds, evaluate, batched=True):
        calls.append(tuple(seeds))
        if fail & set(seeds):
            raise RuntimeError("injected failure")
        return real(config, seeds, evaluate, batched)

    monkeypatch.setattr(sweeps, "run_task", wrapper)
    return calls, fail


@pytest.fixture
def no_training(monkeypatch, no_cluster):
    """Fail the test if anything is trained or a cluster starts (``no_cluster``, conftest)."""
    def refuse(*args, **kwargs):
        raise AssertionError("work started before the arguments were checked")
    monkeypatch.setattr(sweeps, "run_task", refuse)


def test_serial_sweep_gives_one_row_per_run_and_round_trips(dirs):
    table = run_sweep("tiny", serial=True, progress=False, **dirs)
    assert list(table.columns) == COLUMNS
    assert list(table["seed"]) == [0, 1, 2, 3] and set(table["config_index"]) == {0}
    assert (table["sweep"] == "tiny").all() and not table["diverged"].any()
    assert (table["final_loss"] > 0).all() and (table["max_lambda_max_pre"] > 0).all()
    config = json.loads(table["config"][0])
    assert config["lr"] == 0.01 and "progress" not in config
    versions = json.loads(table["versions"][0])
    assert {"torch", "numpy", "scipy", "pandas", "dask", "distributed", "utils"} <= set(versions)
    assert json.loads(table["machine"][0])["cpus"] >= 1
    assert json.loads(table["machine"][0])["cpu_capability"]
    pd.testing.assert_frame_equal(load_sweep("tiny", path=dirs["out"]), table, check_exact=True)
    tasks = sweep_tasks(TINY)
    assert [t.seeds for t in tasks] == [(0, 1), (2, 3)]
    assert sorted(p.name for p in (dirs["cache_dir"] / "tiny").iterdir()) == sorted(
        f"{t.key}.json" for t in tasks)


def test_local_cluster_equals_serial(tmp_path, monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER", raising=False)
    serial = run_sweep("tiny", serial=True, progress=False, cache_dir=tmp_path / "a",
                       out=tmp_path / "a.csv.gz")
    dask = run_sweep("tiny", workers=2, progress=False, cache_dir=tmp_path / "b",
                     out=tmp_path / "b.csv.gz")
    columns = ["config_index", "seed", *EVALUATED, "config_key", "config"]
    pd.testing.assert_frame_equal(dask[columns], serial[columns], check_exact=False, rtol=1e-12)


def test_a_failed_task_keeps_the_finished_ones_and_the_rerun_resumes(dirs, counted):
    calls, fail = counted
    first, second = sweep_tasks(TINY)
    fail.add(2)
    with pytest.raises(SweepTaskError, match=r"seeds \[2, 3\]"):
        run_sweep("tiny", serial=True, progress=False, **dirs)
    folder = dirs["cache_dir"] / "tiny"
    cached = folder / f"{first.key}.json"
    assert cached.exists() and not (folder / f"{second.key}.json").exists()
    assert not dirs["out"].exists()
    stat = cached.stat()
    # a process killed while writing leaves only a temporary file, which the resume ignores
    (folder / f".{second.key}.json.abc123.tmp").write_text('{"rows": [')

    fail.clear()
    calls.clear()
    table = run_sweep("tiny", serial=True, progress=False, **dirs)
    assert calls == [(2, 3)]
    assert (cached.stat().st_mtime_ns, cached.stat().st_ino) == (stat.st_mtime_ns, stat.st_ino)
    assert list(table["seed"]) == [0, 1, 2, 3] and not table[EVALUATED].isna().any().any()

    calls.clear()
    pd.testing.assert_frame_equal(run_sweep("tiny", serial=True, progress=False, **dirs), table)
    assert calls == []


def failing_on_seed_2(results):
    """An evaluate function that fails in the task of seed 2 (imported by the Dask worker)."""
    if any(r.config.seed == 2 for r in results):
        raise RuntimeError("injected failure")
    return basic_columns(results)


def test_a_failed_dask_task_is_named_and_the_finished_ones_are_cached(dirs, monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER", raising=False)
    sweep = dataclasses.replace(TINY, name="tiny_failing",
                                evaluate=f"{__name__}:failing_on_seed_2")
    first, second = sweep_tasks(sweep)
    with pytest.raises(SweepTaskError, match=r"seeds \[2, 3\].*injected failure"):
        run_sweep(sweep, workers=1, progress=False, **dirs)  # one worker: tasks run in order
    folder = dirs["cache_dir"] / "tiny_failing"
    assert (folder / f"{first.key}.json").exists()
    assert not (folder / f"{second.key}.json").exists() and not dirs["out"].exists()


def test_the_same_rows_give_the_same_bytes(tmp_path):
    outs = [tmp_path / f"{i}.csv.gz" for i in range(3)]
    run_sweep("tiny", serial=True, progress=False, cache_dir=tmp_path / "a", out=outs[0])
    run_sweep("tiny", serial=True, progress=False, cache_dir=tmp_path / "a", out=outs[1])
    run_sweep("tiny", serial=True, progress=False, cache_dir=tmp_path / "b", out=outs[2])
    assert outs[0].read_bytes() == outs[1].read_bytes() == outs[2].read_bytes()


def test_task_keys_follow_config_seeds_and_evaluate_but_not_progress():
    config = TINY.configs[0]
    key = task_key(config, [0, 1], TINY.evaluate)
    assert len(key) == 16 and key == task_key(dataclasses.replace(config, progress=True),
                                              [0, 1], TINY.evaluate)
    assert key != task_key(config, [0, 2], TINY.evaluate)
    assert key != task_key(dataclasses.replace(config, lr=0.02), [0, 1], TINY.evaluate)
    assert key != task_key(config, [0, 1], "utils.book.sweeps:other")


@pytest.mark.parametrize("call, name", [
    (lambda d: run_sweep("nope", **d), "sweep"),
    (lambda d: run_sweep("tiny", workers=0, **d), "workers"),
    (lambda d: run_sweep("tiny", workers=1.5, **d), "workers"),
    (lambda d: run_sweep("tiny", scheduler="", **d), "scheduler"),
    (lambda d: run_sweep(dataclasses.replace(TINY, name="t2", seeds=(0, 1, 1)), **d), "seeds"),
    (lambda d: run_sweep(dataclasses.replace(TINY, name="t2", seeds=(-1,)), **d), "seeds"),
    (lambda d: run_sweep(dataclasses.replace(TINY, name="t2", seeds_per_task=0), **d),
     "seeds_per_task"),
    (lambda d: run_sweep(dataclasses.replace(TINY, name="t2", evaluate="utils.book.sweeps:nope"),
                         **d), "evaluate"),
    (lambda d: run_sweep(dataclasses.replace(TINY, name="t2", configs=(
        dataclasses.replace(TINY.configs[0], lr=-1.0),)), **d), "lr"),
    (lambda d: run_sweep(dataclasses.replace(TINY, name="t2", configs=TINY.configs * 2), **d),
     "configs"),
    (lambda d: run_sweep(dataclasses.replace(TINY, seeds=(0,)), **d), "sweep"),
    (lambda d: sweeps.register(dataclasses.replace(TINY, seeds=(0,))), "name"),
    (lambda d: sweeps.register(dataclasses.replace(TINY, name="a/b")), "name"),
])
def test_bad_arguments_are_refused_before_anything_runs(no_training, dirs, call, name):
    with pytest.raises(ValueError, match=name):
        call(dirs)
    assert not dirs["cache_dir"].exists() and not dirs["out"].exists()


def test_missing_table_names_the_command_that_writes_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="make sweep NAME=tiny"):
        load_sweep("tiny", path=tmp_path / "tiny.csv.gz")


def test_basic_columns_of_a_diverged_run():
    config = TINY.configs[0]
    metrics = pd.DataFrame({"step": [1, 2, 3], "loss": [1.0, 5.0, math.inf],
                            "lambda_max_pre": [math.nan, 3.0, math.nan]})
    row, = basic_columns([RunResult(config, metrics, [], 3, None, 0.0)])
    assert row["diverged"] and row["final_loss"] == math.inf
    assert row["max_lambda_max_pre"] == 3.0 and row["n_spikes"] == 0


def cli(*args):
    return subprocess.run([sys.executable, "-m", "utils.book.sweeps", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_cli_lists_and_refuses_unknown_names():
    listed = cli("--list")
    assert listed.returncode == 0, listed.stderr
    line, = [line for line in listed.stdout.splitlines() if line.startswith("tiny ")]
    assert "4 runs" in line and "not in 'all'" in line
    unknown = cli("nope")
    assert unknown.returncode == 2 and "nope" in unknown.stderr and "tiny" in unknown.stderr


def test_cli_runs_a_named_sweep_and_says_where_its_table_went(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sweeps, "SWEEP_DIR", tmp_path / "sweeps")
    monkeypatch.setattr(sweeps, "CACHE_DIR", tmp_path / "cache")
    assert sweeps.main(["tiny", "--serial"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("tiny: 4 runs -> ") and str(tmp_path / "sweeps" / "tiny.csv.gz") in out
    assert len(load_sweep("tiny", path=tmp_path / "sweeps" / "tiny.csv.gz")) == 4


KILL_SCRIPT = """
import dataclasses, sys
from utils.book.sweeps import SWEEPS, run_sweep
sweep = dataclasses.replace(SWEEPS["tiny"], name="tiny_kill", seeds=tuple(range(12)),
                            seeds_per_task=1)
run_sweep(sweep, serial=True, progress=False, cache_dir=sys.argv[1], out=sys.argv[2])
"""


def test_a_sweep_killed_midway_resumes_without_recomputing(tmp_path, counted):
    """A real kill (SIGKILL of the process running the sweep, after its first task is cached):
    the restarted sweep runs only the tasks that had not finished and writes the whole table."""
    import dataclasses
    import signal
    import time

    cache, out = tmp_path / "cache", tmp_path / "tiny_kill.csv.gz"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(cache), str(out)],
                            cwd=sweeps.REPO_ROOT)
    folder = cache / "tiny_kill"
    deadline = time.monotonic() + 120
    while not list(folder.glob("*.json")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = {p.name for p in folder.glob("*.json")}
    assert 1 <= len(done) < 12 and not out.exists(), "kill the sweep between its first and last task"

    calls, _ = counted
    sweep = dataclasses.replace(TINY, name="tiny_kill", seeds=tuple(range(12)), seeds_per_task=1)
    table = run_sweep(sweep, serial=True, progress=False, cache_dir=cache, out=out)
    finished_before = {t.seeds for t in sweep_tasks(sweep) if f"{t.key}.json" in done}
    assert len(calls) == 12 - len(done) and not finished_before & set(calls)
    assert list(table["seed"]) == list(range(12)) and out.exists()


def two_rows_per_seed(config, seeds):
    """A training evaluate (``trains=True``): two rows per seed, from a plain run each."""
    from utils.training.runs import run

    rows = []
    for seed in seeds:
        result = run(dataclasses.replace(config, seed=seed), spot_checks=False)
        for part in ("first", "last"):
            loss = result.metrics["loss"].iloc[0 if part == "first" else -1]
            rows.append({"seed": seed, "part": part, "loss": float(loss)})
    return rows


def test_a_sweep_whose_evaluate_trains_may_give_several_rows_per_seed(dirs):
    sweep = dataclasses.replace(TINY, name="tiny_trains", trains=True,
                                evaluate=f"{__name__}:two_rows_per_seed")
    table = run_sweep(sweep, serial=True, progress=False, **dirs)
    assert list(table["seed"]) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert list(table["part"]) == ["first", "last"] * 4
    assert table["config_key"].nunique() == 1
    assert task_key(TINY.configs[0], (0, 1), TINY.evaluate, trains=True) != \
        task_key(TINY.configs[0], (0, 1), TINY.evaluate)
    bad = dataclasses.replace(sweep, name="tiny_bad", evaluate="utils.book.sweeps:basic_columns")
    with pytest.raises(SweepTaskError):
        run_sweep(bad, serial=True, progress=False, **dirs)


def test_fields_added_later_enter_the_key_only_when_used():
    config = sweeps.SWEEPS["tiny"].configs[0]
    assert not set(sweeps.LATER_FIELDS) & set(json.loads(sweeps.config_json(config)))
    batched = dataclasses.replace(config, batch_size=8)
    assert json.loads(sweeps.config_json(batched))["batch_size"] == 8
    assert sweeps.config_key(batched) != sweeps.config_key(config)


def test_batch_models_trains_the_other_models_one_seed_at_a_time(monkeypatch):
    """A sweep whose batch_models leaves a model out trains its seeds with run(), one by one,
    under another task key; the rows are those of separate runs."""
    import utils.training.runs

    single = dataclasses.replace(TINY, name="tiny-single", batch_models=())
    assert not single.batched(TINY.configs[0]) and TINY.batched(TINY.configs[0])
    (a, _), (b, _) = sweep_tasks(TINY), sweep_tasks(single)
    assert a.batched and not b.batched and a.key != b.key
    calls = []
    real = utils.training.runs.run
    monkeypatch.setattr(utils.training.runs, "run",
                        lambda c, **k: calls.append(c.seed) or real(c, **k))
    monkeypatch.setattr(sweeps, "run_seeds", lambda *a, **k: pytest.fail("batched"))
    rows = sweeps.run_task(b.config, b.seeds, single.evaluate, b.batched)
    assert calls == list(b.seeds) and [r["seed"] for r in rows] == list(b.seeds)


def test_the_source_hash_is_stable_and_covers_what_the_task_imports():
    closure = sweeps.module_closure(["utils.studies.ensemble"])
    assert {"utils", "utils.studies", "utils.studies.ensemble", "utils.studies.claims",
            "utils.training.runs", "utils.events.spikes"} <= set(closure)
    assert "utils.studies.watch" not in closure and closure == sorted(closure)
    first = sweeps.source_hash("utils.studies.ensemble:seeds_01")
    sweeps.clear_source_hashes()
    assert first == sweeps.source_hash("utils.studies.ensemble:seeds_01")
    assert len(first) == 16 and int(first, 16) >= 0
    assert first == sweeps.source_hash("utils.studies.ensemble:seeds_02")     # same module
    assert first != sweeps.source_hash(TINY.evaluate)   # tiny's closure lacks studies.claims
    # an evaluate module outside utils adds only the task module's closure
    assert sweeps.source_hash(f"{__name__}:failing_on_seed_2") == sweeps.source_hash(
        TINY.evaluate)


def test_every_import_form_is_followed(tmp_path):
    """Relative and absolute imports, at module level or inside a function, of a module or of
    a name in it, are read from the sources without importing them."""
    root = tmp_path / "utils"
    sources = {
        "__init__.py": "",
        "a.py": "from . import b\nfrom .c import x\n\ndef f():\n    import utils.d\n"
                "    from utils.e import y\n    from utils import f as g\n",
        "b.py": "import os\nfrom .sub.g import z\n", "c.py": "x = 1\n", "d.py": "",
        "e.py": "y = 2\n", "f.py": "", "h.py": "", "unused.py": "",
        "sub/__init__.py": "from .. import h\n", "sub/g.py": "from ..c import x\nz = 3\n",
    }
    for name, text in sources.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    assert sweeps.module_closure(["utils.a"], root) == [
        "utils", "utils.a", "utils.b", "utils.c", "utils.d", "utils.e", "utils.f", "utils.h",
        "utils.sub", "utils.sub.g"]


def copy_utils(tmp_path) -> Path:
    """A copy of the utils package's sources under ``tmp_path``; returns its folder."""
    import shutil

    return Path(shutil.copytree(sweeps.UTILS_DIR, tmp_path / "utils",
                                ignore=shutil.ignore_patterns("__pycache__")))


def test_editing_an_imported_source_changes_the_keys_of_the_tasks_that_import_it(
        tmp_path, monkeypatch):
    root = copy_utils(tmp_path)
    monkeypatch.setattr(sweeps, "UTILS_DIR", root)
    chapter, tiny = "utils.studies.ensemble:seeds_01", TINY.evaluate
    config = TINY.configs[0]
    before = {e: (sweeps.source_hash(e), task_key(config, [0, 1], e)) for e in (chapter, tiny)}
    assert before[chapter] == (sweeps.source_hash(chapter, ROOT / "utils"),
                               task_key(config, [0, 1], chapter))

    # imported by utils.studies.ensemble, not by tiny's tasks
    with open(root / "studies" / "claims.py", "a") as fh:
        fh.write("\n# edited\n")
    assert sweeps.source_hash(chapter) == before[chapter][0]      # cached in this process
    sweeps.clear_source_hashes()
    after = {e: (sweeps.source_hash(e), task_key(config, [0, 1], e)) for e in (chapter, tiny)}
    assert after[tiny] == before[tiny]
    assert after[chapter][0] != before[chapter][0] and after[chapter][1] != before[chapter][1]
    sweeps.clear_source_hashes()


def test_a_sweep_recomputes_its_tasks_after_an_edit_of_their_sources(dirs, counted, tmp_path,
                                                                       monkeypatch):
    """The cache of the tiny sweep is reused until a source its tasks import changes, and
    not after an edit of a module they do not import."""
    calls, _ = counted
    root = copy_utils(tmp_path)
    monkeypatch.setattr(sweeps, "UTILS_DIR", root)

    def run_after(edited=None):
        if edited:
            with open(root / edited, "a") as fh:
                fh.write("\n# edited\n")
            sweeps.clear_source_hashes()
        calls.clear()
        run_sweep("tiny", serial=True, progress=False, **dirs)
        return list(calls)

    try:
        assert run_after() == [(0, 1), (2, 3)]
        assert run_after("studies/watch.py") == []      # no task of tiny imports it
        assert run_after("events/spikes.py") == [(0, 1), (2, 3)]   # utils.training.runs imports it
        assert len(list((dirs["cache_dir"] / "tiny").glob("*.json"))) == 4
    finally:
        sweeps.clear_source_hashes()
