"""What the server does at the end of every round: score the global model on users outside the
federation, and record the round (metrics row, checkpoint with the state to resume, plot)."""

from __future__ import annotations

import time

import numpy as np
from flwr.app import ArrayRecord, MetricRecord
from flwr.serverapp.strategy import Strategy

from server_app import privacy
from server_app.observed_grid import ObservedGrid
from server_app.resume import ResumePoint, dp_settings
from server_app.run_record import RunRecord
from task import train as trainer
from task.config import Config
from task.data.device_text import make_windows, unseen_users_text
from task.privacy.ledger import PrivacyLedger


class RoundEnd:
    """Flower's `evaluate_fn`: called with the initial model (round 0 of this run) and after every
    round. The ledger has already booked the round (the strategy does it as it sends and releases)."""

    def __init__(self, cfg: Config, model, record: RunRecord, observed: ObservedGrid, ledger: PrivacyLedger,
                 fingerprint: str, resume: ResumePoint | None):
        self.cfg, self.model, self.record, self.observed, self.ledger = cfg, model, record, observed, ledger
        self.fingerprint, self.resumed = fingerprint, resume is not None
        self.start_round = resume.round if resume else 0  # Flower counts this run's rounds from 1 again
        self.server_x, self.server_y = make_windows(unseen_users_text(cfg), record.vocab, cfg.model.seq_len)
        self.strategy: Strategy | None = None  # set once built: its state goes into every checkpoint
        self.latest: list[np.ndarray] | None = None  # the last global model: what a budget stop keeps

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        self.latest = arrays.to_numpy_ndarrays()
        counts = self.observed.take_counts()
        if "train" in counts:
            self.ledger.record_declined(counts["train"].declined)
        server_metrics = self._evaluate() if len(self.server_x) else None
        if self.resumed and server_round == 0:
            return None  # the resumed checkpoint's round is already in the history
        strategy_state = privacy.strategy_state(self.strategy)
        state = {"fingerprint": self.fingerprint, "dp": dp_settings(self.cfg), "strategy": strategy_state,
                 "privacy": self.ledger.state_dict() if self.cfg.dp.enabled else None}
        report = {**self.ledger.report(), **strategy_state} if self.cfg.dp.enabled else None  # norm in force now
        if report and "clipping_norm" in report:
            report["clipping-norm"] = report.pop("clipping_norm")
        self.record.end_round(self.start_round + server_round, arrays, counts, server_metrics, report, state)
        return MetricRecord(server_metrics) if server_metrics else None

    def _evaluate(self) -> dict:
        started = time.perf_counter()
        self.model.set_weights(self.latest)
        m = trainer.evaluate(self.model, self.server_x, self.server_y)
        return {"loss": m.loss, "perplexity": m.perplexity, "top1": m.top1, "top3": m.top3,
                "seconds": time.perf_counter() - started}
