"""Differential privacy, piece by piece, checked against the papers and published figures, never
against a copy of the code's own computation:

- noise and sampling are secret: two runs with every global generator seeded alike differ;
- the noise in a released aggregate has the claimed std (a tight test over ~10^5 weights);
- adaptive clipping follows Andrew et al. 2021 (direction, noise calibration, centred bits), and
  Flower 1.42's wrapper is kept under test to show where it does not;
- the average divides by the devices sampled, so one device moves it by at most C / sampled;
- epsilon matches published numbers (tensorflow-privacy's MNIST table), a tight accountant
  (PLD) and the exact analytic Gaussian mechanism;
- what a device sends and the server stores under DP is only what the guarantee covers.
"""

import math
import random

import numpy as np
import pytest
from dp_accounting import pld, rdp
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideAdaptiveClipping,
    FedAvg,
)

from client_app.app import app
from client_app.privacy import train_mods, with_mods
from server_app.privacy import (
    CentralDP,
    population_and_sample,
    require_equal_weights,
    without_norm_bits,
)
from server_app.strategy import build_strategy
from task.config import Config, ConfigError, DPConfig
from task.model import build_model
from task.privacy.ledger import (
    DP_WEIGHT,
    PrivacyBudgetExceeded,
    PrivacyLedger,
    adaptive_noise,
    local_noise_multiplier,
    released_train_metrics,
)
from tests.helpers import SMALL_MODEL, context, l2, message

SMALL = SMALL_MODEL


