"""What every chapter notebook shares: its default parameters and where its run is written.

The defaults are read from the chapter's own ``parameters`` cell in ``notebooks/`` (with
papermill's notebook inspection), so the committed cell is the one place they are written.
"""
from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

from .runs import REPO_ROOT, default_output_dir

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
NOT_COMPARED = ("output_dir",)
"""Parameters that do not change the run, so changing them keeps the verdicts strict."""


def chapter_path(chapter: str) -> Path:
    """``notebooks/<chapter>.ipynb``; ValueError listing the chapters if there is none."""
    path = NOTEBOOK_DIR / f"{chapter}.ipynb"
    if not path.exists():
        names = sorted(p.stem for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
        raise ValueError(f"chapter must be one of {names}, got {chapter!r}")
    return path


@lru_cache(maxsize=None)
def _inspect(chapter: str) -> dict:
    import papermill

    return papermill.inspect_notebook(str(chapter_path(chapter)))


def chapter_defaults(chapter: str) -> dict:
    """The chapter's parameters and their default values, as written in its parameters cell."""
    return {name: ast.literal_eval(p["default"]) for name, p in _inspect(chapter).items()}


def parameter_frame(chapter: str):
    """The chapter's parameters as a table: name, default (as written) and meaning (the
    comment beside it in the parameters cell)."""
    import pandas as pd

    rows = [(name, p["default"], p["help"]) for name, p in _inspect(chapter).items()]
    return pd.DataFrame(rows, columns=["parameter", "default", "meaning"])


def chapter_parameters(chapter: str, namespace: dict) -> tuple[dict, bool]:
    """The chapter's parameter values as they are in ``namespace`` (the notebook's globals),
    and whether they are the defaults (then the verdicts are enforced)."""
    defaults = chapter_defaults(chapter)
    values = {name: namespace[name] for name in defaults}
    strict = all(values[k] == v for k, v in defaults.items() if k not in NOT_COMPARED)
    if values.get("output_dir") is None:
        values["output_dir"] = str(default_output_dir(chapter))
    return values, strict
