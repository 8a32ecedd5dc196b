"""A Grid that counts what each round sent and what came back, and how many bytes; closes a
training round at its goal when the strategy over-selected (with `send_until_goal`, given by
server_app/app.py: features/participation/round_goal.py); and does not send to a device still busy
with an earlier message it was late for.

A device that was late or timed out may still be working. Asking it again before it is done
would queue a second message on it (a real SuperNode handles one at a time), and Flower 1.42's
simulation would run both at once in an actor pool that keys its jobs by partition id
(flwr/simulation/ray_transport/ray_actor.py), where two jobs of one device can take each other's
results. So such a device is counted as busy, which releases nothing, until its reply
(discarded) or an error for it arrives.

Wrapping the Grid (instead of subclassing FedAvg) keeps the counts right for any strategy,
including Flower's DP wrappers, which require an unmodified FedAvg inside.

With secure aggregation a training round is four SecAgg+ messages per device (features/secagg/server.py):
every one counts its bytes; the setup message counts the devices asked (and those that declined),
the collect-masked-vectors message the updates; a device that drops out at any stage before its
update is in counts as failed.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.constant import ErrorCode
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.common.serde import message_to_proto
from flwr.serverapp import Grid

from task.config import NOT_ELIGIBLE, ROUND_GOAL
from task.releases import error_reason

# Flower's error codes as a reason a device operator can act on (the device's own errors,
# client_app.app.DEVICE_DATA_UNUSABLE, carry their category in the reason itself).
FLOWER_ERRORS = {
    ErrorCode.LOAD_CLIENT_APP_EXCEPTION: "the ClientApp could not be loaded (missing package?)",
    ErrorCode.CLIENT_APP_RAISED_EXCEPTION: "the ClientApp raised an exception",
    ErrorCode.MESSAGE_UNAVAILABLE: "the message expired before the device fetched it",
    ErrorCode.REPLY_MESSAGE_UNAVAILABLE: "the reply was lost or expired",
    ErrorCode.NODE_UNAVAILABLE: "device offline (stopped heartbeating)",
    ErrorCode.MOD_FAILED_PRECONDITION: "a mod refused the message",
    ErrorCode.INVALID_FAB: "the app bundle could not be installed",
    ErrorCode.CLIENT_APP_CRASHED: "the ClientApp process crashed",
}


@dataclass
class PhaseCounts:
    sampled: int = 0
    replied: int = 0
    failed: int = 0
    not_eligible: int = 0  # declined at once (not charging, metered network, ...): not failures
    declined: list[int] = field(default_factory=list)  # their node ids: they released nothing
    late: int = 0  # replied after the round had reached its goal: discarded
    busy: int = 0  # still working on an earlier message: not sent this one
    asked: list[int] = field(default_factory=list)  # node ids of every device asked (busy ones too)
    failures: list[str] = field(default_factory=list)
    metrics: dict[int, dict] = field(default_factory=dict)  # node id -> its reply's metrics
    bytes_sent: int = 0  # serialised size of the messages to devices (the payload on the wire)
    bytes_received: int = 0  # and of their replies


class ObservedGrid:
    """Delegates to a real Grid; `take_counts()` returns and resets the counts per message type."""

    def __init__(self, grid: Grid, send_until_goal: Callable | None = None):
        self._grid = grid
        self._send_until_goal = send_until_goal
        self._counts: dict[str, PhaseCounts] = {}
        self._outstanding: dict[str, int] = {}  # message id -> node: sent, unanswered, given up on

    def __getattr__(self, name):
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        busy = self._busy_nodes()
        skipped = [m for m in messages if m.metadata.dst_node_id in busy]
        if skipped:
            messages = [m for m in messages if m.metadata.dst_node_id not in busy]
        goal = _round_goal(messages or skipped)
        stage = _secagg_stage(messages or skipped)
        late: set[str] = set()
        pulled = []  # every reply that came back, kept or discarded
        if not messages:
            replies = []
        elif self._send_until_goal and goal is not None and goal < len(messages):  # over-selection
            replies, late, _ = self._send_until_goal(self._grid, messages, goal, timeout, pulled=pulled)
        else:
            replies = pulled = list(self._grid.send_and_receive(messages, timeout=timeout))
        answered = {r.metadata.reply_to_message_id for r in replies}
        came_back = {r.metadata.reply_to_message_id for r in pulled}
        self._outstanding.update({m.metadata.message_id: m.metadata.dst_node_id for m in messages
                                  if m.metadata.message_id not in came_back})
        if messages or skipped:
            counts = self._counts.setdefault((messages or skipped)[0].metadata.message_type, PhaseCounts())
            counts.bytes_sent += sum(_size(m) for m in messages)
            counts.bytes_received += sum(_size(r) for r in replies)
            if stage in (None, Stage.SETUP):  # the devices asked
                counts.busy += len(skipped)
                counts.asked += [m.metadata.dst_node_id for m in messages + skipped]
                counts.declined += [m.metadata.dst_node_id for m in skipped]
                counts.sampled += len(messages) + len(skipped)
            if stage != Stage.UNMASK:  # at unmask the updates are in: a dropout there costs nothing
                self._count_failures(counts, messages, replies, answered, late, timeout)
            if stage in (None, Stage.COLLECT_MASKED_VECTORS):  # the updates
                node_of = {m.metadata.message_id: m.metadata.dst_node_id for m in messages}
                for reply in replies:
                    if not reply.has_error():
                        node = node_of.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
                        counts.replied += 1
                        counts.metrics[node] = {k: v for key, record in reply.content.items()
                                                if isinstance(record, MetricRecord | ConfigRecord)
                                                and key not in (RECORD_KEY_CONFIGS, "fitres.num_examples")
                                                and not key.endswith(".status") for k, v in record.items()}
        return replies

    @staticmethod
    def _count_failures(counts: PhaseCounts, messages, replies, answered, late, timeout) -> None:
        node_of = {m.metadata.message_id: m.metadata.dst_node_id for m in messages}
        for reply in replies:
            # The device is the one the message went to: an error the SuperLink writes for an
            # unavailable device comes from the SuperLink's own node id, not the device's.
            node = node_of.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
            if reply.has_error() and reply.error.code == NOT_ELIGIBLE:
                counts.not_eligible += 1
                counts.declined.append(node)
            elif reply.has_error():
                counts.failed += 1
                counts.failures.append(f"node {node}: {failure_reason(reply.error.code, reply.error.reason)}")
        for m in messages:
            if m.metadata.message_id in late:
                counts.late += 1
            elif m.metadata.message_id not in answered:
                counts.failed += 1
                counts.failures.append(f"node {m.metadata.dst_node_id}: no reply within round-timeout"
                                       + (f" ({timeout:.0f} s)" if timeout else ""))

    def _busy_nodes(self) -> set[int]:
        """Devices still working on a message the server gave up on (their replies are drained
        here and discarded)."""
        if self._outstanding:
            for reply in self._grid.pull_messages(sorted(self._outstanding)):
                self._outstanding.pop(reply.metadata.reply_to_message_id, None)
        return set(self._outstanding.values())

    def take_counts(self) -> dict[str, PhaseCounts]:
        counts, self._counts = self._counts, {}
        return counts


def _secagg_stage(messages: list[Message]) -> str | None:
    content = messages[0].content if messages and messages[0].has_content() else None
    configs = content.config_records.get(RECORD_KEY_CONFIGS) if content else None
    return str(configs[Key.STAGE]) if configs and Key.STAGE in configs else None


def _round_goal(messages: list[Message]) -> int | None:
    config = messages[0].content.config_records.get("config") if messages and messages[0].has_content() else None
    return int(config[ROUND_GOAL]) if config and ROUND_GOAL in config else None


def failure_reason(code: int, reason: str) -> str:
    """A one-line reason as it may be published: the category of Flower's own codes (their words can
    quote an exception's text), or one of the reasons task/releases.py lists for the template's codes."""
    category = FLOWER_ERRORS.get(code)
    if category is not None:
        return category
    reason = re.sub(r"^(?:node \d+:\s*)+", "", (reason or "").strip())
    return error_reason(code, reason) or f"error code {code}"


def _size(message: Message) -> int:
    """The serialised size, without serialising the arrays again: their bytes are counted as
    they are. Serialising a 5 MB model per message took 0.03 s, 30 times a round, in the
    ServerApp's own thread: ~10% of a 1-epoch round. Exact up to a few bytes of framing per array."""
    if message.has_error():
        return message_to_proto(message).ByteSize()
    # A copy: Message() clears the metadata's delivered_at, and in simulation the SuperLink holds
    # this very object, so a message not yet answered would be delivered (and trained) again.
    metadata = copy.copy(message.metadata)
    array_bytes, light = 0, RecordDict()
    for key, record in message.content.items():
        if isinstance(record, ArrayRecord):
            array_bytes += sum(len(a.data) for a in record.values())
            record = ArrayRecord({k: Array(dtype=a.dtype, shape=a.shape, stype=a.stype, data=b"")
                                  for k, a in record.items()})
        light[key] = record
    return array_bytes + message_to_proto(Message(content=light, metadata=metadata)).ByteSize()
