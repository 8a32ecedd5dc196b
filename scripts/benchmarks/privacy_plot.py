"""The privacy-utility figure of scripts/benchmarks/benchmark_privacy.py: top-3 against epsilon, one
line per mechanism, the non-private run as a reference."""

from __future__ import annotations

from pathlib import Path

MODES = {"none": "non-private", "central-client-clip": "DP-FedAvg", "central-ftrl": "DP-FTRL"}


def plot(rows: list[Row], path: Path) -> None:
    """Left: top-3 against epsilon, one line per devices-per-round (emulated cohorts included) and
    DP mode, each executed setting's non-private run as a dotted level. Right: the same runs
    against devices per round, one line per mode and target epsilon."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_eps, by_cohort) = plt.subplots(1, 2, figsize=(12, 4.5))
    done = [r for r in rows if r.top3 is not None]
    cohort = lambda r: r.emulated_per_round or r.per_round  # noqa: E731
    eps = lambda r: r.target_epsilon if r.emulated_per_round else r.epsilon  # noqa: E731
    styles = {"central-client-clip": "-o", "central-ftrl": "--s"}
    for i, m in enumerate(sorted({cohort(r) for r in done})):
        emulated = " (emulated)" if any(r.emulated_per_round == m for r in done) else ""
        for mode, style in styles.items():
            points = sorted((eps(r), r.top3) for r in done if r.mode == mode and cohort(r) == m)
            if points:
                by_eps.plot(*zip(*points), style, color=f"C{i}", label=f"{MODES[mode]}, {m} per round{emulated}")
        for r in done:
            if r.mode == "none" and r.per_round == m:
                by_eps.axhline(r.top3, color=f"C{i}", lw=1, ls=":", label=f"non-private, {m} per round")
    targets = sorted({r.target_epsilon for r in done if r.target_epsilon})
    if targets:
        by_eps.set_xlim(targets[0] / 4, targets[-1] * 4)
    by_eps.set_xscale("log")
    by_eps.set_xlabel("user-level ε of the run (emulated: of the emulated run)")
    by_eps.set_ylabel("top-3, unseen users, final model")
    by_eps.legend(fontsize=7)
    for j, target in enumerate(targets):
        for mode, style in styles.items():
            points = sorted((cohort(r), r.top3) for r in done if r.mode == mode and r.target_epsilon == target)
            if points:
                by_cohort.plot(*zip(*points), style, color=f"C{j}", label=f"{MODES[mode]}, ε = {target:g}")
    reference = sorted((r.per_round, r.top3) for r in done if r.mode == "none")
    if reference:
        by_cohort.plot(*zip(*reference), ":^", color="black", label="non-private")
    by_cohort.set_xscale("log")
    by_cohort.set_xlabel("devices per round (beyond the executed ones: emulated noise)")
    by_cohort.legend(fontsize=7)
    for ax in (by_eps, by_cohort):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
