"""Run a real federated training with `flwr run .` on simulated devices, then report.

    .venv/bin/python scripts/run_simulation.py                 # 10 devices, built-in data
    .venv/bin/python scripts/run_simulation.py --devices 20 --run-config 'num-server-rounds=10'

Uses a private FLWR_HOME (./.flwr) and stops the local SuperLink afterwards. Exits non-zero
unless the run finished as completed and its federated evaluation loss went down.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.local_flower import ROOT, private_flower, run_app  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10, help="simulated devices (SuperNodes)")
    parser.add_argument("--cpus-per-device", type=int, default=1, help="CPU cores per simulated device (Flower wants an integer)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "runs", help="where runs are written")
    parser.add_argument("--run-config", default="", help="extra overrides, e.g. 'num-server-rounds=10'")
    args = parser.parse_args()

    run_config = f'out-dir="{args.out_dir.resolve()}" {args.run_config}'.strip()
    with private_flower(ROOT / ".flwr") as env:
        outcome = run_app(env, num_supernodes=args.devices, run_config=run_config, cpus_per_client=args.cpus_per_device)

    summary_path = args.out_dir.resolve() / f"run-{outcome.run_id}" / "summary.json"
    print(f"\nRun {outcome.run_id}: status {outcome.status}, {outcome.seconds:.0f} s wall time.")
    if outcome.status != "finished:completed" or not summary_path.exists():
        print(f"The run did not complete; see the log above and `FLWR_HOME={env['FLWR_HOME']} flwr log {outcome.run_id}`.")
        return 1
    from server_app.run_record import summary_lines  # light: no TensorFlow

    summary = json.loads(summary_path.read_text())
    print("\n".join(summary_lines(summary)))
    final = summary["final"]
    if not final or final["eval_loss"] >= summary["first_eval_loss"]:
        print("The federated evaluation loss did not go down: the model did not learn.")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
