"""Every privacy mode on the built-in data: epsilon spent and accuracy reached, as a table.

    .venv/bin/python scripts/benchmarks/privacy_table.py [--rounds 3] [--devices 10]

Each mode is a real `flwr run .` on a private local SuperLink; the table reads the runs' metrics.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripts.local_flower import ROOT, private_flower, run_app  # noqa: E402

MODES = {  # name -> run-config overrides
    "none": "",
    "central-client-clip": 'dp.mode="central-client-clip" dp.noise-multiplier=1.0 dp.clipping-norm=1.0',
    "central-adaptive-clip": 'dp.mode="central-adaptive-clip" dp.noise-multiplier=1.0 dp.clipping-norm=1.0 '
                             "dp.clipped-count-stddev=5.0",
    "central-server-clip": 'dp.mode="central-server-clip" dp.noise-multiplier=1.0 dp.clipping-norm=1.0',
    "local": 'dp.mode="local" dp.clipping-norm=1.0 dp.local-epsilon=8.0',
    "DP-SGD only": "dp.sgd=true dp.sgd-noise-multiplier=1.0 dp.sgd-clipping-norm=1.0",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--modes", nargs="*", default=list(MODES))
    parser.add_argument("--out-dir", type=Path, default=ROOT / "runs" / "privacy")
    args = parser.parse_args()
    rows = []
    with private_flower(ROOT / ".flwr", 39491, 39493) as env:
        for name in args.modes:
            outcome = run_app(env, num_supernodes=args.devices, echo=False, run_config=(
                f'num-server-rounds={args.rounds} out-dir="{args.out_dir.resolve()}" {MODES[name]}'))
            path = args.out_dir / f"run-{outcome.run_id}" / "metrics.json"
            metrics = json.loads(path.read_text()) if path.exists() else [{}]
            rows.append((name, outcome.status, metrics[0], metrics[-1], outcome.seconds))
            print(f"{name}: {outcome.status}, {outcome.seconds:.0f} s", flush=True)
    print(f"\n{args.devices} devices, {args.rounds} rounds, built-in data, delta = 1e-5")
    print(
        "| mode | status | user-level ε (one device) | sample-level ε (one window) "
        "| server top-3 (round 0 → last) | device eval top-3 | s |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, status, first, last, seconds in rows:
        if "server_top3" not in last:
            print(f"| {name} | {status} | — | — | — | — | {seconds:.0f} |")
            continue
        user = last.get("dp_epsilon_central", last.get("dp_epsilon_local"))
        sample = last.get("dp_epsilon_sample")
        print(
            f"| {name} | {status} | {'—' if user is None else f'{user:.2f}'} | "
            f"{'—' if sample is None else f'{sample:.2f}'} | "
            f"{first['server_top3']:.1%} → {last['server_top3']:.1%} | "
            f"{last.get('eval_top3', float('nan')):.1%} | {seconds:.0f} |"
        )
    return 0 if all(r[1] == "finished:completed" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
