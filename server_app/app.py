"""ServerApp: builds FedAvg from the validated config, runs it, and records the run.

Devices train and evaluate on their own text; the server only averages weights (FedAvg,
weighted by each device's number of training windows) and, for the builtin corpus, scores the
global model on synthetic users that are not part of the federation.
"""

from __future__ import annotations

import logging

from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from server_app.observed_grid import ObservedGrid
from server_app.run_record import RunRecord
from task import train as trainer
from task.config import Config
from task.data import make_windows, unseen_users_text
from task.export import export_litert
from task.model import build_model
from task.vocab import default_vocabulary

log = logging.getLogger("flwr")
app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = Config.from_run_config(context.run_config)
    vocab = default_vocabulary(cfg.model.vocab_size)
    record = RunRecord(cfg.output_root / f"run-{context.run_id}", cfg, vocab)
    log.info("Writing this run's model, checkpoints and metrics to %s", record.dir)

    model = build_model(cfg.model, seed=cfg.seed)
    server_x, server_y = make_windows(unseen_users_text(cfg), vocab, cfg.model.seq_len)
    observed = ObservedGrid(grid)

    def after_round(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        # Flower calls this for the initial model (round 0) and after every round.
        server_metrics = None
        if len(server_x):
            model.set_weights(arrays.to_numpy_ndarrays())
            m = trainer.evaluate(model, server_x, server_y)
            server_metrics = {"loss": m.loss, "perplexity": m.perplexity, "top1": m.top1, "top3": m.top3}
        record.end_round(server_round, arrays, observed.take_counts(), server_metrics)
        return MetricRecord(server_metrics) if server_metrics else None

    strategy = FedAvg(
        fraction_train=cfg.fraction_train,
        fraction_evaluate=cfg.fraction_evaluate,
        min_train_nodes=cfg.min_train_nodes,
        min_evaluate_nodes=cfg.min_evaluate_nodes,
        min_available_nodes=cfg.min_available_nodes,
        train_metrics_aggr_fn=record.aggregate_train_metrics,
        evaluate_metrics_aggr_fn=record.aggregate_evaluate_metrics,
    )
    result = strategy.start(
        grid=observed,
        initial_arrays=ArrayRecord(model.get_weights()),
        num_rounds=cfg.num_server_rounds,
        timeout=cfg.round_timeout,
        train_config=ConfigRecord({}),
        evaluate_fn=after_round,
    )
    model.set_weights(result.arrays.to_numpy_ndarrays())
    litert = export_litert(model, vocab, record.final_dir / "litert")  # what devices run offline
    record.finish(model, litert)
