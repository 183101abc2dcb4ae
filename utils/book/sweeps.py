"""Seed sweeps on Dask: named sets of runs whose per-run summaries land in one table.

    run_sweep("tiny")                  # local cluster; writes data/sweeps/tiny.csv.gz
    table = load_sweep("tiny")         # one row per (config, seed)

    python -m utils.book.sweeps tiny --workers 2
    python -m utils.book.sweeps all         # every public sweep
    python -m utils.book.sweeps --list

A :class:`Sweep` is one or more base :class:`~utils.training.runs.RunConfig` × seeds, and an
*evaluate* function (named by a ``"module:function"`` string) that turns the
:class:`~utils.training.runs.RunResult` of each run into one row of JSON scalars. The sweep is cut
into tasks, each one batched :func:`~utils.training.seeds.run_seeds` call on a chunk of at most
``seeds_per_task`` seeds of one config, run on the cluster of
:func:`utils.book.parallel.dask_client` (or in this process with ``serial=True``).

Every finished task is cached at once in ``_build/sweeps/<name>/<task key>.json`` with the
provenance of the process that ran it, so an interrupted sweep resumes where it stopped. The
task key hashes the config, the seeds, the evaluate function's name, ``utils.__version__`` and
the sources of the ``utils`` modules the task imports (:func:`source_hash`: the evaluate
function's module and this one, with every ``utils`` module they import, found by reading
their code): changing any of them (or ``seeds_per_task``, which changes the chunks)
recomputes, so editing e.g. ``utils/studies/claims.py`` recomputes the tasks whose code imports it
and keeps the others. Code outside ``utils`` (an evaluate function defined elsewhere, the
installed packages) is not hashed; the ``commit`` and ``versions`` columns record it.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import gzip
import hashlib
import importlib
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from utils import __version__
from utils.book.parallel import _check_count, _scheduler_address, chunk_seeds, dask_client
from utils.training.runs import REPO_ROOT, RunConfig, RunResult, display_path
from utils.training.seeds import batchable, check_seed_run, check_seeds, run_seeds

SWEEP_DIR = REPO_ROOT / "data" / "sweeps"
"""Where the finished tables go, one ``<name>.csv.gz`` per sweep (committed)."""
CACHE_DIR = REPO_ROOT / "_build" / "sweeps"
"""Where finished tasks are cached, ``<name>/<task key>.json`` (not committed)."""

RUN_COLUMNS = ("sweep", "config_index", "seed")
PROVENANCE_COLUMNS = ("config_key", "config", "commit", "versions", "python", "machine",
                      "utils_version")
VERSIONED_PACKAGES = ("torch", "numpy", "scipy", "pandas", "dask", "distributed")


@dataclass(frozen=True)
class Sweep:
    """A named set of runs: each of ``configs`` (usually one RunConfig) under every seed.

    ``name`` is the file stem of the table (``data/sweeps/<name>.csv.gz``) and of the cache
    folder. ``evaluate`` names, as ``"module:function"``, a function
    ``f(results: list[RunResult]) -> list[dict]`` giving one dict of JSON scalars per result,
    in order; it is imported where the task runs. ``seeds_per_task`` seeds of one config are
    trained together in one task. ``public=False`` keeps a sweep out of ``all``.
    ``trains=True``: the evaluate function trains its own runs instead (for runs that need
    more than one batched training, such as forks from checkpoints):
    ``f(config, seeds) -> list[dict]``, any number of rows per seed, each holding its ``seed``.
    ``batch_models``: the models whose seeds are batched in one
    :func:`~utils.training.seeds.run_seeds` call where it can run them (None: every model); the
    others are trained one seed at a time (where batching is slower, as for convolutions with
    tracking).
    Lists given for ``configs`` or ``seeds`` are stored as tuples.
    """

    name: str
    configs: tuple
    seeds: tuple
    evaluate: str
    seeds_per_task: int = 8
    description: str = ""
    public: bool = True
    trains: bool = False
    batch_models: tuple | None = None

    def __post_init__(self):
        if isinstance(self.configs, RunConfig):
            object.__setattr__(self, "configs", (self.configs,))
        object.__setattr__(self, "configs", tuple(self.configs))
        object.__setattr__(self, "seeds", tuple(self.seeds))
        if self.batch_models is not None:
            object.__setattr__(self, "batch_models", tuple(self.batch_models))

    def batched(self, config: RunConfig) -> bool:
        """Whether the seeds of ``config`` are trained as one batch (see ``batch_models``)."""
        return batchable(config) and (self.batch_models is None
                                      or config.model in self.batch_models)

    @property
    def n_runs(self) -> int:
        """Runs in the sweep: configs × seeds."""
        return len(self.configs) * len(self.seeds)


@dataclass(frozen=True)
class Task:
    """One unit of work: ``seeds`` of ``configs[config_index]``, cached under ``key``, trained
    as one batch if ``batched``."""

    config_index: int
    config: RunConfig
    seeds: tuple
    key: str
    batched: bool = True


class SweepTaskError(RuntimeError):
    """A task of a sweep raised; the tasks finished before it stay cached."""


SWEEPS: dict[str, Sweep] = {}
"""The registered sweeps, by name (see :func:`register`)."""


def register(sweep: Sweep) -> Sweep:
    """Add ``sweep`` to :data:`SWEEPS` after checking it (all but importing its evaluate
    function); return it. Registering the same definition again is a no-op; another sweep of
    the same name is a ValueError."""
    _check_sweep(sweep, resolve=False)
    if SWEEPS.get(sweep.name, sweep) != sweep:
        raise ValueError(f"name: a different sweep {sweep.name!r} is already registered")
    SWEEPS[sweep.name] = sweep
    return sweep


# ---------------------------------------------------------------------------------- checks

def _check_sweep(sweep: Sweep, resolve: bool = True) -> None:
    """ValueError naming the first bad field of ``sweep``; imports its evaluate if ``resolve``."""
    if not isinstance(sweep, Sweep):
        raise ValueError(f"sweep must be a Sweep or a registered name, got {sweep!r}")
    if not isinstance(sweep.name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*",
                                                           sweep.name):
        raise ValueError(f"name must be a file stem of letters, digits, '_', '.', '-', "
                         f"got {sweep.name!r}")
    if not sweep.configs or not all(isinstance(c, RunConfig) for c in sweep.configs):
        raise ValueError(f"configs must be a non-empty tuple of RunConfig, got {sweep.configs!r}")
    for config in sweep.configs:
        if sweep.trains or not sweep.batched(config):   # trained one seed at a time
            config.validate()
            check_seeds(sweep.seeds)
        else:
            check_seed_run(config, sweep.seeds)  # config.validate(); distinct seeds >= 0; Adam
    keys = [config_key(c) for c in sweep.configs]
    if len(set(keys)) != len(keys):
        raise ValueError("configs must be distinct (ignoring progress)")
    _check_count("seeds_per_task", sweep.seeds_per_task)
    if not isinstance(sweep.evaluate, str) or not re.fullmatch(r"[\w.]+:\w+", sweep.evaluate):
        raise ValueError(f"evaluate must be a 'module:function' string, got {sweep.evaluate!r}")
    if resolve:
        resolve_evaluate(sweep.evaluate)


def _lookup(sweep) -> Sweep:
    """A Sweep from a registered name, or ``sweep`` itself if its name is free or its own."""
    if isinstance(sweep, str):
        if sweep not in SWEEPS:
            raise ValueError(f"sweep must be one of {sorted(SWEEPS)}, got {sweep!r}")
        return SWEEPS[sweep]
    if isinstance(sweep, Sweep) and SWEEPS.get(sweep.name, sweep) != sweep:
        raise ValueError(f"sweep: {sweep.name!r} is the name of a different registered sweep")
    return sweep


def resolve_evaluate(evaluate: str):
    """The function named by ``"module:function"``; ValueError naming ``evaluate`` if absent."""
    module, _, function = evaluate.partition(":")
    try:
        return getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"evaluate {evaluate!r} cannot be imported: {err}") from err


# ------------------------------------------------------------------------------ tasks, keys

LATER_FIELDS = {"batch_size": 0, "clip": "none", "grad_every": 0, "warmup": 0,
                "schedule": "constant", "decay_steps": 0, "eval_size": 0,
                "grad_on_batch": False}
"""RunConfig fields added after sweeps were first stored, with their default: a config that
leaves one at its default is written (and keyed) without it, so the keys of stored tables stay
valid and a new field only enters the key of the configs that use it."""


def _config_dict(config: RunConfig) -> dict:
    """The config's fields without ``progress`` (which changes no number) and without the
    :data:`LATER_FIELDS` left at their default."""
    fields = dataclasses.asdict(config)
    fields.pop("progress")
    for name, default in LATER_FIELDS.items():
        if fields.get(name) == default:
            fields.pop(name)
    return fields


def config_json(config: RunConfig) -> str:
    """The config as JSON (sorted keys, no ``progress``): the ``config`` column."""
    return json.dumps(_config_dict(config), sort_keys=True, default=str)


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


UTILS_DIR = Path(__file__).resolve().parents[1]
"""The folder of the ``utils`` package, whose sources :func:`source_hash` reads."""
TASK_MODULE = "utils.book.sweeps"
"""The module that trains and evaluates every task (:func:`run_task`, :func:`_execute`): its
imports are in every task's :func:`source_hash`."""


