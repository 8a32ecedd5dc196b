"""The server's side of differential privacy: which Flower DP wrapper goes around FedAvg, the
checks that keep the noise's calibration honest, and the ledger of what was released.

- central-client-clip / central-server-clip: Flower's fixed-clipping wrappers, with Flower's own
  accountant attached (it also refuses a round with missing replies or unequal weights).
- central-adaptive-clip: Flower's client-side adaptive-clipping wrapper (no accountant in
  Flower; task/privacy.py accounts it: the clipped-count noise and the update noise together
  equal a Gaussian mechanism with dp-noise-multiplier, Andrew et al. 2021).
- local: plain FedAvg here; each device noises its own update (client_app/privacy.py).
- dp-sgd: plain FedAvg here, or any of the above; devices report their sampling rate and steps.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from flwr.app import RecordDict
from flwr.serverapp import Grid, NeighboringRelation, PrivacyConfig, RdpAccountant, SamplingMethod
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideAdaptiveClipping,
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAvg,
    Strategy,
)

from server_app.observed_grid import PhaseCounts
from task.config import Config, ConfigError
from task.privacy import DP_WEIGHT, PrivacyLedger

log = logging.getLogger("flwr")


def population_and_sample(grid: Grid, cfg: Config) -> tuple[int, int]:
    """Wait for min-available-nodes devices; return (connected devices, devices sampled per round),
    sampled as FedAvg does."""
    deadline = time.monotonic() + cfg.round_timeout
    while len(nodes := list(grid.get_node_ids())) < cfg.min_available_nodes and time.monotonic() < deadline:
        time.sleep(1)
    population = len(nodes)
    sampled = max(int(population * cfg.fraction_train), cfg.min_train_nodes)
    cfg.validate_population(population, sampled)
    return population, sampled


def wrap(cfg: Config, fedavg: FedAvg, sampled: int, population: int) -> Strategy:
    dp = cfg.dp
    if dp.mode in ("central-client-clip", "central-server-clip"):
        wrapper = (DifferentialPrivacyClientSideFixedClipping if dp.mode == "central-client-clip"
                   else DifferentialPrivacyServerSideFixedClipping)
        accountant = RdpAccountant(PrivacyConfig(
            target_delta=dp.delta, population_size=population,
            neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
            sampling_method=SamplingMethod.NO_AMPLIFICATION))
        return wrapper(fedavg, noise_multiplier=dp.noise_multiplier, clipping_norm=dp.clipping_norm,
                       num_sampled_clients=sampled, accountant=accountant)
    if dp.mode == "central-adaptive-clip":
        count_stddev = dp.clipped_count_stddev or sampled / 20
        if dp.noise_multiplier >= 2 * count_stddev:
            raise ConfigError(
                f"run-config key 'dp-noise-multiplier' = {dp.noise_multiplier} is invalid with adaptive clipping: "
                f"it must be below 2 x dp-clipped-count-stddev = {2 * count_stddev:g} (the clipped-count noise "
                f"spends part of the budget); raise dp-clipped-count-stddev")
        return DifferentialPrivacyClientSideAdaptiveClipping(
            fedavg, noise_multiplier=dp.noise_multiplier, num_sampled_clients=sampled,
            initial_clipping_norm=dp.clipping_norm, target_clipped_quantile=dp.target_quantile,
            clip_norm_lr=dp.clip_lr, clipped_count_stddev=count_stddev)
    return fedavg


def require_equal_weights(records: list[RecordDict]) -> None:
    """Under DP one device's influence on the average must be bounded: every weight is 1."""
    for record in records:
        for metrics in record.metric_records.values():
            if DP_WEIGHT in metrics and metrics[DP_WEIGHT] != 1:
                raise ValueError(f"a device reported {DP_WEIGHT} = {metrics[DP_WEIGHT]}; with DP on every "
                                 "device must count once in the average, or the noise no longer covers it")


def record_round(ledger: PrivacyLedger, train: PhaseCounts, released: bool) -> None:
    """Book what this round released: the noised aggregate (central modes, if one was made), each
    device's own noised update (local), each device's DP-SGD steps."""
    dp = ledger.dp
    if dp.central and released:
        ledger.record_central(train.replied)
    for node, metrics in train.metrics.items():
        if dp.mode == "local":
            ledger.record_local(str(node))
        if dp.sgd:
            ledger.record_dpsgd(str(node), float(metrics["dpsgd-sampling-rate"]), int(metrics["dpsgd-steps"]))


def arrays_changed(before: list[np.ndarray] | None, after: list[np.ndarray]) -> bool:
    # The wrappers skip aggregation (no release) when a device errs; a release always changes the
    # model, since noise is added to every array.
    return before is not None and any(not np.array_equal(a, b) for a, b in zip(before, after))


def strategy_state(strategy: Strategy) -> dict:
    """What a resumed run needs to continue the strategy as it was: the adaptive clipping norm,
    Flower's accountant."""
    state: dict = {}
    if hasattr(strategy, "clipping_norm"):
        state["clipping_norm"] = float(strategy.clipping_norm)
    if getattr(strategy, "accountant", None) is not None:
        state["flower_accountant"] = strategy.accountant.state_dict()
    return state


def restore_strategy_state(strategy: Strategy, state: dict) -> None:
    if "clipping_norm" in state and hasattr(strategy, "clipping_norm"):
        strategy.clipping_norm = state["clipping_norm"]
    if "flower_accountant" in state and getattr(strategy, "accountant", None) is not None:
        strategy.accountant.load_state_dict(state["flower_accountant"])


def resumed_ledger(cfg: Config, state: dict, population: int, sampled: int) -> PrivacyLedger:
    """The checkpoint's ledger, so epsilon continues. The amplification figure assumes one
    population and sample size for the whole run: a resume must keep them."""
    saved = state.get("privacy")
    if not saved:
        return PrivacyLedger(cfg.dp, population=population, sampled=sampled)
    if (saved["population"], saved["sampled"]) != (population, sampled):
        raise ConfigError(f"cannot resume with DP: the run had {saved['population']} devices, {saved['sampled']} "
                          f"sampled per round; now {population} are connected, {sampled} would be sampled")
    return PrivacyLedger.from_state(cfg.dp, saved)
