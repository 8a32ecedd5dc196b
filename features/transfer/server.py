"""The server's side of `transfer.dtype`: a Grid that encodes the model it sends and turns each
device's encoded update back into float32 weights (features/transfer/codec.py).

Sitting between the strategy and the Grid, it is invisible to FedAvg and to Flower's DP
wrappers: they send and receive float32 weights as usual. The ObservedGrid beneath it counts
the encoded bytes, i.e. what really crosses the network.
"""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import ArrayRecord, Message

from features.transfer.codec import decode_model, decode_update, encode_model


class TransferGrid:
    def __init__(self, grid, dtype: str):
        self._grid = grid
        self._dtype = dtype

    def __getattr__(self, name):
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        if self._dtype == "float32":
            return self._grid.send_and_receive(messages, timeout=timeout)
        encoded: dict[int, tuple[ArrayRecord, list]] = {}  # one encoding per distinct model sent
        received = {}  # node id -> the model it received, as the device decodes it
        for msg in messages:
            if "arrays" not in msg.content:
                continue
            arrays = msg.content["arrays"]
            if id(arrays) not in encoded:
                sent = encode_model(arrays.to_numpy_ndarrays(), self._dtype)
                encoded[id(arrays)] = (ArrayRecord(sent), decode_model(sent))
            record, received[msg.metadata.dst_node_id] = encoded[id(arrays)]
            msg.content["arrays"] = record
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        for reply in replies:
            node = reply.metadata.src_node_id
            if not reply.has_error() and "arrays" in reply.content and node in received:
                update = reply.content["arrays"].to_numpy_ndarrays()
                reply.content["arrays"] = ArrayRecord(decode_update(update, received[node], self._dtype))
        return replies
