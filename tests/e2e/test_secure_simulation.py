"""Secure aggregation with central DP, end to end: the real `flwr run .` on 5 simulated devices,
SecAgg+ in every training round, then a resumed run that continues the model and the ledger.

The noise is tiny on purpose: this checks that the protocol, the noise and the accounting run and
that the model learns through them, not what accuracy a useful epsilon costs (README: "Privacy").
"""

import json
from pathlib import Path

import pytest

from scripts.local_flower import run_app
from task.run.checkpoint import latest_checkpoint, load_weights
from tests.e2e.test_dp_simulation import TRAIN_COUNTS, gaussian_epsilon
from tests.helpers import SMALL_RUN

SMALL = f"{SMALL_RUN} local-epochs=2 learning-rate=0.01 data.sentences-per-device=100 server-eval-devices=3"
SECURE = ('secagg.enabled=true dp.mode="central-client-clip" dp.noise-multiplier=0.001 dp.clipping-norm=5.0 '
          "dp.delta=1e-3")


def read(tmp_path, run_id):
    run_dir = tmp_path / f"run-{run_id}"
    return (json.loads((run_dir / "metrics.json").read_text()), json.loads((run_dir / "summary.json").read_text()))


def test_secure_aggregation_with_central_dp_learns_is_accounted_and_resumes(flower, tmp_path):
    first = run_app(flower, num_supernodes=5, echo=False,
                    run_config=f'num-server-rounds=2 {SMALL} {SECURE} out-dir="{tmp_path}"')
    assert first.status == "finished:completed", first.output[-3000:]
    rows, summary = read(tmp_path, first.run_id)
    assert first.output.count("secure aggregation: the sum of 5 masked updates unmasked") == 2
    assert first.output.count("Secure aggregation completed.") == 2
    assert "central DP: 5/5 updates clipped to 5, noise std 0.005 on their sum, / 5 sampled" in first.output
    assert all((r["train_sampled"], r["train_replied"], r["train_failed"]) == (5, 5, 0) for r in rows[1:])
    assert all(k in TRAIN_COUNTS for r in rows for k in r if k.startswith("train_"))
    assert rows[-1]["server_loss"] < rows[1]["server_loss"] < rows[0]["server_loss"]  # it learns through SecAgg+
    assert [r["dp_epsilon_central"] for r in rows[1:]] == pytest.approx(
        [gaussian_epsilon(0.001, n, 1e-3) for n in (1, 2)], rel=1e-6)
    assert any("SecAgg+" in line for line in summary["privacy_assumptions"])
    # The upload is SecAgg+'s masked integers (8 bytes per weight), four messages a round
    float32_bytes = 4 * sum(w.size for w in load_weights(latest_checkpoint(tmp_path / f"run-{first.run_id}")))
    for row in rows[1:]:
        assert 1.9 < row["train_bytes_received"] / row["train_replied"] / float32_bytes < 2.3
    assert all(Path(c["file"]).exists() for c in summary["litert_check"].values())

    resumed = run_app(flower, num_supernodes=5, echo=False, run_config=(
        f'num-server-rounds=3 {SMALL} {SECURE} out-dir="{tmp_path}" resume-from="{tmp_path / f"run-{first.run_id}"}"'))
    assert resumed.status == "finished:completed", resumed.output[-3000:]
    after, _ = read(tmp_path, resumed.run_id)
    assert [r["round"] for r in after] == [0, 1, 2, 3]
    assert after[-1]["dp_central_releases"] == 3
    assert after[-1]["dp_epsilon_central"] == pytest.approx(gaussian_epsilon(0.001, 3, 1e-3), rel=1e-6)
    assert after[-1]["server_loss"] < rows[-1]["server_loss"]
    assert resumed.output.count("secure aggregation: the sum of 5 masked updates unmasked") == 1
