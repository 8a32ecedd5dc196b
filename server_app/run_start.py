"""Where a run begins: its vocabulary, the checkpoint it resumes (if any), its record on disk and
the first global model (fresh, warm-started or resumed)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from server_app.resume import ResumePoint, load_resume_point
from server_app.run_record import RunRecord
from task.config import Config
from task.data.vocab import Vocabulary, default_vocabulary
from task.model import build_model
from task.run.checkpoint import CheckpointError, latest_valid_checkpoint, load_checkpoint, model_fingerprint

log = logging.getLogger("flwr")


@dataclass(frozen=True)
class RunStart:
    vocab: Vocabulary  # the base vocabulary (model.vocab-size words)
    added: list[str]  # words earlier discoveries appended (a resumed run keeps them)
    fingerprint: dict  # model shape and vocabulary: what a checkpoint must match
    resume: ResumePoint | None
    record: RunRecord
    model: object  # the Keras model holding the first global weights
    rounds_left: int  # Flower counts this run's rounds from 1 again after a resume

    @property
    def round(self) -> int:
        """Rounds already done (by the run this one resumes)."""
        return self.resume.round if self.resume else 0


def run_start(cfg: Config, run_id: int, initial_weights: Callable | None = None,
              check_model: Callable | None = None) -> RunStart:
    """`initial_weights(cfg, fingerprint) -> (weights, where from)`: a warm start's first model
    (features/warm_start/); `check_model(model)`: a mechanism's refusal of a model it cannot
    support, before any device trains or any epsilon is booked (DP-SGD's). server_app/app.py
    chooses both."""
    vocab = default_vocabulary(cfg.model.vocab_size)
    fingerprint = model_fingerprint(cfg, vocab.words)
    resume = load_resume_point(_as_started(cfg), fingerprint) if cfg.resume_from else None
    added = resume.checkpoint.state.get("vocab_added", []) if resume else []
    record = RunRecord(cfg.output_root / f"run-{run_id}", cfg, vocab.extended(added), resume.rows if resume else None)
    log.info("Writing this run's model, checkpoints and metrics to %s", record.dir)
    # reproducible; no privacy randomness comes from `seed`
    model = build_model(replace(cfg.model, vocab_size=len(vocab) + len(added)), seed=cfg.seed)
    if check_model:
        check_model(model)
    if initial_weights:
        weights, origin = initial_weights(cfg, fingerprint)
        model.set_weights(weights)
        log.info("%s", origin)
    if resume:
        model.set_weights(resume.checkpoint.weights)
        log.info("Resuming from round %d of %s%s", resume.round, resume.source, "".join(f"; {n}" for n in resume.notes))
    rounds_left = cfg.num_server_rounds - (resume.round if resume else 0)
    return RunStart(vocab, added, fingerprint, resume, record, model, rounds_left)



def _as_started(cfg: Config) -> Config:
    """A resume under dp.target-epsilon keeps the noise multiplier its run started with (planned
    then: server_app/privacy_plan.py): the checkpoint's DP settings are compared with it in place of
    the run config's. Other settings, the target included, must still match."""
    if cfg.dp.target_epsilon <= 0:
        return cfg
    path = Path(cfg.resume_from).expanduser()
    try:
        checkpoint = latest_valid_checkpoint(path)[0] if path.is_dir() else load_checkpoint(path)
    except CheckpointError:
        return cfg  # load_resume_point says what is wrong with it
    saved = checkpoint.state.get("dp") or {}
    if saved.get("target_epsilon") != cfg.dp.target_epsilon or "noise_multiplier" not in saved:
        return cfg
    return cfg.replace(dp=replace(cfg.dp, noise_multiplier=saved["noise_multiplier"]))
