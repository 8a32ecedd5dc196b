"""transfer.dtype: float16 halves the bytes both ways, int8 quarters the update; both lose little
and keep DP's clipping bound."""

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.common.serde import message_to_proto

from client_app.app import app
from features.transfer.codec import decode_model, decode_update, encode_model, encode_update
from features.transfer.server import TransferGrid
from task.config import Config, DPConfig
from task.model import build_model
from tests.helpers import SMALL_MODEL, l2, message

SMALL = SMALL_MODEL


def test_a_float16_update_is_half_the_bytes_and_nearly_exact():
    rng = np.random.default_rng(0)
    received = decode_model(encode_model([rng.normal(0, 0.05, (80, 800)).astype(np.float32)], "float16"))
    new = [received[0] + rng.normal(0, 0.01, received[0].shape).astype(np.float32)]
    sent = encode_update(new, received, "float16")
    assert sent[0].dtype == np.float16 and sent[0].nbytes == new[0].nbytes // 2
    decoded = decode_update(sent, received, "float16")
    # float16 keeps 11 significant bits; rounding toward zero errs by < 1 ulp = 2^-10 relative
    assert np.all(np.abs(decoded[0] - new[0]) <= np.abs(new[0] - received[0]) * 2**-10 + 1e-7)
    assert l2(sent[0:1], [np.zeros_like(sent[0])]) <= l2(new, received)  # never longer: clipping holds


def test_an_int8_update_is_a_quarter_of_the_bytes_and_each_word_keeps_its_resolution():
    rng = np.random.default_rng(1)
    received = decode_model(encode_model([rng.normal(0, 0.05, (2000, 80)).astype(np.float32),
                                          rng.normal(0, 0.05, (16,)).astype(np.float32)], "int8"))
    assert all(r.dtype == np.float32 for r in received)
    word_size = 10.0 ** -rng.integers(1, 6, size=(2000, 1))  # words updated by 1e-1 ... 1e-5
    update = [(rng.normal(0, 1, (2000, 80)) * word_size).astype(np.float32), rng.normal(0, 0.01, 16).astype(np.float32)]
    new = [r + u for r, u in zip(received, update)]
    update = [n - r for n, r in zip(new, received)]  # exactly what the device computes
    sent = encode_update(new, received, "int8")
    assert [a.dtype for a in sent] == [np.int8, np.float32, np.int8, np.float32]
    assert sum(a.nbytes for a in sent) < 0.3 * sum(u.nbytes for u in update)
    decoded = decode_update(sent, received, "int8")
    for d, r, u in zip(decoded, received, update):
        got = d - r  # the update the server sees
        step = np.max(np.abs(u), axis=-1, keepdims=True) / 127 if u.ndim == 2 else np.max(np.abs(u)) / 127
        assert np.all(np.abs(got - u) <= step * 1.001 + 1e-7)  # within one step of its own word's scale
        assert np.all(np.abs(got) <= np.abs(u) + 1e-6)  # toward zero (up to the float32 sum with r)
    assert np.all(np.abs(sent[0].astype(np.float32) * sent[1]) <= np.abs(update[0]))  # exactly toward zero
    assert l2([sent[0].astype(np.float32) * sent[1]], [np.zeros((2000, 80))]) <= l2(update[:1], [np.zeros((2000, 80))])


def test_float32_transfer_changes_nothing():
    w = [np.arange(6, dtype=np.float32)]
    assert encode_update(w, [np.zeros(6, np.float32)], "float32") is w
    assert decode_update(w, [np.ones(6, np.float32)], "float32") is w


@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_the_clientapp_clips_before_it_encodes(dtype):
    clip = 0.3
    cfg = Config(sentences_per_device=40, model=SMALL, dp=DPConfig(mode="central-client-clip", clipping_norm=clip)
                 ).with_run_config({"transfer.dtype": dtype})
    global_model = build_model(SMALL).get_weights()
    sent = encode_model(global_model, dtype)
    content = RecordDict(
        {"arrays": ArrayRecord(sent), "config": ConfigRecord({"server-round": 1, "clipping_norm": clip})}
    )
    ctx = Context(
        run_id=1,
        node_id=7,
        node_config={"partition-id": 0, "num-partitions": 4},
        state=RecordDict(),
        run_config=cfg.to_run_config(),
    )
    reply = app(message(content), ctx)
    assert not reply.has_error(), reply.error
    encoded = reply.content["arrays"].to_numpy_ndarrays()
    zeros = [np.zeros(w.shape, np.float32) for w in global_model]
    if dtype == "int8":
        assert [a.dtype for a in encoded[::2]] == [np.int8] * len(global_model)
    else:
        assert all(u.dtype == np.float16 for u in encoded)
    update = decode_update(encoded, zeros, dtype)  # what the server adds to the model it sent
    norm = l2(update, zeros)
    assert clip * 0.99 < norm <= clip * (1 + 1e-6)  # clipped to C, and encoding did not lengthen it


class EchoGrid:
    """A stand-in Grid: every device adds 0.01 to each weight of the model it received."""

    def __init__(self):
        self.seen = []

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for m in messages:
            arrays = m.content["arrays"].to_numpy_ndarrays()
            self.seen.append(arrays[0].dtype)
            update = [np.full(a.shape, 0.01, np.float16) for a in arrays]
            reply = Message(RecordDict({"arrays": ArrayRecord(update), "metrics": MetricRecord({"n": 1})}), reply_to=m)
            replies.append(reply)
        return replies


def test_the_server_sends_float16_and_gets_float32_weights_back():
    weights = [np.linspace(-1, 1, 1000, dtype=np.float32).reshape(10, 100)]
    record = ArrayRecord(weights)
    messages = [message(RecordDict({"arrays": record, "config": ConfigRecord({})}), dst=n) for n in (3, 4)]
    float32_bytes = message_to_proto(message(RecordDict({"arrays": ArrayRecord(weights)}))).ByteSize()
    inner = EchoGrid()
    replies = list(TransferGrid(inner, "float16").send_and_receive(messages))
    assert inner.seen == [np.float16, np.float16]
    assert message_to_proto(messages[0]).ByteSize() < 0.55 * float32_bytes
    for reply in replies:
        back = reply.content["arrays"].to_numpy_ndarrays()[0]
        assert back.dtype == np.float32
        assert np.allclose(back, weights[0] + 0.01, atol=1e-3)  # the model's own float16 rounding


def test_the_byte_count_matches_the_serialised_message():
    # server_app.observed_grid counts array bytes as they are instead of serialising them again.
    from flwr.app import Error

    from server_app.observed_grid import _size

    weights = build_model(SMALL).get_weights()
    for arrays in (weights, encode_update(weights, weights, "int8")):
        msg = message(RecordDict({"arrays": ArrayRecord(arrays), "config": ConfigRecord({"server-round": 3})}))
        exact = message_to_proto(msg).ByteSize()
        assert exact - 16 * len(arrays) <= _size(msg) <= exact
    failed = Message(
        Error(code=0, reason="device has no text"), reply_to=message(RecordDict({"config": ConfigRecord({})}))
    )
    assert _size(failed) == message_to_proto(failed).ByteSize()
