"""environment.yml (Binder) lists exactly the packages pinned in requirements.txt."""
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def pins(lines):
    return sorted(l.strip() for l in lines if l.strip() and not l.strip().startswith(("#", "-e")))


def test_environment_matches_requirements():
    req = pins((ROOT / "requirements.txt").read_text().splitlines())
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pins(pip_section) == req
    assert all("==" in r for r in req), "every dependency is pinned"
