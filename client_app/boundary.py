"""The device's side of the release boundary (task/releases.py): the outermost mod of every handler.

- Any exception below it becomes an error reply with a fixed category (`category`); the traceback,
  which may quote file names, paths or text, stays in the device's own log.
- A reply holding a value that task/releases.py does not declare, or one it withholds under the
  run's DP settings, is not sent: the device replies with an error naming the key instead (fail
  closed), so a new feature cannot open a channel by adding a metric.

SecAgg+'s protocol messages are checked as the records task/releases.py declares for them; the
update inside is checked before it is masked, because this mod also sits inside SecAgg+'s
(client_app/app.py).
"""

from __future__ import annotations

import logging

from flwr.app import Context, Error, Message

from client_app.messages import config_of
from task.releases import ERROR_REASONS, FAILED, FAILURE_CATEGORIES, UNDECLARED, device_value, error_reason

log = logging.getLogger("flwr")
# The categories a failure may be reported as (task/releases.py): nothing of the exception's message leaves.
_CATEGORIES = dict(zip((MemoryError, TimeoutError, OSError, ValueError, ArithmeticError), FAILURE_CATEGORIES[1:]))


def category(error: BaseException) -> str:
    for kind, name in _CATEGORIES.items():
        if isinstance(error, kind):
            return name
    return FAILURE_CATEGORIES[0]


def failure_mod(msg: Message, context: Context, call_next) -> Message:
    """Outermost: an exception anywhere in the handler or its mods leaves as its category only."""
    try:
        return call_next(msg, context)
    except Exception as e:  # noqa: BLE001 - every failure, by design: its text must not leave
        log.exception("node %s: the %s handler failed", context.node_id, msg.metadata.message_type)
        return Message(Error(code=FAILED, reason=category(e)), reply_to=msg)


# node-config `dp-required`: the weakest protection this device accepts from a run (review L1: the
# run config, dp.mode included, comes from whoever submits the run, not from the device's owner)
DP_REQUIRED = {"any": lambda dp: dp.enabled, "central": lambda dp: dp.central or dp.mode == "local",
               "local": lambda dp: dp.mode == "local"}


def boundary_mod(msg: Message, context: Context, call_next) -> Message:
    """Refuse a run whose DP is weaker than the device's node-config `dp-required`; refuse to send a
    value task/releases.py does not declare for this reply under this run's DP, or an update whose
    arrays are not the received model's."""
    cfg = config_of(context)
    required = context.node_config.get("dp-required")
    if required:
        if required not in DP_REQUIRED:
            log.error("node %s: node-config dp-required = %r: expected one of %s", context.node_id, required,
                      sorted(DP_REQUIRED))
            return Message(Error(code=102, reason=ERROR_REASONS[102][0]), reply_to=msg)
        if not DP_REQUIRED[required](cfg.dp):
            log.error("node %s: the run's dp.mode = %r (dp.sgd = %s) is weaker than this device's dp-required = %r: "
                      "refused", context.node_id, cfg.dp.mode, cfg.dp.sgd, required)
            return Message(Error(code=102, reason=ERROR_REASONS[102][1]), reply_to=msg)
    reply = call_next(msg, context)
    if reply.has_error():  # a closed set of reasons per code (task/releases.py)
        code, reason = reply.error.code, reply.error.reason
        allowed = error_reason(code, reason)
        if allowed == reason:
            return reply
        log.error("node %s: error %s's reason %r is not in task/releases.py's list: sent as %r", context.node_id,
                  code, reason, allowed or ERROR_REASONS[FAILED][0])
        return Message(Error(code=code if allowed else FAILED, reason=allowed or ERROR_REASONS[FAILED][0]),
                       reply_to=msg)
    dp = cfg.dp
    kind = msg.metadata.message_type.split(".")[0]
    if not _same_arrays(msg, reply, cfg):
        log.error("node %s: refused to send an update whose arrays differ from the received model's", context.node_id)
        return Message(Error(code=UNDECLARED, reason=ERROR_REASONS[UNDECLARED][0]), reply_to=msg)
    for record, values in reply.content.items():
        for key in _keys(values):
            value = device_value(kind, record, key)
            if value is None or not value.leaves(dp.enabled, dp.report_train_metrics):
                why = "not declared in task/releases.py" if value is None else f"{value.under_dp} under DP"
                log.error("node %s: refused to send %s/%s: %s", context.node_id, record, key, why)
                return Message(Error(code=UNDECLARED, reason=ERROR_REASONS[UNDECLARED][0]), reply_to=msg)
    return reply


def _keys(record) -> list[str]:
    return list(record.keys())


def _same_arrays(msg: Message, reply: Message, cfg) -> bool:
    """An update holds the received model's arrays, by name and shape, and nothing else (checked
    where the update is plain float: the transfer encodings send their own layout)."""
    sent, received = reply.content.array_records.get("arrays"), msg.content.array_records.get("arrays")
    if sent is None or received is None or cfg.transfer_dtype != "float32":
        return True
    return list(sent.keys()) == list(received.keys()) and all(
        tuple(sent[k].shape) == tuple(received[k].shape) for k in sent.keys())
