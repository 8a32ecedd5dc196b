"""Deploy on real devices: certificates, device keys, SuperLink, SuperNodes, connection, stop.

The server operator (SuperLink side); everything goes to ~/fednextword-deploy (certs/, keys/,
state/; or $FEDNEXTWORD_DEPLOY), outside the repository, unless told otherwise:
    python scripts/deployment/deploy.py certs --address 127.0.0.1 --address fl.example.lan
    python scripts/deployment/deploy.py superlink --public 0.0.0.0:9093
    python scripts/deployment/deploy.py connection --name fednextword --address 127.0.0.1:9092 --ca ~/fednextword-deploy/certs/ca.crt
    python scripts/deployment/deploy.py device-key --name kitchen-pi      # one per device
    python scripts/deployment/deploy.py register --connection fednextword ~/fednextword-deploy/keys/kitchen-pi.pub
    flwr run . fednextword --stream

Each device (copy it ca.crt and its private key kitchen-pi, nothing else):
    python scripts/deployment/deploy.py supernode --superlink fl.example.lan:9093 --ca ca.crt \\
        --key kitchen-pi --data /home/pi/keyboard-text

Everything is TLS with SuperNode authentication, and the SuperLink never installs dependencies
at run time. `--insecure` exists for a first local try only: no encryption, no authentication.
`superlink`/`supernode` run in the foreground (for systemd, see scripts/deployment/fednextword-supernode.service)
or with `--background --state DIR` (pid and log files in DIR, ended by `stop --state DIR`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from scripts.deployment.deploy_keys import DEPLOY_HOME, check_private, make_certs, make_device_key  # noqa: E402
from scripts.deployment.processes import (  # noqa: E402  (tests use them through this module)
    BIN,
    LOOPBACK,
    _env,
    gateway_command,
    parse_rules,
    start,
    stop,
    superlink_command,
    supernode_command,
)

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
                           "(scripts/deployment/fleet_gateway.py), e.g. 0.0.0.0:9093")
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
