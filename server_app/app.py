"""ServerApp: builds the strategy from the validated config (inside central DP when a dp.mode asks
for it), runs it, and records the run.

Devices train and evaluate on their own text; the server only averages weights (FedAvg, weighted
by each device's number of training windows, or equally under DP) and, for the builtin data,
scores the global model on synthetic users outside the federation (server_app/rounds.py).

How features compose: each `_helper(cfg, ...)` below `main` returns a feature's piece when its
run-config key asks for it (importing the feature only then) and the core's own otherwise (None,
or the strategy / grid it was given). Deleting features/ leaves every helper on its core branch.
"""

from __future__ import annotations

import logging

from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp

from server_app.fleet import on_real_devices, require_dp_on_devices
from server_app.observed_grid import ObservedGrid
from server_app.rounds import RoundEnd
from server_app.run_record import RunRecord
from server_app.run_start import run_start
from server_app.simulation_polling import skip_idle_polls
from server_app.strategy import TooFewDevices, build_strategy, population_and_sample
from task.config import ROUND_OFFSET, Config
from task.data.vocab import Vocabulary
from task.litert.export import VARIANTS, export_checked
from task.privacy import PrivacyBudgetExceeded

log = logging.getLogger("flwr")
app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = Config.from_run_config(context.run_config)
    skip_idle_polls(grid)  # simulation: Flower's engine no longer polls devices that have no message
    start = run_start(cfg, context.run_id, _warm_start(cfg), _model_check(cfg))  # vocabulary, resume, record, model
    observed = ObservedGrid(grid, _send_until_goal(cfg))  # counts who replied, declined, failed, and the bytes
    population, sampled = population_and_sample(grid, cfg)  # waits for min-available-nodes, never forever
    cfg = _privacy_plan(cfg, grid, start, population, sampled)  # no DP on real devices refused; under DP: planned ε
    ledger = _ledger(cfg, start, population, sampled)  # None when nothing private runs
    inner = build_strategy(cfg, ledger, _train_metrics(cfg, start.record), start.record.aggregate_evaluate_metrics,
                           last_round=start.rounds_left)
    strategy = _central_dp(cfg, inner, ledger, start.resume)  # around it, if a central dp.mode asks
    growth = _vocabulary_growth(cfg, start, ledger) if cfg.vocab_discovery or start.added else None
    round_end = RoundEnd(cfg, start, observed, ledger, strategy, growth, _new_word_scores(cfg, population))
    runner = growth.around(strategy, grid) if growth else strategy  # discovery rounds before training rounds
    stop_reason = None
    try:
        result = runner.start(grid=_above_the_counts(cfg, observed), initial_arrays=ArrayRecord(start.model.get_weights()),
                              num_rounds=start.rounds_left, timeout=cfg.round_timeout, evaluate_fn=round_end,
                              train_config=ConfigRecord({ROUND_OFFSET: start.round}))
        final = result.arrays.to_numpy_ndarrays() or round_end.latest  # empty if no round released
    except (PrivacyBudgetExceeded, TooFewDevices) as e:
        stop_reason = f"{'privacy budget' if isinstance(e, PrivacyBudgetExceeded) else 'too few devices'}: {e}"
        log.warning("Stopped early: %s", stop_reason)
        final = round_end.latest
    finally:  # nothing is booked after the last round: the lineage's locks go, whatever ended the rounds
        if ledger is not None:
            ledger.close()
    finish(start.record, round_end.model_for(final), round_end.vocab_for(final), round_end.check_windows(),
           stop_reason, _assumptions(cfg, ledger, growth), growth.history if growth else [], _litert_variants(cfg))


def finish(record: RunRecord, model, vocab: Vocabulary, windows, stop_reason: str | None, assumptions: list[str],
           discoveries: list[dict] = (), variants=VARIANTS) -> dict:
    """Save the model with its vocabulary and the run record, then export for devices: a failed
    or unfit export is reported in the summary and loses nothing."""
    record.save_final(model, vocab)
    # what devices run offline, each file checked against the Keras model before it may ship
    litert = export_checked(model, vocab, record.final_dir / "litert", windows, variants)
    return record.finish(litert, stop_reason=stop_reason, privacy_assumptions=assumptions, discoveries=discoveries)


def _privacy_plan(cfg: Config, grid, start, population: int, sampled: int) -> Config:
    """A run without DP on real devices is refused (server_app/fleet.py); under DP the noise for
    dp.target-epsilon and the planned epsilon, logged (server_app/privacy_plan.py, loaded only then)."""
    require_dp_on_devices(cfg, on_real_devices(grid))
    if not cfg.dp.enabled:
        return cfg
    from server_app.privacy_plan import plan_privacy

    return plan_privacy(cfg, start, population, sampled)


