"""Whether this device may work now. Checked before anything else, so a device that declines
costs itself almost nothing: no TensorFlow import, no text read, an immediate reply.

Real devices follow production keyboards' rules (Bonawitz et al. 2019, "Towards Federated
Learning at Scale"): work only on external power, with enough battery, and not on a metered
network. Each rule is a node-config key (`flower-supernode --node-config 'require-charging=false'`):

    require-charging = true   work only on external power. A device without a battery (a
                              Raspberry Pi, a desktop) always counts as powered.
    min-battery = 20          percent; below it the device declines, even while charging
    metered-network = false   set by the operator (or a network hook) when the link is metered
    train-on-metered = false  work on a metered network anyway

Simulated devices (no data-path; all on one machine, whose battery says nothing about them)
follow the run config's availability model instead (features/participation/config.py).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from features.participation.cost import NodeConfigError
from features.participation.config import Settings as SimConfig

POWER_SUPPLY = Path("/sys/class/power_supply")
SIM_START_HOUR = 20.0  # round 1 of a simulated day starts in the evening
NIGHT = 22.0  # nightly windows start around this hour, spread by a couple of hours
NIGHT_CHARGERS = 0.75  # the others charge at some other time of day (at work, in the car)


@dataclass(frozen=True)
class DeviceRules:
    require_charging: bool = True
    min_battery: int = 20
    metered_network: bool = False
    train_on_metered: bool = False

    @classmethod
    def from_node_config(cls, node_config: Mapping) -> DeviceRules:
        values = {}
        for f in fields(cls):
            key = f.name.replace("_", "-")
            if key not in node_config:
                continue
            value = node_config[key]
            expected = bool if f.type == "bool" else int
            if isinstance(value, bool) != (expected is bool) or not isinstance(value, expected):
                raise NodeConfigError(f"node-config key '{key}' = {value!r}: expected {f.type}")
            values[f.name] = value
        rules = cls(**values)
        if not 0 <= rules.min_battery <= 100:
            raise NodeConfigError(f"node-config key 'min-battery' = {rules.min_battery}: expected a percent in [0, 100]")
        return rules


@dataclass(frozen=True)
class PowerState:
    external_power: bool
    battery_percent: float | None  # None: the device has no battery


def read_power_state(root: Path = POWER_SUPPLY) -> PowerState:
    """From the kernel's power-supply class. No supply listed (a Pi, a VM, a desktop): mains."""
    external, batteries, charging = False, [], False
    for supply in sorted(root.glob("*")) if root.is_dir() else []:
        kind = _read(supply / "type")
        if kind == "Battery":
            capacity = _read(supply / "capacity")
            if capacity.isdigit():
                batteries.append(float(capacity))
            # "Not charging": plugged in, held below a charge threshold; still external power.
            charging |= _read(supply / "status") in ("Charging", "Full", "Not charging")
        elif _read(supply / "online") == "1":  # Mains, USB, Wireless chargers
            external = True
    if not batteries:
        return PowerState(external_power=True, battery_percent=None)
    return PowerState(external_power=external or charging, battery_percent=min(batteries))


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def refusal(rules: DeviceRules, power: PowerState) -> str | None:
    """Why the device declines, in words the server may log (no battery level, no location)."""
    if rules.metered_network and not rules.train_on_metered:
        return "not eligible: metered network"
    if rules.require_charging and not power.external_power:
        return "not eligible: not charging"
    if power.battery_percent is not None and power.battery_percent < rules.min_battery:
        return "not eligible: battery low"
    return None


# --- simulated devices ---------------------------------------------------------------------------
# The simulated world comes from the run's seed, so a run can be reproduced. It is not a privacy
# mechanism: the server's sampling (secret) decides who is asked; availability only makes fewer
# of them reply, and the ledger accounts every device asked.

def nightly_window_start(seed: int, partition_id: int) -> float:
    """The hour a simulated device starts charging on Wi-Fi: for most, around NIGHT (sd 2 h);
    for the rest, any hour of the day."""
    rng = random.Random(f"window:{seed}:{partition_id}")
    return (NIGHT + rng.gauss(0.0, 2.0)) % 24 if rng.random() < NIGHT_CHARGERS else rng.uniform(0.0, 24.0)


def simulated_clock(sim: SimConfig, server_round: int) -> float:
    return (SIM_START_HOUR + (server_round - 1) * sim.hours_per_round) % 24


def simulated_eligible(sim: SimConfig, seed: int, partition_id: int, server_round: int) -> bool:
    """Each device is eligible for one window of eligible-share x 24 hours a day, so over a whole
    day the share of eligible devices is exactly eligible-share; at night it is higher."""
    if sim.availability == "always":
        return True
    since_start = (simulated_clock(sim, server_round) - nightly_window_start(seed, partition_id)) % 24
    return since_start < 24 * sim.eligible_share


def is_straggler(sim: SimConfig, seed: int, partition_id: int) -> bool:
    return sim.stragglers > 0 and random.Random(f"straggler:{seed}:{partition_id}").random() < sim.stragglers


def is_simulated(node_config: Mapping) -> bool:
    return not node_config.get("data-path") and "partition-id" in node_config


def check(sim: SimConfig, seed: int, node_config: Mapping, server_round: int) -> str | None:
    """None if the device may work on this round, else the reason it declines."""
    if is_simulated(node_config):
        if simulated_eligible(sim, seed, int(node_config["partition-id"]), server_round):
            return None
        return "not eligible: simulated device not charging on Wi-Fi at this hour"
    return refusal(DeviceRules.from_node_config(node_config), read_power_state())


def eligibility_mod(msg, context, call_next):
    """Decline at once, before TensorFlow or the text, if this device may not work now. Under
    SecAgg+ a round is four messages: the device decides at the first one (features/secagg/client.py)."""
    import logging

    from flwr.app import Error, Message

    from client_app.messages import DEVICE_CONFIG_INVALID, config_of, global_round
    from task.config import NOT_ELIGIBLE

    cfg = config_of(context)
    if cfg.secure_aggregation and msg.metadata.message_type.startswith("train"):
        from features.secagg.client import is_setup

        if not is_setup(msg):
            return call_next(msg, context)
    log = logging.getLogger("flwr")
    try:
        reason = check(cfg.feature("participation"), cfg.seed, context.node_config, global_round(msg))
    except NodeConfigError as e:
        log.error("node %s: %s", context.node_id, e)
        return Message(Error(code=DEVICE_CONFIG_INVALID, reason="node-config value invalid"), reply_to=msg)  # key: log
    if reason is None:
        return call_next(msg, context)
    log.info("node %s: %s", context.node_id, reason)
    return Message(Error(code=NOT_ELIGIBLE, reason=reason), reply_to=msg)


def straggler_mod(msg, context, call_next):
    """A simulated straggler (participation.stragglers) replies participation.straggler-seconds late."""
    import logging
    import time

    from client_app.messages import config_of

    reply = call_next(msg, context)
    cfg, node = config_of(context), context.node_config
    if is_simulated(node) and is_straggler(cfg.feature("participation"), cfg.seed, int(node["partition-id"])):
        logging.getLogger("flwr").info("node %s: simulated straggler, replying %g s late", context.node_id,
                                       cfg.feature("participation").straggler_seconds)
        time.sleep(cfg.feature("participation").straggler_seconds)
    return reply
