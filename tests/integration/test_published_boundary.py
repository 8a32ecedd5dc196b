"""The server's side of the release boundary (task/releases.py): under DP every file a run writes
(metrics, summary, checkpoints, the ledger's journal) and every config it sends to devices holds only
declared values that may be published, and one device's training text moves none of the
published values that are not functions of the model (which DP covers)."""

import json

import numpy as np

from task.releases import MODEL, TRAIN_TEXT, published_value
from task.run.checkpoint import latest_checkpoint, load_checkpoint
from tests.helpers import SMALL_RC
from tests.inprocess import DirectGrid, run_inprocess
from tests.unit.test_release_boundary import write_text

DP_RC = {**SMALL_RC, "num-server-rounds": 2, "dp.mode": "central-client-clip", "dp.noise-multiplier": 0.5,
         "dp.clipping-norm": 5.0, "dp.delta": 1e-3, "max-local-steps": 3}


def not_publishable(where: str, keys, dp_enabled: bool = True) -> list[str]:
    return sorted(k for k in keys if (v := published_value(where, k)) is None or not v.leaves(dp_enabled))


class RecordingGrid(DirectGrid):
    """Keeps the keys of every config the server sends to a device."""

    sent: set

    def push_messages(self, messages):
        messages = list(messages)
        self.sent = getattr(self, "sent", set())
        for m in messages:
            if "config" in m.content.config_records:
                self.sent.update(m.content["config"].keys())
        return super().push_messages(messages)


def dp_run(tmp_path, first_device_seed: int):
    nodes = [{"data-path": write_text(tmp_path / "text" / str(i), seed=first_device_seed if i == 0 else 10 + i,
                                      held_out_seed=20 + i)} for i in range(4)]
    rc = {**DP_RC, "out-dir": str(tmp_path / "out")}
    grid = RecordingGrid(4, rc, nodes)
    return run_inprocess(tmp_path / "out", 4, DP_RC, node_configs=nodes, grid=grid), grid.sent


def test_the_check_flags_a_value_nobody_declared():
    """The checks below have power: a test-only column, summary key or config key is flagged."""
    assert not_publishable("metrics", ["round", "eval_top3", "train_secret_sum"]) == ["train_secret_sum"]
    assert not_publishable("metrics", ["seconds", "eval_baseline_bigram_top3"]) == [
        "eval_baseline_bigram_top3", "seconds"]  # withheld under DP
    assert not_publishable("metrics", ["seconds"], dp_enabled=False) == []
    assert not_publishable("summary", ["final", "secret"]) == ["secret"]
    assert not_publishable("device config", ["server-round", "my-new-key"]) == ["my-new-key"]


def test_under_dp_a_run_publishes_only_declared_values_and_one_devices_text_moves_only_covered_ones(tmp_path):
    a, sent = dp_run(tmp_path / "a", first_device_seed=1)
    b, _ = dp_run(tmp_path / "b", first_device_seed=2)  # device 0's training text differs, nothing else

    assert not_publishable("metrics", {k for r in a.rows for k in r}) == []
    assert not_publishable("summary", a.summary) == []
    # nested: the summary's final row and privacy figures are metrics columns (review P1)
    assert not_publishable("metrics", a.summary["final"]) == []
    assert not_publishable("metrics", {"dp_" + k for k in a.summary["privacy"]}) == []
    files = [str(f.relative_to(a.dir)) for f in a.dir.rglob("*") if f.is_file()]
    assert not_publishable("files", files) == []
    state = load_checkpoint(latest_checkpoint(a.dir)).state
    assert not_publishable("checkpoint", state) == []
    journal = json.loads((a.dir / "privacy-ledger.json").read_text())
    assert not_publishable("privacy-ledger.json", journal) == []
    assert journal.keys() == state["privacy"].keys()  # the checkpoint's ledger, written ahead
    assert not_publishable("device config", sent) == []

    assert a.rows[-1]["failures"] == [] and "seconds" not in a.rows[-1]

    # Published values that are not functions of the model (DP covers those) or of the training
    # text (only through DP releases) must not move when one device's training text does.
    for ra, rb in zip(a.rows, b.rows, strict=True):
        for key in ra:
            value = published_value("metrics", key)
            if MODEL in value.of or TRAIN_TEXT in value.of:
                continue
            assert np.array_equal(ra[key], rb[key]) or ra[key] == rb[key], (ra["round"], key, ra[key], rb[key])
    moved = [k for k in a.rows[-1] if k.startswith("server_") and a.rows[-1][k] != b.rows[-1][k]]
    assert moved  # the model did change, through the covered release
