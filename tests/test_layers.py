"""The layering of utils/: every import points down the order stated in utils/__init__.py."""
import ast
from pathlib import Path

import pytest

UTILS = Path(__file__).resolve().parents[1] / "utils"
LAYERS = ["validation", "curvature", "events", "training", "monitor", "studies", "book"]
"""From the bottom up; ``utils`` itself (its ``__version__``) is below them all."""


def layer_of(module: str) -> int:
    """The rank of ``utils.<layer>[.<module>]`` in :data:`LAYERS` (-1 for ``utils`` itself)."""
    parts = module.split(".")
    if parts[0] != "utils":
        raise ValueError(module)
    return -1 if len(parts) == 1 else LAYERS.index(parts[1])


def module_name(path: Path) -> str:
    rel = path.relative_to(UTILS.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def utils_imports(path: Path, module: str | None = None) -> list[tuple[int, str]]:
    """(line, imported module) of every import of a ``utils`` module in ``path`` (the source of
    ``module``, by default found from its place under utils/), at module level or inside
    functions, relative ones resolved; names below a layer are cut to ``utils.<layer>``
    where the import names a package, which is all the layer check needs."""
    module = module or module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "utils"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1])
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            if name.split(".")[0] == "utils":
                names = [f"{name}.{a.name}" for a in node.names] if name == "utils" else [name]
                found += [(node.lineno, n if n.split(".")[1:2] and n.split(".")[1] in LAYERS
                           else "utils") for n in names]   # `from utils import __version__`
    return found


SOURCES = sorted(UTILS.rglob("*.py"))


def test_every_module_sits_in_a_layer():
    for path in SOURCES:
        name = module_name(path)
        assert name == "utils" or name.split(".")[1] in LAYERS, f"{name} is in no layer of {LAYERS}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: module_name(p))
def test_imports_point_down_the_layers(path):
    here = layer_of(module_name(path))
    up = [f"line {line}: {target} ({LAYERS[layer_of(target)]})"
          for line, target in utils_imports(path) if layer_of(target) > here]
    layer = LAYERS[here] if here >= 0 else "utils"
    assert not up, f"{module_name(path)} ({layer}) imports up: {up}"


def test_the_check_finds_an_import_that_runs_up(tmp_path):
    """A training module importing the book's plots inside a function, or a study importing a
    sweep relatively, is caught (the check can fail)."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from utils.book import plots\n")
    (line, target), = utils_imports(probe, "utils.training.probe")
    assert line == 2 and layer_of(target) > layer_of("utils.training.probe")
    probe.write_text("from ..book.sweeps import load_sweep\n")
    (_, target), = utils_imports(probe, "utils.studies.probe")
    assert target == "utils.book.sweeps" and layer_of(target) > layer_of("utils.studies.probe")
