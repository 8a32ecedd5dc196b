"""Wall time per round: real deployment (TLS SuperLink + SuperNodes on 127.0.0.1) vs simulation.

    .venv/bin/python scripts/benchmarks/benchmark_deployment.py [--devices 3] [--rounds 2]

Same default model, same devices' text (builtin personas; in deployment written to each
SuperNode's data directory), same config. Prints total wall time, the per-round times the
ServerApp recorded, the fixed cost (total minus rounds) and the ratio of the mean round times
(goal: a deployment round <= 1.5x a simulated one). The local SuperLink of the simulation is
started and awaited here, not by `flwr run` (whose 15 s limit a busy machine misses).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripts.deployment.deploy_local import local_deployment  # noqa: E402
from scripts.local_flower import flower_env, private_flower, run_app  # noqa: E402
from task.config import Config  # noqa: E402
from task.data import personas  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="fednextword-bench-"))
    n = args.devices
    common = (f"num-server-rounds={args.rounds} min-available-nodes={n} min-train-nodes={n} min-evaluate-nodes={n} "
              "server-eval-devices=0 dp.allow-no-dp-on-devices=true")  # the same run on both: no DP
    results = {}

    with private_flower(root / "sim-home", 39491, 39493) as env:
        sim = run_app(env, num_supernodes=n, echo=False, run_config=f'{common} out-dir="{root / "sim"}"')
    results["simulation"] = (sim, root / "sim")

    env = flower_env(root / "dep-home")
    os.environ["FLWR_HOME"] = env["FLWR_HOME"]
    data = []
    for i in range(n):
        data.append(root / f"device{i}")
        data[i].mkdir()
        (data[i] / "text.txt").write_text("\n".join(personas.device_sentences(i, Config().sentences_per_device)))
    with local_deployment(root / "deployment", data, port=39593) as d:
        dep = run_app(env, connection=d["connection"], echo=False, run_config=f'{common} out-dir="{root / "dep"}"')
    results["deployment"] = (dep, root / "dep")

    print(f"{n} devices, {args.rounds} rounds, default model; seconds")
    print(f"{'mode':<11} {'status':<20} {'total':>6} {'fixed':>6}  per round")
    means = {}
    for mode, (outcome, out) in results.items():
        rows = json.loads((out / f"run-{outcome.run_id}" / "metrics.json").read_text())[1:]
        per_round = [r["seconds"] for r in rows]
        means[mode] = sum(per_round) / max(len(per_round), 1)
        print(f"{mode:<11} {outcome.status:<20} {outcome.seconds:>6.0f} {outcome.seconds - sum(per_round):>6.0f}  "
              + " ".join(f"{s:.0f}" for s in per_round))
    ratio = means["deployment"] / means["simulation"] if means["simulation"] else float("nan")
    print(f"mean round, deployment / simulation: {ratio:.2f}x (goal <= 1.5x)")
    return 0 if all(o.status == "finished:completed" for o, _ in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
