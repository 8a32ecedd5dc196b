"""Closing a round at its goal (over-selection; Bonawitz et al. 2019, "Towards Federated Learning
at Scale"): the strategy asks more devices than the round needs, and the round ends as soon as
the goal's updates are in, instead of waiting for the slowest phone until round-timeout.

Flower's Grid.send_and_receive waits for every reply; this is the same push-and-poll loop with
one more exit. Replies beyond the goal, and those still out when it is reached, are discarded as
late; replies that decline or fail do not count towards the goal.
"""

from __future__ import annotations

import time

from flwr.app import Message
from flwr.serverapp import Grid

POLL_SECONDS = 0.5


def send_until_goal(grid: Grid, messages: list[Message], goal: int, timeout: float | None,
                    pulled: list[Message] | None = None) -> tuple[list[Message], set[str], bool]:
    """(the replies kept, the ids of the messages whose replies are discarded as late, whether
    the goal was reached). Kept: every error reply, and the first `goal` updates to arrive. A
    late message's reply may have been pulled already (it came with the goal's last update) or
    still be on its way. `pulled` (if given) receives every reply that came back."""
    waiting = set(grid.push_messages(messages))
    deadline = None if timeout is None else time.monotonic() + timeout
    kept: list[Message] = []
    updates = 0
    late: set[str] = set()
    while waiting:
        for reply in grid.pull_messages(sorted(waiting)):
            waiting.discard(reply.metadata.reply_to_message_id)
            if pulled is not None:
                pulled.append(reply)
            if reply.has_error():
                kept.append(reply)
            elif updates < goal:
                kept.append(reply)
                updates += 1
            else:  # arrived in the same poll as the goal's last update
                late.add(reply.metadata.reply_to_message_id)
        if updates >= goal or not waiting or (deadline is not None and time.monotonic() >= deadline):
            break
        time.sleep(POLL_SECONDS)
    reached = updates >= goal
    if reached:
        late |= waiting
    return kept, late, reached
