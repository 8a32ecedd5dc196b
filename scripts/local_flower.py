"""Run the app with `flwr run .` on a private local SuperLink, check the outcome, clean up.

Used by scripts/run_simulation.py and the end-to-end tests. Why a private one: `flwr run`
auto-starts a detached local SuperLink that outlives the run and keeps the environment it was
started with. Here it gets its own FLWR_HOME and ports, the environment this project needs, and
is stopped afterwards.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty, Queue

from scripts.local_superlink import (  # noqa: F401  (re-exported for scripts and tests)
    ROOT,
    VENV_BIN,
    app_run_config,
    bundle_problem,
    start_local_superlink,
    stop_local_superlink,
    terminate_tree,
)


@dataclass
class RunOutcome:
    run_id: int
    status: str          # e.g. "finished:completed"
    output: str          # what `flwr run --stream` printed
    seconds: float
    marks: dict[str, float] = field(default_factory=dict)  # seconds after start each MARKS line first appeared


# Lines of `flwr run --stream` that mark the stages of start-up.
MARKS = {"submitted": "Successfully started run",          # CLI, local SuperLink up, app built and sent
         "simulation": "Starting Flower Simulation",       # Flower's simulation process running
         "server_app": "Writing this run's",               # app installed, ServerApp set up
         "first_round": "[ROUND 1/"}                      # ServerApp set up, initial evaluation done


def flower_env(flwr_home: Path, http_port: int = 39091, control_port: int = 39093,
               ray_address: str | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
    """`ray_address`: a Ray cluster the simulation attaches to. Without one, the simulation starts
    its own Ray ("local"), even if a `ray start --head` on this machine left its address behind.
    `extra`: more variables, e.g. the cluster's RAY_AUTH_TOKEN."""
    env = {**os.environ, **(extra or {})}
    env.update({
        "FLWR_HOME": str(flwr_home),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        # The venv already holds every dependency; a per-run `uv sync` would copy TensorFlow.
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(http_port),
        "FLWR_LOCAL_CONTROL_API_PORT": str(control_port),
        "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",  # flwr starts flower-superlink from PATH
        "TF_CPP_MIN_LOG_LEVEL": "2",
        # Flower's simulation process and every Ray worker import TensorFlow before any app code
        # runs; with tf-keras selected up front TensorFlow skips loading Keras 3 (~2 s each).
        "TF_USE_LEGACY_KERAS": "1",
        # Flower's Ray backend calls ray.init() without an address: it reads this one
        "RAY_ADDRESS": ray_address or "local",
    })
    return env


@contextmanager
def private_flower(flwr_home: Path, http_port: int = 39091, control_port: int = 39093, *,
                   must_stop: bool = False, ray_address: str | None = None,
                   extra: dict[str, str] | None = None) -> Iterator[dict[str, str]]:
    """The environment for `flwr run` with its own FLWR_HOME and ports, and its local SuperLink
    started; on exit that SuperLink is stopped (`must_stop`: it is an error if none was found).
    The SuperLink is started with RAY_ADDRESS set (`ray_address`, or "local"): the simulation
    process it spawns for each run inherits it."""
    problem = bundle_problem(flwr_home)
    if problem:
        raise RuntimeError(problem)
    env = flower_env(flwr_home, http_port, control_port, ray_address, extra)
    try:
        start_local_superlink(env)
        yield env
    finally:
        stopped = stop_local_superlink(env)
    if must_stop and not stopped:
        raise RuntimeError(f"no local SuperLink for FLWR_HOME={flwr_home} was found to stop")


