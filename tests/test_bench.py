"""The benchmark runs end to end on tiny settings (so it cannot rot between `make bench` runs),
and the result the appendix reads holds every number the issue asks for."""
import importlib.util
import json
import math

from utils.training.runs import REPO_ROOT

KEYS = ("tracking_cost_ratio", "cold_eigsh_cost_ratio", "hvps_per_step",
        "cold_eigsh_hvps_per_step", "max_rel_error_lambda_max", "seed_batch_ratio_16")
MODEL_KEYS = ("hvps_per_tracked_step", "max_rel_error_lambda_max", "uncertified_steps",
              "tracked_over_plain", "tracked_over_floor")
DECISION_KEYS = ("wrong_side_decisions", "zone_max_error_near", "zone_max_error_far",
                 "zone_steps_near", "certificates", "rounds_per_tracked_step")


def test_benchmark_runs_on_tiny_settings(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location(
        "bench_tracking", REPO_ROOT / "benchmarks" / "bench_tracking.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "results.json"
    bench.main(["--warmup", "20", "--steps", "6", "--cold-steps", "2", "--seed-steps", "3",
                "--models", "mlp,cnn,transformer,fig5_net,anchor",
                "--model-warmup", "mlp:5,cnn:2,transformer:2,fig5_net:2,anchor:2",
                "--model-tracked", "mlp:3,cnn:3,transformer:3,fig5_net:2,anchor:1",
                "--parallel-seeds", "2", "--parallel-steps", "5",
                "--seed-counts", "1,2", "--repeats", "3", "--monitor-steps", "20",
                "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["max_rel_error_lambda_max"] < 1e-3
    assert result["hvps_per_step"] < result["cold_eigsh_hvps_per_step"]
    assert set(result["seed_batching"]) == {"1", "2"} and result["seed_batch_ratio_16"] is None
    assert result["seeds_per_minute_ratio"] > 0
    assert set(result["models"]) == {"mlp", "cnn", "transformer", "fig5_net", "anchor"}
    assert result["models"]["anchor"]["n_params"] == 17_801   # chapter 10's 4-layer model
    for name, m in result["models"].items():
        assert set(MODEL_KEYS) <= set(m), name
        assert m["uncertified_steps"] == 0 and m["wrong_side_decisions"] == 0, name
        near, far = m["zone_tol"]
        assert m["zone_max_error_near"] is None or m["zone_max_error_near"] <= near, name
        assert m["zone_max_error_far"] is None or m["zone_max_error_far"] <= far, name
    assert set(result["monitor"]) == {"mlp", "cnn", "transformer", "lm", "anchor",
                                      "lm_finite_difference", "anchor_finite_difference"}
    assert result["monitor_overhead_anchor"] == result["monitor"]["anchor"]["overhead_ratio"]
    # a ratio of two timings: any positive number on a busy machine, so only its form is checked
    overhead = result["monitor"]["lm"]["overhead_ratio"]
    assert result["monitor_overhead"] == overhead and math.isfinite(overhead) and overhead > 0
    assert "ms/step" in capsys.readouterr().out


def test_committed_result_holds_the_required_numbers():
    result = json.loads((REPO_ROOT / "data" / "bench" / "results.json").read_text())
    for key in KEYS:
        assert isinstance(result[key], float) and math.isfinite(result[key]), key
    assert {"cpu", "torch_threads", "torch", "device"} <= set(result["machine"])
    assert isinstance(result["seeds_per_minute_ratio"], float)
    # every chapter model, with the side-of-2/η decision's figures (issue 27)
    assert set(result["models"]) == {"mlp", "cnn", "transformer", "fig5_net", "fig6_cnn",
                                     "fig4_net", "anchor"}
    for name, m in result["models"].items():
        assert set(MODEL_KEYS + DECISION_KEYS) <= set(m), name
        assert m["uncertified_steps"] == 0 and m["wrong_side_decisions"] == 0, name
    for key in ("monitor_overhead", "monitor_overhead_anchor"):
        assert isinstance(result[key], float) and result[key] > 0, key
