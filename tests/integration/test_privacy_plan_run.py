"""dp.target-epsilon in a whole run (in this process, tests/inprocess.py): the ServerApp plans the
noise once the devices are connected, prints the planned epsilon, and the ledger reports that
figure at the end: within 1% of the target and not above it. A resumed run keeps the noise its
run started with."""

import re

import pytest

from tests.helpers import SMALL_RC
from tests.inprocess import run_inprocess

TARGET = 40.0
RC = {**SMALL_RC, "num-server-rounds": 2, "local-epochs": 1, "dp.mode": "central-client-clip", "dp.clipping-norm": 5.0,
      "dp.delta": 1e-3, "dp.target-epsilon": TARGET, "fraction-train": 0.5, "min-train-nodes": 2,
      "min-evaluate-nodes": 2, "server-eval-devices": 0}


def model_epsilon(row: dict) -> float:
    return row.get("dp_epsilon_central_amplified", row.get("dp_epsilon_central"))


def test_the_planned_epsilon_is_what_the_ledger_reports_and_meets_the_target(tmp_path):
    run = run_inprocess(tmp_path / "a", 4, RC)  # 2 of 4 devices per round: the amplified figure
    final = model_epsilon(run.rows[-1])
    assert 0.99 * TARGET <= final <= TARGET
    printed = re.search(r"planned user-level ε = ([\d.]+) \(central-client-clip, replace-one,", run.output)
    assert printed, run.output[-3000:]
    assert float(printed.group(1)) == pytest.approx(final, rel=1e-3)  # printed to 4 significant digits
    z = run.rows[-1]["dp_noise_multiplier"]
    assert z != 1.0 and f"noise multiplier {z:.4g} planned for 2 of 4 devices per round over 2 rounds" in run.output
    assert "no privacy budget: dp.max-epsilon = 0" in run.output

    # Resumed with one more round: the noise the run started with, not a new plan for 3 rounds.
    after = run_inprocess(tmp_path / "b", 4, {**RC, "num-server-rounds": 3, "resume-from": str(run.dir)}, run_id=2)
    assert after.rows[-1]["dp_noise_multiplier"] == z
    assert f"noise multiplier {z:.4g} kept, the one its run started with" in after.output
    assert model_epsilon(after.rows[-1]) > final
    # ... and the plan it prints is the resumed ledger's, over the rounds left (outside review F2)
    printed = re.search(r"planned user-level ε = ([\d.]+) \(central-client-clip", after.output)
    assert float(printed.group(1)) == pytest.approx(model_epsilon(after.rows[-1]), rel=1e-3)
