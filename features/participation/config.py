"""Run-config group "participation.": over-selection, and how simulated devices behave like a real
population (real devices check their own state). On while the group is in the run config."""

from __future__ import annotations

from dataclasses import dataclass

from task.config import Config, check

GROUP = "participation"
AVAILABILITY = ("always", "nightly")  # eligibility.py


@dataclass(frozen=True)
class Settings:
    selection_factor: float = 1.0  # over-selection (round_goal.py); 1 = none
    availability: str = "always"  # or "nightly": eligible in one window of the simulated day, mostly at night
    eligible_share: float = 0.3  # nightly: the share of the day a device is eligible
    hours_per_round: float = 1.0  # nightly: the simulated clock advances this much per round
    stragglers: float = 0.0  # share of simulated devices that are slow (old phones)
    straggler_seconds: float = 30.0  # the extra seconds a straggler takes per message


def validate(cfg: Config) -> None:
    sim = cfg.feature(GROUP)
    check("participation.selection-factor", sim.selection_factor, 1 <= sim.selection_factor <= 10,
          "a number in [1, 10] (devices asked per device needed; 1 = no over-selection)")
    check("participation.availability", sim.availability, sim.availability in AVAILABILITY,
          f"one of {list(AVAILABILITY)}")
    check("participation.eligible-share", sim.eligible_share, 0 < sim.eligible_share <= 1, "a number in (0, 1]")
    check("participation.hours-per-round", sim.hours_per_round, 0 <= sim.hours_per_round <= 24,
          "a number of hours in [0, 24]")
    check("participation.stragglers", sim.stragglers, 0 <= sim.stragglers <= 1, "a share in [0, 1]")
    check("participation.straggler-seconds", sim.straggler_seconds, sim.straggler_seconds >= 0,
          "a number of seconds >= 0")
