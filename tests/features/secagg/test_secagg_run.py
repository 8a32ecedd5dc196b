"""Secure aggregation with central DP in a whole run (in this process, tests/inprocess.py; the real
network is tests/e2e/test_deployment.py): SecAgg+ in every training round, then a resumed run that
continues the model and the ledger. The noise is tiny on purpose: this checks that the protocol,
the noise and the accounting run and that the model learns through them."""

from pathlib import Path

import pytest

from task.run.checkpoint import latest_checkpoint, load_weights
from tests.helpers import SMALL_RC, gaussian_epsilon, only_covered_train_fields
from tests.inprocess import run_inprocess

SECURE = {"secagg.enabled": True, "dp.mode": "central-client-clip", "dp.noise-multiplier": 0.001,
          "dp.clipping-norm": 5.0, "dp.delta": 1e-3}


def test_secure_aggregation_with_central_dp_learns_is_accounted_and_resumes(tmp_path):
    first = run_inprocess(tmp_path, 5, {**SMALL_RC, **SECURE, "num-server-rounds": 2}, run_id=1)
    rows, summary = first.rows, first.summary
    assert first.output.count("secure aggregation: the sum of 5 masked updates unmasked") == 2
    assert "central DP: 5/5 updates clipped to 5, noise std 0.005 on their sum, / 5 sampled" in first.output
    assert all((r["train_sampled"], r["train_replied"], r["train_failed"]) == (5, 5, 0) for r in rows[1:])
    assert only_covered_train_fields(rows)
    assert rows[-1]["server_loss"] < rows[1]["server_loss"] < rows[0]["server_loss"]  # it learns through SecAgg+
    assert [r["dp_epsilon_central"] for r in rows[1:]] == pytest.approx(
        [gaussian_epsilon(0.001, n, 1e-3) for n in (1, 2)], rel=1e-6)
    assert any("SecAgg+" in line for line in summary["privacy_assumptions"])
    # The upload is SecAgg+'s masked integers (8 bytes per weight), four messages a round
    float32_bytes = 4 * sum(w.size for w in load_weights(latest_checkpoint(first.dir)))
    for row in rows[1:]:
        assert 1.9 < row["train_bytes_received"] / row["train_replied"] / float32_bytes < 2.3
    assert all(Path(c["file"]).exists() for c in summary["litert_check"].values())
    resumed = run_inprocess(tmp_path, 5, {**SMALL_RC, **SECURE, "num-server-rounds": 3, "resume-from": str(first.dir)},
                            run_id=2)
    after = resumed.rows
    assert [r["round"] for r in after] == [0, 1, 2, 3]
    assert after[-1]["dp_central_releases"] == 3
    assert after[-1]["dp_epsilon_central"] == pytest.approx(gaussian_epsilon(0.001, 3, 1e-3), rel=1e-6)
    assert after[-1]["server_loss"] < rows[-1]["server_loss"]
    assert resumed.output.count("secure aggregation: the sum of 5 masked updates unmasked") == 1
