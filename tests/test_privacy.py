"""Differential privacy, piece by piece: clipping bounds, noise scales, epsilon against independent
computations, the budget stop, DP-SGD on the real model, and bad DP settings."""

import math
import time

import dp_accounting
import numpy as np
import pytest
from dp_accounting import rdp
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, Metadata, MetricRecord, RecordDict
from flwr.serverapp import GaussianPrivacyEvent, NeighboringRelation, PrivacyConfig, RdpAccountant, SamplingMethod
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg

from client_app.app import app
from client_app.privacy import train_mods, with_mods
from server_app.privacy import population_and_sample, require_equal_weights
from task.config import Config, ConfigError, DPConfig, ModelConfig
from task.model import build_model
from task.privacy import PrivacyBudgetExceeded, PrivacyLedger, local_noise_multiplier

SMALL = ModelConfig(vocab_size=2000, seq_len=10, embed_dim=16, num_heads=2, ffn_dim=32)


def message(content: RecordDict, message_type="train", reply=False) -> Message:
    md = Metadata(run_id=1, message_id="m1", src_node_id=1, dst_node_id=7, reply_to_message_id="m0" if reply else "",
                  group_id="1", created_at=time.time(), ttl=3600, message_type=message_type)
    return Message(content=content, metadata=md)


def context(cfg: Config) -> Context:
    return Context(run_id=1, node_id=7, node_config={"partition-id": 0, "num-partitions": 4}, state=RecordDict(),
                   run_config=cfg.to_run_config())


def l2(arrays_a, arrays_b) -> float:
    return math.sqrt(sum(float(np.sum((a - b) ** 2)) for a, b in zip(arrays_a, arrays_b)))


# --- clipping and noise ---------------------------------------------------------------------------
@pytest.mark.parametrize("clip", [0.05, 0.5])
def test_a_clipped_update_never_exceeds_the_clipping_norm(clip):
    cfg = Config(sentences_per_device=40, model=SMALL, dp=DPConfig(mode="central-client-clip", clipping_norm=clip))
    sent = build_model(SMALL).get_weights()
    # the server's wrapper puts the norm into the message; the ClientApp's mod clips to it
    content = RecordDict({"arrays": ArrayRecord(sent), "config": ConfigRecord({"server-round": 1, "clipping_norm": clip})})
    reply = app(message(content), context(cfg))
    assert not reply.has_error(), reply.error
    update_norm = l2(reply.content["arrays"].to_numpy_ndarrays(), sent)
    assert update_norm <= clip * (1 + 1e-5)
    assert update_norm > clip * 0.99  # 5 local epochs move the model far more than `clip`


def test_local_dp_adds_the_noise_the_gaussian_mechanism_needs():
    dp = DPConfig(mode="local", clipping_norm=0.5, local_epsilon=4.0, delta=1e-5)
    d = 200_000
    received = [np.zeros(d, np.float32)]

    def trained(msg, ctx):  # a device whose training moved one weight (an update of exactly 0
        update = np.zeros(d, np.float32)  # makes Flower's clipping divide by zero)
        update[0] = 0.1
        return Message(RecordDict({"arrays": ArrayRecord([update]), "metrics": MetricRecord({"dp-weight": 1})}),
                       reply_to=msg)

    np.random.seed(0)  # Flower's mods draw from NumPy's global generator
    content = RecordDict({"arrays": ArrayRecord(received), "config": ConfigRecord({"server-round": 1})})
    reply = with_mods(train_mods(dp), trained)(message(content), context(Config(dp=dp)))
    noise = reply.content["arrays"].to_numpy_ndarrays()[0][1:]
    expected = 2 * dp.clipping_norm * local_noise_multiplier(dp.local_epsilon, dp.delta)  # sensitivity 2C
    # The sample std of 200k normals is within 0.3% of the truth with prob. > 0.999 (sd 0.16%).
    assert np.std(noise) == pytest.approx(expected, rel=0.005)
    assert abs(np.mean(noise)) < 4 * expected / math.sqrt(d)


