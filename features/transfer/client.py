"""The device's side of `transfer.dtype`: a mod that decodes the model it receives and encodes
the update it sends (features/transfer/codec.py).

It is the outermost mod, so the DP mods inside it clip and noise the float32 update first.
"""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Message

from client_app.privacy import Handler
from features.transfer.codec import decode_model, encode_update


def transfer_mod(dtype: str):
    def mod(msg: Message, context: Context, call_next: Handler) -> Message:
        if dtype == "float32" or "arrays" not in msg.content:
            return call_next(msg, context)
        received = decode_model(msg.content["arrays"].to_numpy_ndarrays())
        msg.content["arrays"] = ArrayRecord(received)
        reply = call_next(msg, context)
        if not reply.has_error() and "arrays" in reply.content:
            new = reply.content["arrays"].to_numpy_ndarrays()
            reply.content["arrays"] = ArrayRecord(encode_update(new, received, dtype))
        return reply

    return mod
