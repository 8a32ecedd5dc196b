"""The privacy-utility figure of scripts/benchmarks/benchmark_privacy.py: top-3 against epsilon, one
line per mechanism, the non-private run as a reference."""

from __future__ import annotations

from pathlib import Path

MODES = {"none": "non-private", "central-client-clip": "DP-FedAvg", "central-ftrl": "DP-FTRL",
         "central-blt": "BLT-DP-FTRL"}
COLOURS = {"central-client-clip": "C0", "central-ftrl": "C1", "central-blt": "C2"}


def plot(rows: list, path: Path, earlier: dict[str, list] | None = None,
         scored: str = "top-3, unseen users, final model") -> None:
    """Left: top-3 against epsilon, one line per devices-per-round and DP mode, each executed
    setting's non-private run as a dotted level; executed points filled, emulated ones (the noise
    of a larger cohort carried by a smaller one) hollow. Right: the same runs against devices per
    round. `earlier`: rows of other benchmark JSONs to show beside these, by a label for each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_eps, by_cohort) = plt.subplots(1, 2, figsize=(12, 6))
    sources = {"": rows, **(earlier or {})}
    cohort = lambda r: r.emulated_per_round or r.per_round  # noqa: E731
    eps = lambda r: r.target_epsilon if r.emulated_per_round else r.epsilon  # noqa: E731
    styles = {"central-client-clip": ("-", "o"), "central-ftrl": ("--", "s"), "central-blt": ("-.", "D")}
    colour, targets = 0, set()
    for tag, source in sources.items():
        done = [r for r in source if r.top3 is not None]
        targets |= {r.target_epsilon for r in done if r.target_epsilon}
        for m in sorted({cohort(r) for r in done}):
            emulated = any(r.emulated_per_round == m for r in done)
            for mode, (line, marker) in styles.items():
                points = sorted((eps(r), r.top3) for r in done if r.mode == mode and cohort(r) == m)
                if points:
                    shade = COLOURS[mode] if len(sources) == 1 else f"C{colour}"  # one colour per mechanism
                    by_eps.plot(*zip(*points), line, marker=marker, color=shade, mfc="none" if emulated else shade,
                                label=f"{MODES[mode]}, {m} per round, {'emulated' if emulated else 'executed'}{tag}")
            for r in done:
                if r.mode == "none" and r.per_round == m:
                    by_eps.axhline(r.top3, color="black" if len(sources) == 1 else f"C{colour}", lw=1, ls=":",
                                   label=f"non-private, {m} per round{tag}")
            colour += 1
        for mode, (line, marker) in styles.items():
            for target in sorted({r.target_epsilon for r in done if r.target_epsilon}):
                points = sorted((cohort(r), r.top3, bool(r.emulated_per_round)) for r in done
                                if r.mode == mode and r.target_epsilon == target)
                for x, y, emulated in points:
                    by_cohort.plot([x], [y], marker=marker, color=COLOURS[mode],
                                   mfc="none" if emulated else None, ls="")
        reference = sorted((r.per_round, r.top3) for r in done if r.mode == "none")
        if reference:
            by_cohort.plot(*zip(*reference), "^", color="black")
    if targets:
        by_eps.set_xlim(min(targets) / 4, max(targets) * 4)
    by_eps.set_xscale("log")
    by_eps.set_xlabel("user-level ε of the run (emulated: of the emulated run)")
    by_eps.set_ylabel(scored)
    by_eps.legend(fontsize=6, loc="upper left", bbox_to_anchor=(0, -0.14), ncol=2)  # below: never over a point
    by_cohort.set_xscale("log")
    by_cohort.set_xlabel("devices per round (hollow: emulated noise; ▲ non-private)")
    by_cohort.set_title("● DP-FedAvg  ■ DP-FTRL  ◆ BLT-DP-FTRL", fontsize=8)
    for ax in (by_eps, by_cohort):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
