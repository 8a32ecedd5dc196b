"""Secure aggregation: the real SecAgg+ workflow (features/secagg/server.py) against the real SecAgg+
mod on each device (features/secagg/client.py), in one process. Messages cross a serialisation round
trip, as on the network, and each device keeps its own Context between them, as a SuperNode does.

What must hold (Bell et al. 2020): what the server receives from one device is unrelated to that
device's update; the sum it recovers is the sum of the clipped updates, within the quantisation
error; devices that drop out mid-round do not stop the round.
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp.mod import fixedclipping_mod
from flwr.serverapp.strategy import FedAvg
from flwr.common import bytes_to_ndarray
from flwr.common.secure_aggregation.quantization import quantize
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM
from flwr.supercore.task_identity import TaskIdentity

from client_app.privacy import with_mods
from features.secagg.client import secure_train, stage
from features.secagg.server import SecureGrid, quantisation_step
from server_app.observed_grid import ObservedGrid
from task.config import NOT_ELIGIBLE, Config, ConfigError, DPConfig
from task.privacy import DP_WEIGHT
from tests.helpers import message

CLIP = 1.0
CFG = Config(dp=DPConfig(mode="central-client-clip", clipping_norm=CLIP)).with_run_config({"secagg.enabled": True})
SECAGG = CFG.feature("secagg")
SHAPES = [(300, 10), (10,)]


@pytest.fixture(autouse=True)
def server_identity():
    """What a ServerApp process has set when the workflow builds its messages."""
    saved = {k: TaskIdentity.__dict__.get(k) for k in ("_run_id", "_task_id", "_node_id")}
    TaskIdentity._run_id, TaskIdentity._task_id, TaskIdentity._node_id = 1, 1, 0
    yield
    for k, v in saved.items():
        setattr(TaskIdentity, k, v)


class Fleet:
    """Devices that answer the server's messages in turn; `heard` keeps every reply the server got."""

    def __init__(self, updates: dict[int, list[np.ndarray]], dies_at: dict[int, str] | None = None,
                 fails_at: dict[int, str] | None = None, declines: set[int] = frozenset(), clip: bool = True):
        self.updates, self.dies_at, self.fails_at, self.declines = updates, dies_at or {}, fails_at or {}, declines
        self.mods = [fixedclipping_mod] if clip else []  # without central DP the server sends no clipping norm
        self._failing = None
        self.contexts = {n: Context(run_id=1, node_id=n, node_config={}, state=RecordDict(),
                                    run_config=CFG.to_run_config()) for n in updates}
        self.heard: list[Message] = []

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for sent in messages:
            sent.metadata.__dict__["_message_id"] = uuid.uuid4().hex  # as a push would
            received = _over_the_wire(sent)
            node = received.metadata.dst_node_id
            if stage(received) == self.dies_at.get(node):
                continue
            if stage(received) == Stage.SETUP and node in self.declines:  # not eligible now
                replies.append(_over_the_wire(Message(Error(code=NOT_ELIGIBLE, reason="not charging"),
                                                      reply_to=received)))
                continue
            if stage(received) == self.fails_at.get(node):  # its training fails: an error reply
                self._failing = node
            reply = _over_the_wire(secure_train(CFG, with_mods(self.mods, self._train(node)))(
                received, self.contexts[node]))
            self.heard.append(reply)
            replies.append(reply)
        return replies

    def pull_messages(self, message_ids):
        return []

    def _train(self, node):
        def train(msg: Message, context: Context) -> Message:
            if node == self._failing:
                return Message(Error(code=100, reason="too little text"), reply_to=msg)
            received = msg.content["arrays"].to_numpy_ndarrays()
            new = [r + u for r, u in zip(received, self.updates[node])]
            return Message(RecordDict({"arrays": ArrayRecord(new), "metrics": MetricRecord({DP_WEIGHT: 1})}),
                           reply_to=msg)

        return train


def _over_the_wire(msg: Message) -> Message:
    return message_from_proto(message_to_proto(msg))


