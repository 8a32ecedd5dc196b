"""Before the first round of a DP run: the epsilon the run as configured will report, printed
before anything is released (the ServerApp loads this only under DP; whether the devices are
real, and the refusal of a run without DP on them, is server_app/fleet.py).

Planning. `planned_ledger` drives a real `PrivacyLedger` through the planned rounds exactly as the
server does (DP-FTRL's trees restart when every device has taken part; with
participation.selection-factor > 1 the server asks `selected` devices per round), so the plan and
the run's own figure cannot disagree: the planned figure is the ledger's `model_epsilon`, the one
dp.max-epsilon bounds and the run reports at its end (if every device stays connected; a round
that samples from fewer gets less credit). features/dp_mechanisms/planning.py re-exports it for
the benchmarks. Everything here that needs dp-accounting is imported only under DP.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

from task.config import Config, ConfigError, DPConfig

log = logging.getLogger("flwr")

# --- checks that need no accounting --------------------------------------------------------------
def no_budget_warning(cfg: Config) -> str | None:
    """One line when DP is on without a budget."""
    if not cfg.dp.enabled or cfg.dp.max_epsilon > 0:
        return None
    return ("no privacy budget: dp.max-epsilon = 0, so nothing stops the run if its epsilon grows past the plan "
            "(more rounds, a resume); set dp.max-epsilon")


# --- planning (dp-accounting: imported only under DP) --------------------------------------------
def planned_ledger(dp: DPConfig, population: int, per_round: int, rounds: int, selection_factor: float = 1.0,
                   local_epochs: int = 1, max_local_steps: int = 0, ledger=None):
    """A ledger driven through `rounds` rounds as the server drives its own: `per_round` of
    `population` devices sampled (the updates kept), `per_round` x `selection_factor` asked, every
    device connected. Its figures are what the run reports at its end. `ledger`: a resumed run's
    (its charges so far, and the new noise segment a resume starts), driven on a copy."""
    import copy

    from task.privacy.ledger import PrivacyLedger, selected_per_round

    if not 1 <= per_round <= population:
        raise ValueError(f"{per_round} devices per round out of a population of {population}")
    selected = selected_per_round(population, per_round, selection_factor)
    ledger = copy.deepcopy(ledger) if ledger is not None else PrivacyLedger(
        dp, population=population, sampled=per_round, selected=selected, local_epochs=local_epochs,
        max_local_steps=max_local_steps)
    devices = list(range(population))
    for _ in range(rounds):
        asked = ledger.devices_for_next_round(devices)[:selected]
        ledger.record_asked_to_train(asked, sampled_from=population)
        if dp.central:
            ledger.record_central(ledger._central_parts())
    return ledger


def planned_epsilon(dp: DPConfig, population: int, per_round: int, rounds: int,
                    selection_factor: float = 1.0) -> float:
    """The model's user-level epsilon a central-DP run reports at its end (`planned_ledger`)."""
    if not dp.central:
        raise ValueError(f'planning covers the central dp-modes, not dp.mode = "{dp.mode}"')
    return planned_ledger(dp, population, per_round, rounds, selection_factor).model_epsilon()


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


@dataclass(frozen=True)
class Plan:
    epsilon: float | None  # the model's user-level figure (None without a dp.mode)
    relation: str  # as the ledger labels that figure
    lines: list[str]  # what the ServerApp and the config check print


def plan(cfg: Config, population: int, per_round: int, rounds: int | None = None, resumed=None) -> Plan:
    """The planned figures of the run as configured (its noise multiplier as given), in words.
    `resumed`: the ledger a resumed run continues; `rounds` are then this run's rounds."""
    dp, rounds = cfg.dp, rounds or cfg.num_server_rounds
    ledger = planned_ledger(dp, population, per_round, rounds, cfg.selection_factor, cfg.local_epochs,
                            cfg.max_local_steps, resumed)
    if resumed is not None:
        rounds = len(ledger.central_releases) if dp.central else rounds
    asked = ledger.selected
    sampling = (f"{rounds} rounds, {asked} of {population} devices asked per round"
                + (f" (the first {per_round} updates kept)" if asked > per_round else ""))
    epsilon, relation, lines = None, "", []
    if dp.central:
        epsilon = ledger.model_epsilon()
        amplified = None if ledger.ftrl else ledger.central_amplified_epsilon()
        relation = "replace-one" if amplified is not None and math.isclose(amplified, epsilon) else "zero-out"
        credit = ("the server's secret sample credited" if relation == "replace-one" else
                  "no sampling credit" if ledger.ftrl or asked < population else "every device asked every round")
        lines.append(f"planned user-level ε = {epsilon:.4g} ({dp.mode}, {relation}, {credit}; δ = {dp.delta:g}; "
                     f"{sampling}; noise multiplier {dp.noise_multiplier:.4g}); the ledger reports it at the end if "
                     "every device stays connected")
    elif dp.mode == "local":
        epsilon, relation = ledger.local_epsilon(releases=rounds), "any two texts of one device"
        lines.append(f"planned user-level ε = {epsilon:.4g} (local, {relation}, worst case: a device asked every "
                     f"round; {dp.local_epsilon:g} per release; δ = {dp.delta:g}; {sampling})")
    if epsilon is not None and 0 < dp.max_epsilon < epsilon:
        lines.append(f"the budget dp.max-epsilon = {dp.max_epsilon:g} stops the run before its last round (planned "
                     f"ε {epsilon:.4g}): more noise (dp.target-epsilon), fewer rounds or a larger budget")
    if dp.sgd:
        lines.append(f"planned sample-level ε = {ledger.sample_epsilon(rounds=rounds):.4g} (DP-SGD, add or remove one "
                     f"window, a device asked every round; δ = {dp.delta:g}; {rounds} rounds, rate "
                     f"{dp.sgd_sampling_rate:g})")
    return Plan(epsilon, relation, lines)