def _ledger(cfg: Config, start, population: int, sampled: int):
    """The privacy ledger (server_app/privacy.py, dp-accounting) when DP or discovery is on:
    a run without either never loads the accounting. It journals itself in the run's directory, and
    in that of every run it continues, ahead of every release, so a crash before the round's
    checkpoint loses no charge whichever run of the lineage is resumed next; it locks them first,
    until `main` closes it when the rounds end (normally, at a stop or by an exception)."""
    if not (cfg.dp.enabled or cfg.vocab_discovery or start.added):
        return None
    from server_app.privacy import ledger_for
    from task.privacy.ledger import JOURNAL

    return ledger_for(cfg, population, sampled, start.resume, journal=start.record.dir / JOURNAL)


def _train_metrics(cfg: Config, record: RunRecord):
    """The run record's train-metrics aggregator; under DP checked first (equal weights, no norm bits)."""
    if not cfg.dp.enabled:
        return record.aggregate_train_metrics
    from server_app.privacy import train_metrics_aggregator

    return train_metrics_aggregator(cfg, record.aggregate_train_metrics)


def _litert_variants(cfg: Config):
    """The LiteRT files of the final model: float32 and float16, and int8 when asked (loaded only then)."""
    if not cfg.int8:
        return VARIANTS
    from features.int8.export import INT8

    return {**VARIANTS, **INT8}


def _central_dp(cfg: Config, inner, ledger, resume):
    """Central DP around the strategy when a central dp.mode asks for it (server_app/privacy.py);
    adaptive clipping and DP-FTRL (features/dp_mechanisms/) are loaded only when asked."""
    if not cfg.dp.central:
        return inner
    from server_app import privacy

    if cfg.dp.mode == "central-adaptive-clip":
        from features.dp_mechanisms.adaptive_clipping import AdaptiveClippingDP as Central
    elif cfg.dp.mode == "central-ftrl":
        from features.dp_mechanisms.ftrl import FtrlDP as Central
    elif cfg.dp.mode == "central-blt":
        from features.dp_mechanisms.blt import BltDP as Central
    else:
        Central = privacy.CentralDP
    return privacy.resumed(Central(inner, cfg, ledger, device_norm=_device_norm(cfg)), resume)


def _above_the_counts(cfg: Config, observed: ObservedGrid):
    """What the strategy talks to: SecAgg+ or the transfer encoding (each loaded only when asked),
    above the byte counts."""
    if cfg.secure_aggregation:
        from features.secagg.server import SecureGrid, assumptions

        for line in assumptions(cfg):
            log.info("Secure aggregation: %s", line)
        return SecureGrid(observed, cfg.feature("secagg"), timeout=cfg.round_timeout)
    if cfg.transfer_dtype != "float32":
        from features.transfer.server import TransferGrid

        return TransferGrid(observed, cfg.transfer_dtype)
    return observed


def _warm_start(cfg: Config):
    """warm-start.init-from: the first model's weights from a checkpoint (loaded only when asked)."""
    if not cfg.init_from:
        return None
    from features.warm_start.server import initial_weights

    return initial_weights


def _model_check(cfg: Config):
    """dp.sgd: DP-SGD refuses a model with a layer it cannot clip per example (loaded only then)."""
    if not cfg.dp.sgd:
        return None
    from features.dp_mechanisms.dpsgd import require_rules

    return require_rules


def _send_until_goal(cfg: Config):
    """participation.selection-factor > 1: a round closes at its goal's replies (loaded only then)."""
    if cfg.selection_factor == 1:
        return None
    from features.participation.round_goal import send_until_goal

    return send_until_goal


def _device_norm(cfg: Config):
    """Under SecAgg+ devices clip below dp.clipping-norm, by its rounding margin (loaded only then)."""
    if not cfg.secure_aggregation:
        return None
    from features.secagg.server import device_clipping_norm

    return lambda clipping_norm, num_values: device_clipping_norm(cfg.feature("secagg"), clipping_norm, num_values)


def _new_word_scores(cfg: Config, population: int):
    """discovery.new-word: does the model suggest the word to those who never typed it (loaded only then)."""
    if not cfg.new_word:
        return None
    from features.discovery.new_word import new_word_scores

    return lambda model, vocab: new_word_scores(cfg, model, vocab, population)


def _vocabulary_growth(cfg: Config, start, ledger):
    from features.discovery.server import VocabularyGrowth  # new-word discovery: loaded only when asked

    return VocabularyGrowth(cfg, start.vocab, ledger, start.added)


def _assumptions(cfg: Config, ledger, growth) -> list[str]:
    """What the privacy guarantee rests on, for the run summary: the ledger's, then each feature's."""
    lines = ledger.assumptions(cfg.model.seq_len) if ledger else []
    if cfg.secure_aggregation:
        from features.secagg.server import assumptions

        lines += assumptions(cfg)
    return lines + (growth.assumptions() if cfg.vocab_discovery else [])
