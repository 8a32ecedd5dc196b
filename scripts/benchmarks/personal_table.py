"""The personalisation table of finished runs: per round, the shared model's top-3 against each
device's own keyboard (the shared model alone or mixed, as the device chose: task/personal.py),
and the spread: devices hurt / helped by more than one prediction, and the share that mixes.

    .venv/bin/python scripts/benchmarks/personal_table.py runs/run-<id> [runs/run-<id> ...] [--json out.json]

Also says whether the run was long enough: the shared model's top-3 rose by at most a point over
its last five rounds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def table(run_dir: Path) -> dict:
    rows = [r for r in json.loads((run_dir / "metrics.json").read_text()) if "eval_personal_top3" in r]
    if not rows:
        raise SystemExit(f"{run_dir}: no round has personalised scores (a DP run, or no evaluation)")
    last, five = rows[-1], rows[-6:-1] if len(rows) > 5 else rows[:-1]
    return {"run": str(run_dir), "rows": [{k: r.get(f"eval_{k}") for k in ("top3", "personal_top3", "personal_hurt",
                                                                              "personal_helped", "personal_on")}
                                          | {"round": r["round"]} for r in rows],
            "last_five_hurt": sum(r["eval_personal_hurt"] for r in rows[-5:]) / len(rows[-5:]),
            "shared_settled": last["eval_top3"] - rows[max(len(rows) - 6, 0)]["eval_top3"] <= 0.01,
            "final": {k: last[f"eval_{k}"] for k in ("top3", "personal_top3", "personal_hurt", "personal_helped",
                                                     "personal_on")}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--json", type=Path, help="write the tables here")
    args = parser.parse_args()
    out = []
    for run in args.runs:
        t = table(run)
        out.append(t)
        print(f"\n{run}\n\n| round | shared top-3 | personalised top-3 | devices hurt | devices helped | mixing |")
        print("|---|---|---|---|---|---|")
        rows = t["rows"]
        shown = [r for i, r in enumerate(rows) if i % 5 == 0 or i >= len(rows) - 5]
        for r in shown:
            print(f"| {r['round']} | {r['top3']:.1%} | {r['personal_top3']:.1%} | {r['personal_hurt']:.0%} | "
                  f"{r['personal_helped']:.0%} | {r['personal_on']:.0%} |")
        print(f"\nhurt over the last five rounds: {t['last_five_hurt']:.1%}; shared model settled (top-3 up at most "
              f"a point over its last five rounds): {'yes' if t['shared_settled'] else 'NO'}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
