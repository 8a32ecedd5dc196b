"""What the server does at the end of every round: score the global model on users outside the
federation, and record the round (metrics row, checkpoint with the state to resume, plot)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
from flwr.app import ArrayRecord, MetricRecord
from flwr.serverapp.strategy import Strategy

from server_app.observed_grid import ObservedGrid
from server_app.resume import dp_settings
from server_app.run_start import RunStart
from task import train as trainer
from task.config import Config
from task.data.device_text import make_windows, unseen_users_text
from task.data.vocab import Vocabulary, vocabulary_rows
from task.model import EMBEDDING, build_model

if TYPE_CHECKING:
    from features.discovery.server import VocabularyGrowth
    from task.privacy.ledger import PrivacyLedger


class RoundEnd:
    """Flower's `evaluate_fn`: called with the initial model (round 0 of this run) and after every
    round. The ledger (None when nothing private runs) has already booked the round (the strategy
    does it as it sends and releases)."""

    def __init__(self, cfg: Config, start: RunStart, observed: ObservedGrid, ledger: PrivacyLedger | None,
                 strategy: Strategy, growth: VocabularyGrowth | None = None, extra_scores: Callable | None = None):
        self.cfg, self.model, self.record, self.observed, self.ledger = cfg, start.model, start.record, observed, ledger
        self.fingerprint, self.resumed, self.growth = start.fingerprint, start.resume is not None, growth
        self.start_round = start.round  # Flower counts this run's rounds from 1 again
        self.strategy = strategy  # its state goes into every checkpoint
        self.extra_scores = extra_scores  # (model, vocabulary) -> more server metrics (a feature's measure)
        self._encoded_for = 0  # the vocabulary size the server's evaluation text is encoded with
        self.latest: list[np.ndarray] | None = None  # the last global model: what a budget stop keeps

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        self.latest = arrays.to_numpy_ndarrays()
        counts = self.observed.take_counts()
        if self.ledger and "train" in counts:
            self.ledger.record_declined(counts["train"].declined)
        server_metrics = self._evaluate()
        if self.resumed and server_round == 0:
            return None  # the resumed checkpoint's round is already in the history
        strategy_state = self._strategy_state()
        state = {"fingerprint": self.fingerprint, "dp": dp_settings(self.cfg), "strategy": strategy_state,
                 "privacy": self.ledger.state_dict() if self.cfg.dp.enabled or self.growth else None,
                 # the words this model has rows for (a round whose devices all failed is not grown yet)
                 "vocab_added": self.vocab.words[self.cfg.model.vocab_size:vocabulary_rows(self.latest)]}
        private = self.cfg.dp.enabled or (self.growth is not None and bool(self.ledger.discoveries))
        report = self.ledger.report() if private else None  # its clipping-norm: what this round's noise covered
        if report and self.cfg.dp.mode == "central-adaptive-clip":
            report["clipping-norm-next"] = strategy_state["clipping_norm"]  # what the next round's devices clip to
        self.record.end_round(self.start_round + server_round, arrays, counts, server_metrics, report, state)
        return MetricRecord(server_metrics) if server_metrics else None

    def _strategy_state(self) -> dict:
        """What a resumed run needs to continue the strategy: central DP's (adaptive) clipping norm."""
        if not self.cfg.dp.central:
            return {}
        from server_app.privacy import strategy_state

        return strategy_state(self.strategy)

    def check_windows(self, count: int = 200):
        """Held-out windows to check the LiteRT export on: the unseen users' text when the server
        has it (builtin data), else synthetic windows (task.litert.export.check_windows)."""
        from task.litert.export import check_windows

        rows = vocabulary_rows(self.latest) if self.latest else self.cfg.model.vocab_size
        if self._encoded_for == rows and len(self.server_x):
            return self.server_x[:count]
        return check_windows(self.cfg.model.seq_len, rows, count)

    @property
    def vocab(self) -> Vocabulary:
        return self.growth.vocab if self.growth else self.record.vocab

    def vocab_for(self, weights: list[np.ndarray]) -> Vocabulary:
        """The words `weights` have rows for: fewer than the vocabulary's if a grown round failed."""
        rows = vocabulary_rows(weights)
        return self.vocab if rows == len(self.vocab) else Vocabulary(self.vocab.words[:rows])

    def model_for(self, weights: list[np.ndarray]):
        """The server's model holding `weights` (rebuilt once the vocabulary has grown)."""
        if self.model.get_layer(EMBEDDING).input_dim != vocabulary_rows(weights):
            self.model = build_model(replace(self.cfg.model, vocab_size=vocabulary_rows(weights)))
        self.model.set_weights(weights)
        return self.model

    def _evaluate(self) -> dict | None:
        rows, vocab = vocabulary_rows(self.latest), self.vocab_for(self.latest)
        if self._encoded_for != rows:  # words added: encode the text with them
            self.server_x, self.server_y = make_windows(unseen_users_text(self.cfg), vocab, self.cfg.model.seq_len)
            self._encoded_for = rows
        if not len(self.server_x) and not self.extra_scores:
            return None
        started = time.perf_counter()
        model = self.model_for(self.latest)
        out = {}
        if len(self.server_x):
            m = trainer.evaluate(model, self.server_x, self.server_y)
            out = {"loss": m.loss, "perplexity": m.perplexity, "top1": m.top1, "top3": m.top3}
        if self.extra_scores:
            out.update(self.extra_scores(model, vocab))
        out["seconds"] = time.perf_counter() - started
        return out
