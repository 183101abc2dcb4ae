"""environment.yml (Binder) lists exactly the packages pinned in requirements.txt."""
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def pins(lines):
    """The package lines: no comments, no pip options (``--extra-index-url``), no ``-e .``."""
    return sorted(l.strip() for l in lines if l.strip() and not l.strip().startswith(("#", "-")))


def test_environment_matches_requirements():
    req = pins((ROOT / "requirements.txt").read_text().splitlines())
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pins(pip_section) == req
    assert all("==" in r for r in req), "every dependency is pinned"
    assert "-e ." in pip_section, "Binder installs the utils package too"
    assert env["dependencies"][0] == "python=3.11"


def constraint_pins() -> dict[str, str]:
    """constraints.txt as {normalised name: version}."""
    out = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"constraints.txt pins with ==, got {line!r}"
            out[normalise(name)] = version
    return out


def normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


def test_constraints_agree_with_requirements_and_environment():
    """Every direct dependency is locked at its requirements.txt version, and both make setup
    and Binder install under the lock."""
    locked = constraint_pins()
    for line in pins((ROOT / "requirements.txt").read_text().splitlines()):
        name, _, version = line.partition("==")
        assert locked.get(normalise(name)) == version, f"constraints.txt disagrees on {name}"
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-c constraints.txt" in pip_section
    assert "-c constraints.txt" in (ROOT / "Makefile").read_text()
    # the transitive packages the build and tests import are locked too
    for name in ("beautifulsoup4", "pyyaml", "nbformat", "pydata-sphinx-theme", "jupyter-cache"):
        assert normalise(name) in locked, f"{name} is not in constraints.txt"


def test_installed_environment_matches_constraints():
    """The environment running the tests is the locked one (catches a stale .venv)."""
    from importlib.metadata import distributions

    locked = constraint_pins()
    wrong = {}
    for dist in distributions():
        name = normalise(dist.metadata["Name"])
        version = dist.version.split("+")[0]
        if name in locked and locked[name] != version:
            wrong[name] = (version, locked[name])
    assert not wrong, f"installed (version, locked) differ: {wrong}"
