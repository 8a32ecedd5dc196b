"""The on-disk format of a global model: weights as .npz, next to the run's config.json.

One place for the format, so the server (which writes) and the export script (which reads)
cannot drift apart. Writes are atomic: a crash mid-write never leaves a half-written file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from task.config import Config


def save_weights(path: Path, weights: list[np.ndarray]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, *weights)
    os.replace(tmp, path)


def load_weights(path: Path) -> list[np.ndarray]:
    try:
        with np.load(path) as data:
            return [data[f"arr_{i}"] for i in range(len(data.files))]
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"{path}: not a readable checkpoint ({e})") from e


def latest_checkpoint(run_dir: Path) -> Path:
    checkpoints = sorted((Path(run_dir) / "checkpoints").glob("round-*.npz"))
    if not checkpoints:
        raise FileNotFoundError(f"{run_dir}: no checkpoints/round-*.npz")
    return checkpoints[-1]


def run_config(run_dir: Path) -> Config:
    """The validated config a run was started with (its config.json)."""
    path = Path(run_dir) / "config.json"
    try:
        return Config.from_run_config(json.loads(path.read_text()))
    except OSError as e:
        raise FileNotFoundError(f"{path}: cannot read the run's config ({e.strerror})") from e
