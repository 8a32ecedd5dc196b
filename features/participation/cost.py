"""What one message cost the device: CPU time, peak memory and energy, added to its reply by
`cost_mod` (in the ClientApp's mods while participation is on).

Energy is measured where the OS exposes it (Linux powercap / Intel RAPL, usually readable only by
root since CVE-2020-8694) and is then the whole CPU package's energy while the handler ran, other
processes included. Elsewhere (phones, Raspberry Pis, most servers) it is an estimate: CPU seconds
x the node-config key `watts-per-busy-core` (default 1.5 W, a phone's big core or a little more
than a Pi 4 core at full load). `energy-measured` says which one a reply holds. Radio energy for
the bytes sent is not included; the server counts the bytes themselves.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Mapping
from pathlib import Path

from flwr.app import Context, Message


class NodeConfigError(ValueError):
    """A node-config value the ClientApp reads is of the wrong type or out of range."""


POWERCAP = Path("/sys/class/powercap")
DEFAULT_WATTS_PER_BUSY_CORE = 1.5
COST_KEYS = ("cpu-seconds", "peak-memory-mb", "energy-joules", "energy-measured")


def watts_per_busy_core(node_config: Mapping) -> float:
    value = node_config.get("watts-per-busy-core", DEFAULT_WATTS_PER_BUSY_CORE)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1000:
        raise NodeConfigError(f"node-config key 'watts-per-busy-core' = {value!r}: expected a number of watts in (0, 1000)")
    return float(value)


def _package_energy_uj() -> tuple[int, int] | None:
    """(energy, wrap-around range) in microjoules summed over CPU packages, or None if unreadable."""
    total, ranges = 0, 0
    zones = [z for z in POWERCAP.glob("intel-rapl:*") if z.name.count(":") == 1]  # packages, not sub-zones
    if not zones:
        return None
    try:
        for zone in zones:
            total += int((zone / "energy_uj").read_text())
            ranges += int((zone / "max_energy_range_uj").read_text())
    except (OSError, ValueError):
        return None
    return total, ranges


class CostMeter:
    """`with CostMeter(node_config) as meter: ...` then `meter.metrics()`."""

    def __init__(self, node_config: Mapping):
        self.watts = watts_per_busy_core(node_config)

    def __enter__(self) -> CostMeter:
        self._cpu = time.process_time()  # every thread of this process: TensorFlow's too
        self._energy = _package_energy_uj()
        return self

    def __exit__(self, *exc) -> None:
        self.cpu_seconds = time.process_time() - self._cpu
        end = _package_energy_uj() if self._energy else None
        self.measured_joules = None
        if end:
            delta = end[0] - self._energy[0]
            self.measured_joules = (delta if delta >= 0 else delta + end[1]) / 1e6  # the counter wrapped

    def metrics(self) -> dict[str, float]:
        # ru_maxrss: KiB on Linux. A simulation worker plays many devices: its peak, not one device's.
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        measured = self.measured_joules is not None
        joules = self.measured_joules if measured else self.cpu_seconds * self.watts
        return {"cpu-seconds": self.cpu_seconds, "peak-memory-mb": peak_mb, "energy-joules": joules,
                "energy-measured": int(measured)}


def cost_mod(msg: Message, context: Context, call_next) -> Message:
    """The handler's cost, added to its reply's metrics. Under DP only with dp.report-train-metrics:
    the cost follows the size of the device's text, which no noise covers."""
    from client_app.messages import config_of

    dp = config_of(context).dp
    with CostMeter(context.node_config) as meter:
        reply = call_next(msg, context)
    held_back = dp.enabled and not dp.report_train_metrics
    if reply.has_error() or "metrics" not in reply.content.metric_records or held_back:
        return reply
    for key, value in meter.metrics().items():
        reply.content["metrics"][key] = value
    return reply
