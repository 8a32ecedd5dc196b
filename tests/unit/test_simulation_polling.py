"""The shortcut for Flower's simulation engine (server_app/simulation_polling.py) on Flower's own
in-memory link state, set up as flwr/simulation/run_simulation.py sets it up: every message is
delivered as without it, exactly once, also while messages are stored from another thread."""

import random
import threading
import time

import pytest
from flwr.app import ConfigRecord, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.proto.task_pb2 import Task  # pylint: disable=E0611
from flwr.server.superlink.fleet.vce.vce_api import _register_nodes
from flwr.server.superlink.linkstate import LinkStateFactory
from flwr.server.superlink.linkstate.in_memory_linkstate import RunRecord
from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME, NOOP_FEDERATION_ID
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity
from flwr.superlink.federation import NoOpFederationManager
from flwr.superlink.grid.inmemory_grid import InMemoryGrid

from server_app.simulation_polling import skip_idle_polls


@pytest.fixture(autouse=True)
def server_task():
    """The identity Flower's simulation process gives its ServerApp (restored afterwards)."""
    before = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 11, 7, SUPERLINK_NODE_ID
    yield
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = before


def simulation(num_nodes: int) -> tuple[InMemoryGrid, list[int]]:
    factory = LinkStateFactory(FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(), ObjectStoreFactory())
    state = factory.state()
    run = Run.create_empty(run_id=7)
    run.primary_task_id, run.federation_id = 11, NOOP_FEDERATION_ID
    state.run_ids[run.run_id] = RunRecord(run=run)
    state.task_store[run.primary_task_id] = Task(task_id=run.primary_task_id, run_id=run.run_id)
    nodes = list(_register_nodes(num_nodes, factory))  # node ids in partition order
    grid = InMemoryGrid(state_factory=factory)
    grid.set_run(run)
    return grid, nodes


def push(grid: InMemoryGrid, node: int, tag: int) -> None:
    content = RecordDict({"config": ConfigRecord({"tag": tag})})
    grid.push_messages([grid.create_message(content, "train", node, "g")])


def sweep(grid: InMemoryGrid, nodes: list[int]) -> list[tuple[int, int]]:
    """One pass of the engine's loop: at most one message per node, as (partition, tag)."""
    return [(i, m.content["config"]["tag"]) for i, node in enumerate(nodes)
            for m in grid.state.get_message_ins(node_id=node, limit=1)]


def test_every_sweep_delivers_what_flowers_own_state_delivers():
    rng = random.Random(1)
    script = [("push", rng.randrange(40), t) if rng.random() < 0.6 else ("sweep",) for t in range(400)]
    results = []
    for shortcut in (False, True):
        grid, nodes = simulation(40)
        if shortcut:
            assert skip_idle_polls(grid)
        results.append([push(grid, nodes[s[1]], s[2]) if s[0] == "push" else sweep(grid, nodes) for s in script])
        results[-1].append(sweep(grid, nodes))
    assert results[0] == results[1]
    assert sum(len(r) for r in results[1] if r) == sum(1 for s in script if s[0] == "push")  # each one delivered


def test_messages_stored_while_the_engine_polls_are_each_delivered_once():
    grid, nodes = simulation(100)
    skip_idle_polls(grid)
    delivered, done = [], threading.Event()
    deadline = time.monotonic() + 600  # a lost message must fail the test, not hang it

    def engine():
        while (not done.is_set() or len(delivered) < 600) and time.monotonic() < deadline:
            delivered.extend(sweep(grid, nodes))

    poller = threading.Thread(target=engine, daemon=True)
    poller.start()
    for tag in range(600):
        push(grid, nodes[tag % len(nodes)], tag)
    done.set()
    poller.join(timeout=700)
    assert sorted(tag for _, tag in delivered) == list(range(600))


def test_a_grid_without_flowers_in_memory_state_is_left_alone():
    class DeployedGrid:  # a deployment's grid talks to a SuperLink in another process
        pass

    assert skip_idle_polls(DeployedGrid()) is False
