"""Check, on this machine's installed code, that DP noise and sampling are fresh, as claimed, and
drawn from enough OS entropy and nothing else.

    .venv/bin/python scripts/deployment/check_fresh_noise.py

Runs each secret random source of the template exactly as a run does. The noise: the device's
local-DP mod, the server's central-DP aggregation, DP-FTRL's tree noise, adaptive clipping's
noised count, one DP-SGD step. The sampling and choices: the devices the server asks to train
under DP, the windows each DP-SGD step takes (Poisson), the devices TrieHH asks per level, the
device's TrieHH vote (which of its words it votes for), the words kept when discovery.max-words
binds, and SecAgg+'s masks (a device's private mask, its pairwise mask, its masked update). Each
source must pass three checks:

1. Fresh: two draws, after seeding Python's, NumPy's and TensorFlow's global generators with the
   same seed both times (what anyone who knows the run config could do), differ (every part of a
   draw, e.g. each SecAgg+ mask on its own).
2. As claimed: where a figure is claimed, the measured one is within 5% of it (the noise's std; a
   Poisson sampler's rate).
3. From OS entropy, enough of it, and nothing else. The OS's entropy is replaced by a fixed stream
   while the source draws: `os.urandom` and `random._urandom`, through which `secrets.randbits`,
   `secrets.token_bytes`, `random.SystemRandom` and NumPy's unseeded SeedSequence all read; for
   SecAgg+ also Flower's key-pair generator, whose keys then come from that stream. Then
   (a) two draws with the same stream must be identical: the source takes its randomness from these
   reads and nothing else (no clock, no generator seeded otherwise, no TensorFlow non-deterministic
   state, no other reads of the OS); (b) every read must be at least 128 bits for a generator's seed
   (secret_rng, secret_tf_generator, SecAgg+'s seeds and keys), or, for the server's sample drawn
   from random.SystemRandom directly, there must be a read per device picked; (c) flipping the first
   or the last byte of the first and of the last read must change the draw, both or neither (a read
   the draw does not use, e.g. a SecAgg+ IV): a seed cut to fewer bits after it was read fails.
   SecAgg+ also: two seeds that Flower's own mask generator folds to the same 32 bits must give
   different masks on the device and on the server (it is replaced by SHAKE-256 on both sides).

What the check cannot show: that the OS's entropy itself is good (os.urandom is trusted, and so is
OpenSSL's key generation, which (a) replaces); that a source does not squeeze all its reads through
a function of every bit into fewer bits (a hash folded to 16 bits passes (c); only a birthday
count over ~2**(bits/2) draws would see it); bytes other than the first and last of two reads (a
seed cut in the middle); the randomness of what is not a secret of the guarantee (SecAgg+'s
stochastic rounding, Flower's NumPy global generator; its Shamir coefficients and share IVs, which
protect the masks' seeds, are from os.urandom but not in the draws); and any source this list
lacks. Exit status 0 = all pass. Run it on a device (its venv) and on the server.

`main(only)` checks only the sources named (tests use it).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
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

# A draw: (the values drawn, or {part: values} where each part must be fresh on its own; the claimed
# std or rate, or None where nothing is claimed: a sample of fixed size has no rate to measure).
Draw = Callable[[], tuple[np.ndarray | dict[str, np.ndarray], float | None]]
STD, RATE = np.std, np.mean  # what is measured of a draw: the noise's std; a 0/1 sample's rate
SEED, PER_PICK = "seed", "per pick"  # how a source reads OS entropy: generators' seeds; one read per device picked
SEED_BYTES = 16  # 128 bits: the least a generator's seed may read


def seed_globals(seed: int = 0) -> None:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _message(content: RecordDict, reply: bool = False, message_type: str = "train") -> Message:
    return Message(content=content, metadata=Metadata(
        run_id=1, message_id="m", src_node_id=1, dst_node_id=2, reply_to_message_id="r" if reply else "",
        group_id="1", created_at=time.time(), ttl=60, message_type=message_type))


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


class _Reply:
    def __init__(self, content: RecordDict):
        self.content = content

    def has_error(self) -> bool:
        return False


class _Voters(_Nodes):
    """Devices that each type one of `words` (node i the (i mod len)-th) and vote as TrieHH's
    device does: the word's prefix of the asked depth if the one shorter is in the trie."""

    def __init__(self, n: int, words: list[str]):
        super().__init__(n)
        self.words = words

    def create_message(self, content, message_type, dst_node_id, group_id):
        return dst_node_id, content["config"]

    def send_and_receive(self, messages, timeout=None):
        from features.discovery.triehh import END
        from task.config import QUERY_DEPTH, QUERY_PREFIXES, QUERY_VOTE

        replies = []
        for node, config in messages:
            depth, trie = int(config[QUERY_DEPTH]), set(config.get(QUERY_PREFIXES, []))
            word = self.words[node % len(self.words)] + END
            vote = word[:depth] if depth <= len(word) and (depth == 1 or word[:depth - 1] in trie) else ""
            replies.append(_Reply(RecordDict({QUERY_VOTE: ConfigRecord({QUERY_VOTE: vote})})))
        return replies


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


