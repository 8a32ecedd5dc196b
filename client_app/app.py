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

from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp

from client_app import eligibility
from client_app.cost import CostMeter
from client_app.eligibility import NodeConfigError
from client_app.privacy import Handler, train_mods, with_mods
from client_app.secure import is_setup, secure_train
from client_app.transfer import transfer_mod
from task.config import (
    EVAL_PREFIX,
    EVALUATE_FIRST,
    NOT_ELIGIBLE,
    QUERY_DEPTH,
    QUERY_PREFIXES,
    QUERY_VOTE,
    ROUND_OFFSET,
    VOCAB_ADDED,
    Config,
)
from task.data.device_text import DeviceText, cached_device_text, with_new_word
from task.data.files import DataError
from task.data.vocab import run_vocabulary
from task.discovery.triehh import device_vote, out_of_vocabulary
from task.privacy.mechanisms import DP_WEIGHT, released_train_metrics, secret_rng

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
    added = _added_words(msg)
    score = None
    try:
        with CostMeter(context.node_config) as meter:
            text = _device_text(cfg, context, _global_round(msg))
            if msg.content["config"].get(EVALUATE_FIRST, False):
                score = _score(cfg, text, received, added, context)
            arrays, metrics = device.train_round(cfg, text, received, server_round=_global_round(msg), added=added)
    except DataError as e:
        return _error_reply(msg, context, e)
    metrics[COMPUTE_SECONDS] = time.perf_counter() - started
    metrics.update(meter.metrics())  # a function of the text's size: not released under DP (below)
    metrics = released_train_metrics(cfg.dp, metrics)
    if score is not None:  # what an evaluate message would have sent, under DP too
        metrics.update({EVAL_PREFIX + k: v for k, v in score.items() if k != DP_WEIGHT})
    return Message(RecordDict({"arrays": ArrayRecord(arrays), "metrics": MetricRecord(metrics)}), reply_to=msg)


def _score(cfg: Config, text: DeviceText, weights, added: tuple[str, ...], context: Context) -> dict | None:
    """The received model's score on the held-out text, as an evaluate message would give it; a
    device whose test text cannot be scored still trains."""
    from task import device

    started = time.perf_counter()
    try:
        metrics = device.evaluate_round(cfg, text, weights, added)
    except DataError as e:
        log.warning("node %s: not scored: %s", context.node_id, e)
        return None
    _add_compute_seconds(cfg, metrics, started)
    return metrics


def _add_compute_seconds(cfg: Config, metrics: dict, started: float) -> None:
    """How long scoring took follows the size of the device's text: under DP it is sent only with
    dp-report-train-metrics (outside the guarantee), like the training reply's timings."""
    if not cfg.dp.enabled or cfg.dp.report_train_metrics:
        metrics[COMPUTE_SECONDS] = time.perf_counter() - started


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
            text = _device_text(cfg, context, _global_round(msg))
            metrics = device.evaluate_round(cfg, text, msg.content["arrays"].to_numpy_ndarrays(), _added_words(msg))
    except DataError as e:
        return _error_reply(msg, context, e)
    _add_compute_seconds(cfg, metrics, started)
    if not cfg.dp.enabled or cfg.dp.report_train_metrics:  # its time and energy follow the text's size
        metrics.update(meter.metrics())
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """One TrieHH vote (task/discovery/triehh.py): a prefix of one of this device's own words the
    vocabulary lacks, extending the trie the server sent, or none. Nothing else leaves the device.
    No TensorFlow: a query costs a device reading its text and counting words."""
    cfg = Config.from_run_config(context.run_config)
    declined = _declined(cfg, msg, context)
    if declined:
        return declined
    config = msg.content["config"]
    try:
        text = _device_text(cfg, context, _global_round(msg))
    except DataError as e:
        return _error_reply(msg, context, e)
    words = out_of_vocabulary(text.train, run_vocabulary(cfg.model.vocab_size, _added_words(msg)))
    vote = device_vote(words, set(config.get(QUERY_PREFIXES, [])), int(config[QUERY_DEPTH]), secret_rng())
    return Message(RecordDict({QUERY_VOTE: ConfigRecord({QUERY_VOTE: vote or ""})}), reply_to=msg)


def _added_words(msg: Message) -> tuple[str, ...]:
    return tuple(msg.content["config"].get(VOCAB_ADDED, [])) if "config" in msg.content.config_records else ()


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


def _device_text(cfg: Config, context: Context, server_round: int) -> DeviceText:
    node = context.node_config
    text = cached_device_text(cfg, partition_id=int(node.get("partition-id", 0)),
                            num_partitions=int(node.get("num-partitions", 1)),
                            data_path=str(node["data-path"]) if node.get("data-path") else None)
    if cfg.new_word and not node.get("data-path"):  # the new-word scenario: simulated personas only
        text = with_new_word(cfg, text, int(node.get("partition-id", 0)), server_round)
    for note in text.notes:  # files skipped or repaired: in the device's own log, not sent
        log.warning("node %s: %s", context.node_id, note)
    return text


def _error_reply(msg: Message, context: Context, error: DataError) -> Message:
    log.error("node %s: %s", context.node_id, error)  # in full, in the device's own log
    return Message(Error(code=DEVICE_DATA_UNUSABLE, reason=error.reason), reply_to=msg)
