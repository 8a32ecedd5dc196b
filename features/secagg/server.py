"""The server's side of `secagg.enabled`: a Grid that runs each training round through SecAgg+
(Bell et al. 2020), so the server only ever holds the sum of the devices' updates.

Flower 1.42 ships SecAgg+ only for its legacy workflow API (`SecAggPlusWorkflow` drives a legacy
`Strategy` inside a `LegacyContext`). Rather than re-implementing the protocol, this Grid hands
each round's train messages to that workflow through `_OneRound`, a legacy strategy that only
passes the round in and the unmasked result out. The Message-API strategy above (FedAvg, or
CentralDP around it) never sees an individual update: every reply it gets carries the same
aggregate, plus that device's own metrics, which travel in the clear as they do without SecAgg+.

Devices send their update (new weights minus the model they received), not their weights: a
clipped update's values lie within +-dp-clipping-norm, so SecAgg+'s value clipping at
+-secagg-clipping-range loses nothing and its quantisation step is small against them. Every
device weighs 1 (max_weight = 1): a device's weight would otherwise be its window count, a fact
about its text the server could read in the clear. Masks come from features/secagg/masks.py, not
Flower's 32-bit-seeded generator (that module says why).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.common import FitIns, parameters_to_ndarrays
from flwr.server import LegacyContext, ServerConfig
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.strategy import Strategy as LegacyStrategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from features.secagg import masks
from features.secagg.config import Settings as SecAggConfig
from features.secagg.config import max_cohort as secagg_max_cohort
from task.config import ROUND_OFFSET, Config, ConfigError

# The workflow calls the generator by the name it imported; the ClientApp replaces its own too.
importlib.import_module("flwr.server.workflow.secure_aggregation.secaggplus_workflow").pseudo_rand_gen = masks.mask

log = logging.getLogger("flwr")

MAX_WEIGHT = 1.0  # every device sends num_examples = 1 (features/secagg/client.py)
MODULUS_RANGE = 2**32  # the library's default and its maximum


def quantisation_step(sa: SecAggConfig) -> float:
    """One quantisation level of an update value. Stochastic rounding keeps each value unbiased,
    with an error of at most one step, standard deviation at most step/2 per device."""
    return 2 * sa.clipping_range / sa.quantization_range


def device_clipping_norm(sa: SecAggConfig, clipping_norm: float, num_values: int) -> float:
    """The norm devices clip to so that their update *after* SecAgg+'s rounding stays within
    `clipping_norm`, the bound the noise is calibrated to. Rounding moves each value by less than
    one step, so the norm by less than step x sqrt(values); the server cannot clip the sum again."""
    margin = quantisation_step(sa) * num_values ** 0.5
    if margin >= clipping_norm:
        raise ConfigError(f"run-config key 'dp.clipping-norm' = {clipping_norm:g} is within SecAgg+'s rounding margin {margin:.3g} for "
                         f"{num_values} weights: raise secagg.quantization-range or lower secagg.clipping-range")
    return clipping_norm - margin


def assumptions(cfg: Config) -> list[str]:
    """What secure aggregation protects, and what it leaves to the devices, in words."""
    sa = cfg.feature("secagg")
    lines = [f"secure aggregation (SecAgg+, Bell et al. 2020): the server recovers only the sum of each round's "
             f"updates; each device's own upload is masked with pairwise and private masks (uniform on the "
             f"2**32 ring); secure against an honest-but-curious server unless it colludes with "
             f"{sa.reconstruction_threshold} of the up to {sa.num_shares} devices holding shares of one device's "
             f"secrets (itself and its neighbours); values quantised in "
             f"steps of {quantisation_step(sa):.3g} (unbiased, error under one step per value)"]
    if cfg.dp.central:
        lines.append("with secure aggregation the server cannot clip each update again: the noise covers a device "
                     "only if its ClientApp clipped (client_app/privacy.py); devices clip to dp.clipping-norm minus "
                     "SecAgg+'s rounding margin (step x sqrt(weights)), so the rounded update stays within the norm "
                     "the noise is calibrated to")
    return lines


class _SecAggPlus(SecAggPlusWorkflow):
    """Flower's SecAgg+ workflow, keeping in the protocol only the devices that took part so far.

    Flower 1.42 keeps every device it sampled to the end: one that declined at setup, or dropped
    out before it sent its key shares, is later treated as a dropout whose masks must be removed,
    and its neighbours are asked for shares it never gave them (the device-side mod then fails
    with a KeyError, and the round releases nothing). Nobody masked with such a device either. As
    in Bell et al.'s protocol, the participants are narrowed to those that sent their keys, then
    to those that sent their shares; only a device that drops out after that is recovered."""

    _narrow = False

    def setup_stage(self, grid, context, state) -> bool:
        self._narrow = True
        return super().setup_stage(grid, context, state)

    def share_keys_stage(self, grid, context, state) -> bool:
        self._narrow = True
        return super().share_keys_stage(grid, context, state)

    def collect_masked_vectors_stage(self, grid, context, state) -> bool:
        self._narrow = False  # from here on a missing device is a dropout to recover
        return super().collect_masked_vectors_stage(grid, context, state)

    def _check_threshold(self, state) -> bool:  # each stage's last step
        if self._narrow:
            taking_part = set(state.active_node_ids)
            state.sampled_node_ids = taking_part
            state.nid_to_neighbours = {n: neighbours & taking_part for n, neighbours in state.nid_to_neighbours.items()
                                       if n in taking_part}
        return super()._check_threshold(state)


class SecureGrid:
    """Delegates to a Grid (the ObservedGrid, which counts every SecAgg+ message and its bytes);
    train messages go through SecAgg+, anything else as usual."""

    def __init__(self, grid, sa: SecAggConfig, timeout: float | None):
        self._grid = grid
        self._sa = sa
        self._workflow = _SecAggPlus(
            num_shares=sa.num_shares, reconstruction_threshold=sa.reconstruction_threshold, max_weight=MAX_WEIGHT,
            clipping_range=sa.clipping_range, quantization_range=sa.quantization_range, modulus_range=MODULUS_RANGE,
            timeout=timeout)
        self.last_survivors = 0  # devices whose masked update is in the last round's sum

    def __getattr__(self, name):
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        if not messages or messages[0].metadata.message_type != MessageType.TRAIN:
            return self._grid.send_and_receive(messages, timeout=timeout)
        return self._secure_round(messages)

    def _secure_round(self, messages: list[Message]) -> list[Message]:
        most = secagg_max_cohort(self._sa.quantization_range)
        if len(messages) > most:  # the strategy caps its sample; this is the last line of defence
            raise RuntimeError(f"secure aggregation: {len(messages)} devices asked in one round, but at most {most} "
                               f"fit the 2**32 ring with secagg.quantization-range = {self._sa.quantization_range}")
        first = messages[0].content
        keys = list(first["arrays"].keys())
        current = first["arrays"].to_numpy_ndarrays()
        config = dict(first["config"])
        server_round = int(config.get("server-round", 1))
        # The round as devices count it (after a resume too): the workflow sends it as every SecAgg+
        # message's group id, and a device decides at the setup message, which carries nothing else.
        global_round = server_round + int(config.get(ROUND_OFFSET, 0))
        round_ = _OneRound([m.metadata.dst_node_id for m in messages], config, self._grid)
        state = Context(run_id=0, node_id=0, node_config={}, state=RecordDict(), run_config={})
        state.state[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: global_round})
        state.state[MAIN_PARAMS_RECORD] = ArrayRecord(current)
        self._workflow(self._grid, LegacyContext(state, ServerConfig(num_rounds=1), round_))
        self.last_survivors = len(round_.results)
        if not round_.results:
            log.warning("secure aggregation: round %d released nothing (too few devices finished SecAgg+)",
                        server_round)
            return []
        # The workflow hands back SecAgg+'s sum divided by the devices in it, in float64.
        mean_update = parameters_to_ndarrays(round_.results[0][1].parameters)
        # Central DP (server_app/privacy.py; it sends the clipping norm) adds up the k replies'
        # updates itself and casts its release to the model's dtype: it gets the aggregate in
        # float64, so the k copies add up to SecAgg+'s sum to float64 precision. Rounded to the
        # model's float32 first, each copy would be off by up to half a float32 step of the weight,
        # and the sum under the noise by k times that. FedAvg (no central DP) averages the copies
        # into the next model: they keep the model's dtype.
        exact = KEY_CLIPPING_NORM in config
        weights = [np.asarray(c, np.float64) + u if exact else (np.asarray(c, np.float64) + u).astype(c.dtype)
                   for c, u in zip(current, mean_update, strict=True)]
        aggregate = ArrayRecord({k: Array(w) for k, w in zip(keys, weights)})
        by_node = {m.metadata.dst_node_id: m for m in messages}
        log.info("secure aggregation: the sum of %d masked updates unmasked (quantisation step %.3g per value)",
                 len(round_.results), quantisation_step(self._sa))
        # One reply per device that finished, as FedAvg expects; each holds the same aggregate.
        return [Message(RecordDict({"arrays": aggregate, "metrics": MetricRecord(dict(res.metrics))}),
                        reply_to=by_node[proxy.node_id])
                for proxy, res in round_.results]


class _OneRound(LegacyStrategy):
    """The legacy strategy SecAggPlusWorkflow drives, for one round: it asks the devices the
    Message-API strategy chose, with the config it chose, and keeps what the workflow unmasked."""

    def __init__(self, node_ids: list[int], config: dict, grid):
        self._node_ids, self._config, self._grid = node_ids, config, grid
        self.results: list = []

    def configure_fit(self, server_round, parameters, client_manager):
        ins = FitIns(parameters, dict(self._config))
        return [(GridClientProxy(node, self._grid, 0), ins) for node in self._node_ids]

    def aggregate_fit(self, server_round, results, failures):
        self.results = results  # each FitRes now holds the unmasked average (the workflow's doing)
        return (results[0][1].parameters if results else None), {}

    def initialize_parameters(self, client_manager):
        return None

    def configure_evaluate(self, server_round, parameters, client_manager):
        return []

    def aggregate_evaluate(self, server_round, results, failures):
        return None, {}

    def evaluate(self, server_round, parameters):
        return None
