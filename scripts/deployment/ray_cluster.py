"""A Ray cluster of several nodes on this machine, to try (and test) the cluster path of a
simulation before renting machines: `flwr run .` attaches to it through RAY_ADDRESS.

    .venv/bin/python scripts/deployment/ray_cluster.py --nodes 2 --cpus-per-node 1
    # then, in another shell, with the address it prints:
    bash scripts/run.sh --ray-address 127.0.0.1:36300

On real machines use `ray start` itself (README, "A simulation on a Ray cluster"). What this adds
for one machine, from Ray 2.55's behaviour:
- every raylet gets its own node-manager, object-manager, agent and worker ports, or the second
  one fails to start;
- the cluster has its own temp folder, so it never becomes the "current cluster" that a later
  plain `ray.init()` on this machine would join;
- token authentication (RAY_AUTH_MODE=token): Ray's GCS and raylets listen on every interface
  whatever address they are given, so nobody else on the network may submit work to them;
- it stops exactly the processes it started (their process groups), never `ray stop`, which
  kills every Ray process of every user of the machine.
Ray advertises the machine's own address for 127.0.0.1 (ray/_private/services.py,
resolve_ip_for_localhost): the traffic never leaves the machine either way.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).parent / "ray"
FLOWER_ACTOR = "ClientAppActor"  # the Ray actor class that runs Flower's ClientApps


@dataclass
class RayCluster:
    address: str  # what RAY_ADDRESS (or --ray-address) is set to
    env: dict[str, str]  # what every process that joins it needs: the address and the token
    temp_dir: Path
    groups: list[int] = field(default_factory=list)  # one process group per `ray start`


def _ports(node: int, base: int) -> list[str]:
    """Ten ports per node above `base`, and fifty worker ports per node above base + 100."""
    p = base + 10 * node
    workers = base + 100 + 50 * node
    return [f"--node-manager-port={p + 1}", f"--object-manager-port={p + 2}",
            f"--dashboard-agent-listen-port={p + 3}", f"--dashboard-agent-grpc-port={p + 4}",
            f"--runtime-env-agent-port={p + 5}", f"--metrics-export-port={p + 6}",
            f"--min-worker-port={workers}", f"--max-worker-port={workers + 49}"]


def _ray_env(token: str) -> dict[str, str]:
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_USAGE_STATS_ENABLED": "0"}


def alive_nodes(cluster: RayCluster, timeout: float = 120) -> list[dict]:
    """The cluster's alive nodes as Ray's GCS lists them (asked from a separate driver process)."""
    code = ("import json, ray; ray.init(include_dashboard=False, log_to_driver=False); "
            "print(json.dumps([{'id': n['NodeID'], 'cpus': n['Resources'].get('CPU', 0)} "
            "for n in ray.nodes() if n['Alive']]))")
    return _ask(cluster, code, timeout)


def actors(cluster: RayCluster, class_name: str = FLOWER_ACTOR, timeout: float = 120) -> list[dict]:
    """Ray's own records of every actor of `class_name` the cluster ran, finished ones included:
    on which node, its pid, its state."""
    code = ("import json, ray; from ray._private.state import actors; "
            "ray.init(include_dashboard=False, log_to_driver=False); "
            f"print(json.dumps([{{'node': a['Address']['NodeID'], 'pid': a.get('Pid'), 'state': a['State']}} "
            f"for a in actors().values() if a['ActorClassName'] == {class_name!r}]))")
    return _ask(cluster, code, timeout)


def _ask(cluster: RayCluster, code: str, timeout: float):
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **cluster.env}, capture_output=True,
                         text=True, timeout=timeout, cwd=cluster.temp_dir)
    if out.returncode != 0:
        raise RuntimeError(f"could not ask the Ray cluster at {cluster.address}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def local_ray_cluster(temp_dir: Path, nodes: int = 2, cpus_per_node: int = 1, base_port: int = 36300,
                      timeout: float = 600) -> Iterator[RayCluster]:
    """Start a head and `nodes - 1` more raylets on 127.0.0.1, wait (polling, up to `timeout` s)
    until all have joined, yield the cluster, then stop every process they started."""
    temp_dir = Path(temp_dir).resolve()
    temp_dir.mkdir(parents=True, exist_ok=True)
    env = _ray_env(secrets.token_hex(32))
    cluster = RayCluster(f"127.0.0.1:{base_port}", {**env, "RAY_ADDRESS": f"127.0.0.1:{base_port}"}, temp_dir)
    common = ["--block", "--node-ip-address=127.0.0.1", f"--num-cpus={cpus_per_node}", "--num-gpus=0",
              f"--temp-dir={temp_dir}", "--disable-usage-stats"]
    try:
        for node in range(nodes):
            role = (["--head", f"--port={base_port}", "--include-dashboard=false",
                     f"--dashboard-port={base_port + 7}", f"--ray-client-server-port={base_port + 8}"]
                    if node == 0 else [f"--address={cluster.address}"])
            with (temp_dir / f"ray-start-{node}.log").open("w") as log:
                proc = subprocess.Popen([str(RAY), "start", *role, *common, *_ports(node, base_port)],
                                        env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True, cwd=temp_dir)
            cluster.groups.append(proc.pid)  # start_new_session: its pid is its process group's id
            _wait_for(cluster, node + 1, time.monotonic() + timeout, proc)
        yield cluster
    finally:
        stop(cluster)


def _wait_for(cluster: RayCluster, count: int, deadline: float, proc: subprocess.Popen) -> None:
    while True:
        if proc.poll() is not None:
            log = sorted(cluster.temp_dir.glob("ray-start-*.log"))[-1].read_text()
            raise RuntimeError(f"`ray start` exited with code {proc.returncode}:\n{log[-3000:]}")
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            if len(alive_nodes(cluster)) >= count:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Ray cluster at {cluster.address} did not reach {count} node(s) in time")
        time.sleep(2)


def processes_of(cluster: RayCluster) -> list[psutil.Process]:
    """Every process still running that the cluster started: in its process groups, or (had Ray
    moved one to a session of its own) naming its temp folder on its command line."""
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if proc.status() != psutil.STATUS_ZOMBIE and (
                    os.getpgid(proc.pid) in cluster.groups or str(cluster.temp_dir) in " ".join(proc.cmdline())):
                found.append(proc)
    return found


def stop(cluster: RayCluster, grace: float = 30) -> None:
    """SIGTERM the cluster's process groups (workers first, so the head sees its nodes leave),
    SIGKILL whatever is left after `grace` seconds."""
    for group in reversed(cluster.groups):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGTERM)
    _, left = psutil.wait_procs(processes_of(cluster), timeout=grace)
    for group in cluster.groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
    psutil.wait_procs(left, timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--cpus-per-node", type=int, default=1)
    parser.add_argument("--port", type=int, default=36300, help="the head's port; the nodes use the next 200")
    parser.add_argument("--temp-dir", type=Path, default=ROOT / ".ray-cluster")
    args = parser.parse_args()
    with local_ray_cluster(args.temp_dir, args.nodes, args.cpus_per_node, args.port) as cluster:
        token = args.temp_dir.resolve() / "token"
        with os.fdopen(os.open(token, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(cluster.env["RAY_AUTH_TOKEN"])
        os.chmod(token, 0o600)
        print(f"A Ray cluster of {args.nodes} node(s) x {args.cpus_per_node} CPU runs at {cluster.address}; its token "
              f"is in {token} (yours only). In another shell:\n"
              f"  RAY_AUTH_MODE=token RAY_AUTH_TOKEN=$(cat {token}) bash scripts/run.sh --ray-address {cluster.address}"
              "\nCtrl-C stops it.", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
