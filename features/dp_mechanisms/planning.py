"""Before a run: the epsilon a planned private run will report, and the noise that meets a target.

Both drive a real `PrivacyLedger` through the planned rounds exactly as the server does (DP-FTRL's
trees restart when every device has taken part; with participation.selection-factor > 1 the
server asks `selected` devices per round and one device can displace another's update, which the
ledger accounts), so a plan and the run's own figure cannot disagree. The figure is the ledger's
`model_epsilon`, the one the budget stop (dp.max-epsilon) bounds too: DP-FTRL's (no credit for
sampling), and for the other central modes the sampling-amplified one when the server samples,
else the plain central one. A plan assumes the whole population is connected at every round; a
round that samples from fewer gets less credit.
"""

from __future__ import annotations

import dataclasses

from task.config import DPConfig
from task.privacy.ledger import PrivacyLedger, selected_per_round


def planned_epsilon(dp: DPConfig, population: int, per_round: int, rounds: int,
                    selection_factor: float = 1.0) -> float:
    """The epsilon a central-DP run of `rounds` rounds, `per_round` of `population` devices
    sampled each round (the updates kept), reports at its end; `selection_factor`: the run's
    participation.selection-factor (devices asked = per_round x it, as the server asks them)."""
    if not dp.central:
        raise ValueError(f'planning covers the central dp-modes, not dp.mode = "{dp.mode}"')
    if not 1 <= per_round <= population:
        raise ValueError(f"{per_round} devices per round out of a population of {population}")
    selected = selected_per_round(population, per_round, selection_factor)
    ledger = PrivacyLedger(dp, population=population, sampled=per_round, selected=selected)
    devices = list(range(population))
    for _ in range(rounds):
        ledger.record_asked_to_train(ledger.devices_for_next_round(devices)[:selected], sampled_from=population)
        ledger.record_central(ledger._central_parts())
    return ledger.model_epsilon()


def noise_for_epsilon(dp: DPConfig, population: int, per_round: int, rounds: int, target: float,
                      tolerance: float = 0.005, selection_factor: float = 1.0) -> float:
    """The smallest noise multiplier (within `tolerance`, relative) whose planned epsilon is at
    most `target`; bisection, since epsilon falls as the noise grows."""
    def eps(z: float) -> float:
        return planned_epsilon(dataclasses.replace(dp, noise_multiplier=z), population, per_round, rounds,
                               selection_factor)

    low, high = 0.05, 1.0
    while eps(high) > target:
        low, high = high, high * 2
        if high > 1e4:
            raise ValueError(f"no noise multiplier up to 1e4 reaches epsilon {target}")
    while high / low > 1 + tolerance:
        middle = (low * high) ** 0.5
        low, high = (low, middle) if eps(middle) <= target else (middle, high)
    return high
