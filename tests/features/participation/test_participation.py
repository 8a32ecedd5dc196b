"""Who takes part in a round: eligibility on the device, the simulated population's availability,
over-selection that closes a round at its goal, and the privacy figures under over-selection."""

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from features.participation import eligibility
from features.participation.eligibility import DeviceRules, NodeConfigError, PowerState, read_power_state, refusal
from features.participation.round_goal import send_until_goal
from server_app.observed_grid import ObservedGrid
from server_app.privacy import CentralDP
from features.participation.config import Settings as SimConfig
from task.config import NOT_ELIGIBLE, ROUND_GOAL, Config, ConfigError, DPConfig
from task.privacy import DP_WEIGHT
from task.privacy.ledger import PrivacyLedger
from tests.helpers import analytic_gaussian_epsilon, message

ROOT = Path(__file__).resolve().parents[2]


# --- on the device --------------------------------------------------------------------------------
DECLINE = """
import json, sys, time
from flwr.app import ArrayRecord, ConfigRecord, RecordDict
import numpy as np
from client_app.app import app
from task.config import Config
from tests.helpers import context, message
node = json.loads(sys.argv[1])
cfg = Config.from_run_config(json.loads(sys.argv[2]))
content = RecordDict({"arrays": ArrayRecord([np.zeros(3, np.float32)]), "config": ConfigRecord({"server-round": 1})})
reply = app(message(content, sys.argv[3]), context(cfg, node))
print(json.dumps({"code": reply.error.code if reply.has_error() else None,
                  "reason": reply.error.reason if reply.has_error() else None,
                  "tensorflow": "tensorflow" in sys.modules}))
"""


def decline(node_config: dict, run_config: dict | None = None, message_type: str = "train") -> dict:
    """The real ClientApp in a fresh interpreter, so what it imports is visible."""
    run_config = run_config or Config().with_run_config({"participation.availability": "always"}).to_run_config()
    out = subprocess.run([sys.executable, "-c", DECLINE, json.dumps(node_config), json.dumps(run_config), message_type],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "log": out.stdout + out.stderr}


@pytest.mark.parametrize("message_type", ["train", "evaluate"])
def test_a_device_that_may_not_work_declines_without_importing_tensorflow_or_reading_its_text(tmp_path, message_type):
    missing = str(tmp_path / "never-read")  # reading it would fail with "data-path does not exist"
    reply = decline({"data-path": missing, "metered-network": True}, message_type=message_type)
    assert {k: v for k, v in reply.items() if k != "log"} == {"code": NOT_ELIGIBLE, "reason": "not eligible: metered network",
                                                              "tensorflow": False}
    # A simulated device outside its availability window declines the same way.
    sim = {**Config().with_run_config({"participation.availability": "always"}).to_run_config(), "participation.availability": "nightly", "participation.eligible-share": 0.05}
    pid = next(p for p in range(100) if not eligibility.simulated_eligible(
        SimConfig(availability="nightly", eligible_share=0.05), 0, p, 1))
    reply = decline({"partition-id": pid, "num-partitions": 100}, sim, message_type)
    assert reply["code"] == NOT_ELIGIBLE and not reply["tensorflow"], reply


def test_a_wrong_node_config_value_is_refused_naming_the_key():
    """Named in the device's own log; the reply carries the listed category only (task/releases.py:
    the value is its operator's)."""
    reply = decline({"data-path": "/nonexistent", "min-battery": "high"})
    assert reply["code"] == 102 and reply["reason"] == "node-config value invalid" and not reply["tensorflow"]
    assert "'min-battery'" in reply["log"]
    with pytest.raises(NodeConfigError, match="min-battery"):
        DeviceRules.from_node_config({"min-battery": 150})
    with pytest.raises(NodeConfigError, match="require-charging"):
        DeviceRules.from_node_config({"require-charging": "yes"})


def supply(root: Path, name: str, **files: str) -> None:
    (root / name).mkdir(parents=True)
    for key, value in files.items():
        (root / name / key).write_text(value + "\n")


