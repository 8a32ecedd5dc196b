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

import numpy as np
from flwr.app import Context, Error, Message

from client_app.messages import config_of
from task.privacy import DP_WEIGHT
from task.releases import (ERROR_REASONS, FAILED, FAILURE_CATEGORIES, RECORD_TYPES, UNDECLARED, device_value,
                           error_reason)

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
    """Refuse a run the device's node config does not accept (`refusal`); refuse to send a value
    task/releases.py does not declare for this reply under this run's DP, a record of another type
    than declared, a metric that is not a number, a dp-weight other than 1 under DP, an update whose
    arrays are not the received model's, or a vote that is not a prefix at the asked depth."""
    cfg = config_of(context)
    kind = msg.metadata.message_type.split(".")[0]
    refused = refusal(context.node_config, cfg, kind)
    if refused:
        log.error("node %s: refused this run's %s message: %s", context.node_id, kind, refused)
        return Message(Error(code=102, reason=refused), reply_to=msg)
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
    problem = _undeclared(msg, reply, cfg, kind)
    if problem:
        log.error("node %s: refused to send %s", context.node_id, problem)
        return Message(Error(code=UNDECLARED, reason=ERROR_REASONS[UNDECLARED][0]), reply_to=msg)
    return reply


def refusal(node_config, cfg, kind: str) -> str | None:
    """Why this device refuses the message, from its own node config (review L1: the run config,
    dp.mode included, comes from whoever submits the run):
    - `dp-required`: the weakest protection it accepts; any level also refuses
      dp.report-train-metrics, and "local" refuses evaluate and query messages (their values are
      not covered by local DP: task/releases.py);
    - `dp-max-local-epsilon`: the largest dp.local-epsilon per release it accepts."""
    required = node_config.get("dp-required")
    if required:
        if required not in DP_REQUIRED:
            return ERROR_REASONS[102][0]
        if not DP_REQUIRED[required](cfg.dp):
            return ERROR_REASONS[102][1]
        if cfg.dp.report_train_metrics or (required == "local" and kind in ("evaluate", "query")):
            return ERROR_REASONS[102][2]
    most = node_config.get("dp-max-local-epsilon")
    if most is not None:
        try:
            most = float(most)
        except (TypeError, ValueError):
            return ERROR_REASONS[102][0]
        if cfg.dp.mode == "local" and cfg.dp.local_epsilon > most:
            return ERROR_REASONS[102][3]
    return None


def _undeclared(msg: Message, reply: Message, cfg, kind: str) -> str | None:
    """What of `reply` may not leave (task/releases.py), in words for the device's log; None: all may."""
    dp = cfg.dp
    for record, values in reply.content.items():
        expected = RECORD_TYPES.get(record)
        if expected and type(values).__name__ != expected:
            return f"{record}: a {type(values).__name__}, declared as a {expected}"
        for key in _keys(values):
            value = device_value(kind, record, key)
            if value is None or not value.leaves(dp.enabled, dp.report_train_metrics):
                why = "not declared in task/releases.py" if value is None else f"{value.under_dp} under DP"
                return f"{record}/{key}: {why}"
            item = values[key]
            if type(values).__name__ == "MetricRecord" and not isinstance(item, (int, float)):
                return f"{record}/{key}: a {type(item).__name__}, not a number"
            if key == DP_WEIGHT and dp.enabled and item != 1:
                return f"{record}/{key} = {item}: every device weighs 1 under DP"
    if not _same_arrays(msg, reply, cfg):
        return "an update whose arrays differ from the received model's"
    if kind == "query" and not _a_vote(msg, reply):
        return "a vote that is not one prefix at the asked depth"
    return None


def _keys(record) -> list[str]:
    return list(record.keys())


def _same_arrays(msg: Message, reply: Message, cfg) -> bool:
    """An update holds the received model's arrays, by name, shape and dtype, and nothing else; a
    transfer encoding's (features/transfer/codec.py) one array per weight, or for int8 two (the
    8-bit values and their scales), never more bytes in all than the model."""
    sent, received = reply.content.array_records.get("arrays"), msg.content.array_records.get("arrays")
    if sent is None or received is None:
        return True
    got, had = [sent[k] for k in sent.keys()], [received[k] for k in received.keys()]
    if cfg.transfer_dtype == "float32":
        return list(sent.keys()) == list(received.keys()) and all(
            tuple(a.shape) == tuple(b.shape) and a.dtype == b.dtype for a, b in zip(got, had))
    per = 2 if cfg.transfer_dtype == "int8" else 1
    size = lambda arrays: sum(int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize for a in arrays)  # noqa: E731
    return len(got) == per * len(had) and size(got) <= size(had)


def _a_vote(msg: Message, reply: Message) -> bool:
    """A TrieHH vote (features/discovery/triehh.py): none, or `depth` characters (END included)
    whose first depth - 1 are a prefix the server sent."""
    from task.config import QUERY_DEPTH, QUERY_PREFIXES, QUERY_VOTE

    config = msg.content.config_records.get("config") or {}
    vote = reply.content.config_records.get(QUERY_VOTE, {}).get(QUERY_VOTE, "")
    if vote == "":
        return True
    depth = int(config.get(QUERY_DEPTH, 0))
    return isinstance(vote, str) and len(vote) == depth and (depth == 1 or vote[:-1] in set(config.get(QUERY_PREFIXES, [])))
