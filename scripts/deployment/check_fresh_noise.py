"""Check, on this machine's installed code, that DP noise and sampling are fresh and as claimed.

    .venv/bin/python scripts/deployment/check_fresh_noise.py

Runs each secret random source of the template exactly as a run does, twice, after seeding
Python's, NumPy's and TensorFlow's global generators with the same seed both times: what anyone
who knows the run config could do. The noise: the device's local-DP mod, the server's central-DP
aggregation, DP-FTRL's tree noise, adaptive clipping's noised count, one DP-SGD step. The
sampling: the devices the server asks to train under DP, the windows each DP-SGD step takes
(Poisson), the devices TrieHH asks per level. Each passes if the two draws differ and, where a
figure is claimed, the measured one is within 5% of it (the noise's std; a Poisson sampler's rate).
Exit status 0 = all pass. Run it on a device (its venv) and on the server.

`main(only)` checks only the sources named (tests use it).
"""

from __future__ import annotations

import importlib.util
import math
import random
import sys
import time
from collections.abc import Callable, Iterable
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

# A draw: (the values drawn, the claimed std or rate, or None where nothing is claimed: a sample
# of fixed size has no rate to measure).
Draw = Callable[[], tuple[np.ndarray, float | None]]
STD, RATE = np.std, np.mean  # what is measured of a draw: the noise's std; a 0/1 sample's rate


def seed_globals(seed: int = 0) -> None:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _message(content: RecordDict, reply: bool = False) -> Message:
    return Message(content=content, metadata=Metadata(
        run_id=1, message_id="m", src_node_id=1, dst_node_id=2, reply_to_message_id="r" if reply else "",
        group_id="1", created_at=time.time(), ttl=60, message_type="train"))


class _Nodes:
    """The server's view of the connected devices (node ids 1..n), recording what it is asked."""

    def __init__(self, n: int):
        self.nodes, self.asked = list(range(1, n + 1)), []

    def get_node_ids(self):
        return self.nodes

    def create_message(self, content, message_type, dst_node_id, group_id):
        self.asked.append(dst_node_id)
        return dst_node_id

    def send_and_receive(self, messages, timeout=None):
        return []  # nobody votes: a discovery stops after its first level


# --- noise ---------------------------------------------------------------------------------------
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


def _release(central_class, mode: str) -> tuple[np.ndarray, float]:
    """A central-DP class's first release with no replies: the noise alone, / 4 sampled."""
    cfg = Config(dp=DPConfig(mode=mode, noise_multiplier=1.0, clipping_norm=1.0))
    ledger = PrivacyLedger(cfg.dp, 4, 4)
    strategy = central_class(FedAvg(weighted_by_key=DP_WEIGHT), cfg, ledger)
    strategy._current = ArrayRecord([np.zeros(D, np.float32)])  # noqa: SLF001 (what configure_train keeps)
    ledger.devices_for_next_round([1, 2, 3, 4])  # what configure_train asks first (DP-FTRL: a tree begins)
    arrays, _ = strategy.aggregate_train(1, [])
    return arrays.to_numpy_ndarrays()[0], 1.0 * 1.0 / 4


def central_dp() -> tuple[np.ndarray, float]:
    return _release(CentralDP, "central-client-clip")


def tree_noise() -> tuple[np.ndarray, float]:
    """DP-FTRL's first round: one node of the tree, drawn by FtrlDP as a run does."""
    from features.dp_mechanisms.ftrl import FtrlDP

    return _release(FtrlDP, "central-ftrl")


def adaptive_count(draws: int = 20_000) -> tuple[np.ndarray, float]:
    """Adaptive clipping's noised count of unclipped updates, read back from the clipping norm it
    moves: C <- C exp(-lr (b - target)), b = (noised centred count) / sampled + 1/2. No replies:
    the count is the noise alone."""
    from features.dp_mechanisms.adaptive_clipping import AdaptiveClippingDP

    cfg = Config(dp=DPConfig(mode="central-adaptive-clip", noise_multiplier=1.0, clipped_count_stddev=1.0))
    strategy = AdaptiveClippingDP(FedAvg(weighted_by_key=DP_WEIGHT), cfg, PrivacyLedger(cfg.dp, 4, 4))
    noise = np.empty(draws)
    for i in range(draws):
        strategy.clipping_norm = 1.0
        strategy.after_release([])
        fraction = cfg.dp.target_quantile - math.log(strategy.clipping_norm) / cfg.dp.clip_lr
        noise[i] = (fraction - 0.5) * strategy.sampled
    return noise, strategy.count_stddev


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