def _module_file(module: str, root: Path) -> Path | None:
    """The source of ``utils`` module ``module`` under ``root`` (the package's folder):
    ``<root>/a/b.py`` or ``<root>/a/b/__init__.py`` for ``utils.a.b``; None if absent or not a
    ``utils`` module."""
    parts = module.split(".")
    if parts[0] != "utils":
        return None
    folder = root.joinpath(*parts[1:])
    for path in (folder / "__init__.py", folder.with_suffix(".py") if parts[1:] else None):
        if path is not None and path.is_file():
            return path
    return None


def _with_parents(module: str) -> list[str]:
    """``module`` and the packages above it, which importing it runs: ``utils.a.b`` gives
    ``utils``, ``utils.a``, ``utils.a.b``."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _imports(module: str, path: Path) -> set[str]:
    """The modules that the source of ``module`` (at ``path``) imports anywhere in its code,
    at module level or inside functions, found by parsing it: ``import a.b``, ``from a.b
    import c`` (``a.b``, and ``a.b.c`` where that is a module) and the relative forms
    (``from . import x``, ``from .x import y``, ``from .. import z``), each as an absolute
    name with the packages above it."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                if node.level - 1 >= len(parts):   # above the top package: not ours
                    continue
                base = ".".join(parts[:len(parts) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for module in found for name in _with_parents(module)}


def module_closure(modules, root=None) -> list[str]:
    """The sorted names of the ``utils`` modules that ``modules`` are and import, directly or
    through each other, with the packages above them (``utils`` itself among them), read from
    the sources under ``root`` (default :data:`UTILS_DIR`) by :func:`_imports`, without
    importing anything; names that are no ``utils`` module with a source there are left
    out."""
    root = Path(root or UTILS_DIR)
    todo = [name for module in modules for name in _with_parents(module)]
    seen = {}
    while todo:
        module = todo.pop()
        if module in seen or (path := _module_file(module, root)) is None:
            continue
        seen[module] = path
        todo.extend(_imports(module, path))
    return sorted(seen)


def source_hash(evaluate: str, root=None) -> str:
    """16 hex digits of the SHA-256 of the sources of the ``utils`` modules a task of
    ``evaluate`` (``"module:function"``) runs: :func:`module_closure` of the evaluate
    function's module and :data:`TASK_MODULE`, as sorted (module name, file bytes) pairs, read
    under ``root`` (default :data:`UTILS_DIR`). An evaluate module outside ``utils`` adds only
    its ``utils`` imports' closure through :data:`TASK_MODULE`, not its own source. Cached per
    (``evaluate``, root) for the life of the process: :func:`clear_source_hashes` forgets them
    (after editing a source in a running process)."""
    return _source_hash(evaluate, Path(root or UTILS_DIR).resolve())


@functools.lru_cache(maxsize=None)
def _source_hash(evaluate: str, root: Path) -> str:
    """:func:`source_hash` for a resolved ``root``, cached."""
    digest = hashlib.sha256()
    for module in module_closure([evaluate.partition(":")[0], TASK_MODULE], root):
        data = _module_file(module, root).read_bytes()
        digest.update(f"{module}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()[:16]


def clear_source_hashes() -> None:
    """Forget the hashes :func:`source_hash` has cached, so the next call reads the files."""
    _source_hash.cache_clear()


def config_key(config: RunConfig) -> str:
    """16 hex digits of the SHA-256 of :func:`config_json`: the ``config_key`` column."""
    return _hash(config_json(config))


def task_key(config: RunConfig, seeds, evaluate: str, trains: bool = False,
             batched: bool = True) -> str:
    """16 hex digits of the SHA-256 of the JSON of the config (no ``progress``), the seeds, the
    evaluate function's name (and ``trains`` when set, ``batched`` when not),
    ``utils.__version__`` and the :func:`source_hash` of the ``utils`` modules the task
    imports: the name of the task's cache file, which an edit of any of those sources
    changes."""
    fields = {"config": _config_dict(config), "seeds": [int(s) for s in seeds],
              "evaluate": evaluate, "utils_version": __version__,
              "sources": source_hash(evaluate)}
    if trains:
        fields["trains"] = True
    if not batched:
        fields["batched"] = False
    return _hash(json.dumps(fields, sort_keys=True, default=str))


def sweep_tasks(sweep: Sweep) -> list[Task]:
    """The tasks of ``sweep``, config by config: its seeds in ⌈len(seeds)/seeds_per_task⌉
    contiguous, balanced chunks (:func:`~utils.book.parallel.chunk_seeds`)."""
    n_chunks = math.ceil(len(sweep.seeds) / sweep.seeds_per_task)
    tasks = []
    for i, config in enumerate(sweep.configs):
        batched = sweep.trains or sweep.batched(config)   # trains: the evaluate decides
        for chunk in chunk_seeds(list(sweep.seeds), n_chunks):
            key = task_key(config, chunk, sweep.evaluate, sweep.trains, batched)
            tasks.append(Task(i, config, tuple(chunk), key, batched))
    return tasks


def run_task(config: RunConfig, seeds, evaluate: str, batched: bool = True) -> list[dict]:
    """Train ``seeds`` of ``config`` as one batched :func:`~utils.training.seeds.run_seeds` call (no
    progress bar) and evaluate them: one row per seed, in the order of ``seeds``, holding
    ``seed``, ``config_key`` and the columns returned by the evaluate function. A config that
    seed batching cannot train (:func:`~utils.training.seeds.batchable`: a library's optimizer or a
    gradient clipper), or any config with ``batched=False``, is trained one seed at a time by
    :func:`~utils.training.runs.run`, without spot checks (as
    :func:`~utils.training.seeds.run_seeds`)."""
    config = dataclasses.replace(config, progress=False)
    if batched and batchable(config):
        results = run_seeds(config, list(seeds))
    else:
        from utils.training.runs import run

        results = [run(dataclasses.replace(config, seed=int(s)), spot_checks=False)
                   for s in seeds]
    rows = resolve_evaluate(evaluate)(results)
    if len(rows) != len(results) or not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"evaluate {evaluate!r} must return one dict per result "
                         f"({len(results)}), got {rows!r}")
    reserved = set(RUN_COLUMNS + PROVENANCE_COLUMNS)
    key = config_key(config)
    out = []
    for result, row in zip(results, rows):
        if reserved & set(row):
            raise ValueError(f"evaluate {evaluate!r} returned reserved columns "
                             f"{sorted(reserved & set(row))}")
        out.append({"seed": int(result.config.seed), "config_key": key, **row})
    return out


def run_training_task(config: RunConfig, seeds, evaluate: str) -> list[dict]:
    """A task of a sweep with ``trains=True``: the evaluate function trains ``seeds`` of
    ``config`` itself; its rows (any number per seed, each with its ``seed``) get
    ``config_key``."""
    seeds = [int(s) for s in seeds]
    rows = resolve_evaluate(evaluate)(dataclasses.replace(config, progress=False), seeds)
    reserved = set(RUN_COLUMNS + PROVENANCE_COLUMNS) - {"seed"}
    key = config_key(config)
    for row in rows:
        if not isinstance(row, dict) or row.get("seed") not in seeds or reserved & set(row):
            raise ValueError(f"evaluate {evaluate!r} must return dicts holding one of the seeds "
                             f"{seeds} and no reserved column, got {row!r}")
    return [{"seed": row["seed"], "config_key": key,
             **{k: v for k, v in row.items() if k != "seed"}} for row in rows]


def _execute(config: RunConfig, seeds, evaluate: str, trains: bool = False,
             batched: bool = True) -> dict:
    """What a task sends back and the cache keeps: its rows, the provenance of the process
    that ran it, and its wall time in seconds."""
    t0 = time.perf_counter()
    rows = (run_training_task(config, seeds, evaluate) if trains
            else run_task(config, seeds, evaluate, batched))
    return {"rows": rows, "provenance": provenance(), "seconds": time.perf_counter() - t0}


# ----------------------------------------------------------------------------------- cache

def _jsonable(value):
    """numpy scalars as Python scalars (JSON keeps NaN and ±inf as NaN/Infinity)."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not a JSON scalar: {value!r}")


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file next to ``path``, then rename it onto ``path``: a
    killed process leaves the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _load_cached(folder: Path, task: Task) -> dict | None:
    """The cached record of ``task``, or None if absent or unreadable."""
    try:
        record = json.loads((folder / f"{task.key}.json").read_text())
    except (OSError, ValueError):
        return None
    return record if record.get("key") == task.key else None


def _save_cached(folder: Path, task: Task, record: dict) -> None:
    record = {"key": task.key, "config_index": task.config_index, "seeds": list(task.seeds),
              **record}
    write_atomic(folder / f"{task.key}.json",
                  json.dumps(record, indent=1, default=_jsonable).encode())


# ------------------------------------------------------------------------------ provenance

def _git(*args) -> str:
    return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          check=True, timeout=30).stdout.strip()


def _cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _cpu_capability() -> str:
    """The instruction set torch's CPU kernels dispatch on ("AVX2", "AVX512", ...): runs agree
    bit for bit only where it (and the versions) agree."""
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


def provenance() -> dict:
    """Where a result came from: ``commit`` (``git rev-parse HEAD`` of the repository, with
    ``-dirty`` if ``utils/`` has uncommitted changes; "unknown" outside git), ``versions`` of
    the numerical packages and of utils, ``python``, ``machine`` (node, architecture, CPU
    model, CPU count, the instruction set torch dispatches on) and ``utils_version``."""
    try:
        commit = _git("rev-parse", "HEAD")
        if _git("status", "--porcelain", "--", "utils"):
            commit += "-dirty"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    versions = {}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    versions["utils"] = __version__
    return {"commit": commit, "versions": versions, "python": platform.python_version(),
            "machine": {"node": platform.node(), "machine": platform.machine(),
                        "processor": _cpu_model(), "cpus": os.cpu_count(),
                        "cpu_capability": _cpu_capability()},
            "utils_version": __version__}


# --------------------------------------------------------------------------------- running

def run_sweep(sweep, *, workers=None, scheduler=None, cache_dir=None, out=None, progress=True,
              serial=False) -> pd.DataFrame:
    """Run ``sweep`` (a :class:`Sweep` or a registered name), write its table, return it.

    Cached tasks (``cache_dir``, default :data:`CACHE_DIR`, ``/<name>/<task key>.json``) are
    loaded; the missing ones run in this process in order (``serial``) or on the cluster of
    :func:`~utils.book.parallel.dask_client` (``workers`` local processes, or ``scheduler`` /
    ``$DASK_SCHEDULER``), and each is cached as soon as it finishes. If a task raises, the
    finished ones stay cached and :class:`SweepTaskError` names the failed task's seeds.

    The table has one row per run (config × seed), sorted by config index and seed: ``sweep``,
    ``config_index``, ``seed``, the evaluate columns, then the provenance of the process that
    ran the task: ``config_key``, ``config`` (JSON), ``commit``, ``versions`` (JSON),
    ``python``, ``machine`` (JSON), ``utils_version``. It is written as gzipped CSV to ``out``
    (default ``data/sweeps/<name>.csv.gz``) with a fixed gzip timestamp, so the same rows give
    the same bytes. ValueError naming the parameter, before anything runs, for bad arguments.
    """
    sweep = _lookup(sweep)
    _check_sweep(sweep)
    _check_count("workers", workers)
    _scheduler_address(scheduler)
    for name, flag in (("progress", progress), ("serial", serial)):
        if not isinstance(flag, bool):
            raise ValueError(f"{name} must be True or False, got {flag!r}")
    folder = Path(cache_dir or CACHE_DIR) / sweep.name
    out = Path(out or SWEEP_DIR / f"{sweep.name}.csv.gz")

    tasks = sweep_tasks(sweep)
    records = {t.key: r for t in tasks if (r := _load_cached(folder, t)) is not None}
    missing = [t for t in tasks if t.key not in records]
    with tqdm(total=len(tasks), initial=len(records), unit="task", desc=f"{sweep.name}: tasks",
              disable=not progress) as bar:
        def finish(task, record):
            _save_cached(folder, task, record)
            records[task.key] = record
            bar.update(1)

        def failed(task, err):
            return SweepTaskError(f"sweep {sweep.name!r}: the task of config {task.config_index} "
                                  f"with seeds {list(task.seeds)} failed: {err!r}")

        if missing and serial:
            for task in missing:
                try:
                    record = _execute(task.config, task.seeds, sweep.evaluate, sweep.trains,
                                      task.batched)
                except Exception as err:
                    raise failed(task, err) from err
                finish(task, record)
        elif missing:
            with dask_client(workers, scheduler) as client:
                from distributed import as_completed

                futures = {client.submit(_execute, t.config, t.seeds, sweep.evaluate,
                                         sweep.trains, t.batched, pure=False): t
                           for t in missing}
                for future in as_completed(futures):
                    task = futures[future]
                    try:
                        record = future.result()
                    except Exception as err:
                        raise failed(task, err) from err
                    finish(task, record)

    table = _table(sweep, tasks, records)
    write_table(table, out)
    return table


def write_table(table: pd.DataFrame, path) -> None:
    """``table`` as gzipped CSV at ``path`` (no index, a fixed gzip timestamp, so the same rows
    give the same bytes), written atomically (:func:`write_atomic`): how every stored table
    in ``data/sweeps/`` is written."""
    write_atomic(Path(path), gzip.compress(table.to_csv(index=False).encode(), mtime=0))


def provenance_columns(prov: dict) -> dict:
    """The provenance of :func:`provenance` as a table's columns: ``commit``, ``versions``
    (JSON), ``python``, ``machine`` (JSON) and ``utils_version``."""
    return {"commit": prov["commit"], "versions": json.dumps(prov["versions"], sort_keys=True),
            "python": prov["python"], "machine": json.dumps(prov["machine"], sort_keys=True),
            "utils_version": prov["utils_version"]}


def _table(sweep: Sweep, tasks: list[Task], records: dict) -> pd.DataFrame:
    """One row per run from the tasks' records, columns in the documented order."""
    rows, evaluated = [], {}
    for task in tasks:
        record = records[task.key]
        prov = record["provenance"]
        for row in record["rows"]:
            row = dict(row)
            key = row.pop("config_key")
            seed = row.pop("seed")
            evaluated.update(dict.fromkeys(row))
            rows.append({"sweep": sweep.name, "config_index": task.config_index, "seed": seed,
                         **row, "config_key": key, "config": config_json(task.config),
                         **provenance_columns(prov)})
    columns = [*RUN_COLUMNS, *evaluated, *PROVENANCE_COLUMNS]
    table = pd.DataFrame(rows, columns=columns)
    return table.sort_values(["config_index", "seed"], kind="stable").reset_index(drop=True)


def load_sweep(name: str, path=None) -> pd.DataFrame:
    """The table of sweep ``name`` (``data/sweeps/<name>.csv.gz``, or ``path``); floats are
    read back exactly (pandas 3's default parser). FileNotFoundError naming the command that
    writes it if absent."""
    path = Path(path or SWEEP_DIR / f"{name}.csv.gz")
    if not path.exists():
        raise FileNotFoundError(f"{display_path(path)} does not exist: `make sweep NAME={name}` "
                                f"(or `python -m utils.book.sweeps {name}`) writes it")
    return pd.read_csv(path)


# --------------------------------------------------------------------------- example sweep

def basic_columns(results: list[RunResult]) -> list[dict]:
    """Per run: ``n_spikes``, ``final_loss`` (the last recorded loss, non-finite if the run
    diverged), ``max_lambda_max_pre`` (the largest tracked λ_max(Ĥ); NaN if none was
    tracked) and ``diverged``."""
    rows = []
    for r in results:
        m = r.metrics
        lam = m["lambda_max_pre"].max() if "lambda_max_pre" in m else float("nan")
        rows.append({"n_spikes": len(r.spikes), "final_loss": float(m["loss"].iloc[-1]),
                     "max_lambda_max_pre": float(lam), "diverged": r.diverged_at is not None})
    return rows


register(Sweep(
    name="tiny",
    configs=(RunConfig(model="mlp", model_kwargs={"width": 8}, data="sin",
                       data_kwargs={"n_points": 32}, lr=0.01, steps=60, track_every=5,
                       measure=("lambda_max_pre",), progress=False),),
    seeds=(0, 1, 2, 3), evaluate="utils.book.sweeps:basic_columns", seeds_per_task=2,
    description="4 seeds of an 8-wide MLP on 32 sin points, 60 steps (tests and example)",
    public=False))


def _register_chapter_sweeps() -> None:
    """The seed sweeps of chapters 1-4: each chapter's default runs
    (:func:`~utils.studies.settings.chapter_runs`) under seeds 0-15, one row per seed from
    :func:`utils.studies.ensemble.seed_row` (chapter 4: :func:`utils.studies.onset.
    figure4_rows`)."""
    from utils.studies.settings import SEED_CHAPTERS, chapter_evaluate, chapter_runs

    for chapter in SEED_CHAPTERS:
        evaluate, trains = chapter_evaluate(chapter)
        register(Sweep(
            name=chapter, configs=chapter_runs(chapter, progress=False),
            seeds=tuple(range(CHAPTER_SEEDS)), evaluate=evaluate, trains=trains,
            seeds_per_task=8 if chapter in ("01_v_decay", "02_lambda_max_crossing") else 4,
            # chapter 3's CNN of the paper's size: one seed at a time (a batch of its seeds is
            # slower than the seeds in turn, and holds several copies of its activations)
            batch_models=() if chapter == "03_gradient_alignment" else None,
            description=f"chapter {chapter[:2]}'s default run over seeds 0-{CHAPTER_SEEDS - 1}"))


CHAPTER_SEEDS = 16
"""Seeds of every chapter sweep."""
_register_chapter_sweeps()


def _register_intervention_sweep() -> None:
    """The forks of the causal chapter (:func:`utils.studies.interventions.fork_rows`): the
    settings of :data:`~utils.studies.interventions.INTERVENTION_CHAPTERS` (chapter 1's MLP,
    chapter 2's network of the paper's Figure 5, the one-layer Transformer) under seeds 0-7,
    one seed per task."""
    from utils.studies.interventions import INTERVENTION_CHAPTERS, intervention_config

    register(Sweep(
        name="intervention", configs=tuple(intervention_config(c) for c in INTERVENTION_CHAPTERS),
        seeds=tuple(range(8)), evaluate="utils.studies.interventions:fork_rows", seeds_per_task=1,
        trains=True, description="forks before spikes of chapter 1's MLP, chapter 2's network "
                    "(the paper's Figure 5) and the Transformer, 8 seeds"))


_register_intervention_sweep()


def _register_predictor_sweep() -> None:
    """The predictors chapter's runs (:func:`utils.studies.predictors.predictor_rows`): every
    setting of :data:`utils.studies.predictors.SETTINGS` under seeds 0-19, one seed per task."""
    from utils.studies.predictors import PREDICTOR_SEEDS, SETTINGS, predictor_config

    register(Sweep(
        name="predictors", configs=tuple(predictor_config(*key) for key in SETTINGS),
        seeds=tuple(range(PREDICTOR_SEEDS)), evaluate="utils.studies.predictors:predictor_rows",
        seeds_per_task=1, trains=True,
        description="every warning signal on the MLP, CNN and Transformer (full batch) and the "
                    "Transformer with mini-batches, 20 seeds"))


_register_predictor_sweep()


def _register_phase_sweep() -> None:
    """The book's one-layer Transformer (:data:`utils.studies.settings.TRANSFORMER`) over the
    (δ, γ) grid of the phase chapter (:func:`utils.studies.phase.transformer_configs`), seeds
    batched per grid point."""
    from utils.studies.phase import TRANSFORMER_SEEDS, transformer_configs

    register(Sweep(
        name="phase", configs=tuple(transformer_configs()), seeds=TRANSFORMER_SEEDS,
        evaluate="utils.studies.phase:phase_rows", seeds_per_task=len(TRANSFORMER_SEEDS),
        description="the one-layer Transformer over a 12 × 12 grid of (1 − β1, 1 − β2), 3 seeds"))


_register_phase_sweep()


def _register_mitigation_sweep() -> None:
    """Chapter 7's methods on the MLP, the Figure-5 network and the Transformer
    (:func:`utils.studies.mitigations.mitigation_config`), seeds 0-9 of a config in one task
    (batched where Adam allows it)."""
    from utils.studies.mitigations import (ARCHITECTURES, METHODS, MITIGATION_SEEDS,
                                           mitigation_config)

    register(Sweep(
        name="mitigations",
        configs=tuple(mitigation_config(a, m) for a in ARCHITECTURES for m in METHODS),
        seeds=MITIGATION_SEEDS, evaluate="utils.studies.mitigations:mitigation_rows",
        seeds_per_task=len(MITIGATION_SEEDS), batch_models=("mlp",),
        description="Adam, larger ε, smaller β2, StableAdamW, SPAM, ZClip and Adam-atan2 on the "
                    "MLP, the Figure-5 network and the Transformer, 10 seeds"))


_register_mitigation_sweep()


def _register_spike_type_sweep() -> None:
    """The spike-type chapter's runs (:func:`utils.studies.spike_types.type_rows`): the 4-layer
    anchor-function Transformer (:func:`~utils.studies.spike_types.anchor_config`) under the
    seeds of :data:`~utils.studies.spike_types.SEEDS`, one seed per task, and the same for the
    12-layer model (the paper's second Figure D1 setting)."""
    from utils.studies.spike_types import SEEDS, anchor_config

    register(Sweep(
        name="spike_types", configs=(anchor_config(4),), seeds=SEEDS,
        evaluate="utils.studies.spike_types:type_rows", seeds_per_task=1, trains=True,
        description="the 4-layer anchor-function Transformer (3x -> x) full batch: each spike's "
                    "kind and λ_grad(Ĥ) around it, 16 seeds"))
    register(Sweep(
        name="spike_types_12", configs=(anchor_config(12),), seeds=SEEDS,
        evaluate="utils.studies.spike_types:type_rows", seeds_per_task=1, trains=True,
        description="the second setting of the spike-type chapter, the 12-layer "
                    "anchor-function Transformer (3x -> x) full batch, 16 seeds"))


_register_spike_type_sweep()


def _register_anchor_search_sweep() -> None:
    """The search for an anchor-function setting that spikes on 2 cores
    (:func:`utils.studies.spike_types.search_configs`), seed 0, one run per task."""
    from utils.studies.spike_types import search_configs

    register(Sweep(
        name="anchor_search", configs=tuple(search_configs()), seeds=(0,),
        evaluate="utils.studies.spike_types:search_rows", seeds_per_task=1,
        description="the spike-type chapter's run under β2 ∈ {0.999, 0.99} × "
                    "η ∈ {1e-3, 3e-3, 1e-2}, seed 0"))


_register_anchor_search_sweep()


def _register_sustained_sweep() -> None:
    """The sustained-predictor chapter's runs (:func:`utils.studies.sustained.run_rows`): the
    8-layer anchor-function Transformer on mini-batches (:func:`~utils.studies.sustained.
    fig7_config`) under the seeds of :data:`~utils.studies.sustained.SEEDS`, one seed per
    task."""
    from utils.studies.sustained import SEEDS, fig7_config

    register(Sweep(
        name="sustained", configs=(fig7_config(),), seeds=SEEDS,
        evaluate="utils.studies.sustained:run_rows", seeds_per_task=1, trains=True,
        description="the 8-layer anchor-function Transformer (compositional rule) on "
                    "mini-batches: λ_grad(Ĥ) on the batch and on an evaluation batch every step, "
                    "the per-block ‖v̂‖ and the sustained predictor, 8 seeds"))


_register_sustained_sweep()


def _register_sustained_search_sweep() -> None:
    """The search for a mini-batch setting that spikes on 2 cores
    (:func:`utils.studies.sustained.search_configs`), seed 0, one run per task."""
    from utils.studies.sustained import search_configs

    register(Sweep(
        name="sustained_search", configs=tuple(search_configs()), seeds=(0,),
        evaluate="utils.studies.sustained:search_rows", seeds_per_task=1,
        description="the sustained-predictor chapter's run, unmeasured, 3,000 steps, under "
                    "8,000 or 1,000 sequences × a cosine over the run or to step 10,000, seed 0"))


_register_sustained_search_sweep()


# ------------------------------------------------------------------------------------- CLI

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.book.sweeps", description=__doc__.split(
        "\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME", help="sweeps to run, or 'all'")
    parser.add_argument("--workers", type=int, help="local Dask workers (default: one per core)")
    parser.add_argument("--serial", action="store_true", help="run the tasks in this process")
    parser.add_argument("--list", action="store_true", help="list the registered sweeps")
    args = parser.parse_args(argv)

    if args.list:
        for sweep in sorted(SWEEPS.values(), key=lambda s: (not s.public, s.name)):
            mark = "" if sweep.public else "  [not in 'all']"
            print(f"{sweep.name:<24} {sweep.n_runs:>6} runs  {sweep.description}{mark}")
        return 0
    if not args.names:
        parser.print_usage(sys.stderr)
        print("give sweep names, 'all' or --list", file=sys.stderr)
        return 2
    names = [s.name for s in SWEEPS.values() if s.public] if args.names == ["all"] else args.names
    unknown = [n for n in names if n not in SWEEPS]
    if unknown:
        print(f"unknown sweep(s) {unknown}; registered: {sorted(SWEEPS)} or 'all'",
              file=sys.stderr)
        return 2
    for name in names:
        t0 = time.perf_counter()
        table = run_sweep(name, workers=args.workers, serial=args.serial)
        print(f"{name}: {len(table)} runs -> {display_path(SWEEP_DIR / f'{name}.csv.gz')} "
              f"in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy's, so that the functions sent to
    # Dask workers are pickled as utils.book.sweeps.* (importable there), not as __main__.*.
    from utils.book.sweeps import main as _main
    sys.exit(_main())
