"""Deploy on real devices: certificates, device keys, SuperLink, SuperNodes, connection, stop.

The server operator (SuperLink side); everything goes to ~/fednextword-deploy (certs/, keys/,
state/; or $FEDNEXTWORD_DEPLOY), outside the repository, unless told otherwise:
    python scripts/deploy.py certs --address 127.0.0.1 --address fl.example.lan
    python scripts/deploy.py superlink --public 0.0.0.0:9093
    python scripts/deploy.py connection --name fednextword --address 127.0.0.1:9092 --ca ~/fednextword-deploy/certs/ca.crt
    python scripts/deploy.py device-key --name kitchen-pi      # one per device
    python scripts/deploy.py register --connection fednextword ~/fednextword-deploy/keys/kitchen-pi.pub
    flwr run . fednextword --stream

Each device (copy it ca.crt and its private key kitchen-pi, nothing else):
    python scripts/deploy.py supernode --superlink fl.example.lan:9093 --ca ca.crt \\
        --key kitchen-pi --data /home/pi/keyboard-text

Everything is TLS with SuperNode authentication, and the SuperLink never installs dependencies
at run time. `--insecure` exists for a first local try only: no encryption, no authentication.
`superlink`/`supernode` run in the foreground (for systemd, see scripts/fednextword-supernode.service)
or with `--background --state DIR` (pid and log files in DIR, ended by `stop --state DIR`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scripts.deploy_keys import DEPLOY_HOME, check_private, make_certs, make_device_key  # noqa: E402
from scripts.local_flower import alive  # noqa: E402

BIN = Path(sys.executable).parent  # the venv's flower-superlink / flower-supernode / flwr


# --- the flwr connection and device registration ------------------------------------------------

def flwr_home() -> Path:
    return Path(os.environ.get("FLWR_HOME", Path.home() / ".flwr"))


def write_connection(name: str, address: str, ca: Path | None, insecure: bool = False) -> Path:
    """Add `[superlink.<name>]` to $FLWR_HOME/config.toml, the entry `flwr run . <name>` uses."""
    path = flwr_home() / "config.toml"
    text = (
        path.read_text()
        if path.exists()
        else '[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = ":local:"\n'
    )
    existing = tomllib.loads(text).get("superlink", {}).get(name)
    entry = {"address": address, **({"insecure": True} if insecure else {"root-certificates": str(Path(ca).resolve())})}
    if existing == entry:
        return path
    if existing is not None:
        raise SystemExit(f"{path}: connection '{name}' exists with other settings {existing}; edit or remove it")
    lines = [f"\n[superlink.{name}]", f'address = "{address}"']
    lines.append("insecure = true" if insecure else f'root-certificates = "{entry["root-certificates"]}"')
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip("\n") + "\n" + "\n".join(lines) + "\n")
    return path


def register_device(connection: str, public_key: Path) -> str:
    """Register a device's public key with the SuperLink (`flwr supernode register`)."""
    out = subprocess.run(
        [str(BIN / "flwr"), "supernode", "register", str(public_key), connection],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )
    if out.returncode != 0 or "registered successfully" not in out.stdout:
        raise RuntimeError(f"registering {public_key} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout.strip()


# --- processes --------------------------------------------------------------------------------


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
    """The Fleet-only public face of a SuperLink listening on 127.0.0.1 (scripts/fleet_gateway.py)."""
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
    (client_app/eligibility.py, client_app/cost.py), e.g. {"require-charging": False}."""
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
    from client_app.cost import watts_per_busy_core
    from client_app.eligibility import DeviceRules

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


# --- command line -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("certs", help="create a CA and the SuperLink certificate")
    p.add_argument("--out", type=Path, default=DEPLOY_HOME / "certs")
    p.add_argument("--address", action="append", required=True, help="IP or DNS name devices use (repeat)")
    p = sub.add_parser("device-key", help="create a device's authentication key pair")
    p.add_argument("--out", type=Path, default=DEPLOY_HOME / "keys")
    p.add_argument("--name", required=True)
    p = sub.add_parser("connection", help="write the flwr connection entry for this deployment")
    p.add_argument("--name", required=True)
    p.add_argument("--address", required=True, help="host:port of the SuperLink")
    p.add_argument("--ca", type=Path)
    p.add_argument("--insecure", action="store_true", help="first local try only: no TLS")
    p = sub.add_parser("register", help="register a device's public key with the SuperLink")
    p.add_argument("--connection", required=True)
    p.add_argument("public_key", type=Path)
    for name in ("superlink", "supernode"):
        p = sub.add_parser(name, help=f"start a {name}")
        p.add_argument("--insecure", action="store_true", help="first local try only: no TLS, no authentication")
        p.add_argument("--background", action="store_true", help="detach; pid and log go to --state")
        p.add_argument("--state", type=Path, default=DEPLOY_HOME / "state")
        p.add_argument("--port", type=int, default=9092 if name == "superlink" else 9094)
        if name == "superlink":
            p.add_argument("--host", default="127.0.0.1", help="where the SuperLink (all its APIs) listens")
            p.add_argument("--public", metavar="HOST:PORT", help="where devices connect: the Fleet API only "
                           "(scripts/fleet_gateway.py), e.g. 0.0.0.0:9093")
            p.add_argument("--expose-control-api", action="store_true", help="allow --host beyond 127.0.0.1: "
                           "anyone who reaches it with ca.crt can then register devices and start runs")
            p.add_argument("--certs", type=Path, default=DEPLOY_HOME / "certs")
        else:
            p.add_argument("--superlink", required=True, help="host:port of the SuperLink")
            p.add_argument("--ca", type=Path, help="the deployment's ca.crt")
            p.add_argument("--key", type=Path, help="this device's private key")
            p.add_argument("--data", type=Path, required=True, help="this device's text (file or directory)")
            p.add_argument("--name", default="supernode", help="name of the pid/log files with --background")
            p.add_argument("--rule", action="append", default=[], metavar="KEY=VALUE",
                           help="an eligibility rule or power figure (repeat): require-charging=false, "
                                "min-battery=30, metered-network=true, train-on-metered=true, watts-per-busy-core=2.0")
    p = sub.add_parser("stop", help="stop everything started with --background --state DIR")
    p.add_argument("--state", type=Path, default=DEPLOY_HOME / "state")
    args = parser.parse_args(argv)

    if args.command == "certs":
        for what, path in make_certs(args.out, args.address).items():
            print(f"{what}: {path}")
    elif args.command == "device-key":
        private, public = make_device_key(args.out, args.name)
        print(f"private key (copy to the device only): {private}\npublic key (register it): {public}")
    elif args.command == "connection":
        if not args.insecure and not args.ca:
            parser.error("connection needs --ca (or --insecure for a first local try)")
        print(f"wrote [superlink.{args.name}] to {write_connection(args.name, args.address, args.ca, args.insecure)}")
    elif args.command == "register":
        print(register_device(args.connection, args.public_key))
    elif args.command in ("superlink", "supernode"):
        if args.command == "superlink":
            if not args.insecure and not args.certs:
                parser.error("superlink needs --certs (or --insecure for a first local try)")
            if not args.insecure:
                check_private(args.certs / "server.key")
            if args.host not in LOOPBACK and not args.expose_control_api:
                parser.error(f"--host {args.host} would open the Control API to the network: anyone holding "
                             "ca.crt could register devices and start runs (Flower 1.42 has no Control API "
                             "authentication). Keep --host 127.0.0.1 and give devices --public HOST:PORT "
                             "(the Fleet API only), or pass --expose-control-api if you mean it.")
            args.state.mkdir(parents=True, exist_ok=True)
            command = superlink_command(args.state, args.host, args.port, args.certs, args.insecure)
            if args.public:
                gateway = gateway_command(args.public, args.port, args.certs, args.insecure)
                if args.background:
                    print(f"started the Fleet gateway on {args.public} (pid {start(gateway, args.state, 'gateway')})")
                else:  # same process group: Ctrl-C or systemd stops both
                    subprocess.Popen(gateway, env=_env())
        else:
            if not args.insecure and not (args.ca and args.key):
                parser.error("supernode needs --ca and --key (or --insecure for a first local try)")
            if not args.data.exists():
                parser.error(f"--data {args.data}: no such file or directory")
            if args.key:
                check_private(args.key)
            try:
                rules = parse_rules(args.rule)
            except ValueError as e:
                parser.error(str(e))
            command = supernode_command(args.superlink, args.data, args.ca, args.key, args.port, args.insecure,
                                        rules=rules)
        if args.insecure:
            print("WARNING: insecure mode: no TLS, no authentication. For a first local try only.", file=sys.stderr)
        if args.background:
            name = args.command if args.command == "superlink" else args.name
            print(f"started {name} (pid {start(command, args.state, name)}), log: {args.state / (name + '.log')}")
        else:
            os.execve(command[0], command, _env())
    elif args.command == "stop":
        print("stopped: " + (", ".join(stop(args.state)) or "nothing"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