def test_power_state_is_read_from_the_kernels_power_supply_class(tmp_path):
    assert read_power_state(tmp_path / "absent") == PowerState(True, None)  # a Pi or a VM: mains, no battery
    laptop = tmp_path / "laptop"
    supply(laptop, "AC", type="Mains", online="0")
    supply(laptop, "BAT0", type="Battery", status="Discharging", capacity="80")
    assert read_power_state(laptop) == PowerState(False, 80.0)
    (laptop / "AC" / "online").write_text("1\n")
    assert read_power_state(laptop).external_power
    phone = tmp_path / "phone"  # no mains entry: the battery's own status says it is charging
    supply(phone, "battery", type="Battery", status="Charging", capacity="15")
    assert read_power_state(phone) == PowerState(True, 15.0)


@pytest.mark.parametrize("rules, power, reason", [
    (DeviceRules(), PowerState(True, None), None),
    (DeviceRules(), PowerState(False, 90.0), "not eligible: not charging"),
    (DeviceRules(require_charging=False), PowerState(False, 90.0), None),
    (DeviceRules(), PowerState(True, 15.0), "not eligible: battery low"),
    (DeviceRules(min_battery=10), PowerState(True, 15.0), None),
    (DeviceRules(metered_network=True), PowerState(True, None), "not eligible: metered network"),
    (DeviceRules(metered_network=True, train_on_metered=True), PowerState(True, None), None),
])
def test_each_rule_can_decline_a_round(rules, power, reason):
    assert refusal(rules, power) == reason


# --- the simulated population ---------------------------------------------------------------------
def eligible_share(sim: SimConfig, devices: int, server_round: int) -> float:
    return sum(eligibility.simulated_eligible(sim, 0, p, server_round) for p in range(devices)) / devices


@pytest.mark.parametrize("share", [0.2, 0.5])
def test_the_availability_model_gives_the_configured_share_over_a_day_with_more_devices_at_night(share):
    sim = SimConfig(availability="nightly", eligible_share=share, hours_per_round=1.0)
    by_hour = {eligibility.simulated_clock(sim, r): eligible_share(sim, 2000, r) for r in range(1, 25)}
    assert np.mean(list(by_hour.values())) == pytest.approx(share, abs=0.01)
    assert by_hour[3.0] > 1.5 * share and by_hour[15.0] < 0.6 * share  # charging at night, busy by day
    assert eligible_share(SimConfig(), 100, 7) == 1.0  # "always"


def test_the_configured_share_of_simulated_devices_are_stragglers():
    sim = SimConfig(stragglers=0.1)
    assert sum(eligibility.is_straggler(sim, 0, p) for p in range(5000)) / 5000 == pytest.approx(0.1, abs=0.015)
    assert not any(eligibility.is_straggler(SimConfig(), 0, p) for p in range(100))


@pytest.mark.parametrize("key, value", [("participation.selection-factor", 0.5), ("participation.availability", "sometimes"),
                                        ("participation.eligible-share", 0.0), ("participation.stragglers", 1.5)])
def test_bad_participation_settings_are_refused_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=key):
        Config.from_run_config({key: value})


# --- closing a round at its goal ------------------------------------------------------------------
class TimedGrid:
    """Replies become available `delay` seconds after the push; None never replies."""

    def __init__(self, reply):
        self.reply, self.pending = reply, {}

    def push_messages(self, messages):
        now = time.monotonic()
        for m in messages:
            delay, reply = self.reply(m)
            if delay is not None:
                self.pending[m.metadata.message_id] = (now + delay, reply)
        return [m.metadata.message_id for m in messages]

    def pull_messages(self, ids):
        now = time.monotonic()
        ready = [i for i in ids if i in self.pending and self.pending[i][0] <= now]
        return [self.pending.pop(i)[1] for i in ready]

    def send_and_receive(self, messages, *, timeout=None):  # as Flower's Grid: wait for every reply
        waiting, replies, deadline = set(self.push_messages(messages)), [], time.monotonic() + timeout
        while waiting and time.monotonic() < deadline:
            for reply in self.pull_messages(sorted(waiting)):
                waiting.discard(reply.metadata.reply_to_message_id)
                replies.append(reply)
            time.sleep(0.05)
        return replies


def asked(nodes, goal):
    return [message(RecordDict({"config": ConfigRecord({ROUND_GOAL: goal})}), "train", src=0, dst=n) for n in nodes]


def update(m, value=1.0):
    return Message(RecordDict({"arrays": ArrayRecord([np.full(2, value, np.float32)]),
                               "metrics": MetricRecord({"loss": 1.0})}), reply_to=m)


