"""Check, on this machine's installed code, that DP noise is fresh and as large as claimed.

    .venv/bin/python scripts/deployment/check_fresh_noise.py

Runs each noise source of the template exactly as a run does (the device's local-DP mod, the
server's central-DP aggregation, one DP-SGD step), twice, after seeding Python's, NumPy's and
TensorFlow's global generators with the same seed both times: what anyone who knows the run
config could do. Each mechanism passes if the two draws differ and the measured std is within 5%
of the claimed one. Exit status 0 = all pass. Run it on a device (its venv) and on the server.
"""

from __future__ import annotations

import importlib.util
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, Metadata, MetricRecord, RecordDict  # noqa: E402
from flwr.serverapp.strategy import FedAvg  # noqa: E402

from server_app.privacy import CentralDP  # noqa: E402
from task.config import Config, DPConfig, ModelConfig  # noqa: E402
from task.privacy import DP_WEIGHT  # noqa: E402
from task.privacy.ledger import PrivacyLedger  # noqa: E402
from task.privacy.mechanisms import local_noise_multiplier  # noqa: E402

D = 100_000  # weights per draw: the std is then measured to about 0.5%


def seed_globals(seed: int = 0) -> None:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _message(content: RecordDict, reply: bool = False) -> Message:
    return Message(content=content, metadata=Metadata(
        run_id=1, message_id="m", src_node_id=1, dst_node_id=2, reply_to_message_id="r" if reply else "",
        group_id="1", created_at=time.time(), ttl=60, message_type="train"))


def local_dp() -> tuple[np.ndarray, float]:
    dp = DPConfig(mode="local", clipping_norm=1.0, local_epsilon=8.0)

    def trained(msg, ctx):
        return Message(RecordDict({"arrays": ArrayRecord([np.zeros(D, np.float32)]),
                                   "metrics": MetricRecord({DP_WEIGHT: 1})}), reply_to=msg)

    content = RecordDict({"arrays": ArrayRecord([np.zeros(D, np.float32)]), "config": ConfigRecord({})})
    ctx = Context(run_id=1, node_id=2, node_config={}, state=RecordDict(), run_config={})
    from features.dp_mechanisms.local_dp import LocalDp

    reply = LocalDp.for_config(dp)(_message(content), ctx, trained)
    return reply.content["arrays"].to_numpy_ndarrays()[0], 2 * local_noise_multiplier(8.0, dp.delta)


def central_dp() -> tuple[np.ndarray, float]:
    cfg = Config(dp=DPConfig(mode="central-client-clip", noise_multiplier=1.0, clipping_norm=1.0))
    strategy = CentralDP(FedAvg(weighted_by_key=DP_WEIGHT), cfg, PrivacyLedger(cfg.dp, 4, 4))
    strategy._current = ArrayRecord([np.zeros(D, np.float32)])  # noqa: SLF001 (what configure_train keeps)
    arrays, _ = strategy.aggregate_train(1, [])  # no replies: the release is the noise alone
    return arrays.to_numpy_ndarrays()[0], 1.0 * 1.0 / 4


def dpsgd_step() -> tuple[np.ndarray, float]:
    import tensorflow as tf

    from features.dp_mechanisms.dpsgd import make_step
    from task.model import build_model

    model = build_model(ModelConfig(vocab_size=2000, seq_len=8, embed_dim=32, num_heads=2, ffn_dim=32))
    before = [v.numpy().copy() for v in model.trainable_variables]
    step = make_step(model, tf.keras.optimizers.SGD(1.0), clipping_norm=1.0, noise_multiplier=1.0, denominator=8.0)
    empty = tf.zeros([0, 8], tf.int32)
    step(empty, empty)
    moved = np.concatenate([(b - v.numpy()).ravel() for b, v in zip(before, model.trainable_variables)])
    return moved, 1.0 * 1.0 / 8.0


def main() -> int:
    ok = True
    print("| mechanism | fresh (two draws differ) | measured std / claimed |")
    print("|---|---|---|")
    mechanisms = [("central DP (server)", central_dp)]
    if importlib.util.find_spec("features") and importlib.util.find_spec("features.dp_mechanisms"):
        mechanisms += [("local DP (device)", local_dp), ("DP-SGD step (device)", dpsgd_step)]
    else:
        print("| local DP and DP-SGD (device) | not checked: features/dp_mechanisms/ is not in this tree | |")
    for name, draw in mechanisms:
        seed_globals()
        first, claimed = draw()
        seed_globals()
        second, _ = draw()
        fresh = not np.allclose(first, second)
        ratio = float(np.std(first)) / claimed
        ok &= fresh and abs(ratio - 1) < 0.05
        print(f"| {name} | {'yes' if fresh else 'NO: the noise repeats'} | {ratio:.4f} |")
    print("all noise fresh and as claimed" if ok else "FAILED: see the table")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
