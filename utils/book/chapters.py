"""What a chapter notebook does with its parameters: the values it runs under, whether they are
the defaults (then its verdicts are enforced), and the table of them for the re-run page. The
defaults themselves and the runs they define are in :mod:`utils.studies.settings`.
"""
from __future__ import annotations

from utils.studies.settings import chapter_defaults, inspect_parameters
from utils.training.runs import default_output_dir

NOT_COMPARED = ("output_dir",)
"""Parameters that do not change the run, so changing them keeps the verdicts strict."""


def parameter_frame(chapter: str):
    """The chapter's parameters as a table: name, default (as written) and meaning (the
    comment beside it in the parameters cell)."""
    import pandas as pd

    rows = [(name, p["default"], p["help"]) for name, p in inspect_parameters(chapter).items()]
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