def observed(grid) -> ObservedGrid:
    """As server_app/app.py composes it when participation.selection-factor > 1."""
    return ObservedGrid(grid, send_until_goal)


def test_a_round_closes_at_its_goal_and_counts_late_and_declining_devices_apart():
    def reply(m):
        node = m.metadata.dst_node_id
        if node == 1:
            return 0.0, Message(Error(code=NOT_ELIGIBLE, reason="not eligible: not charging"), reply_to=m)
        if node == 2:
            return 30.0, update(m)  # a straggler
        return 0.1 * node, update(m)

    grid = observed(TimedGrid(reply))
    replies = grid.send_and_receive(asked([1, 2, 3, 4, 5, 6], goal=3), timeout=60)
    counts = grid.take_counts()["train"]
    updates = sorted(r.metadata.reply_to_message_id for r in replies if not r.has_error())
    assert updates == ["m0-3", "m0-4", "m0-5"]  # the first three updates; node 6's came too late
    assert (counts.sampled, counts.replied, counts.not_eligible, counts.late, counts.failed) == (6, 3, 1, 2, 0)
    assert counts.failures == []


def test_a_round_that_misses_its_goal_ends_at_the_deadline_with_the_silent_devices_failed():
    grid = observed(TimedGrid(lambda m: (0.0, update(m)) if m.metadata.dst_node_id < 3 else (None, None)))
    grid.send_and_receive(asked([1, 2, 3, 4], goal=3), timeout=1.0)
    counts = grid.take_counts()["train"]
    assert (counts.replied, counts.late, counts.failed) == (2, 0, 2)
    assert counts.failures == ["node 3: no reply within round-timeout (1 s)",
                               "node 4: no reply within round-timeout (1 s)"]


def test_without_over_selection_every_reply_is_awaited():
    grid = TimedGrid(lambda m: (0.0, update(m)))
    kept, late, reached = send_until_goal(grid, asked([1, 2], goal=2), goal=2, timeout=5)
    assert len(kept) == 2 and not late and reached


# --- privacy under over-selection -----------------------------------------------------------------
def test_one_device_can_displace_another_so_the_sum_moves_by_twice_the_clipping_norm():
    """The mechanism, not its accounting: with u arriving first, the kept sum loses v and gains u.
    This is why the central figure counts each multiplier at half under over-selection."""
    clip = 1.0
    sums = []
    for with_u in (False, True):
        nodes = ([9] if with_u else []) + [1, 2, 3]
        values = {9: -clip, 1: 0.0, 2: 0.0, 3: clip}  # v = node 3, u = node 9, opposite directions

        def reply(m, values=values):
            node = m.metadata.dst_node_id
            return (0.0 if node == 9 else 0.2 * node), update(m, values[node] / np.sqrt(2))  # norm `clip`

        kept, _, _ = send_until_goal(TimedGrid(reply), asked(nodes, goal=3), goal=3, timeout=10)
        sums.append(sum(r.content["arrays"].to_numpy_ndarrays()[0] for r in kept))
    assert np.linalg.norm(sums[1] - sums[0]) == pytest.approx(2 * clip, rel=1e-5)


def test_the_ledger_charges_over_selection_at_twice_the_sensitivity():
    dp = DPConfig(mode="central-client-clip", noise_multiplier=1.0)
    plain = PrivacyLedger(dp, population=100, sampled=10)
    over = PrivacyLedger(dp, population=100, sampled=10, selected=15)
    for ledger in (plain, over):
        ledger.record_central([1.0])
    # Flower's notes: 4.73 for one release at z = 1, delta = 1e-5. Under over-selection the
    # release is a Gaussian mechanism of sensitivity 2C and noise C: its exact epsilon (Balle &
    # Wang 2018) is about 10, far above 4.73; the ledger's RDP figure must bound it.
    assert plain.central_epsilon() == pytest.approx(4.73, abs=0.01)
    exact = analytic_gaussian_epsilon(0.5, 1e-5)
    assert exact > 9 and over.central_epsilon() >= exact
    # The amplified figure's sample is everyone asked, 15 of 100, not the 10 kept.
    fewer = PrivacyLedger(dp, population=100, sampled=15)
    fewer.record_central([1.0])
    assert over.central_amplified_epsilon() == pytest.approx(fewer.central_amplified_epsilon())
    assert any("over-selection" in line for line in over.assumptions(12))
    again = PrivacyLedger.from_state(dp, over.state_dict())
    assert (again.selected, again.central_epsilon()) == (15, over.central_epsilon())