def test_central_noise_on_the_average_has_std_z_c_over_n():
    z, clip, n, d = 1.0, 2.0, 4, 200_000
    strategy = DifferentialPrivacyServerSideFixedClipping(FedAvg(weighted_by_key="dp-weight"), noise_multiplier=z,
                                                          clipping_norm=clip, num_sampled_clients=n)
    strategy.current_arrays = ArrayRecord([np.zeros(d, np.float32)])
    update = np.zeros(d, np.float32)
    update[0] = 100.0  # clipped to `clip` by the server; an update of 0 makes Flower divide by zero
    replies = [message(RecordDict({"arrays": ArrayRecord([update]), "metrics": MetricRecord({"dp-weight": 1})}),
                       reply=True) for _ in range(n)]
    np.random.seed(0)
    aggregated, _ = strategy.aggregate_train(1, replies)
    result = aggregated.to_numpy_ndarrays()[0]
    assert result[0] == pytest.approx(clip, abs=5 * z * clip / n)  # the mean of the clipped updates, + noise
    noise = result[1:]
    assert np.std(noise) == pytest.approx(z * clip / n, rel=0.005)  # noise z*C on the sum, / n on the mean


def test_unequal_device_weights_are_refused_under_dp():
    ok = [RecordDict({"metrics": MetricRecord({"dp-weight": 1})}) for _ in range(3)]
    require_equal_weights(ok)
    with pytest.raises(ValueError, match="dp-weight = 7"):
        require_equal_weights(ok + [RecordDict({"metrics": MetricRecord({"dp-weight": 7})})])


# --- accounting -----------------------------------------------------------------------------------
def rdp_epsilon(event, delta, relation=dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE):
    accountant = rdp.RdpAccountant(neighboring_relation=relation)
    return accountant.compose(event).get_epsilon(delta)


def test_central_epsilon_equals_flowers_accountant_and_dp_accounting():
    dp = DPConfig(mode="central-client-clip", noise_multiplier=0.8, delta=1e-5)
    ledger = PrivacyLedger(dp, population=1000, sampled=50)
    for _ in range(30):
        ledger.record_central(replies=50)
    flower = RdpAccountant(PrivacyConfig(target_delta=1e-5, population_size=1000,
                                         neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                                         sampling_method=SamplingMethod.NO_AMPLIFICATION))
    flower.compose(GaussianPrivacyEvent(noise_multiplier=0.8, sample_size=50, population_size=1000), count=30)
    independent = rdp_epsilon(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(0.8), 30), 1e-5)
    assert ledger.central_epsilon() == pytest.approx(flower.get_privacy_spent().epsilon, rel=1e-9)
    assert ledger.central_epsilon() == pytest.approx(independent, rel=1e-9)
    # sampling 50 of 1000 devices per round: replace-one adjacency, sensitivity 2C -> z / 2
    amplified = rdp_epsilon(dp_accounting.SelfComposedDpEvent(dp_accounting.SampledWithoutReplacementDpEvent(
        1000, 50, dp_accounting.GaussianDpEvent(0.4)), 30), 1e-5, dp_accounting.NeighboringRelation.REPLACE_ONE)
    assert ledger.central_amplified_epsilon() == pytest.approx(amplified, rel=1e-9)
    assert ledger.central_amplified_epsilon() < ledger.central_epsilon()


def test_missing_replies_weaken_the_noise_and_the_ledger_says_so():
    dp = DPConfig(mode="central-adaptive-clip", noise_multiplier=1.0, delta=1e-5)
    full, partial = PrivacyLedger(dp, 10, 10), PrivacyLedger(dp, 10, 10)
    full.record_central(replies=10)
    partial.record_central(replies=5)  # noise calibrated for 10 covers a mean over 5: z_eff = 0.5
    assert partial.central_epsilon() == pytest.approx(rdp_epsilon(dp_accounting.GaussianDpEvent(0.5), 1e-5))
    assert partial.central_epsilon() > full.central_epsilon()


