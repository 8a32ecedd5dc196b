"""The device's side of user-level DP: the mods that clip (and, for local DP, noise) the update
before it leaves the device.

The mods are chosen per message from the run config, so one ClientApp serves every dp.mode; they
wrap the train handler only (on evaluate messages Flower's DP mods reply with errors).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from flwr.app import Array, ArrayRecord, Context, Message
from flwr.clientapp.mod import adaptiveclipping_mod, fixedclipping_mod
from flwr.supercore.differential_privacy import get_norm

from task.config import DPConfig
from task.privacy.mechanisms import local_noise_multiplier, secret_rng

Handler = Callable[[Message, Context], Message]
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

    def __call__(self, msg: Message, context: Context, call_next: Handler) -> Message:
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


def train_mods(dp: DPConfig) -> list:
    """Outermost first. Each one clips (and, for local DP, noises) the update after training."""
    if dp.mode in ("central-client-clip", "central-ftrl"):
        return [fixedclipping_mod]  # the clipping norm arrives in the message from the server
    if dp.mode == "central-adaptive-clip":
        return [adaptiveclipping_mod]  # clips and reports whether it had to (the norm bit)
    if dp.mode == "local":
        # Any two texts of this device give updates inside the same ball of radius C, so one
        # release's L2 sensitivity is 2C.
        sensitivity = 2 * dp.clipping_norm
        return [LocalDp(dp.clipping_norm, sensitivity * local_noise_multiplier(dp.local_epsilon, dp.delta))]
    return []  # "none", and "central-server-clip": the trusted server clips raw updates


def with_mods(mods: list, handler: Handler) -> Handler:
    call = handler
    for mod in reversed(mods):
        call = lambda m, c, mod=mod, nxt=call: mod(m, c, nxt)
    return call


def dp_mod(msg: Message, context: Context, call_next: Handler) -> Message:
    """The clipping (and noising) mods of the run's dp.mode around training."""
    from client_app.messages import config_of

    return with_mods(train_mods(config_of(context).dp), call_next)(msg, context)