def run_app(env: dict[str, str], *, num_supernodes: int = 0, run_config: str = "", cpus_per_client: int = 1,
            gpus_per_client: float = 0.0, connection: str | None = None, timeout: float = 1800,
            start_timeout: float = 600,
            echo: bool | Callable[[str], bool] = True) -> RunOutcome:
    """`flwr run . --stream`: in simulation (default) or on the SuperLink `connection` names.

    `echo`: print every line, none, or those a filter accepts (`template_line`). Returns the
    run's id, final status (from `flwr ls`) and whole output. A run whose ServerApp has not started
    `start_timeout` s after it was submitted (a busy machine once left one in `starting` for 17
    minutes while Flower spawned 22 simulation processes), or that runs past `timeout`, is stopped
    with `flwr stop` and reported with status "stopped:<why>".
    """
    cmd = [str(VENV_BIN / "flwr"), "run", str(ROOT), *([connection] if connection else []), "--stream"]
    if not connection:
        resources = f"num-supernodes={num_supernodes} client-resources-num-cpus={cpus_per_client}"
        cmd += ["--federation-config", resources + (f" client-resources-num-gpus={gpus_per_client}"
                                                    if gpus_per_client else "")]
    if run_config:
        cmd += ["--run-config", run_config]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    marks: dict[str, float] = {}
    queue: Queue[str | None] = Queue()

    def read() -> None:  # in a thread: a run that prints nothing still meets its deadlines
        assert proc.stdout is not None
        for line in proc.stdout:
            queue.put(line)
        queue.put(None)

    threading.Thread(target=read, daemon=True).start()
    stopped = None
    while True:
        try:
            line = queue.get(timeout=1.0)
        except Empty:
            line = ""
        if line is None:
            break
        if line:
            lines.append(line)
            for name, text in MARKS.items():
                if name not in marks and text in line:
                    marks[name] = time.monotonic() - start
            if echo is True or (callable(echo) and echo(line)):
                print(line, end="", flush=True)
        now = time.monotonic() - start
        if "submitted" in marks and "server_app" not in marks and now - marks["submitted"] > start_timeout:
            stopped = f"not running {start_timeout:.0f} s after it was submitted"
        elif now > timeout:
            stopped = f"still running after {timeout:.0f} s"
        if stopped:
            break
    output = "".join(lines)
    match = re.search(r"Successfully started run (\d+)", output)
    if stopped:
        if match:
            stop_run(env, int(match.group(1)), connection)
        terminate_tree(proc.pid)
    proc.wait()
    if not match:
        raise RuntimeError(f"`flwr run` did not start a run (exit code {proc.returncode}):\n{output[-3000:]}")
    run_id = int(match.group(1))
    status = f"stopped:{stopped}" if stopped else run_status(env, run_id, connection)
    return RunOutcome(run_id, status, output, time.monotonic() - start, marks)


_LEVEL = re.compile(r"^(?:\x1b\[[0-9;]*m)?(INFO|WARNING|ERROR)\s*(?:\x1b\[0m)?\s*:\s+(.*)$")
# The app's own lines (its end-of-run summary is printed again by scripts/run_simulation.py).
_TEMPLATE = ("round ", "Writing this run", "Privacy accounting", "Resuming", "Stopped early", "Starting Flower")


def template_line(line: str) -> bool:
    """The lines a user of the template wants on the console: the app's own (one per round, the
    summary, privacy), Flower's start and errors; not Ray's, TensorFlow's or Flower's per-round
    records (they stay in the full log)."""
    if line.startswith(("Successfully started run", "Starting local SuperLink")):
        return True
    match = _LEVEL.match(line)
    if not match:
        return False
    level, text = match.groups()  # text without its indent
    return level == "ERROR" or text.startswith(_TEMPLATE) or "device failed" in text


def run_status(env: dict[str, str], run_id: int, connection: str | None = None) -> str:
    """The run's status as `flwr ls` reports it (`flwr run` exits 0 even when a run failed)."""
    cmd = [
        str(VENV_BIN / "flwr"),
        "ls",
        *([connection] if connection else []),
        "--run-id",
        str(run_id),
        "--format",
        "json",
    ]
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    data = json.loads(out.stdout)
    runs = data.get("runs", [])
    if not runs:
        raise RuntimeError(f"`flwr ls` does not know run {run_id}: {out.stdout} {out.stderr}")
    return runs[0]["status"]


def stop_run(env: dict[str, str], run_id: int, connection: str | None = None) -> str:
    """`flwr stop`: ends the run's ServerApp (as a crash or an operator would)."""
    cmd = [str(VENV_BIN / "flwr"), "stop", str(run_id), *([connection] if connection else [])]
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    return out.stdout + out.stderr
