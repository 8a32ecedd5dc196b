"""The private local SuperLink `flwr run` uses in simulation: started before a run (with more
time than `flwr run` gives it), checked not to collide with anybody else's, and stopped after,
with every process it started."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def app_run_config(root: Path = ROOT) -> dict:
    """pyproject.toml's run config as Flower reads it (each group's keys under their dotted names)."""
    import tomllib

    from flwr.common.config import flatten_dict

    return flatten_dict(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"])


def start_local_superlink(env: dict[str, str], timeout: float = 300) -> None:
    """Start the local SuperLink `flwr run` would start, and wait until it answers.

    `flwr run` gives the SuperLink it starts 15 s (flwr/cli/constant.py), and importing it alone
    takes ~8 s here: a busy machine misses that and the run never starts. Started here with the
    same arguments (flwr/cli/local_superlink.py), `flwr run` finds it up and uses it."""
    stop_local_superlink(env)  # one left over from an interrupted session may hold stale settings
    home = Path(env["FLWR_HOME"]) / "local-superlink"
    home.mkdir(parents=True, exist_ok=True)
    port = env["FLWR_LOCAL_SUPERLINK_HTTP_API_PORT"]
    if _answers(port):  # `flwr run` would silently send the run to whoever this is
        raise RuntimeError(f"another SuperLink already answers on 127.0.0.1:{port}; choose other ports (--ports)")
    cmd = [str(VENV_BIN / "flower-superlink"), "--insecure", "--simulation", "--isolation", "subprocess",
           "--control-api-address", f"127.0.0.1:{env['FLWR_LOCAL_CONTROL_API_PORT']}", "--host", "127.0.0.1",
           "--port", port, "--log-file", str(home / "superlink.log"), "--log-rotation-interval-hours", "24",
           "--log-rotation-backup-count", "7", "--database", str(home / "state.db")]
    log = home / "superlink.log"
    for attempt in range(2):
        logged = log.stat().st_size if log.exists() else 0
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        code = _wait_until_up(proc, port, timeout)
        if code is None:
            return
        with open(log, "rb") as f:
            f.seek(logged)
            said = f.read().decode(errors="replace")
        if STATE_SCHEMA_MISMATCH in said and attempt == 0:
            # A start killed while it created the database leaves tables without their migration
            # stamp, and every later start refuses it. It holds only this private SuperLink's
            # run records: kept aside, not deleted, and a fresh one started.
            aside = home / f"state.db.broken-{time.strftime('%Y%m%d-%H%M%S')}"
            (home / "state.db").rename(aside)
            print(f"The local SuperLink's state database was half-created (an interrupted start?); "
                  f"moved it to {aside} and started with a new one.", file=sys.stderr, flush=True)
            continue
        raise RuntimeError(f"flower-superlink exited with code {code}; see {log}:\n{said[-1500:]}")


STATE_SCHEMA_MISMATCH = "Exit Code: 105"  # flower-superlink's code for a state.db it cannot use


def _wait_until_up(proc: subprocess.Popen, port: str, timeout: float) -> int | None:
    """None once the SuperLink answers; its exit code if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return proc.returncode
        if _answers(port):
            return None
        time.sleep(0.5)
    terminate_tree(proc.pid)
    raise RuntimeError(f"flower-superlink did not answer on 127.0.0.1:{port} within {timeout:.0f} s")


def bundle_problem(flwr_home: Path) -> str | None:
    """Why this FLWR_HOME cannot be used: inside the app folder and not excluded, `flwr run .` packs
    the SuperLink's state and every app it installed into the next app bundle (by Flower's own
    rules: .gitignore, fab-include/fab-exclude and its built-in patterns)."""
    try:
        rel = flwr_home.resolve().relative_to(ROOT)
    except ValueError:
        return None  # outside the app: never packed
    import tomllib

    from flwr.cli.build import get_filtered_fab_paths
    from flwr.cli.utils import filter_paths_for_publish

    probe = f"{rel.as_posix()}/apps/an-installed-app/task/model.py"
    files: dict = {"pyproject.toml": ROOT / "pyproject.toml", probe: b""}
    if (ROOT / ".gitignore").exists():
        files[".gitignore"] = ROOT / ".gitignore"
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    if probe not in get_filtered_fab_paths(dict(filter_paths_for_publish(files)), config):
        return None
    return (f"FLWR_HOME {flwr_home} is inside the app folder and not git-ignored: `flwr run .` would pack "
            f"the SuperLink's state and every app it installed into the app bundle. Use a folder outside "
            f"{ROOT}, or add '{rel.as_posix()}/' to .gitignore.")


def _answers(port: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def stop_local_superlink(env: dict[str, str]) -> list[int]:
    """Stop the SuperLink (and its children) that `flwr run` started for this FLWR_HOME."""
    marker = str(Path(env["FLWR_HOME"]) / "local-superlink")
    found = [
        p
        for p in psutil.process_iter(["cmdline"])
        if "flower-superlink" in " ".join(p.info["cmdline"] or []) and marker in " ".join(p.info["cmdline"] or [])
    ]
    for proc in found:
        terminate_tree(proc.pid)
    return [p.pid for p in found]


def terminate_tree(pid: int, grace: float = 10.0) -> None:
    """SIGTERM a process and all its descendants, SIGKILL whatever is left after `grace` seconds."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, left = psutil.wait_procs(procs, timeout=grace)
    for proc in left:
        with contextlib.suppress(psutil.Error):
            proc.kill()


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
