"""ServerApp: builds the strategy from the validated config (inside central DP when a dp-mode asks
for it), runs it, and records the run.

Devices train and evaluate on their own text; the server only averages weights (FedAvg, weighted
by each device's number of training windows, or equally under DP) and, for the builtin data,
scores the global model on synthetic users outside the federation (server_app/rounds.py).
"""

from __future__ import annotations

import logging
from dataclasses import replace

from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp

from server_app import privacy, secure
from server_app.discovery import GrowingVocabulary, VocabularyGrowth
from server_app.observed_grid import ObservedGrid
from server_app.resume import load_resume_point
from server_app.rounds import RoundEnd
from server_app.run_record import RunRecord
from server_app.secure import SecureGrid
from server_app.strategy import TooFewDevices, build_strategy
from server_app.transfer_grid import TransferGrid
from server_app.warm_start import initial_weights
from task.config import ROUND_OFFSET, Config, ConfigError
from task.data.vocab import Vocabulary, default_vocabulary
from task.litert.export import export_checked
from task.model import build_model
from task.privacy.ledger import PrivacyBudgetExceeded
from task.run.checkpoint import model_fingerprint

log = logging.getLogger("flwr")
app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = Config.from_run_config(context.run_config)
    vocab = default_vocabulary(cfg.model.vocab_size)
    fingerprint = model_fingerprint(cfg, vocab.words)
    resume = load_resume_point(cfg, fingerprint) if cfg.resume_from else None
    added = resume.checkpoint.state.get("vocab_added", []) if resume else []  # words earlier discoveries found
    record = RunRecord(cfg.output_root / f"run-{context.run_id}", cfg, vocab.extended(added),
                       resume.rows if resume else None)
    log.info("Writing this run's model, checkpoints and metrics to %s", record.dir)
    # reproducible; no privacy randomness comes from `seed`
    model = build_model(replace(cfg.model, vocab_size=len(vocab) + len(added)), seed=cfg.seed)
    if cfg.dp.sgd:  # refused before any device trains or any epsilon is booked
        _require_dpsgd_rules(model)
    if cfg.init_from:
        weights, origin = initial_weights(cfg, fingerprint)
        model.set_weights(weights)
        log.info("%s", origin)
    if resume:
        model.set_weights(resume.checkpoint.weights)
        log.info("Resuming from round %d of %s%s", resume.round, resume.source, "".join(f"; {n}" for n in resume.notes))

    observed = ObservedGrid(grid)
    ledger = privacy.ledger_for(cfg, grid, resume)
    growth = VocabularyGrowth(cfg, vocab, ledger, added) if cfg.vocab_discovery or added else None
    round_end = RoundEnd(cfg, model, record, observed, ledger, fingerprint, resume, growth)
    inner = build_strategy(cfg, ledger, privacy.train_metrics_aggregator(cfg, record.aggregate_train_metrics),
                           record.aggregate_evaluate_metrics)
    inner.last_round = cfg.num_server_rounds - round_end.start_round
    strategy = privacy.wrap(cfg, inner, ledger)
    if resume:
        privacy.restore_strategy_state(strategy, resume.checkpoint.state.get("strategy") or {})
    round_end.strategy = strategy
    runner = GrowingVocabulary(strategy, growth, discovery_grid=grid) if growth else strategy

    stop_reason = None
    try:
        result = runner.start(
            grid=_above_the_counts(cfg, observed),
            initial_arrays=ArrayRecord(model.get_weights()),
            num_rounds=cfg.num_server_rounds - round_end.start_round,
            timeout=cfg.round_timeout,
            train_config=ConfigRecord({ROUND_OFFSET: round_end.start_round}),
            evaluate_fn=round_end,
        )
        final = result.arrays.to_numpy_ndarrays() or round_end.latest  # empty if no round released
    except (PrivacyBudgetExceeded, TooFewDevices) as e:
        stop_reason = f"{'privacy budget' if isinstance(e, PrivacyBudgetExceeded) else 'too few devices'}: {e}"
        log.warning("Stopped early: %s", stop_reason)
        final = round_end.latest
    model = round_end.model_for(final)
    if growth:  # the final model's vocabulary: every word it has a row for
        record.vocab = Vocabulary(growth.vocab.words[: len(final[0])])
        record.discoveries = growth.history
    assumptions = ledger.assumptions(cfg.model.seq_len) + (secure.assumptions(cfg) if cfg.secure_aggregation else [])
    assumptions += growth.assumptions() if cfg.vocab_discovery else []
    finish(record, model, round_end.check_windows(), stop_reason, assumptions)


def finish(record: RunRecord, model, windows, stop_reason: str | None, assumptions: list[str]) -> dict:
    """Save the model and the run record, then export for devices: a failed or unfit export is
    reported in the summary and loses nothing."""
    record.save_final(model)
    # what devices run offline, each file checked against the Keras model before it may ship
    litert = export_checked(model, record.vocab, record.final_dir / "litert", windows)
    return record.finish(litert, stop_reason=stop_reason, privacy_assumptions=assumptions)


def _require_dpsgd_rules(model) -> None:
    from task.privacy.dpsgd import SUPPORTED_LAYERS, unsupported_layers

    missing = unsupported_layers(model)
    if missing:
        raise ConfigError(f"run-config key 'dp-sgd' = true: DP-SGD has no per-example gradient rule for layer(s) "
                          f"{', '.join(missing)} of model {model.name!r}; it supports {SUPPORTED_LAYERS} "
                          "(task/privacy/dpsgd.py, `registry`). Use user-level DP (dp-mode) with this model, or "
                          "add a rule")


def _above_the_counts(cfg: Config, observed: ObservedGrid):
    """What the strategy talks to: SecAgg+ or the transfer encoding, both above the byte counts."""
    if cfg.secure_aggregation:
        for line in secure.assumptions(cfg):
            log.info("Secure aggregation: %s", line)
        return SecureGrid(observed, cfg.secagg, timeout=cfg.round_timeout)
    return TransferGrid(observed, cfg.transfer_dtype)
