"""Performance benchmark: federated vs centralised quality, simulation overhead, scale, bytes.

    .venv/bin/python scripts/benchmarks/benchmark.py            # the full benchmark (about 30 min on 2 cores)
    .venv/bin/python scripts/benchmarks/benchmark.py --quick    # a smoke-sized run of every part (the test)

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
  communication  bytes per device per round with transfer.dtype float32, float16 and int8, what a
                 round cost a device (CPU seconds, energy, peak memory of the process that ran
                 it), and the top-3 each reaches (the float32 run is the quality run).
  secure         the built-in run with secagg.enabled = true beside the same run without it
                 (the quality run): seconds per round, bytes per device per round (SecAgg+'s four
                 messages), and the top-3 each reaches.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripts.benchmarks.benchmark_report import overhead, plot, print_row, print_tables  # noqa: E402
from scripts.benchmarks.benchmark_runs import (  # noqa: E402
    WIKITEXT,
    FederatedRun,
    Results,
    Scenario,
    centralised,
    federated,
    flower_run,
)
from scripts.local_flower import ROOT, private_flower  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke-sized runs of every part")
    parser.add_argument("--parts", nargs="*", default=["quality", "scale", "communication", "secure"],
                        help="quality (includes overhead), scale, communication, secure")
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
            run_config=f'data.source="corpus" data.path="{WIKITEXT}" data.partitioner="natural" '
            "data.max-sentences=40 max-local-steps=5",
        )
        populations = [6]
    else:
        builtin = Scenario("built-in", devices=10, rounds=30, local_epochs=1)  # the default run
        wiki = Scenario(
            "WikiText-2 by article",
            devices=15,
            rounds=30,  # the default run's rounds (8 before: both sides were far from done)
            local_epochs=1,  # 4 articles each
            run_config=f'data.source="corpus" data.path="{WIKITEXT}" data.partitioner="natural" data.max-sentences=100',
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
                communication_row(dtype, federated(env, builtin, common, f'transfer.dtype="{dtype}"'))
                for dtype in dtypes
            ]
        if "secure" in args.parts:
            float32_run = float32_run or federated(env, builtin, common)
            results.secure = [secure_row(False, float32_run),
                              secure_row(True, federated(env, builtin, common, "secagg.enabled=true"))]
        if "scale" in args.parts:
            for population in populations:
                results.scale.append(scale_row(env, population, common))
                print(results.scale[-1], flush=True)
    (out / "benchmark.json").write_text(json.dumps(asdict(results), indent=1))
    print_tables(results)
    plot(results, out / "benchmark.png")
    print(f"\nWrote {out / 'benchmark.json'} and {out / 'benchmark.png'}")
    failed = [r for r in results.quality + results.scale + results.communication + results.secure
              if r["status"] != "finished:completed"]
    return 1 if failed else 0


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
        "federated": {k: last.get(f"eval_{k}") for k in ("top1", "top3", "perplexity", "keystroke_savings",
                                                          "baseline_bigram_top3", "baseline_bigram_keystroke_savings",
                                                          "personal_top1", "personal_top3", "personal_keystroke_savings",
                                                          "personal_hurt")},
        "centralised": central,
    }
    if last.get("eval_top3") and central["top3"]:
        row["top3_ratio"] = last["eval_top3"] / central["top3"]
        row["top3_ratio_best"] = last["eval_top3"] / central["best_top3"]
    return row


def communication_row(dtype: str, run: FederatedRun) -> dict:
    rounds = [r for r in run.rows if r["round"] >= 1 and r["train_replied"]]
    per_device = lambda key, n, rows=rounds: sum(r[key] for r in rows) / max(1, sum(r[n] for r in rows))  # noqa: E731
    evaluated = [r for r in rounds if r["eval_bytes_sent"]]  # with evaluate-in-train, the final round only
    last = run.rows[-1] if run.rows else {}
    return {
        "transfer_dtype": dtype,
        "status": run.status,
        "train_bytes_down_per_device": per_device("train_bytes_sent", "train_sampled"),
        "train_bytes_up_per_device": per_device("train_bytes_received", "train_replied"),
        "eval_bytes_down_per_device": per_device("eval_bytes_sent", "eval_sampled", evaluated),
        # What one round cost a device that replied (client_app/cost.py; estimated unless RAPL is readable)
        "cpu_seconds_per_device": per_device("train_cpu_seconds", "train_cost_reported"),
        "joules_per_device": per_device("train_energy_joules", "train_cost_reported"),
        "energy_measured": all(r.get("train_energy_measured") for r in rounds),
        "peak_memory_mb": max((r.get("train_peak_memory_mb", 0.0) for r in rounds), default=0.0),
        "top3": last.get("eval_top3"),
    }


def secure_row(secure: bool, run: FederatedRun) -> dict:
    rounds = [r for r in run.rows if r["round"] >= 1 and r["train_replied"]]
    per_device = lambda key, n: sum(r[key] for r in rounds) / max(1, sum(r[n] for r in rounds))  # noqa: E731
    return {
        "secure_aggregation": secure,
        "status": run.status,
        "seconds_per_round": sum(r["seconds"] for r in rounds) / max(1, len(rounds)),
        "train_bytes_down_per_device": per_device("train_bytes_sent", "train_sampled"),
        "train_bytes_up_per_device": per_device("train_bytes_received", "train_replied"),
        "top3": run.rows[-1].get("eval_top3") if run.rows else None,
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


if __name__ == "__main__":
    sys.exit(main())
