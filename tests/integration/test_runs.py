"""Whole runs of the core in this process (tests/inprocess.py): what a run records every round, a
resumed run continuing the model and the privacy budget, a run that dies mid-way, and devices
whose text is unusable. tests/e2e runs the same apps through Flower's own processes."""

import csv
import json

import pytest

from task.config import Config
from task.privacy.ledger import PrivacyLedger
from tests.helpers import SMALL_RC, gaussian_epsilon, only_covered_train_fields
from tests.inprocess import DirectGrid, run_inprocess

DP = {"dp.mode": "central-client-clip", "dp.noise-multiplier": 2.0, "dp.clipping-norm": 0.5, "dp.delta": 1e-3}


def test_a_private_run_records_every_round_and_a_resumed_run_continues_its_model_and_budget(tmp_path):
    first = run_inprocess(tmp_path, 3, {**SMALL_RC, **DP, "num-server-rounds": 2}, run_id=1)
    rows = first.rows
    assert [r["round"] for r in rows] == [0, 1, 2]
    with open(first.dir / "metrics.csv") as f:
        table = list(csv.DictReader(f))
    assert [int(t["round"]) for t in table] == [0, 1, 2]
    for row, line in zip(rows[1:], table[1:]):
        assert float(line["eval_top3"]) == pytest.approx(row["eval_top3"])
        assert float(line["dp_epsilon_central"]) == pytest.approx(row["dp_epsilon_central"])
        assert int(line["train_bytes_sent"]) == row["train_bytes_sent"] > 3 * 4 * 100_000  # 3 models sent
        assert row["train_bytes_received"] > 0
        # under DP evaluate-in-train is off (a training reply carries the covered update only,
        # task/releases.py): every round's model has an evaluate phase of its own
        assert f"round {row['round']}: train 3/3 devices (0 failed) | eval 3/3" in first.output
        assert row["eval_bytes_sent"] > 0 and "scored by the devices of round" not in first.output
        assert f"top-3 {row['eval_top3']:.1%}" in first.output
    # under DP the server stored nothing per device (no loss, no norm bit, no compute time)
    assert only_covered_train_fields(rows)
    assert [r["dp_epsilon_central"] for r in rows[1:]] == pytest.approx(
        [gaussian_epsilon(2.0, n, 1e-3) for n in (1, 2)], rel=1e-6)
    assert first.summary["best_eval_top3"] == max(r["eval_top3"] for r in rows[1:])
    assert (first.dir / "metrics.png").read_bytes()[:4] == b"\x89PNG"
    assert (first.dir / "final" / "model.keras").stat().st_size > 0
    assert first.summary["litert_check"]["float32"]["fit_to_ship"]

    resumed = run_inprocess(tmp_path, 3, {**SMALL_RC, **DP, "num-server-rounds": 4, "resume-from": str(first.dir)},
                            run_id=2)
    after = resumed.rows
    assert [r["round"] for r in after] == [0, 1, 2, 3, 4]
    assert after[:3] == rows  # the history is carried over unchanged
    assert after[3]["server_loss"] != rows[2]["server_loss"]
    # epsilon after 4 releases, as an uninterrupted 4-round run books it
    uninterrupted = PrivacyLedger(Config.from_run_config(DP).dp, 3, 3)
    for _ in range(4):
        uninterrupted.record_central([2.0])
    assert after[-1]["dp_central_releases"] == 4
    assert after[-1]["dp_epsilon_central"] == pytest.approx(uninterrupted.central_epsilon(), rel=1e-9)
    assert after[-1]["dp_epsilon_central"] == pytest.approx(gaussian_epsilon(2.0, 4, 1e-3), rel=1e-6)
    # how often the worst device was asked is not published in a central mode: it would tell how the
    # server's secret samples overlapped, which the amplified figure relies on (review N-1)
    assert not any("dp_most_rounds_per_device" in r for r in after)
    assert "Resuming from round 2" in resumed.output


class DiesAtRound(DirectGrid):
    """The ServerApp's process dies as round `round` starts (as a crash or `flwr stop` would)."""

    def __init__(self, round: int, *args):
        super().__init__(*args)
        self.round = round

    def push_messages(self, messages):
        messages = list(messages)
        if any(m.metadata.message_type == "train" and m.content["config"]["server-round"] == self.round
               for m in messages):
            raise SystemExit("killed")
        return super().push_messages(messages)


def test_a_run_that_dies_mid_way_resumes_losing_only_the_round_in_progress(tmp_path):
    rc = {**SMALL_RC, "num-server-rounds": 30}
    with pytest.raises(SystemExit):
        run_inprocess(tmp_path, 3, rc, run_id=1, grid=DiesAtRound(4, 3, {**rc, "out-dir": str(tmp_path)}))
    run_dir = tmp_path / "run-1"
    names = sorted(p.name for p in (run_dir / "checkpoints").glob("round-*.npz"))
    assert names[-1] == "round-003.npz"  # every finished round was checkpointed

    killed_rows = json.loads((run_dir / "metrics.json").read_text())
    assert [r["round"] for r in killed_rows] == [0, 1, 2, 3]
    resumed = run_inprocess(tmp_path, 3, {**rc, "num-server-rounds": 4, "resume-from": str(run_dir)}, run_id=2)
    assert [r["round"] for r in resumed.rows] == [0, 1, 2, 3, 4]
    assert resumed.rows[:3] == killed_rows[:3]
    # round 3's row: kept, with the scores the resumed run's devices gave its model
    kept = {k: v for k, v in killed_rows[3].items() if not k.startswith("eval_")}
    assert {k: v for k, v in resumed.rows[3].items() if k in kept} == kept and "eval_top3" in resumed.rows[3]


def test_one_device_with_unusable_text_does_not_stop_the_run(tmp_path):
    from task.data import personas

    data = tmp_path / "devices"
    data.mkdir()
    for i in range(3):
        (data / f"device{i}.txt").write_text("\n".join(personas.device_sentences(i, 60)))
    (data / "device3.txt").write_text("   \n")  # this device has no usable text
    run = run_inprocess(tmp_path / "out", 4, {**SMALL_RC, "num-server-rounds": 2, "data.source": "text-dir",
                                              "data.path": str(data), "data.partitioner": "natural",
                                              "server-eval-devices": 0})
    for r in run.rows[1:]:
        assert (r["train_replied"], r["train_failed"]) == (3, 1)
        # it says why, every round, by category only (its file names and paths stay in its own log)
        # the category and how many replies (its train and evaluate messages), no node id
        assert r["failures"] in (["partition has no text: 1"], ["partition has no text: 2"]), r["failures"]
        assert not any(str(tmp_path) in f or "device3" in f for f in r["failures"])
    assert run.rows[-1]["eval_loss"] < run.rows[1]["eval_loss"]
    assert "device failed" in run.output


def test_a_run_where_every_device_fails_ends_with_a_summary_not_a_crash(tmp_path):
    run = run_inprocess(tmp_path, 3, {**SMALL_RC, "num-server-rounds": 1, "data.source": "text-dir",
                                      "data.path": str(tmp_path / "missing"), "server-eval-devices": 0})
    assert run.summary["final"] == {} and run.summary["rounds"] == 1  # no model quality to report
    last = run.rows[-1]
    assert (last["train_failed"], last["eval_failed"]) == (3, 3)
    assert last["failures"] == ["data-path does not exist: 6"], last["failures"]  # 3 train + 3 evaluate replies
