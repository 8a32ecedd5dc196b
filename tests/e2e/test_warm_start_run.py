"""Warm start end to end: scripts/tools/pretrain.py on built-in users outside the federation, then the
real `flwr run .` with `warm-start.init-from`: the run's round 0 is the pretrained model."""

import json
import math

from scripts.local_flower import run_app
from scripts.tools.pretrain import pretrain
from tests.helpers import SMALL_RUN

SMALL = f"{SMALL_RUN} local-epochs=1 learning-rate=0.01 data.sentences-per-device=100 server-eval-devices=3"


def test_a_run_started_from_a_pretrained_model_starts_where_pretraining_ended(flower, tmp_path):
    out = tmp_path / "pretrained.npz"
    info = pretrain(None, 60, out, epochs=3, max_sentences=0, overrides=SMALL_RUN)
    outcome = run_app(flower, num_supernodes=3, echo=False,
                      run_config=f'num-server-rounds=1 {SMALL} warm-start.init-from="{out}" out-dir="{tmp_path}"')
    assert outcome.status == "finished:completed", outcome.output[-3000:]
    assert "Starting from the model in" in outcome.output and "pretrained on 60 built-in" in outcome.output
    rows = json.loads((tmp_path / f"run-{outcome.run_id}" / "metrics.json").read_text())
    # An untrained model's loss is about ln(2000) = 7.6 (tests/e2e/test_secure_simulation.py starts
    # there); the pretrained one scores on the server's unseen users about as on its held-out proxy.
    assert rows[0]["server_loss"] < math.log(2000) - 2
    assert abs(rows[0]["server_loss"] - info["held_out_loss"]) < 1.0
    assert rows[0]["server_top3"] > 0.2