def blt_noise() -> tuple[np.ndarray, float]:
    """BLT-DP-FTRL's first round: C^-1's first coefficient is 1, so the round's noise is one draw."""
    from features.dp_mechanisms.blt import BltDP

    return _release(BltDP, "central-blt")


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

    cfg = Config.from_run_config({"discovery.enabled": True})
    growth = VocabularyGrowth(cfg, default_vocabulary(2000), PrivacyLedger(cfg.dp, population=devices, sampled=10))
    asked = np.zeros((discoveries, devices), bool)
    for i in range(discoveries):
        grid = _Nodes(devices)
        growth.discover(grid, 1)
        asked[i, np.array(grid.asked, int) - 1] = True
    return asked.ravel().astype(float), growth.plan.gamma


def triehh_vote(queries: int = 200) -> tuple[np.ndarray, None]:
    """The device's TrieHH vote (client_app/app.py's query handler, features/discovery/triehh.py's
    device_vote): which of its out-of-vocabulary words it votes for, over `queries` level-1
    queries to one built-in device. A pick, nothing claimed about it: only its freshness."""
    from client_app.app import app
    from task.config import QUERY_DEPTH, QUERY_VOTE

    context = Context(run_id=1, node_id=2, node_config={"partition-id": 0, "num-partitions": 1}, state=RecordDict(),
                      run_config={"model.vocab-size": 2000, "discovery.enabled": True})
    votes = []
    for _ in range(queries):
        query = _message(RecordDict({"config": ConfigRecord({QUERY_DEPTH: 1, "server-round": 1})}), message_type="query")
        votes.append(app(query, context).content[QUERY_VOTE][QUERY_VOTE])
    return np.array([ord(v[0]) if v else 0 for v in votes]), None


def max_words_pick(discoveries: int = 10, devices: int = 5000, cap: int = 3) -> tuple[np.ndarray, None]:
    """The words a discovery keeps when more than discovery.max-words are found (features/discovery/
    server.py, triehh.capped): 8 made-up words each typed by an eighth of `devices` devices, `cap`
    kept, over `discoveries` discoveries. A pick of fixed size: only its freshness."""
    from features.discovery.server import VocabularyGrowth
    from task.data.vocab import default_vocabulary

    words = [f"zq{letter}" for letter in "abcdefgh"]
    cfg = Config.from_run_config({"discovery.enabled": True, "discovery.max-words": cap, "discovery.max-length": 3})
    base = default_vocabulary(2000)
    growth = VocabularyGrowth(cfg, base, PrivacyLedger(cfg.dp, population=devices, sampled=10))
    kept = np.zeros((discoveries, len(words)), bool)
    for i in range(discoveries):
        growth.vocab = base  # every discovery finds the 8 words again
        found = growth.discover(_Voters(devices, words), 1)
        if len(found) != cap:
            raise RuntimeError(f"the discovery found {found}, not {cap} of {words}: the check's set-up is wrong")
        kept[i, [words.index(w) for w in found]] = True
    return kept.ravel().astype(float), None


