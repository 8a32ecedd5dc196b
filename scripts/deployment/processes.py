"""The command lines and processes of a deployment: SuperLink, Fleet gateway and SuperNode
commands with their TLS and authentication flags, and starting, stopping and waiting for them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from scripts.local_superlink import alive

BIN = Path(sys.executable).parent  # the venv's flower-superlink / flower-supernode / flwr


def superlink_command(state: Path, host: str, port: int, certs: Path | None, insecure: bool = False) -> list[str]:
    security = (
        ["--insecure"]
        if insecure
        else [
            "--ssl-ca-certfile",
            str(certs / "ca.crt"),
            "--ssl-certfile",
            str(certs / "server.pem"),
            "--ssl-keyfile",
            str(certs / "server.key"),
            "--enable-supernode-auth",
        ]
    )
    return [
        str(BIN / "flower-superlink"),
        *security,
        "--host",
        host,
        "--port",
        str(port),
        "--database",
        str(state / "superlink.db"),
        "--disable-runtime-dependency-installation",
    ]


def gateway_command(public: str, superlink_port: int, certs: Path | None, insecure: bool = False) -> list[str]:
    """The Fleet-only public face of a SuperLink listening on 127.0.0.1 (scripts/deployment/fleet_gateway.py)."""
    security = ["--insecure"] if insecure else ["--certs", str(certs)]
    return [sys.executable, str(Path(__file__).with_name("fleet_gateway.py")), "--listen", public,
            "--superlink", f"127.0.0.1:{superlink_port}", *security]


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def supernode_command(
    superlink: str,
    data: Path,
    ca: Path | None,
    key: Path | None,
    port: int = 9094,
    insecure: bool = False,
    max_retries: int | None = None,
    max_wait_time: float | None = None,
    rules: dict | None = None,
) -> list[str]:
    """`rules`: the device's eligibility rules and power figure as node-config keys
    (features/participation/eligibility.py, client_app/cost.py), e.g. {"require-charging": False}."""
    security = ["--insecure"] if insecure else ["--root-certificates", str(ca)]
    if key:
        security += ["--auth-supernode-private-key", str(key)]
    limits = []
    if max_retries is not None:
        limits += ["--max-retries", str(max_retries)]
    if max_wait_time is not None:
        limits += ["--max-wait-time", str(max_wait_time)]
    # The ClientApp reads this device's text from data-path only (client_app/app.py).
    node_config = " ".join([f'data-path="{Path(data).resolve()}"', *(f"{k}={_toml(v)}" for k, v in (rules or {}).items())])
    return [
        str(BIN / "flower-supernode"),
        *security,
        "--superlink",
        superlink,
        "--port",
        str(port),
        "--node-config",
        node_config,
        *limits,
    ]


def _toml(value) -> str:
    return str(value).lower() if isinstance(value, bool) else json.dumps(value) if isinstance(value, str) else str(value)


def parse_rules(pairs: list[str]) -> dict:
    """--rule KEY=VALUE pairs, checked as the device will check them, so a typo fails here."""
    from features.participation.cost import watts_per_busy_core
    from features.participation.eligibility import DeviceRules

    rules = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        try:
            rules[key.strip()] = tomllib.loads(f"v = {value.strip()}")["v"] if sep else None
        except tomllib.TOMLDecodeError:
            rules[key.strip()] = value.strip()  # a bare word: reported below as the wrong type
    known = {f.replace("_", "-") for f in DeviceRules.__dataclass_fields__} | {"watts-per-busy-core"}
    unknown = sorted(set(rules) - known)
    if unknown:
        raise ValueError(f"--rule {unknown}: unknown; known: {sorted(known)}")
    DeviceRules.from_node_config(rules)
    watts_per_busy_core(rules)
    return rules


def start(command: list[str], state: Path, name: str) -> int:
    """Start a process in the background, its output in <state>/<name>.log, its pid in <name>.pid."""
    state.mkdir(parents=True, exist_ok=True)
    with open(state / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=_env(), start_new_session=True)
    (state / f"{name}.pid").write_text(str(proc.pid))
    return proc.pid


def stop(state: Path, grace: float = 15.0) -> list[str]:
    """Stop every process started with --state (SIGTERM to its process group, then SIGKILL)."""
    stopped = []
    for pidfile in sorted(state.glob("*.pid")):
        pid = int(pidfile.read_text())
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and alive(pid):
                time.sleep(0.2)
            if not alive(pid):
                break
        pidfile.unlink()
        stopped.append(pidfile.stem)
    return stopped


def wait_for_port(host: str, port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(1)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"nothing is listening on {host}:{port} after {timeout:.0f} s")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    env.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env
