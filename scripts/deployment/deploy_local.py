"""A whole deployment on this machine, for tests and benchmarks: certificates, a TLS SuperLink
with SuperNode authentication on 127.0.0.1, its Fleet-only gateway (the devices' side, another
port on 127.0.0.1), registered devices with their own data, stopped after."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from pathlib import Path

from scripts.deployment.deploy import register_device, write_connection
from scripts.deployment.deploy_keys import make_certs, make_device_key
from scripts.deployment.processes import (
    BIN,
    _env,
    gateway_command,
    start,
    stop,
    superlink_command,
    supernode_command,
    wait_for_port,
)

GATEWAY_OFFSET = 50  # the gateway listens on port + 50


@contextlib.contextmanager
def local_deployment(root: Path, device_data: list[Path], port: int, connection: str = "fednextword-local",
                     device_rules: list[dict] | None = None):
    """A TLS + SuperNode-auth SuperLink on 127.0.0.1:`port` (the operator's side: `connection`), its
    Fleet gateway on 127.0.0.1:`port`+50 (the devices' side) and one registered SuperNode per data
    directory (Runtime API ports port+1, port+2, ...), each with its `device_rules` (node-config
    eligibility rules; default: every device here shares this machine, so none waits for a
    charger). $FLWR_HOME must be set. Stops them all."""
    device_rules = device_rules or [{"require-charging": False}] * len(device_data)
    state = root / "state"
    certs = make_certs(root / "certs", ["127.0.0.1", "localhost"])
    public = f"127.0.0.1:{port + GATEWAY_OFFSET}"
    start(superlink_command(state, "127.0.0.1", port, root / "certs"), state, "superlink")
    start(gateway_command(public, port, root / "certs"), state, "gateway")
    try:
        wait_for_port("127.0.0.1", port)
        wait_for_port("127.0.0.1", port + GATEWAY_OFFSET)
        write_connection(connection, f"127.0.0.1:{port}", certs["ca"])
        for i, data in enumerate(device_data):
            private, public_key = make_device_key(root / "keys", f"device{i}")
            register_device(connection, public_key)
            start(supernode_command(public, data, certs["ca"], private, port=port + 1 + i, rules=device_rules[i]),
                  state, f"node{i}")
        wait_until_online(connection, len(device_data))
        yield {"connection": connection, "state": state, "certs": certs, "keys": root / "keys", "public": public}
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
