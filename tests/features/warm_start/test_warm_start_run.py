"""Warm start in a whole run: scripts/tools/pretrain.py on built-in users outside the federation,
then a run with `warm-start.init-from` (in this process, tests/inprocess.py): its round 0 is the
pretrained model."""

import math

from scripts.tools.pretrain import pretrain
from tests.helpers import SMALL_RC, SMALL_RUN
from tests.inprocess import run_inprocess


def test_a_run_started_from_a_pretrained_model_starts_where_pretraining_ended(tmp_path):
    out = tmp_path / "pretrained.npz"
    info = pretrain(None, 60, out, epochs=3, max_sentences=0, overrides=SMALL_RUN)
    run = run_inprocess(tmp_path, 3, {**SMALL_RC, "local-epochs": 1, "num-server-rounds": 1,
                                      "warm-start.init-from": str(out)})
    assert "Starting from the model in" in run.output and "pretrained on 60 built-in" in run.output
    # An untrained model's loss is about ln(2000) = 7.6; the pretrained one scores on the server's
    # unseen users about as on its held-out proxy.
    assert run.rows[0]["server_loss"] < math.log(2000) - 2
    assert abs(run.rows[0]["server_loss"] - info["held_out_loss"]) < 1.0
    assert run.rows[0]["server_top3"] > 0.2
