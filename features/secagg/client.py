"""The device's side of `secagg.enabled`: Flower's `secaggplus_mod` masks the update before it
leaves the device, so the server can only recover the sum of the updates (features/secagg/server.py).

A SecAgg+ round is four train messages: setup (keys), share keys, collect masked vectors (the
one that trains) and unmask (shares that remove the masks of the sum). `secaggplus_mod` handles
them and speaks Flower's legacy FitIns/FitRes layout; `_as_fit` translates between that layout
and the one the rest of the ClientApp uses, and sends the clipped update (new weights minus the
model received) with weight 1 (features/secagg/server.py says why). Masks come from
features/secagg/masks.py, not Flower's 32-bit-seeded generator (that module says why).
"""

from __future__ import annotations

import importlib
import logging

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, RecordDict
from flwr.client.mod import secaggplus_mod  # the legacy mod: Flower 1.42 has no Message-API SecAgg+
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.compat.common import recorddict_compat as compat

from client_app.privacy import Handler, with_mods
from features.secagg import masks
from task.config import Config

# Flower's mod calls the generator by the name it imported; the ServerApp replaces its own too.
importlib.import_module("flwr.client.mod.secure_aggregation.secaggplus_mod").pseudo_rand_gen = masks.mask

log = logging.getLogger("flwr")
# Reply metric (without DP only): update values beyond +-secagg-clipping-range, which SecAgg+
# clips. Under a dp.mode that clips updates there are none (task.config checks the ranges).
CLIPPED_VALUES = "secagg-clipped-values"


def stage(msg: Message) -> str | None:
    """The SecAgg+ stage a train message asks for (None: not a SecAgg+ message)."""
    configs = msg.content.config_records.get(RECORD_KEY_CONFIGS) if msg.has_content() else None
    return str(configs[Key.STAGE]) if configs and Key.STAGE in configs else None


def is_setup(msg: Message) -> bool:
    """The first message of a round: where a device agrees to take part (or declines)."""
    return stage(msg) == Stage.SETUP


def secure_train(cfg: Config, train: Handler) -> Handler:
    """`train` (our message layout in, our reply out) inside SecAgg+."""
    return with_mods([_failures_as_replies, _log_setup, secaggplus_mod, _as_fit(cfg)], train)


class _Failed(Exception):
    def __init__(self, error: Error):
        super().__init__(error.reason)
        self.error = error


def _failures_as_replies(msg: Message, context: Context, call_next: Handler) -> Message:
    """A device whose training failed replies with its error, as outside SecAgg+ (the mod itself
    cannot pass an error reply on); SecAgg+ then treats it as a dropout."""
    try:
        return call_next(msg, context)
    except _Failed as e:
        return Message(e.error, reply_to=msg)


def _log_setup(msg: Message, context: Context, call_next: Handler) -> Message:
    joined = is_setup(msg)  # before the mod reads (and removes) the stage
    reply = call_next(msg, context)
    if joined and not reply.has_error():
        log.info("node %s: joined secure aggregation for round %s (keys sent)", context.node_id, msg.metadata.group_id)
    return reply


def _as_fit(cfg: Config):
    def mod(msg: Message, context: Context, call_next: Handler) -> Message:
        ins = compat.recorddict_to_fitins(msg.content, keep_input=True)
        log.info("node %s: training for secure aggregation, round %s", context.node_id, msg.metadata.group_id)
        received = parameters_to_ndarrays(ins.parameters)
        msg.content = RecordDict({"arrays": ArrayRecord(received), "config": ConfigRecord(ins.config)})
        reply = call_next(msg, context)
        if reply.has_error():
            raise _Failed(reply.error)
        new = reply.content["arrays"].to_numpy_ndarrays()
        update = [np.asarray(n, np.float64) - r for n, r in zip(new, received, strict=True)]
        metrics = dict(reply.content["metrics"])
        if not cfg.dp.enabled or cfg.dp.report_train_metrics:
            metrics[CLIPPED_VALUES] = int(sum(np.count_nonzero(np.abs(u) > cfg.feature("secagg").clipping_range) for u in update))
        log.info("node %s: update masked for secure aggregation", context.node_id)
        fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(update), num_examples=1, metrics=metrics)
        return Message(compat.fitres_to_recorddict(fitres, keep_input=True), reply_to=msg)

    return mod


def secure_aggregation_mod(msg: Message, context: Context, call_next: Handler) -> Message:
    """The rest of the train path inside SecAgg+."""
    return secure_train(Config.from_run_config(context.run_config), call_next)(msg, context)
