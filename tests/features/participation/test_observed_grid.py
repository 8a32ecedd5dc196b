"""Every device that failed or timed out is named by its node id with a reason an operator can act on."""

import time

import numpy as np
from flwr.app import Error, Message, Metadata, MetricRecord, RecordDict
from flwr.common.constant import ErrorCode

from client_app.app import DEVICE_DATA_UNUSABLE
from server_app.observed_grid import ObservedGrid
from tests.helpers import message


def _sent(node: int) -> Message:
    return message(RecordDict(), "train", src=0, dst=node)


def _from_superlink(to: Message, code: int, reason: str) -> Message:
    """An error reply the SuperLink writes itself (for a device that went offline): its source is
    the SuperLink's node id, not the device's."""
    md = Metadata(run_id=1, message_id="x", src_node_id=1, dst_node_id=0, reply_to_message_id=to.metadata.message_id,
                  group_id="1", created_at=time.time(), ttl=60, message_type="train")
    return Message(error=Error(code=code, reason=reason), metadata=md)


class FakeGrid:
    def __init__(self, reply):
        self.reply = reply

    def send_and_receive(self, messages, *, timeout=None):
        return [r for m in messages if (r := self.reply(m)) is not None]


def test_failed_and_silent_devices_are_named_with_a_reason_once():
    def reply(m):
        node = m.metadata.dst_node_id
        if node == 42:
            return _from_superlink(m, ErrorCode.NODE_UNAVAILABLE, "Node Unavailable")
        if node == 44:
            return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason="node 44: node 44: boom\nTraceback"),
                           reply_to=m)
        if node == 45:
            return Message(Error(code=DEVICE_DATA_UNUSABLE, reason="too little text"), reply_to=m)
        if node == 46:
            return Message(RecordDict({"metrics": MetricRecord({"loss": 1.0})}), reply_to=m)
        return None  # 43: never replies

    grid = ObservedGrid(FakeGrid(reply))
    grid.send_and_receive([_sent(n) for n in (42, 43, 44, 45, 46)], timeout=30)
    counts = grid.take_counts()["train"]
    assert (counts.sampled, counts.replied, counts.failed) == (5, 1, 4)
    assert sorted(counts.failures) == [
        "node 42: device offline (stopped heartbeating)",
        "node 43: no reply within round-timeout (30 s)",
        "node 44: the ClientApp raised an exception",  # its words may quote the exception: never published
        "node 45: too little text",
    ]
    assert list(counts.metrics) == [46]


def test_counting_bytes_leaves_the_message_as_the_superlink_holds_it():
    """In simulation the SuperLink stores the very Message objects the ServerApp sent; clearing
    their delivered_at made Flower deliver (and the device train) a late message a second time."""
    from flwr.app import ArrayRecord

    from server_app.observed_grid import _size

    sent = message(RecordDict({"arrays": ArrayRecord([np.zeros(4, np.float32)])}), "train", src=0, dst=3)
    sent.metadata.delivered_at = "2026-11-30T07:00:00"
    assert _size(sent) > 16
    assert sent.metadata.delivered_at == "2026-11-30T07:00:00"
