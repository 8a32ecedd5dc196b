"""Everything a run leaves on disk, written as the run goes.

<out-dir>/run-<run id>/
    config.json           the validated run config
    vocab.json            the vocabulary the model's ids refer to
    metrics.json, metrics.csv   one row per round (round 0 = the initial model), rewritten each round
    metrics.png           loss, top-3 and (with DP) epsilon against round, redrawn each round
    participation.png     per round: devices that replied, were late, declined or failed; energy
    checkpoints/round-NNN.npz   the global model and the state to resume from, newest keep-checkpoints
    final/model.keras + vocab.json   the final global model
    final/litert/model-{float32,float16,int8}.tflite + vocab.json   for on-device suggestions (int8: int8.enabled)
    summary.json          final and best metrics, baselines, paths
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

from flwr.app import ArrayRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from server_app.console import eval_part, round_line, summary_lines
from server_app.observed_grid import PhaseCounts
from task.config import EVAL_PREFIX, Config
from task.data.vocab import Vocabulary
from task.personal import summarise
from task.run.checkpoint import Checkpoint, checkpoint_path, prune, save_checkpoint
from task.run.files import atomic_write
from task.run.plots import plot_participation, plot_runs

log = logging.getLogger("flwr")
# Reply metrics of what a message cost its device (features/participation/cost.py): summed or maxed per round,
# never averaged like the training metrics.
COST_SUMS = ("compute-seconds", "cpu-seconds", "energy-joules")
COST_KEYS = (*COST_SUMS, "peak-memory-mb", "energy-measured")


class RunRecord:
    def __init__(self, run_dir: Path, cfg: Config, vocab: Vocabulary, previous_rows: list[dict] | None = None):
        """`previous_rows`: the history of the run this one resumes (copied, so both stay whole)."""
        self.dir = run_dir
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        self.cfg = cfg
        self.vocab = vocab
        self.rows: list[dict] = list(previous_rows or [])
        self._aggregated: dict[str, dict] = {}
        self._round_started = time.monotonic()
        self._participants: set[int] = set()  # devices that replied with an update or a score, this run
        self._asked: set[int] = set()  # devices asked at least once, this run
        self._cost = CostTotals()  # what the devices spent, this run
        _write_json(run_dir / "config.json", cfg.to_run_config())
        vocab.save(run_dir / "vocab.json")

    # Used as FedAvg's train/evaluate metric aggregators: aggregate as usual, and keep the result.
    def aggregate_train_metrics(self, records: list[RecordDict], weight_key: str) -> MetricRecord:
        # With evaluate-in-train a reply also scores the model the device received: the previous
        # round's. Kept apart, weighted per scored word as in the evaluate phase.
        training, scores = [], []
        for r in records:
            split = {True: RecordDict(), False: RecordDict()}
            for name, metrics in r.metric_records.items():
                for is_score in (True, False):
                    part = {k.removeprefix(EVAL_PREFIX): v for k, v in metrics.items()
                            if k.startswith(EVAL_PREFIX) == is_score}
                    if part:
                        split[is_score][name] = MetricRecord(part)
            training.append(split[False])
            if split[True]:
                scores.append(split[True])
        if scores:
            self._aggregated["eval-before"] = {**self._scores(scores), "replied": len(scores)}
        return self._keep("train", aggregate_metricrecords(training, weight_key))

    def aggregate_evaluate_metrics(self, records: list[RecordDict], weight_key: str) -> MetricRecord:
        return self._keep("eval", MetricRecord(self._scores(records)))

    def _scores(self, records: list[RecordDict]) -> dict:
        """Always per scored word, also when DP makes training weights equal: evaluation metrics
        are comparable across runs (they are not covered by the DP guarantee either way). The
        personalised scores are each device's own keyboard, with their spread (task/personal.py
        summarise; under DP no device sends them)."""
        devices = [{k: v for m in r.metric_records.values() for k, v in m.items()} for r in records]
        plain = [RecordDict({name: MetricRecord({k: v for k, v in m.items() if not k.startswith("personal-")})
                             for name, m in r.metric_records.items()}) for r in records]
        return {**aggregate_metricrecords(plain, "num-examples"), **summarise(devices)}

    def _keep(self, phase: str, metrics: MetricRecord) -> MetricRecord:
        self._aggregated[phase] = dict(metrics)
        return metrics

    def end_round(self, server_round: int, arrays: ArrayRecord, counts: dict[str, PhaseCounts],
                  server_metrics: dict | None, privacy: dict | None = None, state: dict | None = None) -> None:
        """Checkpoint the global model with `state`, append this round's row to the metrics files
        and redraw the plot."""
        self._score_previous_round(server_round, counts.get("train", PhaseCounts()))
        row: dict = {"round": server_round}
        failures: list[str] = []
        for phase, message_type in (("train", "train"), ("eval", "evaluate")):
            c = counts.get(message_type, PhaseCounts())
            row.update({f"{phase}_sampled": c.sampled, f"{phase}_replied": c.replied, f"{phase}_failed": c.failed,
                        f"{phase}_not_eligible": c.not_eligible, f"{phase}_late": c.late, f"{phase}_busy": c.busy,
                        f"{phase}_bytes_sent": c.bytes_sent, f"{phase}_bytes_received": c.bytes_received})
            failures += c.failures
            self._participants.update(c.metrics)
            self._asked.update(c.asked)
            self._cost.add(c)
            row.update(_costs(phase, c))
            for key, value in self._aggregated.pop(phase, {}).items():
                if key not in COST_KEYS:  # an average of them means nothing: _costs sums them
                    row[f"{phase}_{key.replace('-', '_')}"] = value
            if f"{phase}_loss" in row:
                row[f"{phase}_perplexity"] = math.exp(min(row[f"{phase}_loss"], 50.0))
        for key, value in (server_metrics or {}).items():
            row[f"server_{key}"] = value
        for key, value in (privacy or {}).items():
            row[f"dp_{key.replace('-', '_')}"] = value
        if not self.cfg.dp.enabled or self.cfg.dp.report_train_metrics:  # it follows the devices' compute
            row["seconds"] = round(time.monotonic() - self._round_started, 2)
        row["failures"] = failure_counts(failures)
        self._round_started = time.monotonic()
        self.rows.append(row)
        # Metrics first: a run killed in between then has a row ahead of its newest checkpoint
        # (resume drops it and redoes the round), never a checkpoint whose row is missing.
        _write_json(self.dir / "metrics.json", self.rows)
        _write_text(self.dir / "metrics.csv", _csv(self.rows))
        save_checkpoint(checkpoint_path(self.dir, server_round),
                        Checkpoint(server_round, arrays.to_numpy_ndarrays(), state or {}))
        prune(self.dir, self.cfg.keep_checkpoints)
        plot_runs({self.dir.name: self.rows}, self.plot)
        plot_participation(self.rows, self.dir / "participation.png")
        log.info("%s", round_line(row))
        for failure in failures:  # with node ids: the operator's log, never the published files
            log.warning("round %d: device failed: %s", server_round, failure)

    def _score_previous_round(self, server_round: int, train: PhaseCounts) -> None:
        """Put the devices' scores of the model they received this round (evaluate-in-train)
        into the row of the round that made it, and log them."""
        scores = self._aggregated.pop("eval-before", None)
        if not scores or not self.rows or self.rows[-1]["round"] != server_round - 1 or "eval_loss" in self.rows[-1]:
            return  # nothing to add, or the round was scored already (the last round of a resumed run)
        row = self.rows[-1]
        replied = scores.pop("replied")
        # Their compute time is in the train phase's: it is one message.
        row.update({"eval_sampled": train.sampled, "eval_replied": replied, "eval_not_eligible": train.not_eligible,
                    "eval_late": train.late, "eval_busy": train.busy,
                    "eval_failed": train.sampled - replied - train.not_eligible - train.late - train.busy})
        row.update({f"eval_{k.replace('-', '_')}": v for k, v in scores.items() if k != "compute-seconds"})
        row["eval_perplexity"] = math.exp(min(row["eval_loss"], 50.0))
        log.info("round %d, scored by the devices of round %d: %s", row["round"], server_round, eval_part(row))

    @property
    def final_dir(self) -> Path:
        return self.dir / "final"

    @property
    def plot(self) -> Path:
        return self.dir / "metrics.png"

    def save_final(self, model, vocab: Vocabulary | None = None) -> None:
        """The final Keras model with its vocabulary (`vocab`: grown by any discovery): written
        before anything that may fail."""
        self.vocab = vocab or self.vocab
        self.final_dir.mkdir(exist_ok=True)
        model.save(self.final_dir / "model.keras")
        self.vocab.save(self.final_dir / "vocab.json")
        self.vocab.save(self.dir / "vocab.json")  # grown by any discovery: the ids the checkpoints use

    def finish(self, litert: dict[str, dict], stop_reason: str | None = None,
               privacy_assumptions: list[str] | None = None, discoveries: list[dict] = ()) -> dict:
        """Write and log the summary. `litert`: task.litert.export.export_checked's report;
        `discoveries`: the vocabulary discoveries' history (features/discovery/server.py)."""
        final = self.final_dir
        evaluated = [r for r in self.rows if "eval_top3" in r]
        summary = {
            "run_dir": str(self.dir),
            "model": str(final / "model.keras"),
            "vocab": str(final / "vocab.json"),
            # the files fit to ship; litert_check says how each variant fared
            "litert": {variant: r["file"] for variant, r in litert.items() if r.get("fit_to_ship")},
            "litert_check": litert,
            "metrics": str(self.dir / "metrics.json"),
            "metrics_csv": str(self.dir / "metrics.csv"),
            "plot": str(self.plot),
            "rounds": max((r["round"] for r in self.rows), default=0),
            "final": {
                k: v for k, v in (evaluated[-1] if evaluated else {}).items() if k.startswith(("eval_", "server_"))
            },
            "best_eval_top3": max((r["eval_top3"] for r in evaluated), default=None),
            "best_eval_top3_round": max(evaluated, key=lambda r: r["eval_top3"])["round"] if evaluated else None,
            "best_eval_loss": min((r["eval_loss"] for r in evaluated), default=None),
            "first_eval_loss": evaluated[0]["eval_loss"] if evaluated else None,
            "stopped_early": stop_reason,
            "privacy": {k[3:]: v for k, v in (self.rows[-1] if self.rows else {}).items() if k.startswith("dp_")},
            "privacy_assumptions": privacy_assumptions or [],
            "vocab_added": self.vocab.words[self.cfg.model.vocab_size:],
            "discoveries": list(discoveries),
            "device_cost": self._cost.summary(len(self._asked), len(self._participants)),
        }
        _write_json(self.dir / "summary.json", summary)
        for line in summary_lines(summary):
            log.info("%s", line)
        return summary


