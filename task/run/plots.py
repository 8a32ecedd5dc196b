"""Progress plots of one or more runs from their metrics rows: loss and top-3 accuracy against
round, and epsilon against round when a run used DP. One figure, so runs (e.g. DP modes) compare.

    .venv/bin/python -m task.run.plots runs/run-1/metrics.json runs/run-2 --out compare.png
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from task.run.files import atomic_write

EPSILONS = {"dp_epsilon_central": "user-level ε (central)", "dp_epsilon_central_amplified": "user-level ε, amplified",
            "dp_epsilon_local": "user-level ε (local)", "dp_epsilon_sample": "sample-level ε (DP-SGD)"}


def plot_runs(runs: Mapping[str, Sequence[dict]], out: Path) -> Path:
    """Write a PNG with one line per run (and per metric source) in each panel."""
    import matplotlib  # here: devices import this package and never draw

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    with_dp = any(k in row for rows in runs.values() for row in rows for k in EPSILONS)
    panels = 3 if with_dp else 2
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.8))
    for label, rows in runs.items():
        for key, source, style in (("eval", "devices", "-"), ("server", "server", "--"),
                                   ("eval_personal", "personalised", "-."), ("eval_baseline_bigram", "own bigram", ":")):
            for ax, metric in zip(axes, ("loss", "top3")):
                points = [(r["round"], r[f"{key}_{metric}"]) for r in rows if f"{key}_{metric}" in r]
                if points:
                    ax.plot(*zip(*points), style, marker="o", markersize=3, label=f"{label} ({source})")
        if with_dp:
            for key, name in EPSILONS.items():
                points = [(r["round"], r[key]) for r in rows if key in r]
                if points:
                    axes[2].plot(*zip(*points), marker="o", markersize=3, label=f"{label}: {name}")
    titles = ["loss (lower is better)", "top-3 next-word accuracy", f"privacy spent (δ = {_delta(runs)})"]
    for ax, title in zip(axes, titles):
        ax.set_title(title)
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # no round 0.5
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    axes[1].yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    fig.tight_layout()
    with atomic_write(out, "wb") as f:
        fig.savefig(f, dpi=110, format="png")
    plt.close(fig)
    return Path(out)


PARTICIPATION = (("train_replied", "replied", "tab:green"), ("train_late", "late (discarded)", "tab:orange"),
                 ("train_busy", "still busy (late before)", "tab:olive"),
                 ("train_not_eligible", "not eligible", "tab:gray"), ("train_failed", "failed", "tab:red"))


def plot_participation(rows: Sequence[dict], out: Path) -> Path:
    """Per training round, what became of the devices asked (stacked bars), and the energy the
    devices that replied spent (when they reported it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r.get("train_sampled")]
    with_energy = any("train_energy_joules" in r for r in rows)
    fig, axes = plt.subplots(1, 2 if with_energy else 1, figsize=(10 if with_energy else 5.5, 3.8), squeeze=False)
    ax = axes[0][0]
    rounds = [r["round"] for r in rows]
    bottom = [0] * len(rows)
    for key, label, color in PARTICIPATION:
        heights = [r.get(key, 0) for r in rows]
        ax.bar(rounds, heights, bottom=bottom, label=label, color=color)
        bottom = [b + h for b, h in zip(bottom, heights)]
    ax.set_title("devices asked to train, per round")
    if with_energy:
        measured = all(r.get("train_energy_measured", 0) for r in rows if "train_energy_joules" in r)
        points = [(r["round"], r["train_energy_joules"] / max(r["train_cost_reported"], 1))
                  for r in rows if "train_energy_joules" in r]
        axes[0][1].plot(*zip(*points), marker="o", markersize=3)
        axes[0][1].set_title(f"energy per device that replied (J, {'measured' if measured else 'estimated'})")
    for a in axes[0]:
        a.set_xlabel("round")
        a.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        a.grid(alpha=0.3)
    if rows:
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3)
    fig.tight_layout()
    with atomic_write(out, "wb") as f:
        fig.savefig(f, dpi=110, format="png")
    plt.close(fig)
    return Path(out)


def read_rows(path: Path) -> list[dict]:
    """Rows of a metrics.json, given the file or its run directory."""
    path = Path(path)
    path = path / "metrics.json" if path.is_dir() else path
    try:
        rows = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"{path}: cannot read a metrics file ({e})") from e
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "round" in r for r in rows):
        raise SystemExit(f"{path}: not a metrics file (expected a list of rows with a 'round')")
    return rows


def _delta(runs: Mapping[str, Sequence[dict]]) -> str:
    deltas = {r["dp_delta"] for rows in runs.values() for r in rows if "dp_delta" in r}
    return ", ".join(f"{d:g}" for d in sorted(deltas)) or "—"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Plot one or more runs' metrics (loss, top-3, epsilon) to a PNG.")
    parser.add_argument("runs", nargs="+", type=Path, help="metrics.json files or run directories")
    parser.add_argument("--label", action="append", help="a label per run (default: the run directory's name)")
    parser.add_argument("--out", type=Path, default=Path("metrics.png"))
    args = parser.parse_args(argv)
    labels = args.label or [(p if p.is_dir() else p.parent).name for p in args.runs]
    if len(labels) != len(args.runs):
        parser.error(f"{len(labels)} --label for {len(args.runs)} runs")
    print(plot_runs({label: read_rows(p) for label, p in zip(labels, args.runs)}, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
