"""Resuming a run from a checkpoint: where it starts, and what must match for it to be the same run.

The weights, the strategy's state and the privacy ledger come from the checkpoint (the ledger from
the write-ahead journal furthest ahead in the old run's lineage when one is ahead of the checkpoint:
the directories the checkpoint records, the original's too when the checkpoint or its run directory
is a copy, and the source where it is now; server_app/privacy.py), so the new run continues the old
one's model and its epsilon keeps growing from where it was, a crashed round's charges included, and
those of any other run that continued the old one (or its ancestors) before, even one that died
before its first checkpoint. The new run copies the old one's history up to the checkpoint's round;
of the old run's directory it writes only the privacy journal (the lineage's charges) and the lock
it holds until it ends.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from task.config import Config, ConfigError
from task.run.checkpoint import Checkpoint, CheckpointError, latest_valid_checkpoint, load_checkpoint


@dataclass
class ResumePoint:
    checkpoint: Checkpoint
    source: Path
    rows: list[dict]  # the old run's metrics rows up to the checkpoint's round
    notes: list[str] = field(default_factory=list)

    @property
    def round(self) -> int:
        return self.checkpoint.round


def dp_settings(cfg: Config) -> dict:
    """DP settings a resume must keep: the ledger's past releases were made under them. Only the
    budget may change."""
    return {k: v for k, v in dataclasses.asdict(cfg.dp).items() if k != "max_epsilon"}


def check_fits(state: dict, fingerprint: dict, key: str, where: str) -> None:
    """The checkpoint's weights mean the same in this run: same model shape, same vocabulary."""
    if "fingerprint" not in state:
        raise ConfigError(f"run-config key '{key}': the {where} holds no model fingerprint (an older format)")
    # checkpoints from before the `model.architecture` key hold the Transformer
    old_model = {"architecture": "transformer", **state["fingerprint"]["model"]}
    new_model = fingerprint["model"]
    if old_model != new_model:
        diff = {k: (old_model.get(k), v) for k, v in new_model.items() if old_model.get(k) != v}
        raise ConfigError(
            f"run-config key '{key}': the {where} is for a different model shape; (checkpoint, this run): {diff}"
        )
    if state["fingerprint"]["vocab_sha256"] != fingerprint["vocab_sha256"]:
        raise ConfigError(f"run-config key '{key}': the {where} was trained with a different vocabulary")


def load_resume_point(cfg: Config, fingerprint: dict) -> ResumePoint:
    if cfg.server_keeps_state:
        raise ConfigError(f"run-config key 'resume-from': cannot resume with server-optimizer="
                          f"{cfg.server_optimizer!r}: its momentum / moment estimates are not checkpointed")
    path = Path(cfg.resume_from).expanduser()
    notes: list[str] = []
    try:
        if path.is_dir():
            checkpoint, notes = latest_valid_checkpoint(path)
            run_dir = path
        elif path.is_file():
            checkpoint, run_dir = load_checkpoint(path), path.parent.parent
        else:
            raise ConfigError(
                f"run-config key 'resume-from' = {cfg.resume_from!r}: no such run directory or checkpoint file"
            )
    except CheckpointError as e:
        raise ConfigError(f"run-config key 'resume-from': cannot resume: {e}") from e
    state = checkpoint.state
    where = f"checkpoint of round {checkpoint.round} in {run_dir}"
    check_fits(state, fingerprint, "resume-from", where)
    added = state.get("vocab_added", [])
    if "vocab_added" in state and len(checkpoint.weights[0]) != cfg.model.vocab_size + len(added):
        raise ConfigError(f"run-config key 'resume-from': the {where} has {len(checkpoint.weights[0])} word rows, but its "
                          f"vocabulary is model.vocab-size = {cfg.model.vocab_size} words + {len(added)} discovered")
    if state.get("dp") != dp_settings(cfg):
        old = state.get("dp") or {}
        diff = {k: (old.get(k), v) for k, v in dp_settings(cfg).items() if old.get(k) != v}
        raise ConfigError(
            f"run-config key 'resume-from': the {where} was made with other DP settings, so its privacy "
            f"ledger would not apply; (checkpoint, this run): {diff}"
        )
    if checkpoint.round >= cfg.num_server_rounds:
        raise ConfigError(
            f"run-config key 'num-server-rounds' = {cfg.num_server_rounds}: the {where} has already "
            f"done {checkpoint.round} rounds; num-server-rounds counts all rounds, resumed ones included"
        )
    try:
        rows = [r for r in json.loads((run_dir / "metrics.json").read_text()) if r["round"] <= checkpoint.round]
    except (OSError, ValueError, KeyError, TypeError) as e:
        rows = []
        notes.append(
            f"the old run's metrics.json could not be read ({e}); the history starts at round {checkpoint.round}"
        )
    return ResumePoint(checkpoint, run_dir, rows, notes)
