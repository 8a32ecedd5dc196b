"""The device's side of user-level DP: which of Flower's mods wrap the train handler.

The mods are chosen per message from the run config, so one ClientApp serves every dp-mode; they
wrap the train handler only (on evaluate messages Flower's DP mods reply with errors).
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import Context, Message
from flwr.clientapp.mod import LocalDpMod, adaptiveclipping_mod, fixedclipping_mod

from task.config import DPConfig

Handler = Callable[[Message, Context], Message]


def train_mods(dp: DPConfig) -> list:
    """Outermost first. Each one clips (and, for local DP, noises) the update after training."""
    if dp.mode == "central-client-clip":
        return [fixedclipping_mod]  # the clipping norm arrives in the message from the server
    if dp.mode == "central-adaptive-clip":
        return [adaptiveclipping_mod]  # clips and reports whether it had to (the norm bit)
    if dp.mode == "local":
        # Any two texts of this device give updates inside the same ball of radius C, so one
        # release's L2 sensitivity is 2C (Flower leaves the sensitivity to the caller).
        return [LocalDpMod(clipping_norm=dp.clipping_norm, sensitivity=2 * dp.clipping_norm,
                           epsilon=dp.local_epsilon, delta=dp.delta)]
    return []  # "none", and "central-server-clip": the trusted server clips raw updates


def with_mods(mods: list, handler: Handler) -> Handler:
    call = handler
    for mod in reversed(mods):
        call = (lambda m, c, mod=mod, nxt=call: mod(m, c, nxt))
    return call
