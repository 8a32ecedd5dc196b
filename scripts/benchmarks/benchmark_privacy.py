"""Private and still useful? Top-3 against user-level epsilon with many devices per round.

    .venv/bin/python scripts/benchmarks/benchmark_privacy.py           # the README's table and plot (~50 min here)
    .venv/bin/python scripts/benchmarks/benchmark_privacy.py --smoke   # tiny federation: the table's shape (tests)
    .venv/bin/python scripts/benchmarks/benchmark_privacy.py --data wikitext ...   # real text (below)

Every row is a real `flwr run .` on `--population` built-in devices with the dp-small model, each
sampled device doing `--local-steps` steps a round. For each devices-per-round m: the non-private
run (the reference), then DP-FedAvg (`central-client-clip`; its epsilon credits the server's
secret sampling) and DP-FTRL (`central-ftrl`; no credit for sampling) with the noise multiplier
that brings the run's epsilon to each target (server_app/privacy_plan.py drives the server's own
ledger). Epsilon and top-3 are read back from each run: its ledger, and the server's evaluation of
the final model on unseen users.

`--emulate M` adds rows for M devices per round, more than 2 cores can train: the same sampling
rate needs the same multiplier z at M devices out of population x M / m, so the noise on the
average is z/M; a run of m devices with z x m / M carries that noise (McMahan et al. 2018 measure
large cohorts the same way). Averaging m updates instead of M adds sampling variance, so its top-3
is a lower bound for the real M-device run. Its epsilon column is the emulated run's; what the
executed run spent is in the JSON.

`--data wikitext`: the real-text population of docs/data.md, WikiText-2's valid.txt and test.txt
(`--wikitext`, default ../shared/data/wikitext-2) dealt one paragraph per device
(`data.source = "paragraphs"`, `data.partitioner = "natural"`): the population is the number of
paragraphs (3,597), δ defaults to 1e-6. Its population cannot grow, so an emulated M-device
cohort is planned at the real population (z for M out of 3,597), and the executed run of m
devices carries z x m / M. There are no unseen users: top-3 is the final model's score on every
device's held-out text (its last sentences), computed here from the run's last checkpoint, which
is what a federated evaluation of all devices would report.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripts.benchmarks.benchmark_runs import flower_run  # noqa: E402
from scripts.benchmarks.privacy_plot import MODES, plot  # noqa: E402
from scripts.local_flower import ROOT, private_flower  # noqa: E402

WIKITEXT = ROOT.parent / "shared" / "data" / "wikitext-2"


@dataclass
class Row:
    mode: str
    per_round: int  # devices trained per round in the executed run
    population: int
    rounds: int
    target_epsilon: float | None  # None: non-private
    noise_multiplier: float | None
    emulated_per_round: int | None = None  # the cohort whose noise the run carries (--emulate)
    epsilon: float | None = None  # what the executed run's ledger reports (amplified where it applies)
    top3: float | None = None  # server: final model on unseen users
    ratio: float | None = None  # top3 / the non-private run's at the same per_round
    status: str = ""
    seconds: float = 0.0

    @property
    def label(self) -> str:
        cohort = f"{self.emulated_per_round} per round (emulated with {self.per_round})" if self.emulated_per_round \
            else f"{self.per_round} per round"
        return f"{MODES[self.mode]}, {cohort}"


def plan(args) -> list[Row]:
    """Every run, the non-private reference of each setting first; the noise comes from the
    ledger's own accounting of the planned rounds."""
    from server_app.privacy_plan import noise_for_epsilon
    from task.config import DPConfig

    dp = DPConfig(clipping_norm=args.clip, delta=args.delta)
    noise = lambda mode, per_round, target: noise_for_epsilon(  # noqa: E731
        DPConfig(**{**asdict(dp), "mode": mode}), args.population, per_round, args.rounds, target)
    rows = []
    for m in args.per_round:
        rows.append(Row("none", m, args.population, args.rounds, None, None))
        for target in args.epsilons:
            for mode in args.modes:
                z = None if args.emulated_only and args.emulate else noise(mode, m, target)
                if z is not None:
                    rows.append(Row(mode, m, args.population, args.rounds, target, z))
                for big in (M for M in args.emulate if M > m and M % m == 0 and m == min(args.per_round)):
                    # built-in devices: M out of population x M / m, the same rate, the same z; real
                    # text has one population: z planned for M of it
                    z_big = noise(mode, big, target) if args.data == "wikitext" else (z or noise(mode, m, target))
                    rows.append(Row(mode, m, args.population, args.rounds, target, z_big * m / big,
                                    emulated_per_round=big))
    return rows


