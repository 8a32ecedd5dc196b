"""The performance benchmark's smoke version: every part runs for real (tiny) and the outputs are
well formed. Timing is not asserted here (README: "Performance" has the measured numbers)."""

import json
import math
import subprocess
import sys

from scripts.local_flower import ROOT


def test_quick_benchmark_prints_a_table_and_writes_json_and_png(tmp_path):
    out = subprocess.run([sys.executable, "scripts/benchmarks/benchmark.py", "--quick", "--corpora", "builtin",
                          "--out-dir", str(tmp_path), "--flwr-home", str(tmp_path / "flwr-home"),
                          "--ports", "39791", "39793"], cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    results = json.loads((tmp_path / "benchmark.json").read_text())
    (quality,) = results["quality"]
    assert quality["status"] == "finished:completed"
    for side in (quality["federated"], quality["centralised"]):
        assert 0 <= side["top1"] <= side["top3"] <= 1 and side["perplexity"] > 1
        assert 0 <= side["keystroke_savings"] < 1  # beside top-1/top-3 (task/keystrokes.py)
    assert 0 < quality["federated"]["baseline_bigram_keystroke_savings"] < 1
    assert quality["top3_ratio"] > 0
    overhead = results["overhead"]
    assert overhead["fixed_seconds"] > 0 and overhead["rounds"][0]["client_compute"] > 0
    stages = overhead["start_up"]  # every stage was seen in the run's output, in order
    assert all(stages[k] > 0 for k in ("cli_superlink_and_upload", "simulation_process", "server_app_set_up",
                                      "initial_evaluation"))
    assert stages["before_first_round"] < overhead["wall_seconds"]
    (scale,) = results["scale"]
    assert scale["status"] == "finished:completed" and scale["trained_per_round"] == [6, 6]
    assert scale["peak_rss_mb"] > 100  # the SuperLink and its workers were found and measured
    assert scale["simulation_cpu_seconds"] > 1  # the simulation process was found (it imports TensorFlow)
    float32, int8 = results["communication"]  # --quick leaves float16 to tests/test_dp_simulation.py
    ratio = lambda c: c["train_bytes_up_per_device"] + c["train_bytes_down_per_device"]  # noqa: E731
    assert 0.35 < ratio(int8) / ratio(float32) < 0.42  # float16 down, 8-bit update (+ scales) up
    assert all(c["cpu_seconds_per_device"] > 0 and c["joules_per_device"] > 0 and c["peak_memory_mb"] > 100
               for c in (float32, int8))  # what a round cost the devices that replied
    plain, secure = results["secure"]
    assert (plain["secure_aggregation"], secure["secure_aggregation"]) == (False, True)
    assert secure["status"] == "finished:completed" and secure["seconds_per_round"] > 0
    # SecAgg+ sends its masked update as 64-bit integers: twice the float32 update, plus the keys
    assert 1.9 < secure["train_bytes_up_per_device"] / plain["train_bytes_up_per_device"] < 2.5
    assert "| secagg.enabled |" in out.stdout
    assert "| corpus | devices |" in out.stdout and "| transfer.dtype |" in out.stdout and "| devices |" in out.stdout
    assert "| start-up stage | seconds |" in out.stdout
    assert (tmp_path / "benchmark.png").read_bytes()[:4] == b"\x89PNG"


def test_privacy_benchmark_smoke_meets_each_planned_epsilon_with_every_mode(tmp_path):
    """scripts/benchmarks/benchmark_privacy.py --smoke: 5 real runs (8 devices, 4 per round, 2 rounds). Each
    private run's own ledger must report the epsilon the plan aimed at (the plan and the server
    agree), and the table must be complete. The README's numbers come from the full run."""
    out = subprocess.run([sys.executable, "scripts/benchmarks/benchmark_privacy.py", "--smoke", "--out", str(tmp_path / "p.png"),
                          "--flwr-home", str(tmp_path / "flwr-home"), "--ports", "39891", "39893"],
                         cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = json.loads((tmp_path / "p.json").read_text())["rows"]
    assert [(r["mode"], r["target_epsilon"]) for r in rows] == [
        ("none", None), ("central-client-clip", 5.0), ("central-ftrl", 5.0),
        ("central-client-clip", 50.0), ("central-ftrl", 50.0)]
    for r in rows:
        assert r["status"] == "finished:completed" and 0 <= r["top3"] <= 1 and r["ratio"] >= 0
    for r in rows[1:]:
        assert math.isfinite(r["epsilon"]) and 0.95 * r["target_epsilon"] <= r["epsilon"] <= r["target_epsilon"]
    for mode in ("central-client-clip", "central-ftrl"):  # a tighter target: more noise, a smaller epsilon
        tight, loose = (r for r in rows if r["mode"] == mode)
        assert tight["noise_multiplier"] > loose["noise_multiplier"] and tight["epsilon"] < loose["epsilon"]
    assert rows[0]["ratio"] == 1.0
    assert "| run | target ε | ε of the run |" in out.stdout and out.stdout.count("| DP-F") == 4
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