def failure_counts(failures: list[str]) -> list[str]:
    """"node 12: too little text" -> "too little text: 1": the categories and how many, no node ids."""
    counts: dict[str, int] = {}
    for failure in failures:
        reason = re.sub(r"^node \d+:\s*", "", failure)
        counts[reason] = counts.get(reason, 0) + 1
    return [f"{reason}: {n}" for reason, n in sorted(counts.items())]


def _costs(phase: str, c: PhaseCounts) -> dict:
    """The round's compute time, CPU time and energy summed over the devices that reported them,
    and the highest peak memory."""
    timed = [m["compute-seconds"] for m in c.metrics.values() if "compute-seconds" in m]  # none under DP
    out = {f"{phase}_compute_seconds": round(sum(timed), 3)} if timed else {}
    reported = [m for m in c.metrics.values() if "energy-joules" in m]
    if reported:
        out.update({f"{phase}_cpu_seconds": round(sum(m["cpu-seconds"] for m in reported), 3),
                    f"{phase}_energy_joules": round(sum(m["energy-joules"] for m in reported), 3),
                    f"{phase}_energy_measured": int(all(m["energy-measured"] for m in reported)),
                    f"{phase}_peak_memory_mb": round(max(m["peak-memory-mb"] for m in reported), 1),
                    f"{phase}_cost_reported": len(reported)})
    return out


