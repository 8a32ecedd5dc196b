"""Run a real federated training with `flwr run .` on simulated devices, then report.

    .venv/bin/python scripts/run_simulation.py                 # 10 devices, built-in data
    .venv/bin/python scripts/run_simulation.py --devices 20 --run-config 'num-server-rounds=10'
    .venv/bin/python scripts/run_simulation.py --ray-address HEAD:6379      # on a Ray cluster (README)

Uses a private FLWR_HOME (./.flwr) and stops the local SuperLink afterwards. Exits non-zero
unless the run finished as completed and its federated evaluation loss went down.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.local_flower import ROOT, app_run_config, private_flower, run_app, template_line  # noqa: E402


def check_run_config(overrides: str, devices: int | None = None, notes: list[str] | None = None) -> str | None:
    """The template's own error for a bad or unknown key, before Flower starts (Flower would say
    only "[code: 15] Invalid run configuration.", or fail the run with a traceback). `notes`: under
    DP, filled with what the ServerApp will print at its start for `devices` simulated devices (the
    planned epsilon, the noise dp.target-epsilon plans, a warning without a budget)."""
    import click
    from flwr.common.config import parse_config_args

    from task.config import Config, ConfigError

    defaults = app_run_config()
    try:
        changes = parse_config_args([overrides]) if overrides else {}
        cfg = Config.from_run_config({**defaults, **changes})
        if devices is not None:  # the simulation's population is known: impossible requirements never start
            cfg.validate_population(devices, max(int(devices * cfg.fraction_train), cfg.min_train_nodes))
            for key in ("min-available-nodes", "min-evaluate-nodes"):
                if getattr(cfg, key.replace("-", "_")) > devices:
                    return (f"run-config key '{key}' = {getattr(cfg, key.replace('-', '_'))} is more than the "
                            f"{devices} simulated devices (--devices)")
        if devices is not None and notes is not None and cfg.dp.enabled:
            notes += privacy_notes(cfg, devices)
    except ConfigError as e:
        return str(e)
    except (ValueError, click.ClickException) as e:  # not TOML: e.g. an unquoted string value
        return f"--run-config {overrides!r} is not valid TOML key=value pairs ({e}); quote strings: key=\"value\""
    return None


def privacy_notes(cfg, devices: int) -> list[str]:
    """What the ServerApp will print at its start under DP, with the simulation's population (all
    `devices` connected): server_app/privacy_plan.py, which loads the accounting only here."""
    from server_app.privacy_plan import no_budget_warning, plan, with_target

    sampled = max(int(devices * cfg.fraction_train), cfg.min_train_nodes)
    notes = []
    if cfg.dp.target_epsilon > 0:
        given = cfg.dp.noise_multiplier
        cfg = with_target(cfg, devices, sampled)
        notes.append(f"dp.target-epsilon = {cfg.dp.target_epsilon:g}: noise multiplier {cfg.dp.noise_multiplier:.4g} "
                     f"planned for {sampled} of {devices} devices per round (in place of dp.noise-multiplier = "
                     f"{given:g})")
    notes += plan(cfg, devices, sampled).lines
    warning = no_budget_warning(cfg)
    return notes + ([f"Warning: {warning}"] if warning else [])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10, help="simulated devices (SuperNodes)")
    parser.add_argument(
        "--cpus-per-device", type=int, default=1, help="CPU cores per simulated device (Flower wants an integer)"
    )
    parser.add_argument("--gpus-per-device", type=float, default=0.0,
                        help="GPUs per simulated device (a fraction shares one GPU between devices)")
    parser.add_argument("--ray-address", default=os.environ.get("RAY_ADDRESS"),
                        help="a running Ray cluster to simulate the devices on (default: $RAY_ADDRESS; unset: "
                        "Ray on this machine only)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "runs", help="where runs are written")
    parser.add_argument("--run-config", default="", help="extra overrides, e.g. 'num-server-rounds=10'")
    parser.add_argument("--flwr-home", type=Path, default=ROOT / ".flwr",
                        help="FLWR_HOME of the private local SuperLink (git-ignored by default)")
    parser.add_argument("--ports", type=int, nargs=2, default=(39091, 39093), metavar=("HTTP", "CONTROL"),
                        help="its HTTP and control ports (another SuperLink on them is an error, never reused)")
    parser.add_argument("--verbose", action="store_true", help="print all of Flower's, Ray's and TensorFlow's output "
                        "(always kept in <run dir>/flwr-output.log)")
    args = parser.parse_args()

    run_config = f'out-dir="{args.out_dir.resolve()}" {args.run_config}'.strip()
    notes: list[str] = []
    problem = check_run_config(run_config, args.devices, notes)
    if problem:
        print(f"Not started: {problem}", file=sys.stderr)
        return 2
    for note in notes:  # under DP: the epsilon the run as configured will report
        print(f"Privacy plan: {note}")
    try:
        with private_flower(args.flwr_home.resolve(), *args.ports, ray_address=args.ray_address) as env:
            outcome = run_app(env, num_supernodes=args.devices, run_config=run_config,
                              cpus_per_client=args.cpus_per_device, gpus_per_client=args.gpus_per_device,
                              echo=True if args.verbose else template_line)
    except RuntimeError as e:  # the local SuperLink could not start, or the run never did
        print(f"Not run: {e}", file=sys.stderr)
        return 2
    run_dir = args.out_dir.resolve() / f"run-{outcome.run_id}"
    if run_dir.is_dir():
        (run_dir / "flwr-output.log").write_text(outcome.output)

    summary_path = run_dir / "summary.json"
    print(f"\nRun {outcome.run_id}: status {outcome.status}, {outcome.seconds:.0f} s wall time.")
    if outcome.status != "finished:completed" or not summary_path.exists():
        full = run_dir / "flwr-output.log" if run_dir.is_dir() else None
        print("The run did not complete. Its last output:\n" + outcome.output[-3000:])
        print(f"All of it: {full}" if full else f"All of it: FLWR_HOME={env['FLWR_HOME']} flwr log {outcome.run_id}")
        return 1
    from server_app.console import summary_lines  # light: no TensorFlow

    summary = json.loads(summary_path.read_text())
    print("\n".join(summary_lines(summary)))
    final = summary["final"]
    if not final:
        rows = json.loads((run_dir / "metrics.json").read_text())
        failures = sorted({f for r in rows for f in r.get("failures", [])})
        print("No device could train or evaluate, so there is no model to report. Why they failed:\n  "
              + "\n  ".join(failures or ["(no device replied before round-timeout)"]))
        return 1
    if final["eval_loss"] >= summary["first_eval_loss"]:
        print("The federated evaluation loss did not go down: the model did not learn.")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
