"""A whole deployment on this machine, for tests and benchmarks: certificates, a TLS SuperLink
with SuperNode authentication on 127.0.0.1, registered devices with their own data, stopped after."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from pathlib import Path

from scripts.deploy import (
    BIN,
    _env,
    register_device,
    start,
    stop,
    superlink_command,
    supernode_command,
    wait_for_port,
    write_connection,
)
from scripts.deploy_keys import make_certs, make_device_key


@contextlib.contextmanager
def local_deployment(root: Path, device_data: list[Path], port: int, connection: str = "fednextword-local"):
    """A TLS + SuperNode-auth SuperLink on 127.0.0.1:`port` and one registered SuperNode per data
    directory (Runtime API ports port+1, port+2, ...). $FLWR_HOME must be set. Stops them all."""
    state = root / "state"
    certs = make_certs(root / "certs", ["127.0.0.1", "localhost"])
    start(superlink_command(state, "127.0.0.1", port, root / "certs"), state, "superlink")
    try:
        wait_for_port("127.0.0.1", port)
        write_connection(connection, f"127.0.0.1:{port}", certs["ca"])
        for i, data in enumerate(device_data):
            private, public = make_device_key(root / "keys", f"device{i}")
            register_device(connection, public)
            start(
                supernode_command(f"127.0.0.1:{port}", data, certs["ca"], private, port=port + 1 + i), state, f"node{i}"
            )
        wait_until_online(connection, len(device_data))
        yield {"connection": connection, "state": state, "certs": certs, "keys": root / "keys"}
    finally:
        stop(state)


def wait_until_online(connection: str, count: int, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run(
            [str(BIN / "flwr"), "supernode", "list", connection, "--format", "json"],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        try:
            nodes = json.loads(out.stdout).get("nodes", [])
        except json.JSONDecodeError:
            nodes = []
        if sum(n.get("status") == "online" for n in nodes) >= count:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} SuperNodes not online after {timeout:.0f} s: {out.stdout} {out.stderr}")
        time.sleep(2)