def _updates(n: int, seed: int = 0) -> dict[int, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    # norms around 1.5: most are clipped to CLIP, some are not
    return {100 + i: [rng.normal(0, 1.5 / np.sqrt(3010), s).astype(np.float32) for s in SHAPES] for i in range(n)}


def _clipped(update):
    norm = np.sqrt(sum(float(np.sum(u.astype(np.float64) ** 2)) for u in update))
    return [u * min(1.0, CLIP / norm) for u in update]


def _round(grid, nodes, current):
    config = ConfigRecord({"server-round": 1, KEY_CLIPPING_NORM: CLIP})
    sent = [message(RecordDict({"arrays": ArrayRecord(current), "config": config}), "train", src=0, dst=n)
            for n in nodes]
    return grid.send_and_receive(sent, timeout=30)


def _current():
    rng = np.random.default_rng(1)
    return [rng.normal(0, 0.1, s).astype(np.float32) for s in SHAPES]


def test_the_server_recovers_the_sum_of_the_clipped_updates_within_the_quantisation_error():
    updates, current = _updates(5), _current()
    replies = _round(SecureGrid(Fleet(updates), SECAGG, timeout=30), list(updates), current)

    assert len(replies) == 5
    got = [r.content["arrays"].to_numpy_ndarrays() for r in replies]
    assert all(np.array_equal(a, b) for g in got[1:] for a, b in zip(g, got[0]))  # every reply: the aggregate
    mean = [np.mean([_clipped(u)[i] for u in updates.values()], axis=0) for i in range(len(SHAPES))]
    error = max(float(np.max(np.abs(g - c - m))) for g, c, m in zip(got[0], current, mean))
    step = quantisation_step(SECAGG)
    assert error <= step + 1e-6  # stochastic rounding: under one step per value, plus float32 rounding
    unclipped = [np.mean([u[i] for u in updates.values()], axis=0) for i in range(len(SHAPES))]
    assert max(float(np.max(np.abs(m - u))) for m, u in zip(mean, unclipped)) > 100 * step  # clipping was real
    assert all(r.content["metrics"][DP_WEIGHT] == 1 for r in replies)


def test_what_reaches_the_server_from_one_device_is_unrelated_to_its_update():
    updates = _updates(5, seed=3)
    fleet = Fleet(updates)
    _round(SecureGrid(fleet, SECAGG, timeout=30), list(updates), _current())

    masked = [r for r in fleet.heard if Key.MASKED_PARAMETERS in r.content.config_records[RECORD_KEY_CONFIGS]]
    assert len(masked) == 5
    for reply in masked:
        assert all(len(record) == 0 for record in reply.content.array_records.values())  # no weights in the clear
        vectors = [bytes_to_ndarray(b) for b in reply.content.config_records[RECORD_KEY_CONFIGS][Key.MASKED_PARAMETERS]]
        seen = np.concatenate([v.ravel() for v in vectors[1:]]).astype(np.float64)  # [0] is the masked weight
        own = np.concatenate([u.ravel() for u in _clipped(updates[reply.metadata.src_node_id])])
        # |r| of independent vectors of 3010 values: sd 1/sqrt(3010) = 0.018
        assert abs(np.corrcoef(seen, own)[0, 1]) < 0.08
        assert abs(seen.mean() / 2**32 - 0.5) < 0.03  # uniform on the 2**32 ring: mean 2**31, sd of mean 0.005
        # The same test catches an unmasked vector: the quantised update itself correlates fully.
        plain = np.concatenate([q.ravel() for q in quantize(_clipped(updates[reply.metadata.src_node_id]),
                                                            SECAGG.clipping_range, SECAGG.quantization_range)])
        assert np.corrcoef(plain.astype(np.float64), own)[0, 1] > 0.99


@pytest.mark.parametrize("dies_at, how", [
    (Stage.SETUP, "declines"),  # not eligible: replies at once, never takes part (a Flower bug, features/secagg/server.py)
    (Stage.SHARE_KEYS, "dies"),  # keys sent, shares not: nobody masked with it (the same Flower bug)
    (Stage.COLLECT_MASKED_VECTORS, "dies"),  # shares sent, no masked update: its masks are removed
    (Stage.COLLECT_MASKED_VECTORS, "fails"),  # its training fails: an error reply, then as above
    (Stage.UNMASK, "dies"),  # its masked update is in: it only helps unmask no more
])
def test_a_device_that_drops_out_mid_round_does_not_stop_it(dies_at, how):
    updates, current = _updates(5, seed=5), _current()
    victim = 102
    fleet = {"declines": lambda: Fleet(updates, declines={victim}),
             "dies": lambda: Fleet(updates, dies_at={victim: dies_at}),
             "fails": lambda: Fleet(updates, fails_at={victim: dies_at})}[how]()
    observed = ObservedGrid(fleet)
    replies = _round(SecureGrid(observed, SECAGG, timeout=30), list(updates), current)

    # Dead before its masked update: the sum of the four others (its masks are removed with its
    # neighbours' shares). Dead after it: its update is in the sum.
    summed = [u for n, u in updates.items() if n != victim or dies_at == Stage.UNMASK]
    assert len(replies) == len(summed)
    got = replies[0].content["arrays"].to_numpy_ndarrays()
    mean = [np.mean([_clipped(u)[i] for u in summed], axis=0) for i in range(len(SHAPES))]
    assert max(float(np.max(np.abs(g - c - m))) for g, c, m in zip(got, current, mean)) <= quantisation_step(
        SECAGG) + 1e-6

    counts = observed.take_counts()["train"]
    assert counts.sampled == 5 and sorted(counts.asked) == sorted(updates)
    assert counts.replied == len(summed)
    assert counts.failed == (0 if how == "declines" or dies_at == Stage.UNMASK else 1)
    assert counts.not_eligible == (1 if how == "declines" else 0)
    if how == "fails":
        assert counts.failures == ["node 102: too little text"]
    assert counts.bytes_sent > 5 * 3010 * 4 and counts.bytes_received > len(summed) * 3010 * 8  # float32 weights down, int64 masked values up


def test_too_many_dropouts_release_nothing():
    updates = _updates(5, seed=7)
    fleet = Fleet(updates, dies_at={n: Stage.COLLECT_MASKED_VECTORS for n in list(updates)[:3]})
    assert _round(SecureGrid(fleet, SECAGG, timeout=30), list(updates), _current()) == []


@pytest.mark.parametrize("changes, key", [
    (dict(dp=DPConfig(mode="central-adaptive-clip")), "secagg.enabled"),
    (dict(dp=DPConfig(mode="central-server-clip")), "secagg.enabled"),
    ({"transfer.dtype": "int8"}, "secagg.enabled"),
    ({"participation.selection-factor": 1.3}, "secagg.enabled"),
    (dict(dp=DPConfig(mode="central-client-clip", clipping_norm=10.0)), "secagg.clipping-range"),
])
def test_settings_secure_aggregation_cannot_honour_are_refused_by_name(changes, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        if "dp" in changes:
            CFG.replace(**changes).validate()
        else:
            CFG.with_run_config(changes)


def test_secagg_parameters_are_checked():
    for changes, key in (({"secagg.num-shares": 2}, "secagg.num-shares"),
                         ({"secagg.num-shares": 3, "secagg.reconstruction-threshold": 3}, "secagg.reconstruction-threshold"),
                         ({"secagg.quantization-range": 2**23}, "secagg.quantization-range")):
        with pytest.raises(ConfigError, match=f"'{key}'"):
            CFG.with_run_config(changes)


def test_masks_are_as_hard_to_guess_as_their_256_bit_seed():
    """Flower's generator folds the seed to 32 bits by XOR: swap two 4-byte words of a seed and the
    mask is the same. Ours expands the whole seed: uniform on the ring, different for every seed."""
    import importlib

    from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen

    from features.secagg.masks import mask

    seed = bytes(range(32))
    swapped = seed[4:8] + seed[0:4] + seed[8:]
    shapes = [(1000,), (10, 10)]
    assert all(np.array_equal(a, b) for a, b in zip(pseudo_rand_gen(seed, 2**32, shapes),
                                                   pseudo_rand_gen(swapped, 2**32, shapes)))  # the defect
    ours, other = mask(seed, 2**32, shapes), mask(swapped, 2**32, shapes)
    assert not np.array_equal(ours[0], other[0])
    assert [a.shape for a in ours] == shapes and ours[0].dtype == np.int64
    values = np.concatenate([a.ravel() for a in mask(b"\x01" * 32, 2**32, [(200_000,)])]) / 2**32
    assert abs(values.mean() - 0.5) < 0.003 and abs(values.var() - 1 / 12) < 0.002  # uniform: sd of mean 0.0006
    assert mask(seed, 2**16, [(1000,)])[0].max() < 2**16
    # both sides of a run use it
    assert importlib.import_module("flwr.client.mod.secure_aggregation.secaggplus_mod").pseudo_rand_gen is mask
    assert importlib.import_module("flwr.server.workflow.secure_aggregation.secaggplus_workflow").pseudo_rand_gen is mask


@pytest.mark.parametrize("devices, right", [(1023, True), (1024, False), (1025, False)])
def test_flowers_secagg_sum_wraps_past_1023_devices_at_the_default_range(devices, right):
    """Flower's own quantisation and weight factor, summed modulo 2**32 as its workflow does: each
    device adds the factor 2**22, so 1,024 devices wrap the weight sum to 0 and 1,025 to 2**22,
    and the "mean" is then the sum. What features/secagg/config.py max_cohort guards against."""
    from flwr.common.secure_aggregation.ndarrays_arithmetic import factor_combine, factor_extract
    from flwr.common.secure_aggregation.quantization import dequantize

    from features.secagg.config import max_cohort as secagg_max_cohort

    q, c = 2**22, 8.0
    update = np.full(4, 0.25)  # lands exactly on a quantisation level: no random rounding
    one = factor_combine(q, quantize([update], c, q))
    total = [(np.asarray(a, np.int64) * devices) % 2**32 for a in one]
    factor, values = factor_extract(total)
    mean = None if factor == 0 else (dequantize(values, c, q)[0] - (devices - 1) * c) * (q / factor)
    assert (mean is not None and np.allclose(mean, update, atol=1e-4)) == right
    assert (devices <= secagg_max_cohort(q)) == right


def test_a_cohort_that_would_wrap_the_ring_is_refused_at_the_start_by_name():
    cfg = CFG.replace(min_available_nodes=2)
    with pytest.raises(ConfigError, match=r"'fraction-train'.*'min-train-nodes'.*at most 1023 devices"):
        cfg.validate_population(1100, 1100)  # 1,100 devices per round
    cfg.validate_population(1100, 1023)
    with pytest.raises(ConfigError, match="'min-train-nodes'"):
        CFG.replace(min_train_nodes=1100, min_evaluate_nodes=2, min_available_nodes=1100).validate()


class _Nodes:
    def __init__(self, n):
        self.n = n

    def get_node_ids(self):
        return list(range(1, self.n + 1))


def test_a_growing_fleet_never_puts_more_devices_in_one_round_than_the_ring_holds():
    from flwr.app import MessageType

    from server_app.strategy import build_strategy
    from task.privacy.ledger import PrivacyLedger

    import dataclasses

    base = Config()  # past the range's check (2**22), to reach the strategy's own limit: at most 3 devices
    wide = dataclasses.replace(base.feature("secagg"), enabled=True, quantization_range=2**30)
    cfg = base.replace(features=tuple((g, wide if g == "secagg" else s) for g, s in base.features))
    strategy = build_strategy(cfg, PrivacyLedger(cfg.dp, 0, 0))
    strategy._construct_messages = lambda record, node_ids, message_type: [record for _ in node_ids]
    assert len(list(strategy.configure_train(1, ArrayRecord([np.zeros(3)]), ConfigRecord(), _Nodes(5)))) == 3
    sent = [message(RecordDict({"arrays": ArrayRecord(_current())}), MessageType.TRAIN, src=0, dst=n)
            for n in range(1, 5)]
    with pytest.raises(RuntimeError, match="4 devices asked in one round, but at most 3"):
        SecureGrid(Fleet({}), cfg.feature("secagg"), timeout=30).send_and_receive(sent)


def test_devices_clip_so_that_secaggs_rounding_keeps_their_update_within_the_noises_norm():
    """The server cannot clip the sum again: a device's update after rounding (each value moved by
    under one step) must still be within dp.clipping-norm. Worst case: every value moved a full
    step away from zero."""
    from server_app.app import _device_norm
    from server_app.privacy import CentralDP
    from server_app.strategy import build_strategy
    from task.privacy.ledger import PrivacyLedger

    ledger = PrivacyLedger(CFG.dp, population=3, sampled=3)
    inner = build_strategy(CFG, ledger)
    inner._construct_messages = lambda record, node_ids, message_type: [record for _ in node_ids]
    values = 1_340_000  # the default model's weights
    central = CentralDP(inner, CFG, ledger, device_norm=_device_norm(CFG))  # as server_app/app.py composes it
    sent = list(central.configure_train(1, ArrayRecord([np.zeros(values, np.float32)]), ConfigRecord(), _Nodes(3)))
    norm = sent[0]["config"][KEY_CLIPPING_NORM]
    u = np.random.default_rng(0).normal(size=values)
    u *= norm / np.linalg.norm(u)
    assert np.linalg.norm(u + np.sign(u) * quantisation_step(SECAGG)) <= CLIP
    assert norm > 0.99 * CLIP  # and no more than needed: 0.4% for the default model


def test_central_dp_adds_up_exactly_the_sum_secagg_recovered():
    """Central DP's release is the clipped updates' sum plus noise, / sampled. Under SecAgg+ the
    server holds only that sum, handed to the strategy as one aggregate per device that finished;
    central DP adds their updates up again. Updates and weights here lie on SecAgg+'s quantisation
    grid (2**-18), so SecAgg+ recovers the float64 sum S exactly: the replies must add up to S to
    float64 precision, and with the noise set to zero the release is float32(current + S / sampled),
    the correctly rounded value. (Rounded to float32 first, each of the 5 copies was off by up to
    half a float32 step, about 1e-8 here, the sum by 1.2e-7, and a sixth of the weights came out one
    float32 step off.)"""
    from server_app.privacy import CentralDP
    from task.privacy.ledger import PrivacyLedger

    step = quantisation_step(SECAGG)
    assert step == 2.0**-18
    rng = np.random.default_rng(3)
    on_grid = lambda scale, s: np.round(rng.normal(0, scale, s) / step) * step  # noqa: E731
    current = [on_grid(0.3, s).astype(np.float32) for s in SHAPES]
    updates = {100 + i: [on_grid(0.5 / np.sqrt(3010), s).astype(np.float32) for s in SHAPES] for i in range(5)}
    assert all(np.sqrt(sum(float(np.sum(u.astype(np.float64) ** 2)) for u in update)) < CLIP
               for update in updates.values())  # no device clips: its update reaches SecAgg+ as it is
    total = [np.sum([u[i].astype(np.float64) for u in updates.values()], axis=0) for i in range(len(SHAPES))]

    replies = _round(SecureGrid(Fleet(updates), SECAGG, timeout=30), list(updates), current)
    assert len(replies) == 5
    added = [np.sum([r.content["arrays"].to_numpy_ndarrays()[i].astype(np.float64) - current[i] for r in replies],
                    axis=0) for i in range(len(SHAPES))]
    assert max(float(np.max(np.abs(a - t))) for a, t in zip(added, total)) < 1e-12

    sampled = 7  # two of the devices sampled did not finish: the sum is still divided by 7

    class Noiseless(CentralDP):
        def noise(self, current, std):
            return [np.zeros(c.shape) for c in current]

    strategy = Noiseless(FedAvg(weighted_by_key=DP_WEIGHT), CFG, PrivacyLedger(CFG.dp, sampled, sampled))
    strategy._current = ArrayRecord(current)  # what configure_train keeps
    released, _ = strategy.aggregate_train(1, replies)
    for got, c, t in zip(released.to_numpy_ndarrays(), current, total):
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, (c.astype(np.float64) + t / sampled).astype(np.float32))


def test_without_central_dp_the_aggregate_keeps_the_models_dtype():
    """FedAvg averages the replies into the next model: float32 in, float32 out."""
    updates, current = _updates(3, seed=9), _current()
    config = ConfigRecord({"server-round": 1})  # no clipping norm: no central DP above the grid
    sent = [message(RecordDict({"arrays": ArrayRecord(current), "config": config}), "train", src=0, dst=n)
            for n in updates]
    replies = SecureGrid(Fleet(updates, clip=False), SECAGG, timeout=30).send_and_receive(sent, timeout=30)
    assert len(replies) == 3
    assert all(a.dtype == np.float32 for r in replies for a in r.content["arrays"].to_numpy_ndarrays())
