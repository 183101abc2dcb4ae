"""Re-run one chapter under new parameters, into its own folder: ``python -m utils.book.rerun``.

    python -m utils.book.rerun 02 -p beta2 0.99 -p steps 500
    python -m utils.book.rerun 01_v_decay --list          # the chapter's parameters and defaults

(``make chapter NB=02 ARGS="-p beta2 0.99"`` calls this.) Unlike plain papermill, a parameter
name the chapter does not have is an error that lists the valid names, raised before a kernel
starts. The executed notebook, ``metrics.csv`` and ``summary.json`` go to
``_build/rerun/<chapter>/<name=value,...>/`` (or ``--out DIR``); the committed notebook is never
touched. Training progress streams to the terminal while the chapter runs.
"""
from __future__ import annotations

import argparse
import ast
import difflib
import json
import re
import sys
from pathlib import Path

from utils.book.chapters import parameter_frame
from utils.studies.settings import NOTEBOOK_DIR, chapter_defaults
from utils.training.runs import REPO_ROOT, display_path

RERUN_DIR = REPO_ROOT / "_build" / "rerun"


def chapter_names() -> list[str]:
    """The chapters in ``notebooks/``, e.g. ``['00_counterexample', '01_v_decay', ...]``."""
    return sorted(p.stem for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def resolve_chapter(name: str) -> str:
    """A chapter's full name from its number (``"2"``, ``"02"``) or its full name.

    ValueError listing the chapters when ``name`` matches none."""
    names = chapter_names()
    stem = Path(name).stem
    matches = [n for n in names if n == stem or (stem.isdigit() and n[:2] == f"{int(stem):02d}")]
    if len(matches) != 1:
        raise ValueError(f"NB must be one of {', '.join(names)} (or its number), got {name!r}")
    return matches[0]


def parse_value(text: str):
    """A parameter value as papermill's ``-p`` reads it: a Python literal, else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def check_parameters(chapter: str, overrides: dict) -> None:
    """ValueError naming the unknown parameters and listing the chapter's valid ones."""
    defaults = chapter_defaults(chapter)
    unknown = [k for k in overrides if k not in defaults]
    if unknown:
        close = [m for k in unknown for m in difflib.get_close_matches(k, defaults, n=1)]
        hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
        raise ValueError(f"{chapter} has no parameter {', '.join(map(repr, unknown))}{hint}; "
                         f"valid names: {', '.join(defaults)}")


def default_folder(chapter: str, overrides: dict) -> Path:
    """``_build/rerun/<chapter>/<name=value,...>`` (``defaults`` when nothing is overridden)."""
    tag = ",".join(f"{k}={v}" for k, v in overrides.items() if k != "output_dir") or "defaults"
    return RERUN_DIR / chapter / re.sub(r"[^A-Za-z0-9_.,=+-]", "_", tag)


def parameter_table(chapter: str) -> str:
    """The chapter's parameters, defaults and meanings (from its parameters cell), as text."""
    frame = parameter_frame(chapter)
    widths = [max(len(str(x)) for x in [col, *frame[col]]) for col in frame.columns[:2]]
    lines = [f"parameters of {chapter}:"]
    for name, default, meaning in [tuple(frame.columns), *frame.itertuples(index=False)]:
        lines.append(f"  {name:<{widths[0]}}  {default:<{widths[1]}}  {meaning}".rstrip())
    return "\n".join(lines)


def rerun(chapter: str, overrides: dict, out: Path | None = None) -> Path:
    """Execute ``notebooks/<chapter>.ipynb`` with ``overrides`` into ``out``; return ``out``.

    The run's ``metrics.csv`` and ``summary.json`` are written into ``out`` too (unless
    ``overrides`` names another ``output_dir``)."""
    import papermill

    check_parameters(chapter, overrides)
    out = Path(out) if out is not None else default_folder(chapter, overrides)
    out.mkdir(parents=True, exist_ok=True)
    parameters = {"output_dir": str(out.resolve()), **overrides}
    print(f"running {chapter} with {overrides or 'its default parameters'}", file=sys.stderr)
    papermill.execute_notebook(
        str(NOTEBOOK_DIR / f"{chapter}.ipynb"), str(out / f"{chapter}.ipynb"),
        parameters=parameters, kernel_name="python3", cwd=str(NOTEBOOK_DIR),
        progress_bar=False, stderr_file=sys.stderr)  # the training bar streams from the kernel
    return out


def report(chapter: str, out: Path, run_dir: Path) -> str:
    """Where the outputs are, and the verdicts of the run's ``summary.json``."""
    lines = ["", f"executed notebook: {display_path(out / f'{chapter}.ipynb')}"]
    for name in ("metrics.csv", "summary.json"):
        lines.append(f"{name + ':':<18} {display_path(run_dir / name)}")
    summary = run_dir / "summary.json"
    if summary.exists():
        verdicts = json.loads(summary.read_text()).get("verdicts", {})
        lines.append("verdicts (enforced only under the default parameters):")
        for name, v in verdicts.items():
            lines.append(f"  {'PASS' if v.get('passed') else 'FAIL'}  {v.get('claim', name)}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m utils.book.rerun", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("chapter", help="chapter number or name, e.g. 02 or 02_lambda_max_crossing")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                        metavar=("NAME", "VALUE"), help="override a parameter (repeatable)")
    parser.add_argument("--out", type=Path, help="folder for the executed notebook and outputs")
    parser.add_argument("--list", action="store_true", help="list the chapter's parameters")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        chapter = resolve_chapter(args.chapter)
        if args.list:
            print(parameter_table(chapter))
            return 0
        overrides = {name: parse_value(value) for name, value in args.parameter}
        check_parameters(chapter, overrides)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    import papermill

    try:
        out = rerun(chapter, overrides, args.out)
    except papermill.PapermillExecutionError as err:
        where = args.out or default_folder(chapter, overrides)
        print(f"\nerror: {chapter} failed in cell {err.exec_count}: {err.ename}: {err.evalue}\n"
              f"the partly executed notebook is {display_path(Path(where) / f'{chapter}.ipynb')}",
              file=sys.stderr)
        return 1
    run_dir = Path(overrides.get("output_dir") or out)
    print(report(chapter, out, run_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
