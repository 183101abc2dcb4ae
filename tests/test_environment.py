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
