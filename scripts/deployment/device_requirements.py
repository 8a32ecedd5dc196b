"""Write requirements-device.txt: every package a device needs, pinned from uv.lock.

    .venv/bin/python scripts/deployment/device_requirements.py            # rewrite it after changing uv.lock
    .venv/bin/python scripts/deployment/device_requirements.py --check    # exit 1 if it is out of date

The list is the `device` dependency group's whole closure, with the lock's overrides applied
(tensorflow-privacy 0.9.0 declares pins that conflict with flwr 1.42; pip would refuse them), so a
device installs it with `pip install --no-deps` and gets exactly what the tests ran.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FILE = ROOT / "requirements-device.txt"
HEADER = """\
# What a device needs to run a SuperNode and this project's ClientApp, every package pinned (the
# SuperLink ships the app code itself with each run). Generated from uv.lock by
# scripts/deployment/device_requirements.py; do not edit. Install with --no-deps, as the pins are complete:
#   python3.11 -m venv /opt/fednextword/venv
#   /opt/fednextword/venv/bin/pip install --no-deps -r requirements-device.txt
# then check it: /opt/fednextword/venv/bin/python scripts/deployment/check_device.py
"""


def uv_command() -> list[str]:
    """uv as scripts/setup.sh installed it (for the system Python), or on PATH."""
    if shutil.which("uv"):
        return ["uv"]
    for python in ("python3.11", "python3", sys.executable):
        if shutil.which(python) and subprocess.run([python, "-m", "uv", "--version"], capture_output=True).returncode == 0:
            return [python, "-m", "uv"]
    raise RuntimeError("uv is not installed: run scripts/setup.sh first")


def exported() -> str:
    out = subprocess.run([*uv_command(), "export", "--frozen", "--only-group", "device", "--no-hashes",
                          "--no-emit-project", "--no-annotate", "--no-header"],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    return HEADER + out.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare, exit 1 if out of date")
    args = parser.parse_args(argv)
    text = exported()
    if args.check:
        if FILE.read_text() != text:
            print(f"{FILE.name} is out of date with uv.lock: run scripts/deployment/device_requirements.py")
            return 1
        return 0
    FILE.write_text(text)
    print(f"wrote {FILE.name}: {sum(1 for line in text.splitlines() if '==' in line)} pinned packages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