def secagg_masks(values: int = 1000) -> tuple[dict[str, np.ndarray], None]:
    """SecAgg+'s masks on a device, made by Flower's secaggplus_mod's own stages (setup: key pairs;
    share keys: the private mask seed; collect: the masked update) for two devices, each the
    other's neighbour, with the mask generator the template installs (features/secagg/masks.py).
    Parts: device 1's private mask, its pairwise mask with device 2, the masked update it sends
    (a zero update: the masks alone)."""
    from flwr.common import ndarrays_to_parameters
    from flwr.common.secure_aggregation.secaggplus_constants import Key

    mod = _secagg_device_module()
    setup = {Key.SAMPLE_NUMBER: 2, Key.SHARE_NUMBER: 2, Key.THRESHOLD: 2, Key.CLIPPING_RANGE: 8.0,
             Key.TARGET_RANGE: 2**16, Key.MOD_RANGE: 2**32, Key.MAX_WEIGHT: 1.0}
    states = {}
    for nid in (1, 2):
        states[nid] = mod.SecAggPlusState()
        states[nid].nid = nid
    keys = {nid: mod._setup(state, setup) for nid, state in states.items()}  # noqa: SLF001
    public = {str(nid): (k[Key.PUBLIC_KEY_1], k[Key.PUBLIC_KEY_2]) for nid, k in keys.items()}
    shares = {nid: mod._share_keys(state, public) for nid, state in states.items()}  # noqa: SLF001
    ciphertexts = {Key.CIPHERTEXT_LIST: [shares[2][Key.CIPHERTEXT_LIST][0]], Key.SOURCE_LIST: [2]}
    zero = ndarrays_to_parameters([np.zeros(values, np.float32)])
    masked = mod._collect_masked_vectors(states[1], ciphertexts, 1, zero)  # noqa: SLF001
    dims = [(values,)]
    private = mod.pseudo_rand_gen(states[1].rd_seed, 2**32, dims)[0]
    shared = mod.generate_shared_key(mod.bytes_to_private_key(states[1].sk1),
                                     mod.bytes_to_public_key(states[2].pk1))
    pairwise = mod.pseudo_rand_gen(shared, 2**32, dims)[0]
    sent = np.frombuffer(b"".join(masked[Key.MASKED_PARAMETERS]), np.uint8)  # the bytes device 1 sends
    return {"private mask": private, "pairwise mask": pairwise, "masked update": sent}, None


def _secagg_device_module():
    from features.secagg import client  # noqa: F401 (installs the template's mask generator in Flower's mod)

    return importlib.import_module("flwr.client.mod.secure_aggregation.secaggplus_mod")


def secagg_seed_use() -> str | None:
    """Two 32-byte seeds that Flower's own generator folds to the same 32 bits (XOR of the seed's
    words) must give different masks, on the device and on the server; None if they do."""
    from features.secagg import server  # noqa: F401 (installs the template's generator in Flower's workflow)

    a = bytes(range(32))
    b = bytes(x ^ 0xFF for x in a[:8]) + a[8:]  # the first two words flipped alike: the same XOR fold
    for side, name in (("device", "flwr.client.mod.secure_aggregation.secaggplus_mod"),
                       ("server", "flwr.server.workflow.secure_aggregation.secaggplus_workflow")):
        generate = importlib.import_module(name).pseudo_rand_gen
        if np.array_equal(generate(a, 2**32, [(64,)])[0], generate(b, 2**32, [(64,)])[0]):
            return f"NO: the {side}'s mask generator folds its seed (two seeds that fold alike give one mask)"
    return None


