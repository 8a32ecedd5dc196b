"""The performance benchmark's smoke version: its quality part runs for real (tiny: one federated
run and its centralised twin) and the outputs are well formed. Timing is not asserted here
(docs/performance.md has the measured numbers); the other parts and benchmarks reuse the same
runner and are run by hand (each prints its table)."""

import json
import subprocess
import sys

from scripts.local_flower import ROOT


def test_the_quick_benchmark_prints_a_table_and_writes_json_and_png(tmp_path):
    out = subprocess.run([sys.executable, "scripts/benchmarks/benchmark.py", "--quick", "--parts", "quality",
                          "--corpora", "builtin",
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
    assert "| corpus | devices |" in out.stdout and "| start-up stage | seconds |" in out.stdout
    assert (tmp_path / "benchmark.png").read_bytes()[:4] == b"\x89PNG"