def test_dpsgd_epsilon_composes_every_local_step_of_every_round():
    dp = DPConfig(sgd=True, sgd_noise_multiplier=1.1, delta=1e-5)
    ledger = PrivacyLedger(dp, population=3, sampled=3)
    for _ in range(5):  # 5 rounds of 1 epoch each over 20,000 windows, batch 32
        ledger.record_dpsgd("device-a", 32 / 20_000, 625)
    ledger.record_dpsgd("device-b", 32 / 20_000, 625)
    # the reference figure for 5 epochs in one go (../shared/notes/stack.md, checked against tf-privacy)
    assert ledger.sample_epsilon() == pytest.approx(0.654, abs=0.001)
    one_round = rdp_epsilon(dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(
        32 / 20_000, dp_accounting.GaussianDpEvent(1.1)), 625), 1e-5)
    assert ledger.sample_epsilon() > one_round + 0.05  # all rounds, not the last round alone


def test_local_epsilon_per_release_and_composed():
    dp = DPConfig(mode="local", local_epsilon=2.0, delta=1e-5)
    ledger = PrivacyLedger(dp, population=4, sampled=4)
    for device, releases in (("a", 3), ("b", 1)):
        for _ in range(releases):
            ledger.record_local(device)
    z = math.sqrt(2 * math.log(1.25 / 1e-5)) / 2.0
    assert ledger.local_epsilon(releases=1) == pytest.approx(rdp_epsilon(dp_accounting.GaussianDpEvent(z), 1e-5))
    assert ledger.local_epsilon() == pytest.approx(
        rdp_epsilon(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(z), 3), 1e-5))


def test_the_budget_stops_before_the_release_that_would_exceed_it():
    dp = DPConfig(mode="central-client-clip", noise_multiplier=1.0, delta=1e-5, max_epsilon=8.0)
    ledger = PrivacyLedger(dp, population=10, sampled=10)
    # independently: the first k with epsilon(k releases) > 8
    first_over = next(k for k in range(1, 100) if rdp_epsilon(
        dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(1.0), k), 1e-5) > 8.0)
    completed = 0
    with pytest.raises(PrivacyBudgetExceeded, match="dp-max-epsilon = 8.0"):
        while True:
            ledger.check_next_round(local_epochs=1)
            ledger.record_central(replies=10)
            completed += 1
    assert completed == first_over - 1
    assert ledger.central_epsilon() <= 8.0


def test_the_ledger_survives_a_round_trip_through_its_state():
    dp = DPConfig(mode="local", sgd=True)
    ledger = PrivacyLedger(dp, 5, 5)
    ledger.record_local("a")
    ledger.record_dpsgd("a", 0.1, 20)
    again = PrivacyLedger.from_state(dp, ledger.state_dict())
    assert again.report() == ledger.report()


# --- DP-SGD on the real model ---------------------------------------------------------------------
def test_fast_clipping_equals_clipping_each_examples_own_gradient():
    import tensorflow as tf

    from task.dpsgd import clipped_gradient_sum, registry
    from task.train import MaskedNextWordLoss

    model = build_model(Config().model)  # the default model: every layer type it has
    rng = np.random.default_rng(0)
    x = rng.integers(4, 8000, (6, 12)).astype(np.int32)
    y = rng.integers(4, 8000, (6, 12)).astype(np.int32)
    clip = 1.5
    clipped, _, norms = clipped_gradient_sum(model, registry(), tf.constant(x), tf.constant(y), clip)
    loss = MaskedNextWordLoss()
    expected = [np.zeros(v.shape, np.float32) for v in model.trainable_variables]
    for i in range(len(x)):
        with tf.GradientTape() as tape:
            per_example = loss(y[i : i + 1], model(x[i : i + 1]))
        grads = [tf.convert_to_tensor(g).numpy() for g in tape.gradient(per_example, model.trainable_variables)]
        norm = math.sqrt(sum(float(np.sum(g ** 2)) for g in grads))
        assert float(norms[i]) == pytest.approx(norm, rel=1e-3)
        scale = min(1.0, clip / norm)
        assert norm * scale <= clip * (1 + 1e-6)
        expected = [e + scale * g for e, g in zip(expected, grads)]
    for got, want in zip(clipped, expected):
        np.testing.assert_allclose(got.numpy(), want, rtol=2e-3, atol=2e-6)