def run_config(args, row: Row, out: Path) -> str:
    frac = lambda k: min(1.0, (k + 0.5) / row.population)  # noqa: E731  (int(population x frac) = k)
    keys = (f'model.preset="{args.model_preset}" num-server-rounds={row.rounds} fraction-train={frac(row.per_round)} '
            f"min-train-nodes={row.per_round} min-available-nodes={row.population} "
            f"fraction-evaluate={frac(2)} min-evaluate-nodes=2 evaluate-in-train=false "
            f"max-local-steps={args.local_steps} local-epochs={args.local_epochs} "
            f"server-eval-devices={args.server_eval_devices} "
            f'keep-checkpoints=1 out-dir="{out}"')
    if args.data == "wikitext":
        keys += f' data.source="paragraphs" data.path="{args.data_folder}" data.partitioner="natural"'
    if row.mode != "none":
        keys += (f' dp.mode="{row.mode}" dp.noise-multiplier={row.noise_multiplier:.6g} '
                 f"dp.clipping-norm={args.clip} dp.delta={args.delta}")
    return keys


def reuse(args, rows: list[Row]) -> None:
    """Take finished rows from an earlier JSON of the same settings (a long benchmark that was
    stopped goes on where it was)."""
    if not args.reuse:
        return
    earlier = json.loads(Path(args.reuse).read_text())
    same = {k: v for k, v in vars(args).items() if k in SETTINGS}
    if {k: earlier["settings"].get(k, OLDER.get(k)) for k in SETTINGS} != same:
        raise SystemExit(f"--reuse {args.reuse}: other settings {earlier['settings']} (now {same})")
    done = {_key(row): vars(row) for row in load_rows(args.reuse) if row.top3 is not None}
    for row in rows:
        if _key(row) in done:
            for name in ("epsilon", "top3", "status", "seconds"):
                setattr(row, name, done[_key(row)][name])


SETTINGS = ("population", "rounds", "delta", "clip", "local_steps", "server_eval_devices", "model_preset", "data",
            "local_epochs")
OLDER = {"data": "builtin", "local_epochs": 1}  # what JSONs written before these settings ran with


def _key(row: Row) -> tuple:
    return (row.mode, row.per_round, row.emulated_per_round, row.target_epsilon,
            None if row.noise_multiplier is None else round(row.noise_multiplier, 9))


def execute(args, rows: list[Row], out: Path) -> None:
    if all(row.top3 is not None for row in rows):  # every run reused: only the table and plot
        return
    with private_flower((args.flwr_home or out / "flwr-home").resolve(), *args.ports) as env:
        for row in rows:
            if row.top3 is not None:  # reused
                continue
            row_dir = out / "-".join(map(str, _key(row)))
            earlier = sorted(row_dir.glob("run-*/checkpoints/round-*.npz"), key=lambda p: (p.name, p.stat().st_mtime))
            config = run_config(args, row, row_dir)
            if earlier and earlier[-1].name == f"round-{row.rounds:03d}.npz":  # stopped after its last round,
                record_finished(args, row, earlier[-1].parents[1])           # before this script recorded it
                save(args, rows)
                continue
            if earlier:
                print(f"  {row.label}: resuming from {earlier[-1]}", flush=True)
                config += f' resume-from="{earlier[-1]}"'
            result = flower_run(env, row.population, config, timeout=args.timeout)
            row.status, row.seconds = result.status, round(result.seconds, 1)
            last = result.rows[-1] if result.rows else {}
            scored = "server_top3" in last or args.data == "wikitext"
            if result.status != "finished:completed" or last.get("round") != row.rounds or not scored:
                row.status = row.status if row.status != "finished:completed" else f"incomplete: {len(result.rows)} rows"
                continue
            row.top3 = last["server_top3"] if args.data != "wikitext" else held_out_top3(args, row_dir)
            if row.mode != "none":
                row.epsilon = last.get("dp_epsilon_central_amplified", last.get("dp_epsilon_central"))
            save(args, rows)


def record_finished(args, row: Row, run_dir: Path) -> None:
    """A run whose last round's checkpoint exists: its figures from that run's metrics.json."""
    last = json.loads((run_dir / "metrics.json").read_text())[-1]
    row.status = "finished:completed (recorded from its run directory)"
    row.top3 = last["server_top3"] if args.data != "wikitext" else held_out_top3(args, run_dir.parent)
    if row.mode != "none":
        row.epsilon = last.get("dp_epsilon_central_amplified", last.get("dp_epsilon_central"))
    print(f"  {row.label}: its run reached round {row.rounds}: recorded from {run_dir}", flush=True)


