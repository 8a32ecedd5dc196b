"""What grows with the population and with the devices per round, on one machine.

    .venv/bin/python scripts/benchmarks/benchmark_scale.py            # ~20 min here

Three real `flwr run .` of the same settings (dp-small, 5 local steps, no device evaluation, the
simulation's own Ray): 25 devices per round out of 1,000 and out of 10,000 (memory against the
population), and 1,000 per round out of 10,000 (the cost of one device's round against 25 per
round). Printed per run: seconds per round after the first (the first includes Ray and TensorFlow
start-up), that per device trained, the devices' own CPU per device, and the peak resident memory
of the largest ClientApp actor, of Flower's simulation process and of everything together.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripts.benchmarks.benchmark_runs import flower_run  # noqa: E402
from scripts.local_flower import private_flower  # noqa: E402

SETUPS = ((1000, 25), (10000, 25), (10000, 1000))  # (devices, trained per round)


def run_config(devices: int, per_round: int, rounds: int, out: Path) -> str:
    return (f'model.preset="dp-small" num-server-rounds={rounds} fraction-train={(per_round + 0.5) / devices} '
            f"min-train-nodes={per_round} min-available-nodes={devices} fraction-evaluate={2.5 / devices} "
            "min-evaluate-nodes=2 evaluate-in-train=false max-local-steps=5 server-eval-devices=0 "
            f'keep-checkpoints=1 out-dir="{out}"')


def measure(devices: int, per_round: int, rounds: int, tmp: Path, timeout: float) -> dict:
    with private_flower(tmp / f"flwr-{devices}-{per_round}", 39691, 39693) as env:
        run = flower_run(env, devices, run_config(devices, per_round, rounds, tmp / f"out-{devices}-{per_round}"),
                         timeout=timeout)
    later = [r for r in run.rows if r["round"] >= 2]
    per_round_s = sum(r["seconds"] for r in later) / max(len(later), 1)
    cpu = sum(r.get("train_cpu_seconds", 0) for r in later) / max(len(later), 1)
    return {"devices": devices, "per_round": per_round, "status": run.status, "rounds": len(run.rows),
            "s_per_round": round(per_round_s, 2), "s_per_device": round(per_round_s / per_round, 4),
            "device_cpu_s_per_device": round(cpu / per_round, 4), "peak_actor_mb": round(run.peak_actor_mb),
            "peak_engine_mb": round(run.peak_engine_mb), "peak_total_mb": round(run.peak_rss_mb)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="rounds of the 25-per-round runs")
    parser.add_argument("--rounds-large", type=int, default=3, help="rounds of the 1,000-per-round run")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--out", type=Path, default=None, help="also write the table's JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="scale-benchmark-") as tmp:
        rows = [measure(d, k, args.rounds_large if k >= 1000 else args.rounds, Path(tmp), args.timeout)
                for d, k in SETUPS]
    print("\n| devices | trained per round | status | s per round (rounds 2+) | s per device trained | "
          "device CPU s per device | largest ClientApp actor (MB) | simulation process (MB) | all (MB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['devices']:,} | {r['per_round']:,} | {r['status']} | {r['s_per_round']} | {r['s_per_device']} | "
              f"{r['device_cpu_s_per_device']} | {r['peak_actor_mb']:,} | {r['peak_engine_mb']:,} | "
              f"{r['peak_total_mb']:,} |")
    small, big_population, many = rows
    print(f"\nmemory, 10,000 against 1,000 devices (25 per round): actor "
          f"{big_population['peak_actor_mb'] / small['peak_actor_mb']:.2f}x, simulation process "
          f"{big_population['peak_engine_mb'] / small['peak_engine_mb']:.2f}x, all "
          f"{big_population['peak_total_mb'] / small['peak_total_mb']:.2f}x")
    print(f"per device trained, 1,000 against 25 per round (10,000 devices): wall "
          f"{many['s_per_device'] / big_population['s_per_device']:.2f}x, device CPU "
          f"{many['device_cpu_s_per_device'] / max(big_population['device_cpu_s_per_device'], 1e-9):.2f}x")
    if args.out:
        args.out.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1))
    return 0 if all(r["status"] == "finished:completed" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
