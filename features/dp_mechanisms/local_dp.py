"""dp.mode = "local": each device clips its update and adds Gaussian noise itself, so not even the
server sees an exact update. Composed into the ClientApp's train mods by client_app/app.py.
"""

from __future__ import annotations

import logging

from flwr.app import Array, ArrayRecord, Context, Message
from flwr.supercore.differential_privacy import get_norm

from task.config import DPConfig
from task.privacy.mechanisms import local_noise_multiplier, secret_rng

log = logging.getLogger("flwr")


class LocalDp:
    """Clip the update to `clipping_norm`, then add Gaussian noise of `noise_std` to every weight.

    Replaces Flower 1.42's LocalDpMod, which draws its noise from NumPy's global generator (so
    anyone who seeds it, or knows who did, can subtract the noise) and calibrates it with the
    classic formula the RDP accountant does not agree with (task.privacy.mechanisms.local_noise_multiplier).
    """

    def __init__(self, clipping_norm: float, noise_std: float):
        self.clipping_norm = clipping_norm
        self.noise_std = noise_std

    @classmethod
    def for_config(cls, dp: DPConfig) -> LocalDp:
        # Any two texts of this device give updates inside the same ball of radius C, so one
        # release's L2 sensitivity is 2C.
        return cls(dp.clipping_norm, 2 * dp.clipping_norm * local_noise_multiplier(dp.local_epsilon, dp.delta))

    def __call__(self, msg: Message, context: Context, call_next) -> Message:
        received = msg.content["arrays"]
        reply = call_next(msg, context)
        if reply.has_error():
            return reply
        sent = reply.content["arrays"]
        if list(sent.keys()) != list(received.keys()):
            raise ValueError("local DP: the reply's arrays do not match the model the server sent")
        base = received.to_numpy_ndarrays()
        update = [w - b for w, b in zip(sent.to_numpy_ndarrays(), base)]
        norm = get_norm(update)  # Flower's clip divides by it: an update of zero would crash there
        scale = min(1.0, self.clipping_norm / norm) if norm > 0 else 1.0
        rng = secret_rng()
        noised = [
            b + scale * u + rng.normal(0.0, self.noise_std, u.shape).astype(u.dtype) for b, u in zip(base, update)
        ]
        log.info(
            "local DP: update clipped to %.4g, Gaussian noise with std %.4g added", self.clipping_norm, self.noise_std
        )
        reply.content["arrays"] = ArrayRecord({k: Array(v) for k, v in zip(sent.keys(), noised)})
        return reply
