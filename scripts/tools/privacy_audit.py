"""Privacy audit: what a trained model gives away, with and without DP, as a table and a plot.

    .venv/bin/python scripts/tools/privacy_audit.py                         # 3 runs: no DP, central DP, DP-SGD
    .venv/bin/python scripts/tools/privacy_audit.py --modes none --rounds 10
    .venv/bin/python scripts/tools/privacy_audit.py --run-dir runs/run-123   # audit a finished run only

Each mode is a real `flwr run .` on the built-in data with canaries planted in some devices'
training text (`audit.canaries`, features/audit/canary.py). Then, on the model each run produced:
canary exposure (Carlini et al. 2019) for each (devices k, repeats r) and for a canary never
inserted, and a loss-based membership attack at the user level (the devices that trained vs
personas that never did) and at the sample level (windows trained on vs held out).
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
    "central DP (z=1)": 'dp.mode="central-client-clip" dp.noise-multiplier=1.0 dp.clipping-norm=1.0',
    "DP-SGD (z=1)": "dp.sgd=true dp.sgd-noise-multiplier=1.0 dp.sgd-clipping-norm=1.0",
}
CANARIES = "1:1,1:10,1:30,4:10"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", nargs="*", default=list(MODES), choices=list(MODES))
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--canaries", default=CANARIES, help="k:r,... (devices:repeats per canary)")
    parser.add_argument("--run-config", default="", help="more overrides for every run")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "runs" / "audit")
    parser.add_argument("--ports", type=int, nargs=2, default=(39591, 39593))
    parser.add_argument("--run-dir", type=Path, action="append", help="audit this finished run (repeat); no new runs")
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)

    runs: dict[str, tuple[Path, dict]] = {}
    if args.run_dir:
        runs = {d.name: (d, {}) for d in args.run_dir}
    else:
        with private_flower(args.out_dir / "flwr-home", *args.ports) as env:
            for name in args.modes:
                outcome = run_app(env, num_supernodes=args.devices, echo=False, run_config=(
                    f'num-server-rounds={args.rounds} audit.canaries="{args.canaries}" {MODES[name]} '
                    f'{args.run_config} out-dir="{args.out_dir}"'))
                run_dir = args.out_dir / f"run-{outcome.run_id}"
                if outcome.status != "finished:completed" or not (run_dir / "summary.json").exists():
                    print(f"{name}: the run did not complete ({outcome.status}):\n{outcome.output[-2000:]}")
                    return 1
                runs[name] = (run_dir, json.loads((run_dir / "summary.json").read_text()))

    from features.audit.audit import audit_run  # TensorFlow: after the runs, not in Flower's way

    results = []
    for name, (run_dir, summary) in runs.items():
        audit = audit_run(run_dir)
        audit.update(mode=name, top3=(summary.get("final") or {}).get("eval_top3"),
                     epsilon=_epsilon(summary.get("privacy") or {}))
        results.append(audit)
    (args.out_dir / "audit.json").write_text(json.dumps(results, indent=1))
    print("\n".join(table(results)))
    plot(results, args.out_dir / "audit.png")
    print(f"\n{args.out_dir / 'audit.json'}, plot {args.out_dir / 'audit.png'}")
    return 0


def _epsilon(privacy: dict) -> str:
    parts = [f"{k.removeprefix('epsilon_')} {v:.2f}" for k, v in privacy.items()
             if k.startswith("epsilon") and isinstance(v, (int, float))]
    return ", ".join(parts) or "∞ (no DP)"


def table(results: list[dict]) -> list[str]:
    canaries = [(c["devices"], c["repeats"]) for c in results[0]["canaries"]]
    head = ["mode", "ε (δ as configured)", "top-3",
            *[f"exposure k={k} r={r}" if k else "exposure, never inserted" for k, r in canaries],
            "user AUC", "user TPR@1%FPR", "sample AUC"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for a in results:
        cells = [a["mode"], a["epsilon"], f"{a['top3']:.1%}" if a["top3"] is not None else "–",
                 *[f"{c['exposure']:.1f}" for c in a["canaries"]],
                 f"{a['user_level']['auc']:.2f}", f"{a['user_level']['tpr_at_1pct_fpr']:.2f}",
                 f"{a['sample_level']['auc']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    n = len(results[0]["canaries"]) and 10_000
    lines.append(f"(exposure: log2 of {n:,} candidates minus log2 of the canary's rank; 13.3 = ranked first)")
    return lines


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"k={c['devices']} r={c['repeats']}" if c["devices"] else "never\ninserted" for c in results[0]["canaries"]]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(results)
    for i, a in enumerate(results):
        xs = [j + i * width for j in range(len(labels))]
        ax.bar(xs, [c["exposure"] for c in a["canaries"]], width,
               label=f"{a['mode']} (user AUC {a['user_level']['auc']:.2f})")
    ax.set_xticks([j + width * (len(results) - 1) / 2 for j in range(len(labels))], labels)
    ax.set_ylabel("canary exposure (bits)")
    ax.axhline(13.29, color="grey", lw=0.8, ls="--")
    ax.set_title("What the trained model gives away")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