class ZeroNoise:
    def normal(self, loc, scale, size=None):
        return np.zeros(size) if size is not None else 0.0


def test_central_dp_asks_every_selected_device_and_divides_by_the_goal():
    cfg = Config(dp=DPConfig(mode="central-client-clip", clipping_norm=10.0)).with_run_config(
        {"participation.selection-factor": 1.5})
    ledger = PrivacyLedger(cfg.dp, population=20, sampled=2, selected=3)
    strategy = CentralDP(FedAvg(weighted_by_key=DP_WEIGHT), cfg, ledger, rng=ZeroNoise())
    strategy.inner.configure_train = lambda *a: ["m1", "m2", "m3"]  # three devices asked
    strategy.configure_train(1, ArrayRecord([np.zeros(2, np.float32)]), ConfigRecord(), None)
    replies = [message(RecordDict({"arrays": ArrayRecord([np.full(2, v, np.float32)]),
                                   "metrics": MetricRecord({DP_WEIGHT: 1})}), reply=True, src=i)
               for i, v in enumerate((1.0, 3.0), start=1)]
    arrays, _ = strategy.aggregate_train(1, replies)
    assert np.allclose(arrays.to_numpy_ndarrays()[0], 2.0)  # (1 + 3) / 2 kept, not / 3 asked
    strategy.inner.configure_train = lambda *a: ["m1", "m2"]
    with pytest.raises(RuntimeError, match="calibrated for 3"):
        strategy.configure_train(1, ArrayRecord([np.zeros(2, np.float32)]), ConfigRecord(), None)


def test_a_device_that_declined_spent_no_local_or_sample_level_privacy():
    dp = DPConfig(mode="local", sgd=True)
    ledger = PrivacyLedger(dp, population=10, sampled=2, selected=3)
    grid = observed(TimedGrid(lambda m: (0.0, Message(Error(code=NOT_ELIGIBLE, reason="not eligible: not charging"),
                                                          reply_to=m) if m.metadata.dst_node_id == 3 else update(m))))
    for _ in range(2):
        ledger.record_asked_to_train([1, 2, 3])
        grid.send_and_receive(asked([1, 2, 3], goal=2), timeout=10)
        ledger.record_declined(grid.take_counts()["train"].declined)
    assert ledger.participations == {"1": 2, "2": 2, "3": 0}
    assert ledger.local_epsilon() == ledger.local_epsilon(releases=2)  # the worst device: two releases


def test_a_device_still_busy_after_being_late_is_not_sent_another_message_until_it_is_done():
    def reply(m):
        return (0.8 if m.metadata.dst_node_id == 2 else 0.0), update(m)  # node 2 is slow

    fake = TimedGrid(reply)
    grid = observed(fake)
    grid.send_and_receive(asked([1, 2, 3], goal=2), timeout=10)  # closes without node 2
    assert grid.take_counts()["train"].late == 1
    replies = grid.send_and_receive(asked([1, 2, 3], goal=2), timeout=10)  # node 2 still working
    counts = grid.take_counts()["train"]
    assert (counts.sampled, counts.busy, counts.replied, counts.late) == (3, 1, 2, 0)
    assert counts.declined == [2] and all(r.metadata.reply_to_message_id != "m0-2" for r in replies)
    time.sleep(1.0)  # node 2's late reply arrives; the grid drains it and asks node 2 again
    grid.send_and_receive(asked([2], goal=1), timeout=10)
    counts = grid.take_counts()["train"]
    assert (counts.busy, counts.replied) == (0, 1) and not fake.pending


COST = {"cpu-seconds", "peak-memory-mb", "energy-joules", "energy-measured"}


