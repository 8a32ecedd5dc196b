"""Print a run's participation per round and what it cost the devices, as a Markdown table.

    .venv/bin/python scripts/benchmarks/participation_table.py ~/fednextword-runs/run-<id>

Columns: the simulated hour (with participation.availability = "nightly"), devices asked, what became of
them (replied, late, still busy with an earlier round so not sent, declined, failed), the round's wall time, and per device that replied:
MB on the network (its message and reply) and energy (measured or estimated: the run says which).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from features.participation.eligibility import simulated_clock  # noqa: E402
from server_app.console import cost_line  # noqa: E402
from task.config import Config  # noqa: E402
from task.run.plots import read_rows  # noqa: E402


def table(run_dir: Path) -> str:
    rows = [r for r in read_rows(run_dir) if r.get("train_sampled")]
    cfg = Config.from_run_config(json.loads((run_dir / "config.json").read_text()))
    nightly = cfg.feature("participation").availability == "nightly"
    head = (["round"] + (["hour"] if nightly else []) + ["asked", "replied", "late", "still busy", "not eligible", "failed",
                                                         "seconds", "MB down + up per reply", "J per reply"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        replied = r["train_replied"]
        mb = (r["train_bytes_sent"] / r["train_sampled"] + r["train_bytes_received"] / max(replied, 1)) / 1e6
        joules = r["train_energy_joules"] / r["train_cost_reported"] if r.get("train_cost_reported") else None
        cells = ([r["round"]] + ([_hour(simulated_clock(cfg.feature("participation"), r["round"]))] if nightly else [])
                 + [r["train_sampled"], replied, r.get("train_late", 0), r.get("train_busy", 0), r.get("train_not_eligible", 0),
                    r["train_failed"], f"{r['seconds']:.1f}", f"{mb:.2f}", "—" if joules is None else f"{joules:.1f}"])
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    summary = run_dir / "summary.json"
    if summary.exists() and (cost := json.loads(summary.read_text()).get("device_cost")):
        lines += ["", f"Over the run: {cost_line(cost)}."]
    return "\n".join(lines)


def _hour(clock: float) -> str:
    return f"{int(clock):02d}:{round(clock % 1 * 60):02d}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args(argv)
    print(table(args.run_dir.expanduser()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
