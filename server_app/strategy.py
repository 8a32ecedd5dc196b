"""Which of Flower's strategies applies the devices' average: FedAvg, FedAvgM, FedAdam or FedProx.

All of them average the devices' new weights the same way. FedAvgM and FedAdam then treat the
change of the global model as a pseudo-gradient for an optimiser on the server (momentum, Adam),
which Reddi et al. (2021) found to beat FedAvg on Stack Overflow next-word prediction. FedProx
(Li et al. 2020) sends `proximal-mu` in each round's config; the devices' training adds the
proximal term (task/train.py): a strategy's round-config values reach `task.train` unchanged.

Each one picks the devices of a training round itself: under DP from a secret generator and the
sample size fixed at the start (the privacy figures take credit for both), else reproducibly
from the run's seed; and, under DP, asks the privacy ledger first whether the budget allows the
round and books who was asked. With participation.selection-factor > 1 it asks more devices than the round
needs and tells the grid how many updates close the round (features/participation/round_goal.py).
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import time
from typing import TYPE_CHECKING

from flwr.app import MessageType, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAdam, FedAvg, FedAvgM, FedProx
from flwr.serverapp.strategy.strategy_utils import sample_nodes

from task.config import EVALUATE_FIRST, ROUND_GOAL, Config, ConfigError
from task.privacy import DP_WEIGHT

if TYPE_CHECKING:
    from task.privacy.ledger import PrivacyLedger

log = logging.getLogger("flwr")


class TooFewDevices(RuntimeError):
    """Under DP every round asks the number of devices fixed at the start (the noise and the
    accounting are calibrated to it), and fewer are connected."""


class SelectsDevices(FedAvg):
    """FedAvg.configure_train with the template's own device selection (secret under DP, seeded
    otherwise; the ledger's budget check and sample size under DP; over-selection), evaluate-in-train,
    and a fixed summing order. Every round runs it, private or not. It sits between a strategy and
    FedAvg in the class order, so the strategy's own configure_train (FedAvgM/FedAdam remember the
    model, FedProx adds proximal-mu) still runs first."""

    def use(self, cfg: Config, ledger: PrivacyLedger | None, last_round: int) -> SelectsDevices:
        self._ledger = ledger
        self._evaluate_in_train = cfg.scores_in_train  # off under DP
        self.last_round = last_round  # of this run (Flower counts from 1 again after a resume)
        self._private = cfg.dp.enabled
        self._selection_factor = cfg.selection_factor
        self._wait_seconds = cfg.round_timeout
        # SecAgg+ sums in a 2**32 ring: more devices than this wrap the sum (task.config)
        self._most = cfg.feature("secagg").max_cohort if cfg.secure_aggregation else None
        # FedAvg samples with Python's global `random`; a private sample must not be replayable.
        self._sampler = random.SystemRandom() if self._private else random.Random(cfg.seed)
        return self

    def configure_train(self, server_round, arrays, config, grid):
        if self._private:
            goal, size = self._ledger.sampled, self._ledger.selected
            _wait_for_devices(grid, size, self._wait_seconds)  # else Flower's sampler waits forever
        else:
            goal = max(int(len(list(grid.get_node_ids())) * self.fraction_train), self.min_train_nodes)
            size = math.ceil(goal * self._selection_factor)
        _, connected = sample_nodes(grid, self.min_available_nodes, goal)  # waits for enough nodes
        # DP-FTRL / BLT: whether this round grows the current tree / noise segment or starts one is
        # decided first (public: who is connected and who took part), so the budget check below
        # projects the round that will run, not the worse of the two (outside review F1)
        candidates = self._ledger.devices_for_next_round(connected) if self._private else connected
        if self._private:  # the round is sampled from those connected now: its amplification
            self._ledger.check_next_round(sampled_from=len(connected))  # raises PrivacyBudgetExceeded
        if not self._private:  # under DP the ledger fixed the sample size at the start
            size = min(size, len(connected))
            if self._most and size > self._most:
                log.warning("configure_train: %d devices would be asked, %d fit one secure-aggregation round", size,
                            self._most)
                size = goal = self._most
        node_ids = self._sampler.sample(sorted(candidates), size)
        log.info("configure_train: sampled %d nodes (out of %d)%s", len(node_ids), len(connected),
                 f", the first {goal} updates close the round" if goal < size else "")
        if self._private:
            self._ledger.record_asked_to_train(node_ids, sampled_from=len(connected))
        config["server-round"] = server_round
        config[ROUND_GOAL] = goal
        config[EVALUATE_FIRST] = self._evaluate_in_train  # the devices score the model they receive
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return self._construct_messages(record, node_ids, MessageType.TRAIN)


    def configure_evaluate(self, server_round, arrays, config, grid):
        # With evaluate-in-train the next round's devices score this model; only the last one
        # has no next round.
        if self._evaluate_in_train and server_round < self.last_round:
            return []
        return super().configure_evaluate(server_round, arrays, config, grid)

    def aggregate_train(self, server_round, replies):
        # FedAvg sums in arrival order, which differs from run to run: the sums then differ in
        # their last bits, and 30 rounds grow that into the metrics' third digit. A fixed order
        # makes a run with the same seed give the same model.
        return super().aggregate_train(server_round, sorted(replies, key=reply_order))


def population_and_sample(grid: Grid, cfg: Config) -> tuple[int, int]:
    """Wait for min-available-nodes devices; return (connected devices, devices sampled per round),
    sampled as FedAvg does."""
    deadline = time.monotonic() + cfg.round_timeout
    while len(nodes := list(grid.get_node_ids())) < cfg.min_available_nodes and time.monotonic() < deadline:
        time.sleep(1)
    population = len(nodes)
    if population < cfg.min_available_nodes:  # else FedAvg would wait for them forever
        raise ConfigError(f"run-config key 'min-available-nodes' = {cfg.min_available_nodes}: only {population} "
                          f"device(s) connected within round-timeout = {cfg.round_timeout:g} s")
    sampled = max(int(population * cfg.fraction_train), cfg.min_train_nodes)
    cfg.validate_population(population, sampled)
    return population, sampled


def _wait_for_devices(grid, needed: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while (connected := len(list(grid.get_node_ids()))) < needed:
        if time.monotonic() >= deadline:
            raise TooFewDevices(f"the DP noise is calibrated for {needed} devices per round, and only {connected} "
                                f"were connected for round-timeout = {seconds:g} s; resume the run (resume-from) "
                                "once enough devices are back")
        time.sleep(1)


def reply_order(reply) -> tuple:
    """A sort key that depends only on what a reply holds, not on when it arrived."""
    if reply.has_error():
        return (1, b"")
    digest = hashlib.sha256()
    for record in reply.content.array_records.values():
        for array in record.values():
            digest.update(array.data)
    return (0, digest.digest())


# The server strategies by their `server-optimizer` name: a Flower strategy class and its own
# options from the config. Add one here, one line; task/config.py reads the names from this dict
# (task/registry.py). A value the strategy puts in the round's config reaches task.train on every
# device (declare it in task/releases.py, "device config").
STRATEGIES = {
    "fedavg": lambda cfg: (FedAvg, {}),
    "fedavgm": lambda cfg: (FedAvgM, dict(server_learning_rate=cfg.server_learning_rate,
                                          server_momentum=cfg.server_momentum)),
    "fedadam": lambda cfg: (FedAdam, dict(eta=cfg.server_learning_rate, eta_l=cfg.learning_rate)),
    "fedprox": lambda cfg: (FedProx, dict(proximal_mu=cfg.proximal_mu)),
}
# Strategies whose server keeps state across rounds (momentum, moments): central DP, resume and
# discovery refuse them (the noise's calibration, the checkpoint and the new words' rows lack it).
STATEFUL = ("fedavgm", "fedadam")


def build_strategy(cfg: Config, ledger: PrivacyLedger | None, train_metrics_aggr_fn=None,
                   evaluate_metrics_aggr_fn=None, last_round: int | None = None) -> FedAvg:
    """`last_round`: this run's rounds (fewer than num-server-rounds after a resume)."""
    options = dict(fraction_train=cfg.fraction_train, fraction_evaluate=cfg.fraction_evaluate,
                   min_train_nodes=cfg.min_train_nodes, min_evaluate_nodes=cfg.min_evaluate_nodes,
                   min_available_nodes=cfg.min_available_nodes,
                   weighted_by_key=DP_WEIGHT if cfg.dp.enabled else "num-examples",
                   train_metrics_aggr_fn=train_metrics_aggr_fn, evaluate_metrics_aggr_fn=evaluate_metrics_aggr_fn)
    base, own = STRATEGIES[cfg.server_optimizer](cfg)
    # the strategy with the template's device selection below it (SelectsDevices is FedAvg's own)
    cls = SelectsDevices if base is FedAvg else type(f"{base.__name__}SelectingDevices", (base, SelectsDevices), {})
    return cls(**own, **options).use(cfg, ledger, last_round or cfg.num_server_rounds)
