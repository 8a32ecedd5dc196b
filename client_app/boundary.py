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
from task.releases import FAILED, UNDECLARED, device_value

log = logging.getLogger("flwr")
# The categories a failure may be reported as: nothing of the exception's message leaves.
_CATEGORIES = ((MemoryError, "out of memory"), (TimeoutError, "timed out"), (OSError, "storage or I/O error"),
               (ValueError, "invalid value"), (ArithmeticError, "arithmetic error"))


def category(error: BaseException) -> str:
    for kind, name in _CATEGORIES:
        if isinstance(error, kind):
            return name
    return "internal error"


def failure_mod(msg: Message, context: Context, call_next) -> Message:
    """Outermost: an exception anywhere in the handler or its mods leaves as its category only."""
    try:
        return call_next(msg, context)
    except Exception as e:  # noqa: BLE001 - every failure, by design: its text must not leave
        log.exception("node %s: the %s handler failed", context.node_id, msg.metadata.message_type)
        return Message(Error(code=FAILED, reason=category(e)), reply_to=msg)


def boundary_mod(msg: Message, context: Context, call_next) -> Message:
    """Refuse to send a value task/releases.py does not declare for this reply under this run's DP."""
    reply = call_next(msg, context)
    if reply.has_error():
        return reply
    dp = config_of(context).dp
    kind = msg.metadata.message_type.split(".")[0]
    for record, values in reply.content.items():
        for key in _keys(values):
            value = device_value(kind, record, key)
            if value is None or not value.leaves(dp.enabled, dp.report_train_metrics):
                why = "not declared in task/releases.py" if value is None else f"{value.under_dp} under DP"
                log.error("node %s: refused to send %s/%s: %s", context.node_id, record, key, why)
                return Message(Error(code=UNDECLARED, reason=f"{record}/{key}: {why}"), reply_to=msg)
    return reply


def _keys(record) -> list[str]:
    return list(record.keys())
