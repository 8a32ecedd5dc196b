"""ClientApp: one device. Translates Flower messages into task/ calls and back.

The device's text is read from `data-path` in its node config (a real device) or from its
simulated partition (`partition-id` / `num-partitions`). Only weights and metrics leave the
device (clipped and noised first when a dp.mode asks for it; under DP only what the guarantee
covers: task.privacy.released_train_metrics). A device whose text is unusable logs the problem
in full and replies with its category only (no file names or paths); the server goes on without it.

Each handler is the device's work itself; what a feature adds around it is a mod in the
handler's list, outermost first. The release boundary (client_app/boundary.py) is the outermost
pair on every handler: any failure leaves as its category only, and a reply holding a value
task/releases.py does not declare (or withholds under DP) is refused. The rest are each a no-op
unless its run-config key turns it on: may the
device work now (features/participation/eligibility.py, before TensorFlow is imported), SecAgg+
(features/secagg/client.py), the transfer encoding (features/transfer/client.py), a simulated
straggler's delay, what the message cost the device (features/participation/cost.py), and the
clipping of the dp.mode (client_app/privacy.py) or local DP's clipping and noise
(features/dp_mechanisms/local_dp.py), innermost so that they see the float32 update.
"""

from __future__ import annotations

import logging
import time

from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client_app.boundary import boundary_mod, failure_mod
from client_app.messages import DEVICE_DATA_UNUSABLE, added_words, config_of, global_round
from task.config import EVAL_PREFIX, EVALUATE_FIRST, QUERY_DEPTH, QUERY_PREFIXES, QUERY_VOTE, Config
from task.data.device_text import DeviceText, cached_device_text
from task.data.files import DataError
from task.data.vocab import run_vocabulary
from task.privacy import DP_WEIGHT, released_train_metrics

__all__ = ["DEVICE_DATA_UNUSABLE", "app"]
# Reply metric: seconds the handler computed (data, model, training or scoring). The server sums
# it per round, so a run shows how much of its wall time is compute and how much is Flower.
COMPUTE_SECONDS = "compute-seconds"

log = logging.getLogger("flwr")
app = ClientApp()


def eligibility_mod(msg: Message, context: Context, call_next) -> Message:
    """participation: decline at once if this device may not work now (loaded only when asked)."""
    if not config_of(context).participation:
        return call_next(msg, context)
    from features.participation.eligibility import eligibility_mod as eligible

    return eligible(msg, context, call_next)


def straggler_mod(msg: Message, context: Context, call_next) -> Message:
    """participation.stragglers: a simulated slow device replies late (loaded only when asked)."""
    if not config_of(context).stragglers:
        return call_next(msg, context)
    from features.participation.eligibility import straggler_mod as straggle

    return straggle(msg, context, call_next)


def cost_mod(msg: Message, context: Context, call_next) -> Message:
    """participation: what the message cost this device (CPU, memory, energy) in its reply (loaded only then)."""
    if not config_of(context).participation:
        return call_next(msg, context)
    from features.participation.cost import cost_mod as metered

    return metered(msg, context, call_next)


def secure_aggregation_mod(msg: Message, context: Context, call_next) -> Message:
    """secagg.enabled: the rest of the train path inside SecAgg+ (loaded only then)."""
    if not config_of(context).secure_aggregation:
        return call_next(msg, context)
    from features.secagg.client import secure_aggregation_mod as secure

    return secure(msg, context, call_next)


def transfer_mod(msg: Message, context: Context, call_next) -> Message:
    """transfer.dtype: decode the model received, encode the update sent (loaded only when asked)."""
    cfg = config_of(context)
    if cfg.transfer_dtype == "float32" or cfg.secure_aggregation:
        return call_next(msg, context)
    from features.transfer.client import transfer_mod as encoded

    return encoded(cfg.transfer_dtype)(msg, context, call_next)


def dp_mod(msg: Message, context: Context, call_next) -> Message:
    """A central dp.mode: the clipping mods its devices run around training (client_app/privacy.py
    chooses them; loaded only then)."""
    if not config_of(context).dp.central:
        return call_next(msg, context)
    from client_app.privacy import dp_mod as clipped

    return clipped(msg, context, call_next)


def local_dp_mod(msg: Message, context: Context, call_next) -> Message:
    """dp.mode = "local": the device clips and noises its own update (loaded only then)."""
    dp = config_of(context).dp
    if dp.mode != "local":
        return call_next(msg, context)
    from features.dp_mechanisms.local_dp import LocalDp

    return LocalDp.for_config(dp)(msg, context, call_next)


@app.train(mods=[failure_mod, boundary_mod, eligibility_mod, secure_aggregation_mod, boundary_mod, transfer_mod,
                 straggler_mod, cost_mod, dp_mod, local_dp_mod])
