"""The tables and the figure of scripts/benchmarks/benchmark.py."""

from __future__ import annotations

from pathlib import Path

from scripts.benchmarks.benchmark_runs import CORES, FederatedRun, Results

# ---- output ------------------------------------------------------------------------------------


def print_row(row: dict) -> None:
    print(
        f"  {row['corpus']}: federated top-3 {row['federated']['top3']}, centralised {row['centralised']['top3']:.4f}",
        flush=True,
    )


def _pct(value) -> str:
    return "—" if value is None else f"{value:.1%}"


def print_tables(r: Results) -> None:
    print(f"\nMachine: {r.machine}")
    if r.quality:
        print(
            "\n| corpus | devices | rounds × local epochs | federated top-1 / top-3 / ppl | "
            "centralised top-1 / top-3 / ppl | federated / centralised top-3 | centralised best round: top-3 "
            "(federated / it) | bigram baseline top-3 | keystroke savings: federated / centralised / bigram baseline |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for q in r.quality:
            f, c = q["federated"], q["centralised"]
            fed = f"{f['top1']:.1%} / {f['top3']:.1%} / {f['perplexity']:.0f}" if f["top3"] is not None else q["status"]
            print(
                f"| {q['corpus']} | {q['devices']} | {q['rounds']} × {q['local_epochs']} | {fed} | "
                f"{c['top1']:.1%} / {c['top3']:.1%} / {c['perplexity']:.0f} | {q.get('top3_ratio', float('nan')):.3f} | "
                f"{c['best_round']}: {c['best_top3']:.1%} ({q.get('top3_ratio_best', float('nan')):.3f}) | "
                f"{_pct(f.get('baseline_bigram_top3'))} | {_pct(f.get('keystroke_savings'))} / {_pct(c.get('keystroke_savings'))} / "
                f"{_pct(f.get('baseline_bigram_keystroke_savings'))} |"
            )
        print("\n| corpus | top-3: shared / personalised / own bigram | personalised / bigram top-3 | "
              "keystroke savings: shared / personalised / own bigram | devices the mix hurt |")
        print("|---|---|---|---|---|")
        for q in r.quality:
            f = q["federated"]
            ratio = (f["personal_top3"] / f["baseline_bigram_top3"]
                     if f.get("personal_top3") and f.get("baseline_bigram_top3") else None)
            print(f"| {q['corpus']} | {_pct(f.get('top3'))} / {_pct(f.get('personal_top3'))} / "
                  f"{_pct(f.get('baseline_bigram_top3'))} | {'—' if ratio is None else f'{ratio:.2f}×'} | "
                  f"{_pct(f.get('keystroke_savings'))} / {_pct(f.get('personal_keystroke_savings'))} / "
                  f"{_pct(f.get('baseline_bigram_keystroke_savings'))} | {_pct(f.get('personal_hurt'))} |")
    if r.overhead:
        o = r.overhead
        print(
            f"\nSimulation overhead (built-in run, {o['concurrency']} ClientApps at a time): "
            f"wall {o['wall_seconds']:.0f} s"
            f" = fixed {o['fixed_seconds']:.0f} s (start-up, initial evaluation, final export, shut-down)"
            f" + rounds {o['rounds_seconds']:.0f} s; per-round overhead over compute "
            f"{o['per_round_overhead']:.1%}"
        )
        if o.get("start_up"):
            print("\n| start-up stage | seconds |\n|---|---|")
            for stage, seconds in o["start_up"].items():
                print(f"| {stage.replace('_', ' ')} | {seconds:.1f} |")
    if r.scale:
        print(
            "\n| devices | trained per round | s per round | peak memory (all Flower processes) | "
            "CPU of Flower's simulation process | status |"
        )
        print("|---|---|---|---|---|---|")
        for s in r.scale:
            print(
                f"| {s['population']:,} | {s['sampled']} | {s['seconds_per_round']:.1f} | "
                f"{s['peak_rss_mb']:,.0f} MB | {s['simulation_cpu_seconds']:.0f} s | {s['status']} |"
            )
    if r.communication:
        base = r.communication[0]
        energy = "measured" if all(c.get("energy_measured") for c in r.communication) else "estimated"
        print("\n| transfer.dtype | MB down per device per round | MB up | vs float32 | CPU s per device per round "
              f"| J per device per round ({energy}) | peak memory | final top-3 |")
        print("|---|---|---|---|---|---|---|---|")
        for c in r.communication:
            total = c["train_bytes_down_per_device"] + c["train_bytes_up_per_device"]
            ratio = total / (base["train_bytes_down_per_device"] + base["train_bytes_up_per_device"])
            print(
                f"| {c['transfer_dtype']} | {c['train_bytes_down_per_device'] / 1e6:.2f} | "
                f"{c['train_bytes_up_per_device'] / 1e6:.2f} | {ratio:.2f}× | {c.get('cpu_seconds_per_device', 0):.2f} | "
                f"{c.get('joules_per_device', 0):.1f} | {c.get('peak_memory_mb', 0):,.0f} MB | {c['top3']:.1%} |"
                if c["top3"] is not None
                else f"| {c['transfer_dtype']} | {c['status']} |"
            )


    if r.secure:
        base = r.secure[0]
        print("\n| secagg.enabled | s per round | vs plain | MB down per device per round | MB up | final top-3 |")
        print("|---|---|---|---|---|---|")
        for c in r.secure:
            print(
                f"| {str(c['secure_aggregation']).lower()} | {c['seconds_per_round']:.1f} | "
                f"{c['seconds_per_round'] / base['seconds_per_round']:.2f}× | "
                f"{c['train_bytes_down_per_device'] / 1e6:.2f} | {c['train_bytes_up_per_device'] / 1e6:.2f} | "
                f"{c['top3']:.1%} |"
                if c["top3"] is not None and base["seconds_per_round"]
                else f"| {str(c['secure_aggregation']).lower()} | {c['status']} |"
            )


def plot(r: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    ax = axes[0]
    names = [q["corpus"] for q in r.quality]
    for i, (label, get) in enumerate(
        (("federated", lambda q: q["federated"]["top3"] or 0), ("centralised", lambda q: q["centralised"]["top3"]))
    ):
        ax.bar([j + 0.4 * i for j in range(len(names))], [get(q) for q in r.quality], 0.4, label=label)
    ax.set_xticks([j + 0.2 for j in range(len(names))], names)
    ax.set_ylabel("held-out top-3")
    ax.set_title("quality")
    ax.legend()
    ax = axes[1]
    ax.plot([s["population"] for s in r.scale], [s["seconds_per_round"] for s in r.scale], "o-", label="s per round")
    ax.set_xscale("log")
    ax.set_xlabel("devices in the federation")
    ax.set_ylabel("seconds per round")
    ax2 = ax.twinx()
    ax2.plot([s["population"] for s in r.scale], [s["peak_rss_mb"] for s in r.scale], "s--", color="C1")
    ax2.set_ylabel("peak memory (MB)", color="C1")
    ax.set_title("scale (20 trained per round)")
    ax = axes[2]
    labels = [c["transfer_dtype"] for c in r.communication]
    ax.bar(labels, [(c["train_bytes_down_per_device"] + c["train_bytes_up_per_device"]) / 1e6 for c in r.communication])
    ax.set_ylabel("MB per device per training round")
    ax.set_title("communication")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def overhead(run: FederatedRun) -> dict:
    """Per round: wall time against compute. ClientApps run `concurrency` at a time (one CPU
    each), so a round with no overhead would take client compute / concurrency + server compute."""
    rounds = [r for r in run.rows if r["round"] >= 1]
    concurrency = max(1, min(CORES, max((r["train_sampled"] for r in rounds), default=1)))
    per_round = []
    for r in rounds:
        clients = r["train_compute_seconds"] + r["eval_compute_seconds"]
        ideal = clients / concurrency + r.get("server_seconds", 0.0)
        per_round.append(
            {
                "round": r["round"],
                "wall": r["seconds"],
                "client_compute": clients,
                "ideal": ideal,
                "overhead": r["seconds"] / ideal - 1 if ideal else None,
            }
        )
    in_rounds = sum(r["seconds"] for r in rounds)
    ideal = sum(p["ideal"] for p in per_round)
    return {
        "status": run.status,
        "wall_seconds": run.seconds,
        "rounds_seconds": in_rounds,
        "fixed_seconds": run.seconds - in_rounds,
        "concurrency": concurrency,
        "per_round_overhead": in_rounds / ideal - 1 if ideal else None,
        "rounds": per_round,
        "start_up": start_up(run, per_round),
    }


def start_up(run: FederatedRun, per_round: list[dict]) -> dict:
    """Seconds spent in each stage before training runs at its steady pace."""
    m = run.marks
    if not all(k in m for k in ("submitted", "simulation", "server_app", "first_round")) or not per_round:
        return {}
    later = sorted(p["wall"] for p in per_round[1:]) or [per_round[0]["wall"]]
    return {
        "cli_superlink_and_upload": m["submitted"],  # flwr CLI, local SuperLink, app sent
        "simulation_process": m["simulation"] - m["submitted"],  # Flower's process importing TensorFlow
        "server_app_set_up": m["server_app"] - m["simulation"],  # app install, ServerApp import
        "initial_evaluation": m["first_round"] - m["server_app"],  # model built, round-0 server evaluation
        "first_round_extra": per_round[0]["wall"] - later[len(later) // 2],  # Ray, workers importing TensorFlow
        "before_first_round": m["first_round"],
    }
