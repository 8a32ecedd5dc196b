"""End to end: the metrics files and plot a run writes, a resumed run continuing the model and the
privacy budget, and a run killed mid-way then resumed."""

import csv
import json
import threading
import time

import pytest

from scripts.local_flower import run_app, stop_run
from task.config import Config
from task.privacy.ledger import PrivacyLedger
from tests.helpers import SMALL_RUN

SMALL = f"{SMALL_RUN} local-epochs=2 learning-rate=0.01 data.sentences-per-device=100 server-eval-devices=3"
DP = 'dp.mode="central-client-clip" dp.noise-multiplier=2.0 dp.clipping-norm=0.5 dp.delta=1e-3'


# What the server itself observes: who was asked, replied, declined, was late, busy or failed.
COUNTS = {f"train_{k}" for k in ("sampled", "replied", "failed", "not_eligible", "late", "busy", "bytes_sent",
                                  "bytes_received", "compute_seconds")}


def read(out, run_id, name="metrics.json"):
    return json.loads((out / f"run-{run_id}" / name).read_text())


def test_metrics_files_have_a_row_per_round_matching_the_log_and_a_plot(flower, tmp_path):
    outcome = run_app(flower, num_supernodes=3, echo=False,
                      run_config=f'num-server-rounds=2 {SMALL} {DP} out-dir="{tmp_path}"')
    assert outcome.status == "finished:completed", outcome.output[-3000:]
    rows = read(tmp_path, outcome.run_id)
    assert [r["round"] for r in rows] == [0, 1, 2]
    with open(tmp_path / f"run-{outcome.run_id}" / "metrics.csv") as f:
        table = list(csv.DictReader(f))
    assert [int(t["round"]) for t in table] == [0, 1, 2]
    for row, line in zip(rows[1:], table[1:]):
        assert float(line["eval_top3"]) == pytest.approx(row["eval_top3"])
        assert float(line["dp_epsilon_central"]) == pytest.approx(row["dp_epsilon_central"])
        assert int(line["train_bytes_sent"]) == row["train_bytes_sent"] > 3 * 4 * 100_000  # 3 models sent
        assert row["train_bytes_received"] > 0
        # under DP the devices sent nothing about their training but the weight FedAvg needs,
        # and the server stored nothing per device (no loss, no norm bit, no compute time)
        assert not [k for k in row if k.startswith("train_") and k not in COUNTS], row
        # the log shows the same numbers: the devices of the next round score this round's model
        # as they receive it (evaluate-in-train); the last round's model has an evaluate phase
        if row is rows[-1]:
            assert f"round {row['round']}: train 3/3 devices (0 failed) | eval 3/3" in outcome.output
            assert row["eval_bytes_sent"] > 0
        else:
            assert f"round {row['round']}, scored by the devices of round {row['round'] + 1}: eval 3/3" in outcome.output
            assert row["eval_bytes_sent"] == 0  # no message of its own
        assert f"top-3 {row['eval_top3']:.1%}" in outcome.output
    summary = read(tmp_path, outcome.run_id, "summary.json")
    assert summary["best_eval_top3"] == max(r["eval_top3"] for r in rows[1:])
    assert (tmp_path / f"run-{outcome.run_id}" / "metrics.png").read_bytes()[:4] == b"\x89PNG"
    assert "plot:" in outcome.output and "Privacy: central-client-clip" in outcome.output


def test_a_resumed_run_continues_the_model_and_the_privacy_budget(flower, tmp_path):
    first = run_app(flower, num_supernodes=3, echo=False,
                    run_config=f'num-server-rounds=2 {SMALL} {DP} out-dir="{tmp_path}"')
    assert first.status == "finished:completed", first.output[-3000:]
    resumed = run_app(flower, num_supernodes=3, echo=False, run_config=(
        f'num-server-rounds=4 {SMALL} {DP} out-dir="{tmp_path}" resume-from="{tmp_path / f"run-{first.run_id}"}"'))
    assert resumed.status == "finished:completed", resumed.output[-3000:]
    before, after = read(tmp_path, first.run_id), read(tmp_path, resumed.run_id)
    assert [r["round"] for r in after] == [0, 1, 2, 3, 4]
    assert after[:3] == before  # the history is carried over unchanged
    assert after[3]["server_loss"] != before[2]["server_loss"]
    # epsilon after 4 releases, as an uninterrupted 4-round run has it (same computation, 4 releases)
    cfg = Config.from_run_config({"dp.mode": "central-client-clip", "dp.noise-multiplier": 2.0,
                                  "dp.clipping-norm": 0.5, "dp.delta": 1e-3})
    uninterrupted = PrivacyLedger(cfg.dp, 3, 3)
    for _ in range(4):
        uninterrupted.record_central([2.0])
    assert after[-1]["dp_central_releases"] == 4
    assert after[-1]["dp_epsilon_central"] == pytest.approx(uninterrupted.central_epsilon(), rel=1e-9)
    assert after[-1]["dp_most_rounds_per_device"] == 4  # every device asked in all 4 rounds, across the resume
    assert f"= {uninterrupted.central_epsilon():.3f} at δ = 0.001" in resumed.output


def test_a_run_killed_mid_way_resumes_losing_at_most_the_round_in_progress(flower, tmp_path):
    out = tmp_path / "out"
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.update(o=run_app(
        flower, num_supernodes=3, echo=False, run_config=f'num-server-rounds=30 {SMALL} out-dir="{out}"')))
    worker.start()
    deadline = time.monotonic() + 600
    while not list(out.glob("run-*/checkpoints/round-002.npz")) and time.monotonic() < deadline:
        time.sleep(0.5)
    run_dir = next(out.glob("run-*"))
    run_id = int(run_dir.name.removeprefix("run-"))
    stop_run(flower, run_id)  # the ServerApp dies a few rounds later (a small round takes ~1-2 s)
    worker.join(timeout=300)
    assert outcome["o"].status == "finished:stopped"
    # `flwr stop` marks the run stopped before its ServerApp process is gone: wait until no
    # checkpoint has appeared for 10 s (a round of this small model takes 1-2 s)
    names, stable_since = None, time.monotonic()
    while time.monotonic() - stable_since < 10:
        now = sorted(p.name for p in (run_dir / "checkpoints").glob("round-*.npz"))
        if now != names:
            names, stable_since = now, time.monotonic()
        time.sleep(0.5)
    killed_rows = json.loads((run_dir / "metrics.json").read_text())
    done = max(int(name.removeprefix("round-").removesuffix(".npz")) for name in names)
    assert 2 <= done < 30
    # every checkpointed round has its metrics row; at most the round being saved is ahead of them
    assert done <= max(r["round"] for r in killed_rows) <= done + 1
    killed_rows = [r for r in killed_rows if r["round"] <= done]
    resumed = run_app(flower, num_supernodes=3, echo=False,  # one more round than the killed run finished
                      run_config=f'num-server-rounds={done + 1} {SMALL} out-dir="{out}" resume-from="{run_dir}"')
    assert resumed.status == "finished:completed", resumed.output[-3000:]
    rows = read(out, resumed.run_id)
    assert [r["round"] for r in rows] == list(range(done + 2))
    assert rows[:done] == killed_rows[:done]  # every finished round was kept
    # the last one too; the resumed run's devices may add the scores of its model (and their counts)
    kept = {k: v for k, v in killed_rows[done].items() if not k.startswith("eval_")}
    assert {k: v for k, v in rows[done].items() if k in kept} == kept and "eval_top3" in rows[done]
