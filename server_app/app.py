"""ServerApp: builds FedAvg (inside a DP wrapper when a dp-mode asks for one) from the validated
config, runs it, and records the run.

Devices train and evaluate on their own text; the server only averages weights (FedAvg,
weighted by each device's number of training windows, or equally under DP) and, for the builtin
corpus, scores the global model on synthetic users that are not part of the federation.
"""

from __future__ import annotations

import logging
import time

from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp

from server_app import privacy
from server_app.observed_grid import ObservedGrid
from server_app.resume import dp_settings, load_resume_point
from server_app.run_record import RunRecord
from server_app.strategy import build_strategy
from server_app.transfer_grid import TransferGrid
from task import train as trainer
from task.checkpoint import model_fingerprint
from task.config import ROUND_OFFSET, Config
from task.data import make_windows, unseen_users_text
from task.export import export_litert
from task.model import build_model
from task.privacy import DP_WEIGHT, PrivacyBudgetExceeded
from task.vocab import default_vocabulary

log = logging.getLogger("flwr")
app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = Config.from_run_config(context.run_config)
    vocab = default_vocabulary(cfg.model.vocab_size)
    fingerprint = model_fingerprint(cfg, vocab.words)
    resume = load_resume_point(cfg, fingerprint) if cfg.resume_from else None
    record = RunRecord(cfg.output_root / f"run-{context.run_id}", cfg, vocab, resume.rows if resume else None)
    log.info("Writing this run's model, checkpoints and metrics to %s", record.dir)

    model = build_model(cfg.model, seed=cfg.seed)  # reproducible; no privacy randomness comes from `seed`
    if resume:
        model.set_weights(resume.checkpoint.weights)
        for note in resume.notes:
            log.warning("Resume: %s", note)
        log.info("Resuming from round %d of %s", resume.round, resume.source)
    start_round = resume.round if resume else 0  # Flower counts this run's rounds from 1 again
    server_x, server_y = make_windows(unseen_users_text(cfg), vocab, cfg.model.seq_len)
    observed = ObservedGrid(grid)
    population, sampled = privacy.population_and_sample(grid, cfg) if cfg.dp.enabled else (0, 0)
    ledger = (privacy.resumed_ledger(cfg, resume.checkpoint.state, population, sampled) if resume
              else privacy.new_ledger(cfg, population, sampled))
    for assumption in ledger.assumptions(cfg.model.seq_len):
        log.info("Privacy accounting: %s", assumption)
    latest = {"arrays": None}  # the last global model: what a budget stop keeps

    def after_round(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        # Flower calls this for the initial model (round 0 of this run) and after every round.
        # The ledger has already booked this round (the strategy does it as it sends and releases).
        weights = arrays.to_numpy_ndarrays()
        counts = observed.take_counts()
        latest["arrays"] = weights
        server_metrics = None
        if len(server_x):
            started = time.perf_counter()
            model.set_weights(weights)
            m = trainer.evaluate(model, server_x, server_y)
            server_metrics = {"loss": m.loss, "perplexity": m.perplexity, "top1": m.top1, "top3": m.top3,
                              "seconds": time.perf_counter() - started}
        if resume and server_round == 0:
            return None  # the resumed checkpoint's round is already in the history
        strategy_now = privacy.strategy_state(strategy)
        state = {"fingerprint": fingerprint, "dp": dp_settings(cfg), "strategy": strategy_now,
                 "privacy": ledger.state_dict() if cfg.dp.enabled else None}
        privacy_report = None
        if cfg.dp.enabled:  # adaptive clipping moves the norm: report the one in force now
            privacy_report = {**ledger.report(), **({"clipping-norm": strategy_now["clipping_norm"]}
                                                    if "clipping_norm" in strategy_now else {})}
        record.end_round(start_round + server_round, arrays, counts, server_metrics, privacy_report, state)
        return MetricRecord(server_metrics) if server_metrics else None

    def aggregate_train_metrics(records: list[RecordDict], weight_key: str) -> MetricRecord:
        if cfg.dp.enabled:
            privacy.require_equal_weights(records)
            records = privacy.without_norm_bits(records)
        return record.aggregate_train_metrics(records, weight_key)

    fedavg = build_strategy(
        cfg, ledger,
        fraction_train=cfg.fraction_train,
        fraction_evaluate=cfg.fraction_evaluate,
        min_train_nodes=cfg.min_train_nodes,
        min_evaluate_nodes=cfg.min_evaluate_nodes,
        min_available_nodes=cfg.min_available_nodes,
        weighted_by_key=DP_WEIGHT if cfg.dp.enabled else "num-examples",
        train_metrics_aggr_fn=aggregate_train_metrics,
        evaluate_metrics_aggr_fn=record.aggregate_evaluate_metrics,
    )
    strategy = privacy.wrap(cfg, fedavg, ledger)
    if resume:
        privacy.restore_strategy_state(strategy, resume.checkpoint.state.get("strategy") or {})
    stop_reason = None
    try:
        result = strategy.start(
            grid=TransferGrid(observed, cfg.transfer_dtype),  # encodes above the byte counts
            initial_arrays=ArrayRecord(model.get_weights()),
            num_rounds=cfg.num_server_rounds - start_round,
            timeout=cfg.round_timeout,
            train_config=ConfigRecord({ROUND_OFFSET: start_round}),
            evaluate_fn=after_round,
        )
        final = result.arrays.to_numpy_ndarrays()
    except PrivacyBudgetExceeded as e:
        stop_reason = f"privacy budget: {e}"
        log.warning("Stopped early: %s", stop_reason)
        final = latest["arrays"]
    model.set_weights(final)
    litert = export_litert(model, vocab, record.final_dir / "litert")  # what devices run offline
    record.finish(model, litert, stop_reason=stop_reason, privacy_assumptions=ledger.assumptions(cfg.model.seq_len))