@dataclass
class CostTotals:
    """What the devices spent over a run, from every phase's counts."""

    messages: int = 0  # messages sent (not to busy devices)
    bytes_down: int = 0
    bytes_up: int = 0
    replies: int = 0
    joules: float = 0.0
    reported: int = 0  # replies that reported their cost
    measured: bool = True
    peak_memory_mb: float = 0.0

    def add(self, c: PhaseCounts) -> None:
        self.messages += c.sampled - c.busy
        self.bytes_down += c.bytes_sent
        self.bytes_up += c.bytes_received
        self.replies += c.replied
        for m in c.metrics.values():
            if "energy-joules" in m:
                self.joules += m["energy-joules"]
                self.reported += 1
                self.measured &= bool(m["energy-measured"])
                self.peak_memory_mb = max(self.peak_memory_mb, m["peak-memory-mb"])

    def summary(self, asked: int, participants: int) -> dict | None:
        """Bytes fall on every device asked (one that declines has downloaded the model first:
        Flower's SuperNode fetches the whole message); energy on the devices that worked, from
        those that reported it (under DP they do not, unless asked)."""
        if not asked or not self.messages:
            return None
        out = {"devices_asked": asked, "devices_replied": participants, "replies": self.replies,
               "mb_per_device": (self.bytes_down + self.bytes_up) / asked / 1e6,
               "mb_down_per_message": self.bytes_down / self.messages / 1e6,
               "mb_up_per_reply": self.bytes_up / max(self.replies, 1) / 1e6}
        if self.reported and participants:
            out.update({"joules_per_reply": self.joules / self.reported,
                        "joules_per_participant": self.joules / self.reported * self.replies / participants,
                        "energy_measured": self.measured, "peak_memory_mb": self.peak_memory_mb})
        return out


def _csv(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(k for row in rows for k in row))  # first-seen order; later rounds add keys
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "; ".join(v) if isinstance(v, list) else v for k, v in row.items()})
    return out.getvalue()


def _write_json(path: Path, data) -> None:
    _write_text(path, json.dumps(data, indent=1))


def _write_text(path: Path, text: str) -> None:
    with atomic_write(path) as f:
        f.write(text)
