"""What nbval compares, and why each compared cell is the same on every machine.

Every code cell of every page nbval checks carries ``metadata["nbval"]``, one reason:

* ``(a) ...`` computed from the stored tables (``data/sweeps``), the same on every machine;
* ``(b) ...`` a property that held in every stored seed of the same training path;
* ``(c) ...`` a property of the first steps, or of a computation without a chaotic trajectory;
* ``fixed text: ...`` parameters, code, constants, messages, progress bars (sanitised);
* ``varies: ...`` a chaotic live run's numbers: such a cell is tagged ``nbval-ignore-output``.

``make nbval`` runs the pages under the "another machine" switch, so a cell whose reason is
wrong fails there (tests below hold the bookkeeping; the switch holds the claim).
"""
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
STABLE = ("(a)", "(b)", "(c)", "fixed text:")


def nbval_pages() -> list[Path]:
    """The pages `make nbval` checks, read from the Makefile's NOTEBOOKS."""
    make = (ROOT / "Makefile").read_text()
    line = re.search(r"^NOTEBOOKS := (.*)$", make, re.M).group(1)
    pages = [ROOT / p for p in line.split() if not p.startswith("$")]
    chapters = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    return pages[:-1] + chapters + pages[-1:]


def code_cells(path):
    nb = nbformat.read(path, as_version=4)
    return [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]


def compared_cells() -> list[tuple[str, int, str]]:
    """(page, cell index, why it is stable) of every code cell nbval compares."""
    return [(p.relative_to(ROOT).as_posix(), i, c.metadata["nbval"])
            for p in nbval_pages() for i, c in code_cells(p)
            if "nbval-ignore-output" not in c.metadata.get("tags", [])]


@pytest.mark.parametrize("path", nbval_pages(), ids=lambda p: p.name)
def test_every_cell_says_whether_and_why_it_is_compared(path):
    for i, cell in code_cells(path):
        reason = cell.metadata.get("nbval")
        assert reason, (f"{path.name} cell {i} has no metadata 'nbval' "
                        "(why it is or is not compared)")
        ignored = "nbval-ignore-output" in cell.metadata.get("tags", [])
        if ignored:
            assert reason.startswith("varies:"), f"{path.name} cell {i}: ignored, but '{reason}'"
        else:
            assert reason.startswith(STABLE), f"{path.name} cell {i}: compared, but '{reason}'"


def test_the_compared_cells_are_listed_and_most_cells_are_compared():
    cells = compared_cells()
    for page, index, reason in cells:
        print(f"{page} [{index}]: {reason}")       # the list, with pytest -s
    total = sum(len(code_cells(p)) for p in nbval_pages())
    assert len(cells) >= 0.75 * total


def test_make_nbval_runs_every_page_under_the_switch():
    make = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^nbval:.*\n\t(.*)$", make, re.M).group(1)
    assert recipe.startswith("ADAM_SPIKES_PERTURB=$(PERTURB) ")
    # every page, the slowest first (a reordering of NOTEBOOKS, none left out)
    assert "--nbval $(NBVAL_FIRST) $(filter-out $(NBVAL_FIRST),$(NOTEBOOKS))" in recipe
    first = re.search(r"^NBVAL_FIRST := (.*)$", make, re.M).group(1).split()
    assert set(first) <= {p.relative_to(ROOT).as_posix() for p in nbval_pages()}
    # the cells of one notebook stay in one kernel, in order, when the pages run in parallel
    assert "--dist loadscope" in recipe and "--no-loadscope-reorder" in recipe
    assert re.search(r"^PERTURB \?= 1e-12$", make, re.M)
    assert re.search(r"^test: setup unit nbval$", make, re.M)
