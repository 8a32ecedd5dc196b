"""Participation in a whole run (in this process, tests/inprocess.py): 10 simulated devices over a
night (20:00 to 04:00), half of the day charging on Wi-Fi, two of them stragglers; each round asks
6 and closes at 4 updates (features/participation/eligibility.py, features/participation/round_goal.py). In this process
every reply is in as soon as a round's messages are sent, so which replies arrive after the goal
does not depend on the machine's speed; the counts below hold on any machine."""

from tests.helpers import SMALL_RC
from tests.inprocess import run_inprocess


def test_a_population_with_availability_and_stragglers_closes_rounds_at_their_goal(tmp_path):
    run = run_inprocess(tmp_path, 10, {**SMALL_RC, "local-epochs": 3, "data.sentences-per-device": 120,
                                       "server-eval-devices": 4, "num-server-rounds": 6, "fraction-train": 0.4,
                                       "participation.selection-factor": 1.5, "participation.availability": "nightly",
                                       "participation.eligible-share": 0.5, "participation.hours-per-round": 2.0,
                                       "participation.stragglers": 0.2, "participation.straggler-seconds": 0.5})
    rows = run.rows
    trained = rows[1:]
    for r in trained:
        assert r["train_sampled"] == 6 and r["train_replied"] <= 4 and r["train_failed"] == 0, r
        assert r["train_replied"] + r["train_late"] + r["train_busy"] + r["train_not_eligible"] == 6, r
    # The evening's first round finds most devices unplugged; by night the rounds fill up, and a
    # round that reached its goal discarded the updates beyond it.
    assert trained[0]["train_not_eligible"] > trained[-1]["train_not_eligible"]
    assert any(r["train_replied"] == 4 and r["train_late"] >= 1 for r in trained), trained
    assert rows[-1]["server_loss"] < rows[0]["server_loss"] - 0.3  # and the model still learned
    # What it cost the devices, per round and over the run
    assert all(r["train_energy_joules"] > 0 and r["train_cpu_seconds"] > 0 and r["train_peak_memory_mb"] > 0
               for r in trained if r["train_replied"])
    cost = run.summary["device_cost"]
    assert cost["devices_replied"] <= cost["devices_asked"] <= 10
    assert cost["mb_down_per_message"] > 0.1 and cost["joules_per_participant"] > 0 and cost["mb_per_device"] > 0
    assert "Device cost: a device asked to take part moved" in run.output
    assert (run.dir / "participation.png").stat().st_size > 0
    assert "simulated straggler, replying 0.5 s late" in run.output
