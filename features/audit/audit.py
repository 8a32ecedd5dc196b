"""Audit one finished run: the exposure of the canaries its devices held, and how well a loss-based
attacker tells members from non-members, at the user level (devices that trained vs personas
that never did) and at the sample level (windows trained on vs the same devices' held-out ones).

Reads only what the run left on disk (config.json, the newest checkpoint): it audits exactly the
model the run produced.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

import task  # noqa: F401  (selects tf-keras before TensorFlow resolves tf.keras)
from features.audit import canary, membership
from task.config import Config
from task.data import personas
from task.data.device_text import load_device_text, make_windows
from task.data.text import split_sentences
from task.data.vocab import PAD_ID, UNK_ID, Vocabulary, default_vocabulary
from task.model import build_model
from task.run.checkpoint import latest_valid_checkpoint, run_config

NONMEMBER_OFFSET = 2_000_000  # persona ids outside the federation and the server's own evaluation


def window_losses(model: tf.keras.Model, x: np.ndarray, y: np.ndarray,
                  batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """The negative log-likelihood of each target, [windows, seq_len], and where it counts (the
    training loss's mask: not padding, not unknown words)."""
    out = []
    for start in range(0, len(x), batch_size):
        logits = model(tf.constant(x[start:start + batch_size]), training=False)
        out.append(tf.keras.losses.sparse_categorical_crossentropy(y[start:start + batch_size], logits,
                                                                   from_logits=True).numpy())
    nll = np.concatenate(out) if out else np.zeros(x.shape, np.float32)
    return nll, (y != PAD_ID) & (y != UNK_ID)


def secret_log_perplexities(model: tf.keras.Model, vocab: Vocabulary, secrets: list[tuple[str, ...]],
                            seq_len: int) -> np.ndarray:
    """-log P(secret | "my pin is") in nats, for every secret: the canary's log-perplexity up to the
    prefix, which every candidate shares."""
    x, y = make_windows([[*canary.PREFIX, *s] for s in secrets], vocab, seq_len)
    first = len(canary.PREFIX)  # y[j] is the word after position j: the secret is y[3:7]
    return window_losses(model, x, y)[0][:, first:first + canary.LENGTH].sum(axis=1)


def audit_run(run_dir: Path, nonmembers: int = 40) -> dict:
    cfg = run_config(run_dir)
    checkpoint, _ = latest_valid_checkpoint(run_dir)
    model = build_model(cfg.model)
    model.set_weights(checkpoint.weights)
    vocab = default_vocabulary(cfg.model.vocab_size)
    devices = cfg_devices(run_dir)
    result = {"run_dir": str(run_dir), "round": checkpoint.round, "canaries": exposures(model, vocab, cfg)}

    members, held_in, held_out = [], [], []
    for pid in range(devices):
        text = load_device_text(cfg, partition_id=pid, num_partitions=devices)
        text = canary.with_canaries(cfg, text, pid) if cfg.audit_canaries else text  # as the ClientApp reads it
        members.append(_mean_loss(model, vocab, text.train, cfg))
        held_in.append(_per_window(model, vocab, text.train, cfg))
        held_out.append(_per_window(model, vocab, text.test, cfg))
    outsiders = [_mean_loss(model, vocab, [s for line in personas.device_sentences(
        NONMEMBER_OFFSET + i, int(cfg.sentences_per_device * (1 - cfg.test_fraction)), cfg.seed)
        for s in split_sentences(line)], cfg) for i in range(nonmembers)]
    result["user_level"] = membership.attack(members, outsiders)
    result["sample_level"] = membership.attack(np.concatenate(held_in), np.concatenate(held_out))
    return result


def exposures(model: tf.keras.Model, vocab: Vocabulary, cfg: Config) -> list[dict]:
    planted, reference = canary.planted(cfg.audit_canaries, cfg.seed)
    pool = canary.candidates()
    scores = dict(zip(pool, secret_log_perplexities(model, vocab, pool, cfg.model.seq_len)))
    inserted = {c.secret for c in planted}
    others = np.array([v for s, v in scores.items() if s not in inserted])  # never inserted, the reference too
    rows = []
    for c in planted:
        rank = canary.rank_of(scores[c.secret], others)
        rows.append({"devices": len(c.devices), "repeats": c.repeats, "rank": rank,
                     "exposure": canary.exposure(rank, len(others) + 1)})
    rank = canary.rank_of(scores[reference], others[others != scores[reference]])
    rows.append({"devices": 0, "repeats": 0, "rank": rank, "exposure": canary.exposure(rank, len(others))})
    return rows


def cfg_devices(run_dir: Path) -> int:
    """The simulated population: the run's devices were sampled from partitions 0..N-1."""
    import json

    rows = json.loads((run_dir / "metrics.json").read_text())
    return max(r.get("train_sampled", 0) for r in rows)


def _mean_loss(model, vocab, sentences, cfg: Config) -> float:
    """A device's loss over all its words, as the training loss counts them."""
    nll, mask = window_losses(model, *make_windows(sentences, vocab, cfg.model.seq_len))
    return float((nll * mask).sum() / max(mask.sum(), 1))


def _per_window(model, vocab, sentences, cfg: Config) -> np.ndarray:
    nll, mask = window_losses(model, *make_windows(sentences, vocab, cfg.model.seq_len))
    return (nll * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1)
