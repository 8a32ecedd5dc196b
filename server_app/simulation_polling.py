"""Keep Flower's simulation engine from spending a core on polling idle devices.

Flower 1.42's engine asks its in-memory link state for a message for every simulated node every
0.1 s (`add_messages_to_queue` in flwr/server/superlink/fleet/vce/vce_api.py), and each ask scans
every stored message (`InMemoryLinkState.get_message_ins`): nodes x messages per sweep. With
10,000 devices and 1,000 messages in flight, that loop held the GIL in 97% of a py-spy profile
of the simulation process, took a whole core from the two ClientApp workers, and made a round of
1,000 devices last 264 s (docs/performance.md, "Scale").

This keeps a superset of the nodes that may have an undelivered message, so asking for any other
node returns nothing at once; every other ask is Flower's own method, unchanged. Simulation only:
a deployed SuperLink is another process, with its own state.
"""

from __future__ import annotations

import logging

log = logging.getLogger("flwr")


def skip_idle_polls(grid) -> bool:
    """Install the shortcut on the simulation's link state; False (and nothing changed) when the
    grid has none, i.e. in a deployment."""
    from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState

    state = getattr(grid, "state", None)
    if not isinstance(state, InMemoryLinkState):
        return False
    get_message_ins, store_message_ins = state.get_message_ins, state.store_message_ins
    with state.lock:  # Flower's RLock: a store and an ask never interleave with the set's update
        pending = {m.metadata.dst_node_id for m in state.message_ins_store.values() if not m.metadata.delivered_at}

    def store(message):
        with state.lock:
            message_id = store_message_ins(message)
            if message_id is not None:
                pending.add(message.metadata.dst_node_id)
            return message_id

    def ask(node_id: int, limit: int | None, *, run_id: int | None = None):
        with state.lock:
            if node_id not in pending:
                return []
            found = get_message_ins(node_id, limit, run_id=run_id)
            if not found and run_id is None:  # none left for this node, in any run
                pending.discard(node_id)
            return found

    state.store_message_ins, state.get_message_ins = store, ask
    log.debug("Simulation: polls of nodes without a message skipped (server_app/simulation_polling.py)")
    return True
