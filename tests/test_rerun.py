"""`python -m utils.book.rerun` (make chapter): parameter checking before any kernel starts, and one
short end-to-end re-run into a folder of its own."""
import json

import nbformat
import pytest

from utils.book import rerun


def test_chapter_by_number_or_name():
    assert rerun.resolve_chapter("2") == "02_lambda_max_crossing"
    assert rerun.resolve_chapter("02") == "02_lambda_max_crossing"
    assert rerun.resolve_chapter("notebooks/01_v_decay.ipynb") == "01_v_decay"
    with pytest.raises(ValueError, match="NB must be one of 00_counterexample"):
        rerun.resolve_chapter("42")


def test_values_are_read_like_papermill():
    assert rerun.parse_value("0.99") == 0.99
    assert rerun.parse_value("500") == 500
    assert rerun.parse_value("None") is None
    assert rerun.parse_value("gd") == "gd"


def test_unknown_parameter_lists_the_valid_names(capsys):
    assert rerun.main(["01", "-p", "stpes", "500"]) == 2
    err = capsys.readouterr().err
    assert "no parameter 'stpes'" in err and "did you mean 'steps'" in err
    assert "valid names: width, depth, activation, n_points, lr" in err


def test_list_shows_defaults_and_meanings(capsys):
    assert rerun.main(["00", "--list"]) == 0
    out = capsys.readouterr().out
    assert "curvature" in out and "a, the constant Hessian" in out


def test_rerun_writes_its_own_folder(tmp_path, capsys):
    committed = (rerun.NOTEBOOK_DIR / "01_v_decay.ipynb").read_bytes()
    assert rerun.main(["01", "-p", "steps", "120", "-p", "beta2", "0.95",
                       "--out", str(tmp_path)]) == 0
    assert (rerun.NOTEBOOK_DIR / "01_v_decay.ipynb").read_bytes() == committed
    nb = nbformat.read(tmp_path / "01_v_decay.ipynb", as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert "steps = 120" in injected[0].source
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["parameters"]["steps"] == 120 and summary["parameters"]["beta2"] == 0.95
    assert (tmp_path / "metrics.csv").exists()
    assert "metrics.csv" in capsys.readouterr().out
    # the stored 16-seed ensemble (run under the defaults) is not shown as this run's: the
    # chapter says how to run the ensemble for these parameters instead
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                      for o in c.get("outputs", []))
    assert "not shown" in printed and "run_ensemble('01_v_decay'" in printed
    assert "'beta2': 0.95" in printed
