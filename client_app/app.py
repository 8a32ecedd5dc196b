"""ClientApp: one device. Translates Flower messages into task/ calls and back.

The device's text is read from `data-path` in its node config (a real device) or from its
simulated partition (`partition-id` / `num-partitions`). Only weights and metrics leave the
device (clipped and noised first when a dp-mode asks for it; under DP only what the guarantee
covers: task.privacy.mechanisms.released_train_metrics). A device whose text is unusable logs the problem
in full and replies with its category only (no file names or paths); the server goes on without it.

A device first checks that it may work now (client_app/eligibility.py) and declines at once if
not; TensorFlow is imported only after that, by task.device. With secure-aggregation a round is
four SecAgg+ messages (client_app/secure.py); the device decides at the first one.
"""

from __future__ import annotations

import logging
import time

from flwr.app import ArrayRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client_app import eligibility
from client_app.cost import CostMeter
from client_app.eligibility import NodeConfigError
from client_app.privacy import Handler, train_mods, with_mods
from client_app.secure import is_setup, secure_train
from client_app.transfer import transfer_mod
from task.config import EVAL_PREFIX, EVALUATE_FIRST, NOT_ELIGIBLE, ROUND_OFFSET, Config
from task.data.device_text import DeviceText, cached_device_text
from task.data.files import DataError
from task.privacy.mechanisms import DP_WEIGHT, released_train_metrics

DEVICE_DATA_UNUSABLE = 100  # Error code: the device's text could not be used (see reason)
DEVICE_CONFIG_INVALID = 102  # Error code: a node-config value is wrong (the reason names the key)
# Reply metric: seconds the handler computed (data, model, training or scoring). The server sums
# it per round, so a run shows how much of its wall time is compute and how much is Flower.
COMPUTE_SECONDS = "compute-seconds"

log = logging.getLogger("flwr")
app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    cfg = Config.from_run_config(context.run_config)
    # With secure-aggregation a round is four messages; the first one asks the device to take part.
    declined = _declined(cfg, msg, context) if not cfg.secure_aggregation or is_setup(msg) else None
    if declined:
        return declined
    if cfg.secure_aggregation:
        return secure_train(cfg, _trainer(cfg, train_mods(cfg.dp)))(msg, context)
    return _trainer(cfg, [transfer_mod(cfg.transfer_dtype), *train_mods(cfg.dp)])(msg, context)


def _trainer(cfg: Config, mods: list) -> Handler:
    """_train inside the mods (outermost first); a simulated straggler replies late."""
    def handler(msg: Message, context: Context) -> Message:
        return _straggle(cfg, context, with_mods(mods, _train)(msg, context))

    return handler


def _train(msg: Message, context: Context) -> Message:
    from task import (
        device,  # imports TensorFlow: only once the device has agreed to work
    )

    started = time.perf_counter()
    cfg = Config.from_run_config(context.run_config)
    received = msg.content["arrays"].to_numpy_ndarrays()
    score = None
    try:
        with CostMeter(context.node_config) as meter:
            text = _device_text(cfg, context)
            if msg.content["config"].get(EVALUATE_FIRST, False):
                score = _score(cfg, text, received, context)
            arrays, metrics = device.train_round(cfg, text, received, server_round=_global_round(msg))
    except DataError as e:
        return _error_reply(msg, context, e)
    metrics[COMPUTE_SECONDS] = time.perf_counter() - started
    metrics.update(meter.metrics())  # a function of the text's size: not released under DP (below)
    metrics = released_train_metrics(cfg.dp, metrics)
    if score is not None:  # what an evaluate message would have sent, under DP too
        metrics.update({EVAL_PREFIX + k: v for k, v in score.items() if k != DP_WEIGHT})
    return Message(RecordDict({"arrays": ArrayRecord(arrays), "metrics": MetricRecord(metrics)}), reply_to=msg)


def _score(cfg: Config, text: DeviceText, weights, context: Context) -> dict | None:
    """The received model's score on the held-out text, as an evaluate message would give it; a
    device whose test text cannot be scored still trains."""
    from task import device

    started = time.perf_counter()
    try:
        metrics = device.evaluate_round(cfg, text, weights)
    except DataError as e:
        log.warning("node %s: not scored: %s", context.node_id, e)
        return None
    metrics[COMPUTE_SECONDS] = time.perf_counter() - started
    return metrics


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    cfg = Config.from_run_config(context.run_config)
    declined = _declined(cfg, msg, context)
    if declined:
        return declined
    reply = with_mods([transfer_mod(cfg.transfer_dtype)], _evaluate)(msg, context)
    return _straggle(cfg, context, reply)


def _evaluate(msg: Message, context: Context) -> Message:
    from task import device

    started = time.perf_counter()
    cfg = Config.from_run_config(context.run_config)
    try:
        with CostMeter(context.node_config) as meter:
            text = _device_text(cfg, context)
            metrics = device.evaluate_round(cfg, text, msg.content["arrays"].to_numpy_ndarrays())
    except DataError as e:
        return _error_reply(msg, context, e)
    metrics[COMPUTE_SECONDS] = time.perf_counter() - started
    if not cfg.dp.enabled or cfg.dp.report_train_metrics:  # its time and energy follow the text's size
        metrics.update(meter.metrics())
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)


def _declined(cfg: Config, msg: Message, context: Context) -> Message | None:
    """An immediate reply if this device may not work now (or its node config is wrong)."""
    try:
        reason = eligibility.check(cfg.sim, cfg.seed, context.node_config, _global_round(msg))
    except NodeConfigError as e:
        log.error("node %s: %s", context.node_id, e)
        return Message(Error(code=DEVICE_CONFIG_INVALID, reason=str(e)), reply_to=msg)
    if reason is None:
        return None
    log.info("node %s: %s", context.node_id, reason)
    return Message(Error(code=NOT_ELIGIBLE, reason=reason), reply_to=msg)


def _straggle(cfg: Config, context: Context, reply: Message) -> Message:
    """A simulated straggler (sim-stragglers) replies sim-straggler-seconds late."""
    node = context.node_config
    if eligibility.is_simulated(node) and eligibility.is_straggler(cfg.sim, cfg.seed, int(node["partition-id"])):
        log.info("node %s: simulated straggler, replying %g s late", context.node_id, cfg.sim.straggler_seconds)
        time.sleep(cfg.sim.straggler_seconds)
    return reply


def _global_round(msg: Message) -> int:
    config = msg.content.config_records.get("config")
    if config is None:  # a SecAgg+ setup message: its group id is the round (server_app/secure.py)
        return int(msg.metadata.group_id or 1)
    return int(config.get("server-round", 1)) + int(config.get(ROUND_OFFSET, 0))


def _device_text(cfg: Config, context: Context) -> DeviceText:
    node = context.node_config
    text = cached_device_text(cfg, partition_id=int(node.get("partition-id", 0)),
                            num_partitions=int(node.get("num-partitions", 1)),
                            data_path=str(node["data-path"]) if node.get("data-path") else None)
    for note in text.notes:  # files skipped or repaired: in the device's own log, not sent
        log.warning("node %s: %s", context.node_id, note)
    return text


def _error_reply(msg: Message, context: Context, error: DataError) -> Message:
    log.error("node %s: %s", context.node_id, error)  # in full, in the device's own log
    return Message(Error(code=DEVICE_DATA_UNUSABLE, reason=error.reason), reply_to=msg)
