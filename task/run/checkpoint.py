"""The on-disk format of a global model and the run state needed to resume it.

`checkpoints/round-NNN.npz` holds the weights (arr_0, arr_1, ...) and `state`, a JSON document:
the round, the model's shape, the vocabulary's fingerprint, the DP settings, the strategy's state
(e.g. the adaptive clipping norm) and the privacy ledger. One place for the format, so the server
(which writes) and the resume and export code (which read) cannot drift apart.

Writes are atomic (temporary file, fsync, rename): a crash mid-write never leaves a corrupt
latest checkpoint. A file damaged later is still detected on reading (the zip structure, and a
SHA-256 of the weights kept in the state: NumPy does not check zip CRCs), and
`latest_valid_checkpoint` falls back to the previous one, saying so.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from task.config import Config
from task.run.files import atomic_write

_NAME = re.compile(r"round-(\d{3,})\.npz$")


class CheckpointError(ValueError):
    """A checkpoint is missing, damaged, or does not fit the run that wants it."""


@dataclass
class Checkpoint:
    round: int
    weights: list[np.ndarray]
    state: dict = field(default_factory=dict)  # JSON-serialisable run state (see module docstring)


def checkpoint_path(run_dir: Path, server_round: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"round-{server_round:03d}.npz"


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    state = {**checkpoint.state, "round": checkpoint.round, "num_arrays": len(checkpoint.weights),
             "weights_sha256": _digest(checkpoint.weights)}
    encoded = np.frombuffer(json.dumps(state).encode(), dtype=np.uint8)
    with atomic_write(path, "wb") as f:
        np.savez(f, *checkpoint.weights, state=encoded)


def load_checkpoint(path: Path) -> Checkpoint:
    path = Path(path)
    try:
        with np.load(path) as data:
            state = json.loads(bytes(data["state"]).decode()) if "state" in data.files else {}
            count = state.get("num_arrays", sum(1 for f in data.files if f.startswith("arr_")))
            weights = [data[f"arr_{i}"] for i in range(count)]
    except FileNotFoundError as e:
        raise CheckpointError(f"{path}: no such checkpoint") from e
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: damaged or truncated checkpoint ({type(e).__name__}: {e})") from e
    if "weights_sha256" in state and state["weights_sha256"] != _digest(weights):
        raise CheckpointError(f"{path}: damaged or truncated checkpoint (the weights do not match their checksum)")
    match = _NAME.search(path.name)
    server_round = int(state.get("round", match.group(1) if match else 0))
    return Checkpoint(round=server_round, weights=weights, state=state)


def _digest(weights: list[np.ndarray]) -> str:
    h = hashlib.sha256()
    for w in weights:
        h.update(str((w.dtype.str, w.shape)).encode())
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


def load_weights(path: Path) -> list[np.ndarray]:
    return load_checkpoint(path).weights


def checkpoints(run_dir: Path) -> list[Path]:
    """The run's checkpoint files, oldest round first."""
    found = [p for p in (Path(run_dir) / "checkpoints").glob("round-*.npz") if _NAME.search(p.name)]
    return sorted(found, key=lambda p: int(_NAME.search(p.name).group(1)))


def latest_checkpoint(run_dir: Path) -> Path:
    found = checkpoints(run_dir)
    if not found:
        raise FileNotFoundError(f"{run_dir}: no checkpoints/round-*.npz")
    return found[-1]


def latest_valid_checkpoint(run_dir: Path) -> tuple[Checkpoint, list[str]]:
    """The newest checkpoint that loads, and a note for each newer one that did not."""
    notes: list[str] = []
    for path in reversed(checkpoints(run_dir)):
        try:
            return load_checkpoint(path), notes
        except CheckpointError as e:
            notes.append(f"skipped {e}")
    raise CheckpointError(
        f"{run_dir}: no usable checkpoint in checkpoints/" + (f" ({'; '.join(notes)})" if notes else "")
    )


def prune(run_dir: Path, keep: int) -> None:
    """Keep the newest `keep` checkpoints (0 = keep all)."""
    if keep > 0:
        for path in checkpoints(run_dir)[:-keep]:
            path.unlink(missing_ok=True)


def run_config(run_dir: Path) -> Config:
    """The validated config a run was started with (its config.json)."""
    path = Path(run_dir) / "config.json"
    try:
        return Config.from_run_config(json.loads(path.read_text()))
    except OSError as e:
        raise FileNotFoundError(f"{path}: cannot read the run's config ({e.strerror})") from e


def model_fingerprint(cfg: Config, vocab_words: list[str]) -> dict:
    """What must match for a checkpoint's weights to mean the same thing in another run."""
    return {
        "model": dataclasses.asdict(cfg.model),
        "vocab_sha256": hashlib.sha256("\n".join(vocab_words).encode()).hexdigest(),
    }