def with_target(cfg: Config, population: int, per_round: int) -> Config:
    """The config with the noise multiplier planned for dp.target-epsilon (the central modes), checked again."""
    dp = cfg.dp
    try:
        z = noise_for_epsilon(dp, population, per_round, cfg.num_server_rounds, dp.target_epsilon,
                              selection_factor=cfg.selection_factor)
    except ValueError as e:  # e.g. adaptive clipping: the count noise caps the multiplier
        raise ConfigError(f"run-config key 'dp.target-epsilon' = {dp.target_epsilon!r}: no noise multiplier meets it "
                          f"with {per_round} of {population} devices per round over {cfg.num_server_rounds} rounds "
                          f"({e})") from None
    planned = cfg.replace(dp=dataclasses.replace(dp, noise_multiplier=z))
    try:
        planned.validate()
        planned.validate_population(population, per_round)
    except ConfigError as e:
        raise ConfigError(f"run-config key 'dp.target-epsilon' = {dp.target_epsilon!r} planned noise multiplier "
                          f"{z:.4g}, which is refused: {e}") from None
    return planned


# --- the ServerApp's piece -----------------------------------------------------------------------
def plan_privacy(cfg: Config, start, population: int, sampled: int) -> Config:
    """At the ServerApp's start, once the population is known: under DP set the noise for
    dp.target-epsilon (a resumed run keeps the noise its run started with) and log the planned
    epsilon (a resumed run's: from its ledger, over the rounds left), and a warning without a
    budget. Returns the config the run uses."""
    if not cfg.dp.enabled:
        return cfg
    if cfg.dp.target_epsilon > 0:
        started = _started_noise(start)
        if started is not None:
            cfg = cfg.replace(dp=dataclasses.replace(cfg.dp, noise_multiplier=started))
            log.info("Privacy plan: resumed run: noise multiplier %.4g kept, the one its run started with for "
                     "dp.target-epsilon = %g (not planned again)", started, cfg.dp.target_epsilon)
        else:
            given = cfg.dp.noise_multiplier
            cfg = with_target(cfg, population, sampled)
            log.info("Privacy plan: dp.target-epsilon = %g: noise multiplier %.4g planned for %d of %d devices per "
                     "round over %d rounds (in place of dp.noise-multiplier = %g)", cfg.dp.target_epsilon,
                     cfg.dp.noise_multiplier, sampled, population, cfg.num_server_rounds, given)
    resumed = _resumed_ledger(cfg, start, population, sampled)
    planned = plan(cfg, population, sampled, start.rounds_left if resumed else None, resumed)
    for line in planned.lines:
        log.info("Privacy plan: %s", line)
    if resumed is not None and cfg.dp.target_epsilon and planned.epsilon and planned.epsilon > cfg.dp.target_epsilon:
        log.warning("Privacy plan: the resumed run will report epsilon %.4g, above dp.target-epsilon = %g: the "
                    "noise was planned for one uninterrupted run (a resume restarts DP-FTRL's tree or BLT's noise "
                    "segment and is charged as such)", planned.epsilon, cfg.dp.target_epsilon)
    warning = no_budget_warning(cfg)
    if warning:
        log.warning("Privacy plan: %s", warning)
    return cfg


def _resumed_ledger(cfg: Config, start, population: int, sampled: int):
    """The ledger a resumed run continues (read only: the run's own ledger takes the locks), or None."""
    resume = getattr(start, "resume", None)
    if resume is None or not cfg.dp.central:
        return None
    from server_app.privacy import lineage_of, resumed_ledger, resumed_privacy
    from task.privacy.ledger import selected_per_round

    selected = selected_per_round(population, sampled, cfg.selection_factor)
    return resumed_ledger(cfg, resumed_privacy(resume, lineage_of(resume)), population, sampled, selected)


def _started_noise(start) -> float | None:
    """The noise multiplier a resumed run's checkpoint was made with (its DP settings are checked
    equal to this run's in server_app/resume.py, the noise aside under dp.target-epsilon)."""
    resume = getattr(start, "resume", None)
    if resume is None:
        return None
    return (resume.checkpoint.state.get("dp") or {}).get("noise_multiplier")