@pytest.mark.parametrize("message_type", ["train", "evaluate"])
def test_a_reply_carries_what_its_message_cost_the_device_only_while_participation_is_on(message_type):
    from client_app.app import app
    from task.model import build_model
    from tests.helpers import SMALL_MODEL, context

    cfg = Config(sentences_per_device=40, model=SMALL_MODEL)
    content = RecordDict({"arrays": ArrayRecord(build_model(SMALL_MODEL).get_weights()),
                          "config": ConfigRecord({"server-round": 1})})
    node = {"partition-id": 0, "num-partitions": 5}
    sent = {on: dict(app(message(content, message_type), context(cfg.with_run_config({"participation.availability": "always"}) if on else cfg, node))
                     .content["metrics"]) for on in (True, False)}
    assert COST <= set(sent[True]) and not COST & set(sent[False])
    assert sent[True]["cpu-seconds"] > 0 and sent[True]["energy-joules"] > 0  # a device that trained or scored


def test_under_dp_a_reply_holds_back_what_its_message_cost():
    """The cost follows the size of the device's text, which no noise covers."""
    from tests.unit.test_client_app import assert_no_timing_is_sent

    assert_no_timing_is_sent(DPConfig(mode="central-client-clip"), participation=True)


def test_the_run_record_keeps_participation_and_cost_per_round_and_over_the_run(tmp_path):
    from flwr.app import ArrayRecord as Arrays

    from server_app.console import cost_line
    from server_app.observed_grid import PhaseCounts
    from server_app.run_record import RunRecord
    from task.data.vocab import default_vocabulary

    cfg = Config(out_dir=str(tmp_path))
    record = RunRecord(tmp_path / "run-1", cfg, default_vocabulary(200))
    cost = {"cpu-seconds": 2.0, "energy-joules": 3.0, "energy-measured": 0, "peak-memory-mb": 500.0,
            "compute-seconds": 2.5}
    train = PhaseCounts(sampled=4, replied=2, not_eligible=1, late=1, asked=[1, 2, 3, 4], declined=[3],
                        bytes_sent=4_000_000, bytes_received=2_000_000, metrics={1: cost, 2: {**cost, "peak-memory-mb": 700.0}})
    record.end_round(1, Arrays([np.zeros(2, np.float32)]), {"train": train}, None)
    row = record.rows[-1]
    assert (row["train_replied"], row["train_late"], row["train_not_eligible"], row["train_busy"]) == (2, 1, 1, 0)
    assert (row["train_energy_joules"], row["train_cpu_seconds"], row["train_peak_memory_mb"]) == (6.0, 4.0, 700.0)
    assert (tmp_path / "run-1" / "participation.png").read_bytes()[:4] == b"\x89PNG"
    record.save_final(_TinyModel())
    summary = record.finish({"int8": {"file": str(tmp_path / "m.tflite"), "top3_agreement": 1.0, "positions": 10,
                                      "bar": 0.98, "fit_to_ship": True}})
    cost = summary["device_cost"]
    # 6 MB moved over 4 devices asked; 1 MB per message down, 1 MB per update up; 3 J per reply
    assert cost["mb_per_device"] == pytest.approx(1.5) and cost["mb_down_per_message"] == pytest.approx(1.0)
    assert cost["mb_up_per_reply"] == pytest.approx(1.0) and cost["joules_per_participant"] == pytest.approx(3.0)
    assert "estimated from CPU time" in cost_line(cost)


class _TinyModel:
    def save(self, path):
        Path(path).write_bytes(b"model")


def test_device_rules_reach_the_supernodes_node_config_as_the_device_reads_them(tmp_path):
    from flwr.common.config import parse_config_args

    from features.participation.eligibility import DeviceRules
    from scripts.deployment import deploy

    rules = deploy.parse_rules(["require-charging=false", "min-battery=30", "watts-per-busy-core=2.5"])
    command = deploy.supernode_command("127.0.0.1:9095", tmp_path, None, None, insecure=True, rules=rules)
    node_config = parse_config_args([command[command.index("--node-config") + 1]])  # as flower-supernode does
    assert node_config == {"data-path": str(tmp_path.resolve()), "require-charging": False, "min-battery": 30,
                           "watts-per-busy-core": 2.5}
    assert DeviceRules.from_node_config(node_config) == DeviceRules(require_charging=False, min_battery=30)
    for bad, named in ((["min-batery=30"], "min-batery"), (["min-battery=high"], "min-battery"),
                       (["watts-per-busy-core=-1"], "watts-per-busy-core")):
        with pytest.raises(ValueError, match=named):
            deploy.parse_rules(bad)