def test_a_dpsgd_step_adds_noise_of_std_z_c_over_the_expected_batch():
    import tensorflow as tf

    from task.dpsgd import make_step

    model = build_model(SMALL)
    before = [v.numpy().copy() for v in model.trainable_variables]
    z, clip, expected_batch = 1.3, 0.7, 16.0
    step = make_step(model, tf.keras.optimizers.SGD(1.0), clipping_norm=clip, noise_multiplier=z,
                     expected_batch=expected_batch)
    tf.random.set_seed(0)
    empty = tf.zeros([0, SMALL.seq_len], tf.int32)  # Poisson sampling may pick no window: noise still
    step(empty, empty)
    moved = np.concatenate([(b - v.numpy()).ravel() for b, v in zip(before, model.trainable_variables)])
    assert moved.size > 50_000
    assert np.std(moved) == pytest.approx(z * clip / expected_batch, rel=0.02)


def test_dpsgd_trains_the_real_model_and_reports_what_the_accountant_needs():
    from task.dpsgd import train_dpsgd

    rng = np.random.default_rng(1)
    x = rng.integers(4, 50, (64, SMALL.seq_len)).astype(np.int32)
    model = build_model(SMALL)
    metrics, stats = train_dpsgd(model, x, x, epochs=2, batch_size=16, learning_rate=0.01, clipping_norm=1.0,
                                 noise_multiplier=0.5, seed=3)
    assert (stats.sampling_rate, stats.steps) == (0.25, 8)
    assert 0 <= stats.clipped_fraction <= 1 and math.isfinite(metrics.loss)


# --- bad settings ---------------------------------------------------------------------------------
@pytest.mark.parametrize("run_config, key", [
    ({"dp-mode": "central-client-clip", "dp-clipping-norm": 0.0}, "dp-clipping-norm"),  # noise, no clipping
    ({"dp-mode": "local", "dp-clipping-norm": -1.0}, "dp-clipping-norm"),
    ({"dp-mode": "central-server-clip", "dp-noise-multiplier": 0.0}, "dp-noise-multiplier"),
    ({"dp-mode": "central", "dp-noise-multiplier": 1.0}, "dp-mode"),
    ({"dp-delta": 1.5}, "dp-delta"),
    ({"dp-sgd": True, "dp-sgd-clipping-norm": 0.0}, "dp-sgd-clipping-norm"),
    ({"dp-sgd": "yes"}, "dp-sgd"),
    ({"dp-max-epsilon": -2.0}, "dp-max-epsilon"),
    ({"dp-max-epsilon": 5.0}, "dp-max-epsilon"),  # a budget with nothing to spend it
])
def test_bad_dp_settings_are_refused_naming_the_key(run_config, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        Config.from_run_config(run_config)


class FakeGrid:
    def __init__(self, nodes: int):
        self.nodes = list(range(1, nodes + 1))

    def get_node_ids(self):
        return self.nodes


def test_delta_must_be_below_one_over_the_population():
    cfg = Config.from_run_config({"dp-mode": "central-client-clip", "dp-delta": 0.05, "min-available-nodes": 2})
    assert population_and_sample(FakeGrid(10), cfg) == (10, 10)
    with pytest.raises(ConfigError, match="'dp-delta'.*1/50"):
        population_and_sample(FakeGrid(50), cfg)


def test_sampling_more_devices_than_exist_is_refused_before_training():
    cfg = Config.from_run_config({"dp-mode": "central-client-clip", "min-train-nodes": 8, "min-available-nodes": 8,
                                  "min-evaluate-nodes": 2, "round-timeout": 1.0})
    with pytest.raises(ConfigError, match="'min-train-nodes'.*5 connected"):
        population_and_sample(FakeGrid(5), cfg)
