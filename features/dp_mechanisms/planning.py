"""Before a run: the epsilon a planned private run will report, and the noise that meets a target.

Both drive a real `PrivacyLedger` through the planned rounds exactly as the server does (DP-FTRL's
trees restart when every device has taken part), so a plan and the run's own figure cannot
disagree. The figure is the ledger's `model_epsilon`, the one the budget stop (dp.max-epsilon)
bounds too: DP-FTRL's (no credit for sampling), and for the other central modes the
sampling-amplified one when the server samples, else the plain central one. A plan assumes the
whole population is connected at every round; a round that samples from fewer gets less credit.
"""

from __future__ import annotations

import dataclasses

from task.config import DPConfig
from task.privacy.ledger import PrivacyLedger


def planned_epsilon(dp: DPConfig, population: int, per_round: int, rounds: int) -> float:
    """The epsilon a central-DP run of `rounds` rounds, `per_round` of `population` devices
    sampled each round, reports at its end."""
    if not dp.central:
        raise ValueError(f'planning covers the central dp-modes, not dp.mode = "{dp.mode}"')
    if not 1 <= per_round <= population:
        raise ValueError(f"{per_round} devices per round out of a population of {population}")
    ledger = PrivacyLedger(dp, population=population, sampled=per_round)
    devices = list(range(population))
    for _ in range(rounds):
        ledger.record_asked_to_train(ledger.devices_for_next_round(devices)[:per_round])
        ledger.record_central(ledger._central_parts())
    return ledger.model_epsilon()


def noise_for_epsilon(dp: DPConfig, population: int, per_round: int, rounds: int, target: float,
                      tolerance: float = 0.005) -> float:
    """The smallest noise multiplier (within `tolerance`, relative) whose planned epsilon is at
    most `target`; bisection, since epsilon falls as the noise grows."""
    def eps(z: float) -> float:
        return planned_epsilon(dataclasses.replace(dp, noise_multiplier=z), population, per_round, rounds)

    low, high = 0.05, 1.0
    while eps(high) > target:
        low, high = high, high * 2
        if high > 1e4:
            raise ValueError(f"no noise multiplier up to 1e4 reaches epsilon {target}")
    while high / low > 1 + tolerance:
        middle = (low * high) ** 0.5
        low, high = (low, middle) if eps(middle) <= target else (middle, high)
    return high