def train(msg: Message, context: Context) -> Message:
    from task import device  # imports TensorFlow: only once the device has agreed to work

    started = time.perf_counter()
    cfg = config_of(context)
    received, added, server_round = msg.content["arrays"].to_numpy_ndarrays(), added_words(msg), global_round(msg)
    score = None
    try:
        text = _device_text(cfg, context, server_round)
        # the received model's score, as evaluate gives it; never under DP (task/releases.py)
        if msg.content["config"].get(EVALUATE_FIRST, False) and cfg.scores_in_train:
            score = _score(cfg, text, received, msg, context)
        # the round's config reaches task.train as the server's strategy sent it (FedProx's proximal-mu)
        arrays, metrics = device.train_round(cfg, text, received, server_round, added, _fit(cfg),
                                             round_config=dict(msg.content["config"]))
    except DataError as e:
        return _error_reply(msg, context, e)
    metrics[COMPUTE_SECONDS] = time.perf_counter() - started  # follows the text's size: not released under DP
    metrics = released_train_metrics(cfg.dp, metrics)
    if score is not None:  # what an evaluate message would have sent, under DP too
        metrics.update({EVAL_PREFIX + k: v for k, v in score.items() if k != DP_WEIGHT})
    return Message(RecordDict({"arrays": ArrayRecord(arrays), "metrics": MetricRecord(metrics)}), reply_to=msg)


@app.evaluate(mods=[failure_mod, boundary_mod, eligibility_mod, transfer_mod, straggler_mod, cost_mod])
def evaluate(msg: Message, context: Context) -> Message:
    started = time.perf_counter()
    cfg = config_of(context)
    try:
        text = _device_text(cfg, context, global_round(msg))
        metrics = _scores(cfg, text, msg.content["arrays"].to_numpy_ndarrays(), msg, context)
    except DataError as e:
        return _error_reply(msg, context, e)
    _add_compute_seconds(cfg, metrics, started)
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)


@app.query(mods=[failure_mod, boundary_mod, eligibility_mod])
def query(msg: Message, context: Context) -> Message:
    """One TrieHH vote (features/discovery/triehh.py): a prefix of one of this device's own words the
    vocabulary lacks, extending the trie the server sent, or none. Nothing else leaves the device.
    No TensorFlow: a query costs a device reading its text and counting words."""
    from features.discovery.triehh import device_vote, out_of_vocabulary
    from task.privacy.mechanisms import secret_rng

    cfg = config_of(context)
    config = msg.content["config"]
    try:
        text = _device_text(cfg, context, global_round(msg))
    except DataError as e:
        return _error_reply(msg, context, e)
    words = out_of_vocabulary(text.train, run_vocabulary(cfg.model.vocab_size, added_words(msg)))
    vote = device_vote(words, set(config.get(QUERY_PREFIXES, [])), int(config[QUERY_DEPTH]), secret_rng())
    return Message(RecordDict({QUERY_VOTE: ConfigRecord({QUERY_VOTE: vote or ""})}), reply_to=msg)


def _scores(cfg: Config, text: DeviceText, weights, msg: Message, context: Context) -> dict:
    """The model's scores on the held-out text, and the keyboard this device would ship (the model
    alone or mixed with the user's counts, as the device chooses: task/personal.py). Under DP the
    shared model's only: the mix and the baselines are fit on the training text (task/releases.py)."""
    from task import device

    return device.evaluate_round(cfg, text, weights, added_words(msg), personal=not cfg.dp.enabled)


def _score(cfg: Config, text: DeviceText, weights, msg: Message, context: Context) -> dict | None:
    """The received model's score on the held-out text, as an evaluate message would give it; a
    device whose test text cannot be scored still trains."""
    started = time.perf_counter()
    try:
        metrics = _scores(cfg, text, weights, msg, context)
    except DataError as e:
        log.warning("node %s: not scored: %s", context.node_id, e)
        return None
    _add_compute_seconds(cfg, metrics, started)
    return metrics


def _add_compute_seconds(cfg: Config, metrics: dict, started: float) -> None:
    """How long scoring took follows the size of the device's text: under DP it is sent only with
    dp.report-train-metrics (outside the guarantee), like the training reply's timings."""
    if not cfg.dp.enabled or cfg.dp.report_train_metrics:
        metrics[COMPUTE_SECONDS] = time.perf_counter() - started


def _fit(cfg: Config):
    """How the device trains: DP-SGD when dp.sgd asks for it (loaded only then), else task.device's own."""
    if not cfg.dp.sgd:
        return None
    from features.dp_mechanisms.dpsgd import dpsgd_fit  # imports tensorflow-privacy

    return dpsgd_fit


def _device_text(cfg: Config, context: Context, server_round: int) -> DeviceText:
    node = context.node_config
    partition_id, data_path = int(node.get("partition-id", 0)), str(node["data-path"]) if node.get("data-path") else None
    text = cached_device_text(cfg, partition_id=partition_id, num_partitions=int(node.get("num-partitions", 1)),
                              data_path=data_path)
    if cfg.audit_canaries:  # the privacy audit's secrets, in simulated text only
        from features.audit.canary import with_canaries

        text = with_canaries(cfg, text, partition_id, data_path)
    if cfg.new_word and not node.get("data-path"):  # the new-word scenario: simulated personas only
        from features.discovery.new_word import with_new_word

        text = with_new_word(cfg, text, partition_id, server_round)
    for note in text.notes:  # files skipped or repaired: in the device's own log, not sent
        log.warning("node %s: %s", context.node_id, note)
    return text


def _error_reply(msg: Message, context: Context, error: DataError) -> Message:
    log.error("node %s: %s", context.node_id, error)  # in full, in the device's own log
    return Message(Error(code=DEVICE_DATA_UNUSABLE, reason=error.reason), reply_to=msg)
