"""A whole run in this process: the real ServerApp `main` and the real ClientApp, with a Grid that
hands each message straight to the ClientApp (one device after another) instead of Flower's
SuperLink, SuperNodes and simulation workers. The development loop: try a change in under a minute,

    .venv/bin/python -m tests.inprocess --devices 4 --run-config 'num-server-rounds=3 model.preset="dp-small"'

(pyproject.toml's config with the overrides, as `flwr run` reads it; the round lines as a run prints them).

Why: a real `flwr run .` costs about a minute before round 1 (Flower's processes each import
TensorFlow). The mechanisms a run composes (DP modes and their accounting, resume, budget stops,
failing devices, over-selection) are the app's own code and behave the same here, in seconds.
What only Flower's processes do (message transport, process isolation, Ray workers, SecAgg+ over
the network, real SuperNodes) stays with tests/e2e, which start them for real.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from flwr.app import Context, Error, Message, RecordDict
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.serverapp import Grid

from task.config import Config


class DirectGrid(Grid):
    """Nodes 1..n, node i+1 playing simulated partition i (or the node config given for it)."""

    real_devices = False  # simulated partitions: a run without DP is allowed (server_app/fleet.py)

    def __init__(self, num_nodes: int, run_config: dict, node_configs: list[dict] | None = None):
        from client_app.app import app as client_app

        self._client_app = client_app
        self._run_config = run_config
        configs = node_configs or [{"partition-id": i, "num-partitions": num_nodes} for i in range(num_nodes)]
        self._nodes = {i + 1: dict(c) for i, c in enumerate(configs)}
        self._states = {node: RecordDict() for node in self._nodes}  # a device's state lives across messages
        self._replies: dict[str, Message] = {}
        self._sent = 0
        self._run = None

    def set_run(self, run) -> None:
        self._run = run

    @property
    def run(self):
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._nodes)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            self._sent += 1
            message_id = f"{self._sent:032x}"  # in sending order: which replies close a round is reproducible
            msg.metadata.__dict__["_message_id"] = message_id
            self._replies[message_id] = self._deliver(msg)
            ids.append(message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))

    def _deliver(self, msg: Message) -> Message:
        node = msg.metadata.dst_node_id
        context = Context(run_id=1, node_id=node, node_config=self._nodes[node], state=self._states[node],
                          run_config=self._run_config)
        received = _over_the_wire(msg)  # the device gets a copy, as it would through Flower
        try:
            reply = self._client_app(received, context)
        except Exception as e:  # as a SuperNode does: the ClientApp's exception becomes an error reply
            traceback.print_exc()
            reply = Message(Error(code=0, reason=f"ClientApp raised {type(e).__name__}: {e}"), reply_to=received)
        return _over_the_wire(reply)


def _over_the_wire(msg: Message) -> Message:
    return message_from_proto(message_to_proto(msg))


@dataclass
class Run:
    dir: Path
    rows: list[dict]
    summary: dict
    output: str  # what the ServerApp and ClientApps logged


def run_inprocess(tmp_path: Path, num_nodes: int, run_config: dict, run_id: int = 1,
                  node_configs: list[dict] | None = None, grid: Grid | None = None, pyproject: bool = True) -> Run:
    """The ServerApp's main on a DirectGrid; the run's metrics rows and summary. `run_config`
    overrides pyproject.toml's config, as `flwr run --run-config` does (`pyproject=False`: over
    Config()'s defaults instead, which leave int8 and participation off)."""
    from flwr.supercore.task_identity import TaskIdentity

    from scripts.local_superlink import app_run_config
    from server_app.app import main

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, 0, 1  # as Flower sets them for a ServerApp
    rc = {**(app_run_config(Path.cwd()) if pyproject else {}), **run_config, "out-dir": str(tmp_path)}
    Config.from_run_config(rc)  # a bad test config fails here, by name
    lines: list[str] = []
    handler = _Collect(lines)
    logging.getLogger("flwr").addHandler(handler)
    try:
        main(grid or DirectGrid(num_nodes, rc, node_configs),
             Context(run_id=run_id, node_id=0, node_config={}, state=RecordDict(), run_config=rc))
    finally:
        logging.getLogger("flwr").removeHandler(handler)
    run_dir = tmp_path / f"run-{run_id}"
    return Run(run_dir, json.loads((run_dir / "metrics.json").read_text()),
               json.loads((run_dir / "summary.json").read_text()), "\n".join(lines))


class _Collect(logging.Handler):
    def __init__(self, lines: list[str]):
        super().__init__(logging.INFO)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _main() -> int:
    parser = argparse.ArgumentParser(description="A whole run in this process (the development loop)")
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--run-config", default="", help="overrides, as flwr run --run-config takes them")
    parser.add_argument("--out-dir", type=Path, default=None, help="where run-1/ goes (default: a new temp dir)")
    args = parser.parse_args()
    from flwr.common.config import parse_config_args

    logging.getLogger("flwr").setLevel(logging.INFO)  # Flower's own handler prints the round lines
    out = args.out_dir or Path(tempfile.mkdtemp(prefix="fednextword-inprocess-"))
    overrides = parse_config_args([args.run_config]) if args.run_config else {}
    run = run_inprocess(out, args.devices, {k: v for k, v in overrides.items() if k != "out-dir"})
    print(f"run directory: {run.dir}\nstopped early: {run.summary.get('stopped_early')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
