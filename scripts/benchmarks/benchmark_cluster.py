"""One machine, or a Ray cluster of two nodes on it: the same federated work, timed both ways.

    .venv/bin/python scripts/benchmarks/benchmark_cluster.py                 # ~10 min here
    .venv/bin/python scripts/benchmarks/benchmark_cluster.py --devices 10000 --per-round 1000

Both runs are a real `flwr run .` of the same run config on the same number of CPUs: one Ray
started by the simulation (`--cpus` CPUs), then scripts/deployment/ray_cluster.py's two raylets of
`--cpus / 2` each. Printed: wall time, seconds per round after the first (the first includes Ray
and TensorFlow start-up in every worker), the devices' summed CPU time per round, and the ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripts.benchmarks.benchmark_runs import flower_run  # noqa: E402
from scripts.deployment.ray_cluster import actors, local_ray_cluster  # noqa: E402
from scripts.local_flower import private_flower  # noqa: E402


def run_config(args, out: Path) -> str:
    fraction = (args.per_round + 0.5) / args.devices  # int(devices x fraction) = per_round
    return (f'model.preset="dp-small" num-server-rounds={args.rounds} fraction-train={fraction} '
            f"min-train-nodes={args.per_round} min-available-nodes={args.devices} "
            f"fraction-evaluate={2.5 / args.devices} "
            f"min-evaluate-nodes=2 evaluate-in-train=false max-local-steps=5 server-eval-devices=0 "
            f'keep-checkpoints=1 out-dir="{out}"')


def measure(env: dict, args, out: Path) -> dict:
    result = flower_run(env, args.devices, run_config(args, out), timeout=args.timeout)
    later = [r for r in result.rows if r["round"] >= 2]
    return {"status": result.status, "wall_s": round(result.seconds, 1),
            "s_per_round": round(sum(r["seconds"] for r in later) / max(len(later), 1), 1),
            "device_cpu_s_per_round": round(sum(r.get("train_cpu_seconds", 0) for r in later) / max(len(later), 1), 1),
            "peak_mb": round(result.peak_rss_mb)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--per-round", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs in both setups (split over the two nodes)")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--out", type=Path, default=None, help="also write the table's JSON here")
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory(prefix="cluster-benchmark-") as tmp:
        tmp = Path(tmp)
        with private_flower(tmp / "flwr-one", 39691, 39693) as env:
            rows["one node (the simulation's own Ray)"] = measure(env, args, tmp / "one")
        with local_ray_cluster(tmp / "ray", nodes=2, cpus_per_node=args.cpus // 2) as cluster:
            with private_flower(tmp / "flwr-two", 39691, 39693, ray_address=cluster.address,
                                extra=cluster.env) as env:
                rows["two nodes (scripts/deployment/ray_cluster.py)"] = measure(env, args, tmp / "two")
            nodes = {a["node"] for a in actors(cluster)}
    one, two = rows.values()
    print(f"\n{args.devices} devices, {args.per_round} trained per round, {args.rounds} rounds, dp-small, 5 steps; "
          f"{args.cpus} CPUs either way (ClientApp actors ran on {len(nodes)} Ray node(s) of the cluster)\n")
    print("| setup | status | wall (s) | s per round (rounds 2+) | device CPU s per round | peak memory (MB) |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['status']} | {r['wall_s']} | {r['s_per_round']} | {r['device_cpu_s_per_round']} | "
              f"{r['peak_mb']:,} |")
    print(f"\nTwo nodes / one node: wall {two['wall_s'] / one['wall_s']:.2f}x, "
          f"per round {two['s_per_round'] / max(one['s_per_round'], 1e-9):.2f}x (goal: at most 1.3x)")
    if args.out:
        args.out.write_text(json.dumps({"settings": vars(args) | {"out": str(args.out)}, "rows": rows}, indent=1))
    return 0 if all(r["status"] == "finished:completed" for r in rows.values()) and len(nodes) == 2 else 1


if __name__ == "__main__":
    sys.exit(main())
