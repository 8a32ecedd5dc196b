"""The runs behind scripts/benchmarks/benchmark.py: scenarios, a real `flwr run .` with its memory and CPU
sampled, and the centralised twin trained on the same text with the same task/ code."""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from flwr.common.config import parse_config_args

from scripts.local_flower import ROOT, run_app

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
    secure: list[dict] = field(default_factory=list)



# ---- federated runs ----------------------------------------------------------------------------


@dataclass
class FederatedRun:
    status: str
    seconds: float  # wall time of `flwr run`, start-up to exit
    rows: list[dict]  # the run's metrics.json
    peak_rss_mb: float = 0.0
    simulation_cpu_seconds: float = 0.0  # CPU time of Flower's simulation process (engine + ServerApp)
    marks: dict = field(default_factory=dict)  # start-up stages, see scripts.local_flower.MARKS
    peak_actor_mb: float = 0.0  # the largest ClientApp actor (a Ray worker), at its peak
    peak_engine_mb: float = 0.0  # Flower's simulation process (the link state, every message)


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
    return FederatedRun(outcome.status, outcome.seconds, rows, memory.peak_mb, memory.simulation_cpu, outcome.marks,
                        peak_actor_mb=memory.peak_actor_mb, peak_engine_mb=memory.peak_engine_mb)


class PeakMemory:
    """Peak total resident memory of the local SuperLink and everything it started (simulation
    engine, Ray workers), sampled every 0.5 s; and the last CPU time seen of the simulation process."""

    def __init__(self, env: dict):
        self.marker = str(Path(env["FLWR_HOME"]))
        self.peak_mb = self.peak_actor_mb = self.peak_engine_mb = 0.0
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
            for p in procs:  # Ray names an actor's worker process after the actor
                if "ClientAppActor" in " ".join(_quietly(psutil.Process.cmdline, p, [])):
                    self.peak_actor_mb = max(self.peak_actor_mb, _quietly(lambda p: p.memory_info().rss, p, 0) / 2**20)
            for p in simulation:
                self.peak_engine_mb = max(self.peak_engine_mb, _quietly(lambda p: p.memory_info().rss, p, 0) / 2**20)
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
    scored on all devices' held-out text (what FedAvg's evaluation covers with fraction 1).

    One pass is one round's work: Adam restarts and the learning rate follows the run's schedule
    (task.train.round_learning_rate), as on a device. Scored after every pass too: on small text
    the twin over-fits, and its best pass is the fairer reference."""
    from task.config import Config
    from task.data.device_text import load_device_text, make_windows
    from task.data.files import DataError
    from task.data.vocab import default_vocabulary
    from task.model import build_model
    from task.train import evaluate, round_learning_rate, train

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
    # max-local-steps caps a device's steps per round; the pooled twin gets the same total per round.
    steps = cfg.max_local_steps * scenario.devices if cfg.max_local_steps else 0
    cfg = cfg.replace(num_server_rounds=scenario.rounds)
    per_pass = []
    for round_ in range(1, scenario.rounds + 1):
        train(model, x, y, epochs=scenario.local_epochs, batch_size=cfg.batch_size,
              learning_rate=round_learning_rate(cfg, round_), max_steps=steps, seed=cfg.seed * 100_003 + round_,
              adam_epsilon=cfg.adam_epsilon, optimizer=cfg.client_optimizer)
        per_pass.append(evaluate(model, test_x, test_y).top3)
    m = evaluate(model, test_x, test_y, vocab=vocab)
    best = max(range(len(per_pass)), key=per_pass.__getitem__)
    return {
        "best_top3": per_pass[best],
        "best_round": best + 1,
        "top1": m.top1,
        "top3": m.top3,
        "keystroke_savings": m.keystroke_savings,
        "perplexity": m.perplexity,
        "seconds": time.monotonic() - started,
        "train_windows": len(x),
        "test_words": m.num_examples,
    }


