"""Warm start benchmark: what starting from a model pretrained on proxy text buys, with a proxy
that matches the devices' text and with one that does not.

    .venv/bin/python scripts/benchmarks/benchmark_warm_start.py      # about 30 min on 2 cores

Two federations, each from scratch and from two pretrained models (scripts/tools/pretrain.py):
  built-in     the default run (10 devices x 30 rounds); matching proxy: 100 built-in synthetic
               users outside the federation; mismatched: WikiText-2 test.txt.
  WikiText-2   valid.txt split by article, as in scripts/benchmarks/benchmark.py (15 devices x 8 rounds);
               matching proxy: test.txt (other Wikipedia articles); mismatched: the built-in users.
Needs ../shared/data/wikitext-2 (or $WIKITEXT pointing at valid.txt, with test.txt beside it).
For each run: the devices' top-3 of the starting model (round 0), the final top-3, and the first
round whose model reaches the from-scratch run's final top-3. Prints a table; writes
warm_start.json to --out-dir.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripts.benchmarks.benchmark_runs import WIKITEXT, FederatedRun, Scenario, federated  # noqa: E402
from scripts.local_flower import ROOT, private_flower  # noqa: E402
from scripts.tools.pretrain import pretrain  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=ROOT / "runs" / "warm-start")
    parser.add_argument("--flwr-home", type=Path, default=ROOT / ".flwr" / "benchmark")
    parser.add_argument("--ports", type=int, nargs=2, default=[39691, 39693])
    parser.add_argument("--pretrain-epochs", type=int, default=5)
    args = parser.parse_args()
    out = args.out_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    wiki_proxy = WIKITEXT.with_name("test.txt")
    if not (WIKITEXT.exists() and wiki_proxy.exists()):
        print(f"needs {WIKITEXT} and {wiki_proxy}", file=sys.stderr)
        return 2
    proxies = {
        "built-in users": pretrain(None, 100, out / "builtin-users.npz", args.pretrain_epochs, 0, ""),
        "WikiText-2 test.txt": pretrain(wiki_proxy, 0, out / "wikitext-test.npz", args.pretrain_epochs, 0, ""),
    }
    files = {"built-in users": out / "builtin-users.npz", "WikiText-2 test.txt": out / "wikitext-test.npz"}
    scenarios = [
        (Scenario("built-in", devices=10, rounds=30, local_epochs=1), "built-in users", "WikiText-2 test.txt"),
        (Scenario("WikiText-2 valid.txt by article", devices=15, rounds=8, local_epochs=1,
                  run_config=f'data.source="corpus" data.path="{WIKITEXT}" data.partitioner="natural" data.max-sentences=100'),
         "WikiText-2 test.txt", "built-in users"),
    ]
    rows = []
    common = f'out-dir="{out}"'
    with private_flower(args.flwr_home, *args.ports) as env:
        for scenario, matching, mismatched in scenarios:
            scratch = federated(env, scenario, common)
            rows.append(row(scenario, "scratch", None, scratch, scratch))
            for kind, proxy in (("matching", matching), ("mismatched", mismatched)):
                run = federated(env, scenario, common, f'warm-start.init-from="{files[proxy]}"')
                rows.append(row(scenario, f"{kind}: {proxy}", proxies[proxy], run, scratch))
    (out / "warm_start.json").write_text(json.dumps(rows, indent=1))
    print("\n| federation | start | round-0 top-3 | final top-3 | first round at the scratch final | status |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        reached = r["rounds_to_scratch_final"]
        print(f"| {r['federation']} | {r['start']} | {_pct(r['round0_top3'])} | {_pct(r['final_top3'])} | "
              f"{reached if reached is not None else 'not reached'} of {r['rounds']} | {r['status']} |")
    print(f"\nWrote {out / 'warm_start.json'}")
    return 0 if all(r["status"] == "finished:completed" for r in rows) else 1


def row(scenario: Scenario, start: str, pretrained: dict | None, run: FederatedRun, scratch: FederatedRun) -> dict:
    top3 = {r["round"]: r["eval_top3"] for r in run.rows if "eval_top3" in r}
    target = _final(scratch)
    reached = next((n for n, t in sorted(top3.items()) if target is not None and t >= target), None)
    return {"federation": scenario.name, "start": start, "status": run.status, "rounds": scenario.rounds,
            "round0_top3": top3.get(0), "final_top3": _final(run), "rounds_to_scratch_final": reached,
            "pretrained": pretrained, "wall_seconds": run.seconds}


def _final(run: FederatedRun):
    return run.rows[-1].get("eval_top3") if run.rows else None


def _pct(value) -> str:
    return "—" if value is None else f"{value:.1%}"


if __name__ == "__main__":
    sys.exit(main())
