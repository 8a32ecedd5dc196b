"""What several test modules share: Flower messages built without a runtime, small models."""

from __future__ import annotations

import math
from pathlib import Path
import random
import time

import numpy as np
from flwr.app import Context, Message, Metadata, RecordDict

from task.config import Config, ModelConfig

# A model small enough for a 2-core CI machine, with every layer type of the default one.
SMALL_MODEL = ModelConfig(vocab_size=2000, seq_len=10, embed_dim=16, num_heads=2, ffn_dim=32)
# The same idea as run-config overrides, for end-to-end `flwr run` tests ...
SMALL_RUN = "model.vocab-size=2000 model.seq-len=12 model.embed-dim=32 model.num-heads=2 model.ffn-dim=64 model.dropout=0.0"
# ... and as a run config for whole runs in this process (tests/inprocess.py).
SMALL_RC = {"model.vocab-size": 2000, "model.seq-len": 12, "model.embed-dim": 32, "model.num-heads": 2,
            "model.ffn-dim": 64, "local-epochs": 2, "learning-rate": 0.01, "data.sentences-per-device": 100,
            "server-eval-devices": 3}
# In-process runs read pyproject.toml, which ships the int8 LiteRT file on: the tests' small runs
# export the float files only (tests/features/int8/ checks the int8 one), while int8 is in this copy.
if (Path(__file__).resolve().parents[1] / "features" / "int8").is_dir():
    SMALL_RC["int8.enabled"] = False
# What the server itself observes about training: who was asked, replied, declined, was late,
# busy or failed, and the bytes. Under DP nothing else about a device's training may be stored.
TRAIN_COUNTS = {f"train_{k}" for k in ("sampled", "replied", "failed", "not_eligible", "late", "busy", "bytes_sent",
                                        "bytes_received", "compute_seconds")}


def only_covered_train_fields(rows) -> bool:
    return all(k in TRAIN_COUNTS for r in rows for k in r if k.startswith("train_"))


def gaussian_epsilon(z: float, releases: int, delta: float) -> float:
    """epsilon of `releases` Gaussian mechanisms of multiplier z, by dp-accounting's RDP accountant."""
    import dp_accounting
    from dp_accounting import rdp

    accountant = rdp.RdpAccountant()
    accountant.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(z), releases))
    return accountant.get_epsilon(delta)


def message(content: RecordDict, message_type: str = "train", *, reply: bool = False, src: int = 1,
            dst: int = 7) -> Message:
    """A Message as a ClientApp or strategy receives it (Flower's constructor needs a runtime)."""
    md = Metadata(run_id=1, message_id=f"m{src}-{dst}", src_node_id=src, dst_node_id=dst,
                  reply_to_message_id="m0" if reply else "", group_id="1", created_at=time.time(), ttl=3600,
                  message_type=message_type)
    return Message(content=content, metadata=md)


def context(cfg: Config, node_config: dict | None = None) -> Context:
    return Context(run_id=1, node_id=7, node_config={"partition-id": 0, "num-partitions": 4} if node_config is None
                   else node_config, state=RecordDict(), run_config=cfg.to_run_config())


def l2(a, b) -> float:
    """L2 distance between two lists of arrays (an update's norm)."""
    return math.sqrt(sum(float(np.sum((x.astype(np.float64) - y) ** 2)) for x, y in zip(a, b)))


def analytic_gaussian_epsilon(z: float, delta: float) -> float:
    """Exact epsilon of one Gaussian mechanism with noise z x sensitivity (Balle & Wang 2018,
    Theorem 8): the smallest epsilon with Phi(1/2z - eps z) - e^eps Phi(-1/2z - eps z) <= delta."""
    def phi(t: float) -> float:
        return 0.5 * math.erfc(-t / math.sqrt(2))

    lo, hi = 0.0, 500.0
    for _ in range(200):
        eps = (lo + hi) / 2
        d = phi(1 / (2 * z) - eps * z) - math.exp(eps) * phi(-1 / (2 * z) - eps * z)
        lo, hi = (eps, hi) if d > delta else (lo, eps)
    return hi


def seed_every_global_generator(seed=0):
    """What an attacker who knows the run config (or another library) can do."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)  # Python's random, NumPy's global generator and TF's
    np.random.seed(seed)
    random.seed(seed)


def trained_default_model():
    """The default model trained briefly on four builtin devices (so its ranking is not random),
    with ~3,000 positions of eight users it never saw: (model, vocabulary, their windows)."""
    from task.data.device_text import load_device_text, make_windows
    from task.data.vocab import default_vocabulary
    from task.model import build_model
    from task.train import train

    cfg = Config(sentences_per_device=150)
    vocab = default_vocabulary(cfg.model.vocab_size)
    texts = [load_device_text(cfg, partition_id=i, num_partitions=4) for i in range(4)]
    x, y = make_windows([s for t in texts for s in t.train], vocab, cfg.model.seq_len)
    model = build_model(cfg.model)
    train(model, x, y, epochs=3, batch_size=32, learning_rate=0.01)
    unseen = [load_device_text(cfg, partition_id=i, num_partitions=12) for i in range(4, 12)]
    test_x, _ = make_windows([s for t in unseen for s in t.train + t.test], vocab, cfg.model.seq_len)
    return model, vocab, test_x