# --- OS entropy, pinned ----------------------------------------------------------------------------
class _Entropy:
    """Stands in for the OS's entropy: read i of n bytes is SHAKE-256(seed, i), the first n bytes;
    `flip` = (i, j, mask): byte j of read i XORed with mask. Records every read's size."""

    def __init__(self, flip: tuple[int, int, int] | None = None, seed: bytes = b"check_fresh_noise"):
        self.flip, self.seed, self.reads = flip, seed, []

    def __call__(self, n: int) -> bytes:
        i = len(self.reads)
        self.reads.append(int(n))
        out = bytearray(hashlib.shake_256(self.seed + i.to_bytes(8, "big")).digest(int(n)))
        if self.flip and self.flip[0] == i and n:
            out[self.flip[1]] ^= self.flip[2]
        return bytes(out)

    def key_pairs(self):
        """Flower's key-pair generator (SECP384R1), its private key from 48 bytes of this stream."""
        from cryptography.hazmat.primitives.asymmetric import ec

        order = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973
        private = ec.derive_private_key(int.from_bytes(self(48), "big") % (order - 1) + 1, ec.SECP384R1())
        return private, private.public_key()


@contextmanager
def pinned_entropy(entropy: _Entropy) -> Iterator[_Entropy]:
    """While inside, every read of OS entropy Python code makes comes from `entropy`."""
    patches = [(os, "urandom"), (random, "_urandom")]
    secagg = sys.modules.get("flwr.client.mod.secure_aggregation.secaggplus_mod")
    if secagg is not None:
        patches.append((secagg, "generate_key_pairs"))
    saved = [getattr(module, name) for module, name in patches]
    try:
        for module, name in patches:
            setattr(module, name, entropy.key_pairs if name == "generate_key_pairs" else entropy)
        yield entropy
    finally:
        for (module, name), value in zip(patches, saved):
            setattr(module, name, value)


def _pinned(draw: Draw, flip: tuple[int, int, int] | None = None):
    entropy = _Entropy(flip)
    with pinned_entropy(entropy):
        seed_globals()
        value, _ = draw()
    return value, entropy.reads


# A pick among few values (a vote's letter) may come out the same from another seed: a byte counts
# as unused only if none of these changes of it changes the draw.
FLIPS = (0xFF, 0x01, 0x80, 0x0F, 0xF0, 0x55, 0xAA, 0x33)


def _moves(draw: Draw, first, read: int, byte: int) -> bool:
    """Does changing byte `byte` of read `read` change the draw?"""
    return any(not _same(_pinned(draw, (read, byte, mask))[0], first) for mask in FLIPS)


def _picks(value) -> int:
    return int(np.size(value)) if not isinstance(value, dict) else sum(int(np.size(v)) for v in value.values())


def provenance(draw: Draw, reads_as: str) -> tuple[bool, str]:
    """Check 3 of the module doc: (passed, what the table says)."""
    first, reads = _pinned(draw)
    again, reads_again = _pinned(draw)
    if reads != reads_again or not _same(first, again):
        return False, "NO: the draws differ with the OS entropy pinned (another source: a clock, a generator not seeded from it)"
    if not reads:
        return False, "NO: it reads no OS entropy"
    if reads_as == SEED and min(reads) < SEED_BYTES:
        return False, f"NO: a seed of {8 * min(reads)} bits (fewer than {8 * SEED_BYTES})"
    if reads_as == PER_PICK and len(reads) < _picks(first):
        return False, f"NO: {len(reads)} reads of OS entropy for {_picks(first)} picks (one generator seeded for several)"
    used = 0
    for i in sorted({0, len(reads) - 1}):
        changed = [_moves(draw, first, i, j) for j in sorted({0, reads[i] - 1})]
        if any(changed) and not all(changed):
            return False, f"NO: only part of a read of {8 * reads[i]} bits is used (a seed cut short)"
        used += any(changed)
    if not used:
        return False, "NO: the draw does not depend on the OS entropy it reads"
    sizes = sorted(set(reads))
    bits = f"{8 * sizes[0]}" if len(sizes) == 1 else f"{8 * sizes[0]}-{8 * sizes[-1]}"
    return True, f"yes: {len(reads)} read(s) of {bits} bits, none cut short, nothing else"