def wikitext_folder(args, out: Path) -> Path:
    """A folder holding (links to) WikiText-2's files: the "paragraphs" source's data.path."""
    files = [Path(f).expanduser() for f in (args.wikitext or [WIKITEXT / "valid.txt", WIKITEXT / "test.txt"])]
    for f in files:
        if not f.is_file():
            raise SystemExit(f"--data wikitext: {f} does not exist. Give WikiText-2's raw valid.txt and test.txt "
                             f"with --wikitext VALID TEST (default: {WIKITEXT}/)")
    folder = out / "wikitext-paragraphs"
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        link = folder / f.name
        if not (link.is_symlink() and link.resolve() == f.resolve()):
            link.unlink(missing_ok=True)
            link.symlink_to(f.resolve())
    return folder


def paragraph_devices(folder: Path) -> dict[str, list[list[str]]]:
    """Each device's sentences, as the "paragraphs" source deals them one unit per device."""
    from task.data.partition import SOURCES

    units: dict[str, list[list[str]]] = {}
    for unit, sentence in SOURCES["paragraphs"](str(folder), []):
        units.setdefault(unit, []).append(sentence)
    return dict(sorted(units.items()))


_HELD_OUT: dict = {}


def held_out_top3(args, row_dir: Path) -> float:
    """The final model (the run's last checkpoint) scored on every device's held-out sentences,
    pooled: a federated evaluation of all devices weighted by their words, in one process."""
    from task.config import Config
    from task.data.device_text import make_windows, split_train_test
    from task.data.vocab import default_vocabulary
    from task.model import build_model
    from task.run.checkpoint import checkpoints, load_weights
    from task.train import evaluate

    cfg = Config.from_run_config({"model.preset": args.model_preset})
    if "windows" not in _HELD_OUT:
        test = [s for sentences in paragraph_devices(args.data_folder).values()
                for s in split_train_test(sentences, cfg.test_fraction)[1]]
        _HELD_OUT["windows"] = make_windows(test, default_vocabulary(cfg.model.vocab_size), cfg.model.seq_len)
    final = [p for run in sorted(row_dir.glob("run-*")) for p in checkpoints(run)
             if p.name == f"round-{args.rounds:03d}.npz"]
    model = build_model(cfg.model, seed=cfg.seed)
    model.set_weights(load_weights(final[-1]))
    return float(evaluate(model, *_HELD_OUT["windows"]).top3)


def load_rows(path) -> list[Row]:
    return [Row(**{k: v for k, v in r.items() if k != "label"}) for r in json.loads(Path(path).read_text())["rows"]]


def finish(rows: list[Row]) -> None:
    reference = {r.per_round: r.top3 for r in rows if r.mode == "none" and r.top3 is not None}
    for r in rows:
        if r.top3 is not None and reference.get(r.per_round):
            r.ratio = r.top3 / reference[r.per_round]