def seed_every_global_generator(seed=0):
    """What an attacker who knows the run config (or another library) can do."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)  # Python's random, NumPy's global generator and TF's
    np.random.seed(seed)
    random.seed(seed)


# --- clipping ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("clip", [0.05, 0.5])
def test_a_clipped_update_never_exceeds_the_clipping_norm(clip):
    cfg = Config(sentences_per_device=40, model=SMALL, dp=DPConfig(mode="central-client-clip", clipping_norm=clip))
    sent = build_model(SMALL).get_weights()
    # the server's wrapper puts the norm into the message; the ClientApp's mod clips to it
    content = RecordDict(
        {"arrays": ArrayRecord(sent), "config": ConfigRecord({"server-round": 1, "clipping_norm": clip})}
    )
    reply = app(message(content), context(cfg))
    assert not reply.has_error(), reply.error
    update_norm = l2(reply.content["arrays"].to_numpy_ndarrays(), sent)
    assert update_norm <= clip * (1 + 1e-5)
    assert update_norm > clip * 0.99  # local training moves the model far more than `clip`
    # under DP the device sends the weight FedAvg needs and nothing else about its training
    assert dict(reply.content["metrics"]) == {DP_WEIGHT: 1}


def test_only_covered_metrics_leave_a_device_unless_the_user_opts_in():
    measured = {"loss": 2.0, "top3": 0.4, "num-examples": 37, "compute-seconds": 1.2, DP_WEIGHT: 1}
    assert released_train_metrics(DPConfig(), measured) == measured  # no DP: everything
    for dp in (DPConfig(mode="local"), DPConfig(mode="central-client-clip"), DPConfig(sgd=True)):
        assert released_train_metrics(dp, measured) == {DP_WEIGHT: 1}
    assert released_train_metrics(DPConfig(sgd=True, report_train_metrics=True), measured) == measured


def test_the_server_keeps_no_device_norm_bit():
    records = [RecordDict({"metrics": MetricRecord({DP_WEIGHT: 1, "norm_bit": 1})})]
    assert dict(without_norm_bits(records)[0]["metrics"]) == {DP_WEIGHT: 1}
    assert "norm_bit" in records[0]["metrics"]  # the strategy still reads the original


# --- local DP -------------------------------------------------------------------------------------
def local_dp_noise(dp: DPConfig, d: int) -> np.ndarray:
    received = [np.zeros(d, np.float32)]

    def trained(msg, ctx):  # a device whose training moved one weight
        update = np.zeros(d, np.float32)
        update[0] = 0.1
        return Message(
            RecordDict({"arrays": ArrayRecord([update]), "metrics": MetricRecord({"dp-weight": 1})}), reply_to=msg
        )

    content = RecordDict({"arrays": ArrayRecord(received), "config": ConfigRecord({"server-round": 1})})
    reply = with_mods(train_mods(dp), trained)(message(content), context(Config(dp=dp)))
    return reply.content["arrays"].to_numpy_ndarrays()[0][1:]


def test_local_dp_noise_has_the_calibrated_std_and_is_fresh_every_time():
    dp = DPConfig(mode="local", clipping_norm=0.5, local_epsilon=4.0, delta=1e-5)
    d = 200_000
    seed_every_global_generator()
    first = local_dp_noise(dp, d)
    seed_every_global_generator()
    second = local_dp_noise(dp, d)
    assert not np.allclose(first, second)  # Flower 1.42's LocalDpMod repeats itself here
    expected = 2 * dp.clipping_norm * local_noise_multiplier(dp.local_epsilon, dp.delta)  # sensitivity 2C
    # The sample std of 200k normals is within 0.3% of the truth with prob. > 0.999 (sd 0.16%).
    for noise in (first, second):
        assert np.std(noise) == pytest.approx(expected, rel=0.005)
        assert abs(np.mean(noise)) < 4 * expected / math.sqrt(d)


def analytic_gaussian_epsilon(z: float, delta: float) -> float:
    """Exact epsilon of one Gaussian mechanism with noise z x sensitivity (Balle & Wang 2018,
    Theorem 8): the smallest epsilon with Phi(1/2z - eps z) - e^eps Phi(-1/2z - eps z) <= delta."""
    phi = lambda t: 0.5 * math.erfc(-t / math.sqrt(2))  # noqa: E731
    lo, hi = 0.0, 500.0
    for _ in range(200):
        eps = (lo + hi) / 2
        d = phi(1 / (2 * z) - eps * z) - math.exp(eps) * phi(-1 / (2 * z) - eps * z)
        lo, hi = (eps, hi) if d > delta else (lo, eps)
    return hi


def test_local_dp_spends_exactly_the_asked_epsilon_per_release():
    dp = DPConfig(mode="local", local_epsilon=8.0, delta=1e-5)
    ledger = PrivacyLedger(dp, population=4, sampled=4)
    assert ledger.local_epsilon(releases=1) == pytest.approx(8.0, abs=1e-3)  # Flower's calibration: 8.51
    # and the noise really gives at most that: the exact epsilon of the calibrated Gaussian is lower
    exact = analytic_gaussian_epsilon(local_noise_multiplier(8.0, 1e-5), 1e-5)
    assert 6.0 < exact <= 8.0
    ledger.record_asked_to_train(["a", "a", "b"])
    # k releases of noise z = one release of noise z / sqrt(k) (Gaussian composition)
    assert ledger.local_epsilon() >= analytic_gaussian_epsilon(local_noise_multiplier(8.0, 1e-5) / math.sqrt(2), 1e-5)


# --- central DP -----------------------------------------------------------------------------------
def central(mode="central-client-clip", sampled=4, z=1.0, clip=2.0, rng=None, **dp):
    cfg = Config(dp=DPConfig(mode=mode, noise_multiplier=z, clipping_norm=clip, **dp))
    ledger = PrivacyLedger(cfg.dp, population=sampled, sampled=sampled)
    strategy = CentralDP(FedAvg(weighted_by_key=DP_WEIGHT), cfg, ledger, rng=rng)
    return strategy, ledger


def aggregate(strategy, d, updates, norm_bits=None):
    strategy._current = ArrayRecord([np.zeros(d, np.float32)])  # what configure_train remembers
    replies = []
    for i, update in enumerate(updates):
        metrics = {DP_WEIGHT: 1, **({"norm_bit": norm_bits[i]} if norm_bits is not None else {})}
        replies.append(
            message(
                RecordDict({"arrays": ArrayRecord([update]), "metrics": MetricRecord(metrics)}), reply=True, src=i + 1
            )
        )
    arrays, _ = strategy.aggregate_train(1, replies)
    return arrays.to_numpy_ndarrays()[0]


def one_hot(d, value, at=0):
    update = np.zeros(d, np.float32)
    update[at] = value
    return update


def test_central_noise_has_std_z_c_over_sampled_and_is_fresh_every_time():
    z, clip, n, d = 1.0, 2.0, 4, 200_000
    results = []
    for _ in range(2):
        seed_every_global_generator()
        strategy, ledger = central(sampled=n, z=z, clip=clip)
        results.append(aggregate(strategy, d, [one_hot(d, 100.0)] * n))  # each clipped to `clip` here
        assert ledger.central_releases == [[z]]
    assert not np.allclose(results[0][1:], results[1][1:])
    for result in results:
        assert result[0] == pytest.approx(clip, abs=5 * z * clip / n)  # the mean of the clipped updates
        assert np.std(result[1:]) == pytest.approx(z * clip / n, rel=0.005)  # z*C on the sum, / n


def test_one_device_moves_the_release_by_at_most_c_over_the_number_sampled():
    """Add/remove-one device: a missing reply counts as a zero update, the denominator is public.
    Flower 1.42 divides by the replies: here 3 instead of 4, a third more than the noise covers."""
    d, clip, n = 1000, 1.0, 4
    outputs = []
    for replies in (4, 3):  # the same noise draw, with and without the fourth device
        strategy, _ = central(sampled=n, z=0.5, clip=clip, rng=np.random.default_rng(7))
        outputs.append(aggregate(strategy, d, [one_hot(d, 5.0, at=i) for i in range(replies)]))
    difference = outputs[0] - outputs[1]
    assert np.linalg.norm(difference) == pytest.approx(clip / n, rel=1e-5)
    assert difference[3] == pytest.approx(clip / n, rel=1e-5)  # exactly the fourth device's clipped update


# --- adaptive clipping (Andrew et al. 2021) -------------------------------------------------------
@pytest.mark.parametrize("was_clipped, grows", [(True, True), (False, False)])
def test_adaptive_clipping_grows_the_norm_when_every_update_is_clipped(was_clipped, grows):
    n, d = 100, 10
    strategy, _ = central("central-adaptive-clip", sampled=n, z=0.5, clip=1.0, clipped_count_stddev=5.0)
    aggregate(strategy, d, [one_hot(d, 0.5)] * n, norm_bits=[int(was_clipped)] * n)
    # target 0.5 unclipped, lr 0.2: C x exp(0.1) when all are clipped, x exp(-0.1) when none is
    # (the count's noise is 5 / 100 = 0.05 of a fraction: far from flipping the direction)
    assert (strategy.clipping_norm > 1.0) == grows
    assert strategy.clipping_norm == pytest.approx(math.exp(0.1 if grows else -0.1), rel=0.05)


def test_flowers_adaptive_clipping_moves_the_norm_the_wrong_way():
    """Flower 1.42's wrapper, kept under test: if an upgrade fixes it, this fails and the README's
    "known Flower defects" needs updating (flwr/serverapp/strategy/dp_adaptive_clipping.py,
    `_geometric_update` with the bit from `adaptive_clip_inputs_inplace`)."""
    n, d = 100, 10
    flower = DifferentialPrivacyClientSideAdaptiveClipping(
        FedAvg(weighted_by_key=DP_WEIGHT),
        noise_multiplier=0.5,
        num_sampled_clients=n,
        initial_clipping_norm=1.0,
        target_clipped_quantile=0.5,
        clip_norm_lr=0.2,
        clipped_count_stddev=5.0,
    )
    replies = [
        message(
            RecordDict(
                {"arrays": ArrayRecord([one_hot(d, 0.5)]), "metrics": MetricRecord({DP_WEIGHT: 1, "norm_bit": 1})}
            ),
            reply=True,
            src=i + 1,
        )
        for i in range(n)
    ]
    flower.current_arrays = ArrayRecord([np.zeros(d, np.float32)])
    flower.aggregate_train(1, replies)  # every update was clipped...
    assert flower.clipping_norm < 1.0  # ...and Flower shrinks the norm (the paper grows it)


def test_adaptive_noise_is_calibrated_to_the_norm_the_devices_clipped_to():
    n, d, clip = 20, 200_000, 1.0
    strategy, ledger = central("central-adaptive-clip", sampled=n, z=0.5, clip=clip, clipped_count_stddev=1.0)
    result = aggregate(strategy, d, [one_hot(d, clip)] * n, norm_bits=[1] * n)
    assert strategy.clipping_norm > clip * 1.05  # the norm moved...
    update_z, _ = adaptive_noise(strategy.dp, n)
    assert np.std(result[1:]) == pytest.approx(update_z * clip / n, rel=0.005)  # ...the noise used the old one
    # Andrew et al. 2021, Thm 1: update noise and count noise together are one Gaussian of z
    assert (update_z**-2 + (2 * 1.0) ** -2) ** -0.5 == pytest.approx(0.5)
    assert ledger.central_epsilon() == pytest.approx(
        PrivacyLedger(DPConfig(mode="central-client-clip", noise_multiplier=0.5), n, n).central_epsilon(1), rel=1e-6
    )


def test_the_unclipped_count_uses_centred_bits_and_the_claimed_noise():
    """k of n updates unclipped: the noised fraction has mean k/n and std stddev/n; with centred
    bits (sensitivity 1/2) that stddev is a Gaussian mechanism of multiplier 2 x stddev."""
    n, k, stddev, lr, target = 50, 30, 2.0, 0.2, 0.5
    fractions = []
    strategy, _ = central("central-adaptive-clip", sampled=n, z=0.5, clip=1.0, clipped_count_stddev=stddev)
    for _ in range(4000):
        strategy.clipping_norm = 1.0
        strategy._adapt_clipping_norm([1.0] * k + [0.0] * (n - k))
        fractions.append(target - math.log(strategy.clipping_norm) / lr)  # invert C <- C exp(-lr (b - target))
    assert np.mean(fractions) == pytest.approx(k / n, abs=4 * stddev / n / math.sqrt(4000))
    assert np.std(fractions) == pytest.approx(stddev / n, rel=0.05)
    strategy.clipping_norm = 1.0
    strategy._adapt_clipping_norm([])  # nobody replied: fraction ~ 1/2 (missing = centred zero), not 0
    assert abs(target - math.log(strategy.clipping_norm) / lr - 0.5) < 6 * stddev / n


# --- device sampling ------------------------------------------------------------------------------
class FakeGrid:
    def __init__(self, nodes: int):
        self.nodes = list(range(1, nodes + 1))

    def get_node_ids(self):
        return self.nodes


def sampled_nodes(cfg: Config) -> list[int]:
    ledger = PrivacyLedger(cfg.dp, population=100, sampled=10)
    strategy = build_strategy(cfg, ledger)
    strategy._construct_messages = lambda record, node_ids, message_type: node_ids  # no runtime to address
    seed_every_global_generator()
    return sorted(strategy.configure_train(1, ArrayRecord([np.zeros(3, np.float32)]), ConfigRecord(), FakeGrid(100)))


def test_devices_are_sampled_secretly_under_dp_and_reproducibly_without():
    private = Config(fraction_train=0.1, dp=DPConfig(mode="local"))
    draws = [sampled_nodes(private) for _ in range(3)]
    assert all(len(d) == 10 for d in draws) and len({tuple(d) for d in draws}) == 3  # C(100,10): no repeats
    plain = Config(fraction_train=0.1)
    assert sampled_nodes(plain) == sampled_nodes(plain)  # `seed` keeps non-private runs reproducible


# --- accounting -----------------------------------------------------------------------------------
def classic_rdp_conversion(event, delta):
    """How tensorflow-privacy computed epsilon when its MNIST table was published (its order list
    and eps = rdp(a) + log(1/delta) / (a - 1)); dp-accounting now converts more tightly."""
    orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
    accountant = rdp.RdpAccountant(orders)
    accountant.compose(event)
    return min(r + math.log(1 / delta) / (a - 1) for a, r in zip(accountant._orders, accountant._rdp))  # noqa: SLF001


@pytest.mark.parametrize("z, epochs, published", [(1.3, 15, 1.19), (1.1, 60, 3.01), (0.7, 45, 7.10)])
def test_dpsgd_epsilon_matches_tensorflow_privacys_published_mnist_table(z, epochs, published):
    # tensorflow/privacy tutorials README: 60,000 examples, batch 256, delta 1e-5
    dp = DPConfig(sgd=True, sgd_noise_multiplier=z, sgd_sampling_rate=256 / 60_000, delta=1e-5)
    ledger = PrivacyLedger(dp, population=3, sampled=3, local_epochs=epochs)
    ledger.record_asked_to_train(["device"])  # one round of `epochs` expected passes
    assert classic_rdp_conversion(ledger.sample_event(1), 1e-5) == pytest.approx(published, abs=0.005)
    tight = pld.PLDAccountant()
    tight.compose(ledger.sample_event(1))
    # the ledger's figure is a valid bound (>= the tight PLD figure) and no looser than the published one
    assert tight.get_epsilon(1e-5) <= ledger.sample_epsilon() <= published


@pytest.mark.parametrize("z, releases", [(1.0, 1), (0.8, 30), (2.0, 100)])
def test_central_epsilon_bounds_the_exact_gaussian_mechanism_closely(z, releases):
    ledger = PrivacyLedger(DPConfig(mode="central-client-clip", noise_multiplier=z, delta=1e-5), 1000, 50)
    for _ in range(releases):
        ledger.record_central([z])
    exact = analytic_gaussian_epsilon(z / math.sqrt(releases), 1e-5)  # k Gaussians = one of z / sqrt(k)
    assert exact <= ledger.central_epsilon() <= 1.25 * exact


def test_an_unseen_devices_dpsgd_projection_is_exact_and_the_budget_holds():
    """The old projection assumed q = 1 for a device not yet seen; 40 windows at batch 32 spent
    more. Now the plan is public: the projection for the next round is what the round spends."""
    dp = DPConfig(sgd=True, sgd_noise_multiplier=1.0, sgd_sampling_rate=0.1, delta=1e-5, max_epsilon=6.0)
    ledger = PrivacyLedger(dp, population=10, sampled=3, local_epochs=1)
    spent = []
    with pytest.raises(PrivacyBudgetExceeded, match="dp-max-epsilon = 6.0"):
        for r in range(100):
            ledger.check_next_round()
            ledger.record_asked_to_train(random.sample(range(10), 3) if r else [0, 1, 2])
            spent.append(ledger.sample_epsilon())
    assert spent and max(spent) <= 6.0
    worst = ledger.most_participations()
    assert ledger.sample_epsilon(rounds=worst + 1) > 6.0  # the refused round would have exceeded it
    assert ledger.sample_epsilon(rounds=worst) == max(spent)


def test_the_budget_stops_before_the_release_that_would_exceed_it():
    dp = DPConfig(mode="central-client-clip", noise_multiplier=1.0, delta=1e-5, max_epsilon=8.0)
    ledger = PrivacyLedger(dp, population=10, sampled=10)
    completed = 0
    with pytest.raises(PrivacyBudgetExceeded, match="dp-max-epsilon = 8.0"):
        while True:
            ledger.check_next_round()
            ledger.record_central([1.0])
            completed += 1
    # Flower's notes: epsilon 4.73, 7.08, 9.01 after 1, 2, 3 releases at z = 1, delta = 1e-5
    assert completed == 2 and ledger.central_epsilon() == pytest.approx(7.077, abs=0.002)


def test_the_ledger_survives_a_round_trip_through_its_state():
    dp = DPConfig(mode="local", sgd=True)
    ledger = PrivacyLedger(dp, 5, 5)
    ledger.record_asked_to_train(["a", "b", "a"])
    again = PrivacyLedger.from_state(dp, ledger.state_dict())
    assert again.report() == ledger.report()
    # nothing per device but how often it was asked (no sampling rates: they reveal text sizes)
    assert set(ledger.state_dict()) == {
        "population",
        "sampled",
        "central_releases",
        "participations",
        "carried_participations",
    }
    assert ledger.state_dict()["participations"] == {"a": 2, "b": 1}
    # a resumed run may give device "a" a new id: its 2 rounds carry over to whichever device is worst
    resumed = PrivacyLedger.from_state(dp, ledger.state_dict(), resumed=True)
    resumed.record_asked_to_train(["c"])
    assert resumed.most_participations() == 3 and resumed.report()["epsilon-local"] > ledger.report()["epsilon-local"]


# --- DP-SGD on the real model ---------------------------------------------------------------------
def test_fast_clipping_equals_clipping_each_examples_own_gradient():
    import tensorflow as tf

    from task.privacy.dpsgd import clipped_gradient_sum, registry
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
        norm = math.sqrt(sum(float(np.sum(g**2)) for g in grads))
        assert float(norms[i]) == pytest.approx(norm, rel=1e-3)
        scale = min(1.0, clip / norm)
        assert norm * scale <= clip * (1 + 1e-6)
        expected = [e + scale * g for e, g in zip(expected, grads)]
    for got, want in zip(clipped, expected):
        np.testing.assert_allclose(got.numpy(), want, rtol=2e-3, atol=2e-6)


def test_a_dpsgd_step_adds_fresh_noise_of_std_z_c_over_the_expected_batch():
    import tensorflow as tf

    from task.privacy.dpsgd import make_step

    z, clip, expected_batch = 1.3, 0.7, 16.0
    moves = []
    for _ in range(2):  # two devices (or rounds) that an attacker seeded alike
        seed_every_global_generator()
        model = build_model(SMALL)
        before = [v.numpy().copy() for v in model.trainable_variables]
        step = make_step(
            model, tf.keras.optimizers.SGD(1.0), clipping_norm=clip, noise_multiplier=z, expected_batch=expected_batch
        )
        empty = tf.zeros([0, SMALL.seq_len], tf.int32)  # Poisson sampling may pick no window: noise still
        step(empty, empty)
        moves.append(np.concatenate([(b - v.numpy()).ravel() for b, v in zip(before, model.trainable_variables)]))
    assert moves[0].size > 50_000
    assert not np.allclose(moves[0], moves[1])  # tensorflow-privacy's global-generator noise repeats here
    for moved in moves:
        assert np.std(moved) == pytest.approx(z * clip / expected_batch, rel=0.02)


def test_dpsgd_trains_the_real_model_with_the_public_plan():
    from task import train as trainer
    from task.privacy.dpsgd import train_dpsgd

    rng = np.random.default_rng(1)
    x = rng.integers(4, 50, (64, SMALL.seq_len)).astype(np.int32)  # target = input: a copy task
    results = []
    for _ in range(2):
        seed_every_global_generator()
        model = build_model(SMALL)
        before = trainer.evaluate(model, x, x).loss
        metrics, stats = train_dpsgd(
            model, x, x, sampling_rate=0.25, steps=40, learning_rate=0.01, clipping_norm=1.0, noise_multiplier=0.3
        )
        assert (stats.sampling_rate, stats.steps) == (0.25, 40)
        assert 0 <= stats.clipped_fraction <= 1
        assert trainer.evaluate(model, x, x).loss < before - 1.0  # it learned, through the noise
        results.append(model.get_weights()[0])
    assert not np.allclose(results[0], results[1])  # sampling and noise differ although every seed is the same


# --- bad settings ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "run_config, key",
    [
        ({"dp-mode": "central-client-clip", "dp-clipping-norm": 0.0}, "dp-clipping-norm"),  # noise, no clipping
        ({"dp-mode": "local", "dp-clipping-norm": -1.0}, "dp-clipping-norm"),
        ({"dp-mode": "central-server-clip", "dp-noise-multiplier": 0.0}, "dp-noise-multiplier"),
        ({"dp-mode": "central", "dp-noise-multiplier": 1.0}, "dp-mode"),
        ({"dp-delta": 1.5}, "dp-delta"),
        ({"dp-sgd": True, "dp-sgd-clipping-norm": 0.0}, "dp-sgd-clipping-norm"),
        ({"dp-sgd": "yes"}, "dp-sgd"),
        ({"dp-max-epsilon": -2.0}, "dp-max-epsilon"),
        ({"dp-max-epsilon": 5.0}, "dp-max-epsilon"),  # a budget with nothing to spend it
        ({"dp-sgd": True, "dp-sgd-sampling-rate": 0.0}, "dp-sgd-sampling-rate"),
        (
            {"dp-mode": "central-adaptive-clip", "dp-noise-multiplier": 2.0, "dp-clipped-count-stddev": 1.0},
            "dp-noise-multiplier",
        ),  # the count's noise alone would spend more than the whole budget
        ({"dp-mode": "central-adaptive-clip", "server-optimizer": "fedadam"}, "server-optimizer"),
    ],
)
def test_bad_dp_settings_are_refused_naming_the_key(run_config, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        Config.from_run_config(run_config)


def test_delta_must_be_below_one_over_the_population():
    cfg = Config.from_run_config({"dp-mode": "central-client-clip", "dp-delta": 0.05, "min-available-nodes": 2})
    assert population_and_sample(FakeGrid(10), cfg) == (10, 10)
    with pytest.raises(ConfigError, match="'dp-delta'.*1/50"):
        population_and_sample(FakeGrid(50), cfg)


def test_sampling_more_devices_than_exist_is_refused_before_training():
    cfg = Config.from_run_config(
        {
            "dp-mode": "central-client-clip",
            "min-train-nodes": 8,
            "min-available-nodes": 8,
            "min-evaluate-nodes": 2,
            "round-timeout": 1.0,
        }
    )
    with pytest.raises(ConfigError, match="'min-train-nodes'.*5 connected"):
        population_and_sample(FakeGrid(5), cfg)


def test_the_fresh_noise_check_users_run_on_their_deployment_passes(capsys):
    from scripts.check_fresh_noise import main

    assert main() == 0
    out = capsys.readouterr().out
    assert out.count("| yes |") == 3 and "all noise fresh and as claimed" in out


def test_unequal_device_weights_are_refused_under_dp():
    ok = [RecordDict({"metrics": MetricRecord({"dp-weight": 1})}) for _ in range(3)]
    require_equal_weights(ok)
    with pytest.raises(ValueError, match="dp-weight = 7"):
        require_equal_weights(ok + [RecordDict({"metrics": MetricRecord({"dp-weight": 7})})])