# --- the check -----------------------------------------------------------------------------------
# (name, draw, what is measured of it, how it reads OS entropy)
CORE = [("central DP (server)", central_dp, STD, SEED),
        ("device sampling under DP (server)", device_sample, None, PER_PICK)]
FEATURES = {  # feature folder -> its sources, checked while the folder is in the tree
    "dp_mechanisms": [("DP-FTRL tree noise (server)", tree_noise, STD, SEED),
                      ("BLT-DP-FTRL noise (server)", blt_noise, STD, SEED),
                      ("adaptive clipping count (server)", adaptive_count, STD, SEED),
                      ("local DP (device)", local_dp, STD, SEED), ("DP-SGD step (device)", dpsgd_step, STD, SEED),
                      ("DP-SGD Poisson windows (device)", poisson_windows, RATE, SEED)],
    "discovery": [("TrieHH device sampling (server)", triehh_devices, RATE, SEED),
                  ("TrieHH vote choice (device)", triehh_vote, None, SEED),
                  ("discovery.max-words pick (server)", max_words_pick, None, SEED)],
    "secagg": [("SecAgg+ masks (device)", secagg_masks, None, SEED)],
}
EXTRA = {"SecAgg+ masks (device)": secagg_seed_use}  # a source's own check of how it uses its seed


def mechanisms() -> list[tuple[str, Draw, Callable | None, str]]:
    """Every source in this tree, and a line for each feature folder that is not."""
    found = list(CORE)
    for folder, sources in FEATURES.items():
        if importlib.util.find_spec("features") and importlib.util.find_spec(f"features.{folder}"):
            found += sources
        else:
            print(f"| {', '.join(n for n, *_ in sources)} | not checked: features/{folder}/ is not in this tree | | |")
    return found


def _same(a, b) -> bool:
    if isinstance(a, dict) or isinstance(b, dict):
        return isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and np.allclose(a, b)


def _repeated(a, b) -> list[str]:
    """The parts of two draws that repeat (a draw of one part: [""] if it does)."""
    if isinstance(a, dict):
        return [k for k in a if _same(a[k], b[k])]
    return [""] if _same(a, b) else []


def main(only: Iterable[str] | None = None) -> int:
    ok = True
    print("| source | fresh (two draws differ) | measured / claimed (noise: std; Poisson sampling: rate) "
          "| from OS entropy alone (pinned: same draw; each seed >= 128 bits; every read used whole) |")
    print("|---|---|---|---|")
    for name, draw, measure, reads_as in mechanisms():
        if only is not None and name not in only:
            continue
        seed_globals()
        first, claimed = draw()
        seed_globals()
        second, _ = draw()
        repeated = _repeated(first, second)
        ratio = None if measure is None else float(measure(first)) / claimed
        origin_ok, origin = provenance(draw, reads_as)
        extra = EXTRA[name]() if name in EXTRA else None
        if extra:
            origin_ok, origin = False, extra
        ok &= not repeated and (ratio is None or abs(ratio - 1) < 0.05) and origin_ok
        fresh = "yes" if not repeated else f"NO: the draws repeat{' (' + ', '.join(repeated) + ')' if repeated != [''] else ''}"
        print(f"| {name} | {fresh} | {'- (nothing claimed: a fixed-size sample or a pick)' if ratio is None else f'{ratio:.4f}'} | {origin} |")
    print("all noise and sampling fresh, as claimed and from OS entropy alone" if ok else "FAILED: see the table")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
