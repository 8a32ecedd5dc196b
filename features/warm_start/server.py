"""Starting a new run from a model trained elsewhere (`warm-start.init-from`): a checkpoint written by
scripts/tools/pretrain.py on public proxy text, or any run's checkpoint.

Unlike a resume, nothing else carries over: the new run counts its rounds from 0, has its own
privacy ledger, and its history starts empty. The proxy text is not the devices' text, so it is
outside the federation's privacy guarantee: use text you may use centrally (public, licensed or
consented), never text gathered from the users.

Under DP (or with vocabulary discovery, which has an epsilon too) only a checkpoint that
scripts/tools/pretrain.py marked as trained on proxy text is accepted: a new run's epsilon starts at 0,
so a model an earlier federated run trained on the same fleet would carry that run's exposure of
the devices unaccounted. Such a run is continued with resume-from, whose ledger carries on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from server_app.resume import check_fits
from task.config import Config, ConfigError
from task.run.checkpoint import CheckpointError, latest_valid_checkpoint, load_checkpoint


def initial_weights(cfg: Config, fingerprint: dict) -> tuple[list[np.ndarray], str]:
    """The weights to start from, and a line for the log saying where they come from."""
    path = Path(cfg.init_from).expanduser()
    try:
        if path.is_dir():
            checkpoint, _ = latest_valid_checkpoint(path)
        elif path.is_file():
            checkpoint = load_checkpoint(path)
        else:
            raise ConfigError(f"run-config key 'warm-start.init-from' = {cfg.init_from!r}: no such checkpoint file or run directory")
    except CheckpointError as e:
        raise ConfigError(f"run-config key 'warm-start.init-from': cannot start from it: {e}") from e
    check_fits(checkpoint.state, fingerprint, "warm-start.init-from", f"checkpoint {path}")
    if checkpoint.state.get("vocab_added"):  # its model has rows this run's vocabulary lacks
        raise ConfigError(f"run-config key 'warm-start.init-from': checkpoint {path} holds {len(checkpoint.state['vocab_added'])} "
                          "discovered word(s) beyond the base vocabulary; continue that run with resume-from instead")
    pretrained = checkpoint.state.get("pretrained")
    if not pretrained and (cfg.dp.enabled or cfg.vocab_discovery):
        raise ConfigError(
            f"run-config key 'warm-start.init-from': checkpoint {path} is round {checkpoint.round} of a federated run, not a "
            "model pretrained on proxy text (scripts/tools/pretrain.py marks those); under DP a new run's epsilon starts "
            "at 0, so what that run learned from the devices would go unaccounted. Continue it with resume-from "
            "(its privacy ledger carries on), or start from a pretrained checkpoint")
    origin = (f"pretrained on {pretrained['proxy']} ({pretrained['windows']} windows, {pretrained['epochs']} epochs)"
              if pretrained else f"round {checkpoint.round} of {path}")
    return checkpoint.weights, f"Starting from the model in {path}: {origin}"