def table(rows: list[Row]) -> str:
    lines = ["| run | target ε | ε of the run | noise z | noise on the average (z/M) | top-3 | × non-private |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        cohort = r.emulated_per_round or r.per_round
        eps = "∞" if r.mode == "none" else (f"{r.epsilon:.2f}" if r.epsilon is not None else "—")
        if r.emulated_per_round:
            eps = f"{r.target_epsilon:g} (emulated; executed run: {eps})"
        lines.append(
            f"| {r.label} | {'∞' if r.target_epsilon is None else f'{r.target_epsilon:g}'} | {eps} | "
            f"{'—' if r.noise_multiplier is None else f'{r.noise_multiplier * cohort / r.per_round:.3f}'} | "
            f"{'0' if r.noise_multiplier is None else f'{r.noise_multiplier / r.per_round:.5f}'} | "
            f"{'failed: ' + r.status if r.top3 is None else f'{r.top3:.1%}'} | "
            f"{'' if r.ratio is None else f'{r.ratio:.2f}'} |")
    return "\n".join(lines)


def save(args, rows: list[Row]) -> None:
    finish(rows)
    settings = {k: ([str(x) for x in v] if isinstance(v, list) and v and isinstance(v[0], Path) else
                    str(v) if isinstance(v, Path) else v)
                for k, v in vars(args).items() if k not in ("out", "smoke")}
    Path(args.out).with_suffix(".json").write_text(json.dumps(
        {"settings": settings, "rows": [{**asdict(r), "label": r.label} for r in rows]}, indent=1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--population", type=int, default=1000, help="simulated built-in devices")
    parser.add_argument("--per-round", type=int, nargs="+", default=[25, 100], help="devices trained per round")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--epsilons", type=float, nargs="+", default=[10.0], help="target user-level epsilons")
    parser.add_argument("--emulate", type=int, nargs="*", default=[1000],
                        help="cohorts to emulate with the smallest --per-round (multiples of it)")
    parser.add_argument("--modes", nargs="+", default=["central-client-clip", "central-ftrl"],
                        choices=["central-client-clip", "central-ftrl", "central-blt"], help="private modes to run")
    parser.add_argument("--emulated-only", action="store_true", help="with --emulate: only the emulated private "
                        "rows (and the non-private reference), not the executed cohort's own private rows")
    parser.add_argument("--data", choices=["builtin", "wikitext"], default="builtin",
                        help="wikitext: one WikiText-2 paragraph per device (population = paragraphs)")
    parser.add_argument("--wikitext", type=Path, nargs="+", default=None, metavar="FILE",
                        help=f"--data wikitext: WikiText-2's valid.txt and test.txt (default: {WIKITEXT}/)")
    parser.add_argument("--model-preset", default="dp-small", help='"" for the default model')
    parser.add_argument("--delta", type=float, default=None, help="below 1/population (default 1e-5; 1e-6 with "
                        "--data wikitext)")
    parser.add_argument("--clip", type=float, default=0.5, help="dp.clipping-norm")
    parser.add_argument("--local-steps", type=int, default=5, help="max-local-steps")
    parser.add_argument("--local-epochs", type=int, default=1, help="local-epochs (a paragraph is one step each)")
    parser.add_argument("--server-eval-devices", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per run")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "privacy-utility.png", help="PNG; JSON beside it")
    parser.add_argument("--flwr-home", type=Path, default=None, help="FLWR_HOME of the private local SuperLink "
                        "(default: a temporary one)")
    parser.add_argument("--ports", type=int, nargs=2, default=(39491, 39493), metavar=("HTTP", "CONTROL"),
                        help="its HTTP and control ports")
    parser.add_argument("--reuse", type=Path, default=None, help="an earlier JSON of the same settings: its "
                        "finished runs are not run again")
    parser.add_argument("--work-dir", type=Path, default=None, help="keep the runs here (default: a temporary "
                        "folder); with --reuse, a run that was stopped goes on from its last checkpoint")
    parser.add_argument("--plot-also", nargs="*", default=[], help="earlier JSONs to show in the figure beside "
                        "this run's (e.g. emulated rows)")
    parser.add_argument("--smoke", action="store_true", help="8 devices, 4 per round, 2 rounds, ε 5 and 50")
    args = parser.parse_args(argv)
    if args.delta is None:
        args.delta = 1e-6 if args.data == "wikitext" else 1e-5
    if args.smoke:
        args.population, args.per_round, args.rounds, args.epsilons = 8, [4], 2, [5.0, 50.0]
        args.emulate, args.delta, args.server_eval_devices = [], 1e-2, 4

    with tempfile.TemporaryDirectory(prefix="privacy-benchmark-") as tmp:
        out = args.work_dir.resolve() if args.work_dir else Path(tmp)  # kept: a stopped run resumes
        args.data_folder = None
        if args.data == "wikitext":
            args.data_folder = wikitext_folder(args, out)
            args.population = len(paragraph_devices(args.data_folder))
            print(f"--data wikitext: {args.population} devices, one paragraph each ({args.data_folder})", flush=True)
        if args.delta >= 1 / args.population:
            parser.error(f"--delta {args.delta} must be below 1/population = 1/{args.population}")
        rows = plan(args)
        reuse(args, rows)
        print(f"{len(rows)} runs: " + "; ".join(f"{r.label} z={r.noise_multiplier}" for r in rows), flush=True)
        execute(args, rows, out)
    save(args, rows)
    plot(rows, args.out, {f" ({Path(f).name})": load_rows(f) for f in args.plot_also},
         "top-3 on every device's held-out sentences, final model" if args.data == "wikitext" else
         "top-3, unseen users, final model")
    print(table(rows))
    print(f"\nWritten: {args.out} and {Path(args.out).with_suffix('.json')}")
    failed = [r.label for r in rows if r.top3 is None]
    if failed:
        print(f"Failed runs: {failed}", file=sys.stderr)
    return 1 if failed or any(math.isnan(r.top3) for r in rows if r.top3 is not None) else 0


if __name__ == "__main__":
    sys.exit(main())
