"""Performance benchmark: federated vs centralised quality, simulation overhead, scale, bytes.

    .venv/bin/python scripts/benchmark.py            # the full benchmark (about 30 min on 2 cores)
    .venv/bin/python scripts/benchmark.py --quick    # a smoke-sized run of every part (the test)

Every federated number comes from a real `flwr run .` on a private local SuperLink (the same
ServerApp and ClientApp as the default run); centralised training uses the same task/ code on
the devices' pooled training text. Prints a table, writes benchmark.json and benchmark.png to
--out-dir. Parts:

  quality        FedAvg vs the same model trained centrally with the same number of passes over
                 the data, both scored on all devices' held-out text: built-in corpus, and
                 WikiText-2 split by article when ../shared/data/wikitext-2 (or $WIKITEXT) exists.
  overhead       from the built-in federated run: wall time against the compute measured inside
                 the ClientApps (train + evaluate) and the server's evaluation; start-up split
                 into its stages (from the times `flwr run --stream` prints them).
  scale          populations of 100 / 1,000 / 10,000 devices, 20 trained per round: time per
                 round, peak memory of all Flower processes, and the CPU time of Flower's
                 simulation process (its engine polls every simulated node).
  communication  bytes per device per round with transfer-dtype float32, float16 and int8, and the
                 top-3 each reaches (the float32 run is the quality run).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # noqa: E402
from flwr.common.config import parse_config_args  # noqa: E402

from scripts.local_flower import ROOT, private_flower, run_app  # noqa: E402

WIKITEXT = Path(os.environ.get("WIKITEXT", ROOT.parent / "shared" / "data" / "wikitext-2" / "valid.txt"))
CORES = os.cpu_count() or 1


@dataclass
class Scenario:
    """One federated setting and its centralised twin."""

    name: str
    devices: int
    rounds: int
    local_epochs: int
    run_config: str = ""  # extra run-config overrides (data source, caps)

    @property
    def passes(self) -> int:  # every device trains every round (fraction-train = 1)
        return self.rounds * self.local_epochs


@dataclass
class Results:
    machine: str = f"{CORES} CPU cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB"
    quality: list[dict] = field(default_factory=list)
    overhead: dict = field(default_factory=dict)
    scale: list[dict] = field(default_factory=list)
    communication: list[dict] = field(default_factory=list)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke-sized runs of every part")
    parser.add_argument("--parts", nargs="*", default=["quality", "scale", "communication"],
                        help="quality (includes overhead), scale, communication")
    parser.add_argument("--corpora", nargs="*", default=["builtin", "wikitext"],
                        help="quality part: builtin, wikitext (skipped when ../shared is absent)")
    parser.add_argument("--populations", nargs="*", type=int, help="scale part (default 100 1000 10000)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "runs" / "benchmark")
    parser.add_argument("--flwr-home", type=Path, default=ROOT / ".flwr" / "benchmark",
                        help="the private local SuperLink's FLWR_HOME")
    parser.add_argument("--ports", type=int, nargs=2, default=[39691, 39693], help="its HTTP and control ports")
    args = parser.parse_args()
    out = args.out_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    results = Results()
    if args.quick:
        builtin = Scenario(
            "built-in", devices=3, rounds=1, local_epochs=1, run_config="max-local-steps=5 server-eval-devices=2"
        )
        wiki = Scenario(
            "WikiText-2 by article",
            devices=4,
            rounds=2,
            local_epochs=1,
            run_config=f'data-source="corpus" data-path="{WIKITEXT}" partitioner="natural" '
            "max-sentences=40 max-local-steps=5",
        )
        populations = [6]
    else:
        builtin = Scenario("built-in", devices=10, rounds=30, local_epochs=1)  # the default run
        wiki = Scenario(
            "WikiText-2 by article",
            devices=15,
            rounds=8,
            local_epochs=1,  # 4 articles each
            run_config=f'data-source="corpus" data-path="{WIKITEXT}" partitioner="natural" max-sentences=100',
        )
        populations = [100, 1_000, 10_000]
    populations = args.populations or populations
    scenarios = ([builtin] if "builtin" in args.corpora else []) + (
        [wiki] if "wikitext" in args.corpora and WIKITEXT.exists() else []
    )
    common = f'out-dir="{out}"'
    with private_flower(args.flwr_home, *args.ports) as env:
        float32_run = None
        if "quality" in args.parts:
            for scenario in scenarios:
                fed = federated(env, scenario, common)
                float32_run = fed if scenario is builtin else float32_run
                central = centralised(scenario, out)
                results.quality.append(quality_row(scenario, fed, central))
                print_row(results.quality[-1])
            results.overhead = overhead(float32_run) if float32_run else {}
        if "communication" in args.parts:
            float32_run = float32_run or federated(env, builtin, common)
            dtypes = ("int8",) if args.quick else ("float16", "int8")  # quick: float16 is tested end to end elsewhere
            results.communication = [communication_row("float32", float32_run)] + [
                communication_row(dtype, federated(env, builtin, common, f'transfer-dtype="{dtype}"'))
                for dtype in dtypes
            ]
        if "scale" in args.parts:
            for population in populations:
                results.scale.append(scale_row(env, population, common))
                print(results.scale[-1], flush=True)
    (out / "benchmark.json").write_text(json.dumps(asdict(results), indent=1))
    print_tables(results)
    plot(results, out / "benchmark.png")
    print(f"\nWrote {out / 'benchmark.json'} and {out / 'benchmark.png'}")
    failed = [r for r in results.quality + results.scale + results.communication if r["status"] != "finished:completed"]
    return 1 if failed else 0


# ---- federated runs ----------------------------------------------------------------------------


@dataclass
class FederatedRun:
    status: str
    seconds: float  # wall time of `flwr run`, start-up to exit
    rows: list[dict]  # the run's metrics.json
    peak_rss_mb: float = 0.0
    simulation_cpu_seconds: float = 0.0  # CPU time of Flower's simulation process (engine + ServerApp)
    marks: dict = field(default_factory=dict)  # start-up stages, see scripts.local_flower.MARKS


def federated(env: dict, scenario: Scenario, common: str, extra: str = "", **kwargs) -> FederatedRun:
    run_config = (
        f"num-server-rounds={scenario.rounds} local-epochs={scenario.local_epochs} "
        f"{scenario.run_config} {common} {extra}"
    )
    return flower_run(env, scenario.devices, run_config, **kwargs)


def flower_run(env: dict, devices: int, run_config: str, timeout: float = 3600) -> FederatedRun:
    started = time.monotonic()
    with PeakMemory(env) as memory:
        outcome = run_app(env, num_supernodes=devices, run_config=run_config, echo=False, timeout=timeout)
    out_dir = Path(run_config.split('out-dir="')[1].split('"')[0])
    metrics = out_dir / f"run-{outcome.run_id}" / "metrics.json"
    rows = json.loads(metrics.read_text()) if metrics.exists() else []
    print(f"  run {outcome.run_id}: {outcome.status}, {time.monotonic() - started:.0f} s ({run_config})", flush=True)
    return FederatedRun(outcome.status, outcome.seconds, rows, memory.peak_mb, memory.simulation_cpu, outcome.marks)


class PeakMemory:
    """Peak total resident memory of the local SuperLink and everything it started (simulation
    engine, Ray workers), sampled every 0.5 s; and the last CPU time seen of the simulation process."""

    def __init__(self, env: dict):
        self.marker = str(Path(env["FLWR_HOME"]))
        self.peak_mb = 0.0
        self.simulation_cpu = 0.0
        self._stop = threading.Event()

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _sample(self):
        while not self._stop.wait(0.5):
            procs = _flower_processes(self.marker)
            self.peak_mb = max(self.peak_mb, sum(_quietly(lambda p: p.memory_info().rss, p, 0) for p in procs) / 2**20)
            simulation = [p for p in procs if "flwr-simulation" in " ".join(_quietly(psutil.Process.cmdline, p, []))]
            if simulation:
                cpu = sum(_quietly(lambda p: sum(p.cpu_times()[:2]), p, 0.0) for p in simulation)  # user + system
                self.simulation_cpu = max(self.simulation_cpu, cpu)


def _flower_processes(marker: str) -> list[psutil.Process]:
    """The local SuperLink started with this FLWR_HOME and everything below it."""
    roots = [p for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])]
    return list({p.pid: p for r in roots for p in [r, *_quietly(lambda r: r.children(recursive=True), r, [])]}.values())


def _quietly(read, proc, default):
    """A process may exit between being listed and being read."""
    try:
        return read(proc)
    except psutil.Error:
        return default


# ---- centralised twin --------------------------------------------------------------------------


def centralised(scenario: Scenario, out: Path) -> dict:
    """The same model trained on all devices' training text pooled, for the same number of passes,
    scored on all devices' held-out text (what FedAvg's evaluation covers with fraction 1)."""
    from task.config import Config
    from task.data.device_text import load_device_text, make_windows
    from task.data.files import DataError
    from task.data.vocab import default_vocabulary
    from task.model import build_model
    from task.train import evaluate, train

    overrides = parse_config_args([scenario.run_config]) if scenario.run_config else {}
    cfg = Config.from_run_config({**Config().to_run_config(), **overrides, "out-dir": str(out)})
    vocab = default_vocabulary(cfg.model.vocab_size)
    texts = []
    for i in range(scenario.devices):
        try:
            texts.append(load_device_text(cfg, partition_id=i, num_partitions=scenario.devices))
        except DataError as e:  # the federation goes on without such a device; so does its twin
            print(f"  centralised twin: skipping {e}", flush=True)
    x, y = make_windows([s for t in texts for s in t.train], vocab, cfg.model.seq_len)
    test_x, test_y = make_windows([s for t in texts for s in t.test], vocab, cfg.model.seq_len)
    model = build_model(cfg.model, seed=cfg.seed)
    started = time.monotonic()
    # max-local-steps caps a device's steps per round; the pooled twin gets the same total.
    steps = cfg.max_local_steps * scenario.devices * scenario.rounds if cfg.max_local_steps else 0
    train(
        model,
        x,
        y,
        epochs=scenario.passes,
        batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        max_steps=steps,
        seed=cfg.seed,
    )
    m = evaluate(model, test_x, test_y)
    return {
        "top1": m.top1,
        "top3": m.top3,
        "perplexity": m.perplexity,
        "seconds": time.monotonic() - started,
        "train_windows": len(x),
        "test_words": m.num_examples,
    }


# ---- rows --------------------------------------------------------------------------------------


def quality_row(scenario: Scenario, fed: FederatedRun, central: dict) -> dict:
    last = fed.rows[-1] if fed.rows else {}
    row = {
        "corpus": scenario.name,
        "devices": scenario.devices,
        "rounds": scenario.rounds,
        "local_epochs": scenario.local_epochs,
        "passes": scenario.passes,
        "status": fed.status,
        "federated": {k: last.get(f"eval_{k}") for k in ("top1", "top3", "perplexity")},
        "centralised": central,
    }
    if last.get("eval_top3") and central["top3"]:
        row["top3_ratio"] = last["eval_top3"] / central["top3"]
    return row


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


def communication_row(dtype: str, run: FederatedRun) -> dict:
    rounds = [r for r in run.rows if r["round"] >= 1 and r["train_replied"]]
    per_device = lambda key, n: sum(r[key] for r in rounds) / max(1, sum(r[n] for r in rounds))  # noqa: E731
    last = run.rows[-1] if run.rows else {}
    return {
        "transfer_dtype": dtype,
        "status": run.status,
        "train_bytes_down_per_device": per_device("train_bytes_sent", "train_sampled"),
        "train_bytes_up_per_device": per_device("train_bytes_received", "train_replied"),
        "eval_bytes_down_per_device": per_device("eval_bytes_sent", "eval_sampled"),
        "top3": last.get("eval_top3"),
    }


def scale_row(env: dict, population: int, common: str, sampled: int = 20) -> dict:
    sampled = min(sampled, population)
    run = flower_run(
        env,
        population,
        (
            f"num-server-rounds=2 local-epochs=1 max-local-steps=10 fraction-train={sampled / population} "
            f"fraction-evaluate={min(1.0, 10 / population)} min-available-nodes={population} {common}"
        ),
        timeout=1200,
    )
    rounds = [r for r in run.rows if r["round"] >= 1]
    return {
        "population": population,
        "sampled": sampled,
        "status": run.status,
        "wall_seconds": run.seconds,
        "seconds_per_round": sum(r["seconds"] for r in rounds) / max(1, len(rounds)),
        "trained_per_round": [r["train_replied"] for r in rounds],
        "peak_rss_mb": run.peak_rss_mb,
        "simulation_cpu_seconds": run.simulation_cpu_seconds,
    }


# ---- output ------------------------------------------------------------------------------------


def print_row(row: dict) -> None:
    print(
        f"  {row['corpus']}: federated top-3 {row['federated']['top3']}, centralised {row['centralised']['top3']:.4f}",
        flush=True,
    )


def print_tables(r: Results) -> None:
    print(f"\nMachine: {r.machine}")
    if r.quality:
        print(
            "\n| corpus | devices | rounds × local epochs | federated top-1 / top-3 / ppl | "
            "centralised top-1 / top-3 / ppl | federated / centralised top-3 |"
        )
        print("|---|---|---|---|---|---|")
        for q in r.quality:
            f, c = q["federated"], q["centralised"]
            fed = f"{f['top1']:.1%} / {f['top3']:.1%} / {f['perplexity']:.0f}" if f["top3"] is not None else q["status"]
            print(
                f"| {q['corpus']} | {q['devices']} | {q['rounds']} × {q['local_epochs']} | {fed} | "
                f"{c['top1']:.1%} / {c['top3']:.1%} / {c['perplexity']:.0f} | {q.get('top3_ratio', float('nan')):.3f} |"
            )
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
        print("\n| transfer-dtype | MB down per device per round | MB up | vs float32 | final top-3 |")
        print("|---|---|---|---|---|")
        for c in r.communication:
            total = c["train_bytes_down_per_device"] + c["train_bytes_up_per_device"]
            ratio = total / (base["train_bytes_down_per_device"] + base["train_bytes_up_per_device"])
            print(
                f"| {c['transfer_dtype']} | {c['train_bytes_down_per_device'] / 1e6:.2f} | "
                f"{c['train_bytes_up_per_device'] / 1e6:.2f} | {ratio:.2f}× | "
                f"{c['top3']:.1%} |"
                if c["top3"] is not None
                else f"| {c['transfer_dtype']} | {c['status']} |"
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


if __name__ == "__main__":
    sys.exit(main())
