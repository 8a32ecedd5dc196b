"""The run-config checks of participation's simulated population."""

from __future__ import annotations

from task.config import SIM_AVAILABILITY, Config, check


def validate(cfg: Config) -> None:
    """participation.* (called while the participation group is declared)."""
    sim = cfg.sim
    check("participation.availability", sim.availability, sim.availability in SIM_AVAILABILITY,
           f"one of {list(SIM_AVAILABILITY)}")
    check("participation.eligible-share", sim.eligible_share, 0 < sim.eligible_share <= 1, "a number in (0, 1]")
    check("participation.hours-per-round", sim.hours_per_round, 0 <= sim.hours_per_round <= 24, "a number of hours in [0, 24]")
    check("participation.stragglers", sim.stragglers, 0 <= sim.stragglers <= 1, "a share in [0, 1]")
    check("participation.straggler-seconds", sim.straggler_seconds, sim.straggler_seconds >= 0, "a number of seconds >= 0")
