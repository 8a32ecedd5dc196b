"""The device's side of user-level central DP: the mods that clip the update before it leaves the
device (local DP, which also noises it, is features/dp_mechanisms/local_dp.py).

The mods are chosen per message from the run config, so one ClientApp serves every dp.mode; they
wrap the train handler only (on evaluate messages Flower's DP mods reply with errors).
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import Context, Message
from flwr.clientapp.mod import adaptiveclipping_mod, fixedclipping_mod

from task.config import DPConfig

Handler = Callable[[Message, Context], Message]


def train_mods(dp: DPConfig) -> list:
    """Outermost first. Each one clips the update after training."""
    if dp.mode in ("central-client-clip", "central-ftrl", "central-blt"):
        return [fixedclipping_mod]  # the clipping norm arrives in the message from the server
    if dp.mode == "central-adaptive-clip":
        return [adaptiveclipping_mod]  # clips and reports whether it had to (the norm bit)
    return []  # "none"; "central-server-clip": the trusted server clips raw updates; "local": its own mod


def with_mods(mods: list, handler: Handler) -> Handler:
    call = handler
    for mod in reversed(mods):
        call = lambda m, c, mod=mod, nxt=call: mod(m, c, nxt)
    return call


def dp_mod(msg: Message, context: Context, call_next: Handler) -> Message:
    """The clipping mods of the run's dp.mode around training."""
    from client_app.messages import config_of

    return with_mods(train_mods(config_of(context).dp), call_next)(msg, context)