# --- sampling ------------------------------------------------------------------------------------
def device_sample(devices: int = 100, per_round: int = 10, rounds: int = 10) -> tuple[np.ndarray, None]:
    """The devices the server asks to train under DP, `rounds` rounds of `per_round` of `devices`
    (server_app/strategy.py). A sample of fixed size: nothing to measure but its freshness."""
    from server_app.strategy import build_strategy

    cfg = Config(dp=DPConfig(mode="central-client-clip"), min_train_nodes=per_round, min_available_nodes=per_round,
                 fraction_train=per_round / devices)
    strategy = build_strategy(cfg, PrivacyLedger(cfg.dp, population=devices, sampled=per_round))
    strategy._construct_messages = lambda record, node_ids, message_type: node_ids  # noqa: SLF001 (no runtime)
    grid = _Nodes(devices)
    arrays = ArrayRecord([np.zeros(3, np.float32)])
    return np.array([strategy.configure_train(r, arrays, ConfigRecord(), grid) for r in range(1, rounds + 1)]), None


def poisson_windows(windows: int = 1000, steps: int = 100, q: float = 0.1) -> tuple[np.ndarray, float]:
    """Which windows each DP-SGD step takes (train_dpsgd's Poisson sampling, each with probability
    q), read from the batches it hands its step; the step itself is replaced by one that records."""
    import tensorflow as tf

    from features.dp_mechanisms import dpsgd

    taken = np.zeros((steps, windows), bool)
    calls = []

    def recording_step(*args, **kwargs):
        def step(x, y):
            taken[len(calls), x.numpy()[:, 0]] = True
            calls.append(1)
            return 0.0, int(tf.size(x[:, 0])), 0
        return step

    x = np.repeat(np.arange(windows)[:, None], 8, axis=1)
    real_step, dpsgd.make_step = dpsgd.make_step, recording_step
    try:
        dpsgd.train_dpsgd(None, x, x, sampling_rate=q, steps=steps, learning_rate=0.1, clipping_norm=1.0,
                          noise_multiplier=1.0, batch_size=int(q * windows), score=False)
    finally:
        dpsgd.make_step = real_step
    return taken.ravel().astype(float), q


def triehh_devices(devices: int = 5000, discoveries: int = 50) -> tuple[np.ndarray, float]:
    """The devices TrieHH asks at a level, each with probability gamma (features/discovery/server.py),
    over `discoveries` one-level discoveries of `devices` connected devices."""
    from features.discovery.server import VocabularyGrowth
    from task.data.vocab import default_vocabulary

    cfg = Config(vocab_discovery=True)
    growth = VocabularyGrowth(cfg, default_vocabulary(2000), PrivacyLedger(cfg.dp, population=devices, sampled=10))
    asked = np.zeros((discoveries, devices), bool)
    for i in range(discoveries):
        grid = _Nodes(devices)
        growth.discover(grid, 1)
        asked[i, np.array(grid.asked, int) - 1] = True
    return asked.ravel().astype(float), growth.plan.gamma


# --- the check -----------------------------------------------------------------------------------
# (name, draw, what is measured of it)
CORE = [("central DP (server)", central_dp, STD), ("device sampling under DP (server)", device_sample, None)]
FEATURES = {  # feature folder -> its sources, checked while the folder is in the tree
    "dp_mechanisms": [("DP-FTRL tree noise (server)", tree_noise, STD),
                      ("adaptive clipping count (server)", adaptive_count, STD),
                      ("local DP (device)", local_dp, STD), ("DP-SGD step (device)", dpsgd_step, STD),
                      ("DP-SGD Poisson windows (device)", poisson_windows, RATE)],
    "discovery": [("TrieHH device sampling (server)", triehh_devices, RATE)],
}


def mechanisms() -> list[tuple[str, Draw, Callable | None]]:
    """Every source in this tree, and a line for each feature folder that is not."""
    found = list(CORE)
    for folder, sources in FEATURES.items():
        if importlib.util.find_spec("features") and importlib.util.find_spec(f"features.{folder}"):
            found += sources
        else:
            print(f"| {', '.join(n for n, _, _ in sources)} | not checked: features/{folder}/ is not in this tree | |")
    return found


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.allclose(a, b)


def main(only: Iterable[str] | None = None) -> int:
    ok = True
    print("| source | fresh (two draws differ) | measured / claimed (noise: std; Poisson sampling: rate) |")
    print("|---|---|---|")
    for name, draw, measure in mechanisms():
        if only is not None and name not in only:
            continue
        seed_globals()
        first, claimed = draw()
        seed_globals()
        second, _ = draw()
        fresh = not _same(first, second)
        ratio = None if measure is None else float(measure(first)) / claimed
        ok &= fresh and (ratio is None or abs(ratio - 1) < 0.05)
        print(f"| {name} | {'yes' if fresh else 'NO: the draws repeat'} | "
              f"{'- (a sample of fixed size)' if ratio is None else f'{ratio:.4f}'} |")
    print("all noise and sampling fresh and as claimed" if ok else "FAILED: see the table")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
