"""Sample-level DP-SGD on the real model: fast clipping equals per-example clipping, the noise is
fresh and of the claimed std, and training learns through it with the public plan."""

import math

import numpy as np
import pytest

from task.config import Config, ConfigError, ModelConfig
from task.model import build_model
from tests.helpers import SMALL_MODEL as SMALL
from tests.helpers import seed_every_global_generator


def test_fast_clipping_equals_clipping_each_examples_own_gradient():
    import tensorflow as tf

    from features.dp_mechanisms.dpsgd import clipped_gradient_sum, registry
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


def test_a_dpsgd_step_adds_fresh_noise_of_std_z_c_over_the_public_denominator():
    import tensorflow as tf

    from features.dp_mechanisms.dpsgd import make_step

    z, clip, denominator = 1.3, 0.7, 16.0
    moves = []
    for _ in range(2):  # two devices (or rounds) that an attacker seeded alike
        seed_every_global_generator()
        model = build_model(SMALL)
        before = [v.numpy().copy() for v in model.trainable_variables]
        step = make_step(
            model, tf.keras.optimizers.SGD(1.0), clipping_norm=clip, noise_multiplier=z, denominator=denominator
        )
        empty = tf.zeros([0, SMALL.seq_len], tf.int32)  # Poisson sampling may pick no window: noise still
        step(empty, empty)
        moves.append(np.concatenate([(b - v.numpy()).ravel() for b, v in zip(before, model.trainable_variables)]))
    assert moves[0].size > 50_000
    assert not np.allclose(moves[0], moves[1])  # tensorflow-privacy's global-generator noise repeats here
    for moved in moves:
        assert np.std(moved) == pytest.approx(z * clip / denominator, rel=0.02)


def test_dpsgd_trains_the_real_model_with_the_public_plan():
    from features.dp_mechanisms.dpsgd import train_dpsgd
    from task import train as trainer

    rng = np.random.default_rng(1)
    x = rng.integers(4, 50, (64, SMALL.seq_len)).astype(np.int32)  # target = input: a copy task
    results = []
    for _ in range(2):
        seed_every_global_generator()
        model = build_model(SMALL)
        before = trainer.evaluate(model, x, x).loss
        metrics, stats = train_dpsgd(
            model, x, x, sampling_rate=0.25, steps=40, learning_rate=0.01, clipping_norm=1.0, noise_multiplier=0.3,
            batch_size=16,
        )
        assert (stats.sampling_rate, stats.steps) == (0.25, 40)
        assert 0 <= stats.clipped_fraction <= 1
        assert trainer.evaluate(model, x, x).loss < before - 1.0  # it learned, through the noise
        results.append(model.get_weights()[0])
    assert not np.allclose(results[0], results[1])  # sampling and noise differ although every seed is the same




def test_the_dpsgd_noise_generator_state_is_os_entropy_all_of_it(monkeypatch):
    """TensorFlow's non-deterministic state comes from a 32-bit-seeded process generator (about
    2**32 streams): the step's generator must take its whole Philox state from `secrets`."""
    import secrets

    import tensorflow as tf

    from features.dp_mechanisms.dpsgd import make_step
    from task.privacy import mechanisms

    drawn, real = [], secrets.randbits

    def randbits(k):
        drawn.append((k, real(k)))
        return drawn[-1][1]

    monkeypatch.setattr(mechanisms.secrets, "randbits", randbits)
    step = make_step(build_model(SMALL), tf.keras.optimizers.SGD(1.0), clipping_norm=1.0, noise_multiplier=1.0,
                     denominator=8.0)
    assert [k for k, _ in drawn] == [192]  # one read of OS entropy for the whole state
    bits = drawn[0][1]
    state = step.noise_source.state.numpy().astype(np.int64).tolist()
    # every 64-bit word of the state, none from elsewhere
    assert state == [(bits >> (64 * i) & (2**64 - 1)) - 2**63 for i in range(3)]


def test_the_dpsgd_release_is_divided_by_a_constant_that_does_not_depend_on_the_data(monkeypatch):
    """Dividing by q x len(x) would rescale the whole release when one window is added."""
    from features.dp_mechanisms import dpsgd

    built = []

    def spy(model, optimizer, **kwargs):
        built.append(kwargs)
        return None

    monkeypatch.setattr(dpsgd, "make_step", spy)
    rng = np.random.default_rng(2)
    for windows in (64, 65):
        x = rng.integers(4, 50, (windows, SMALL.seq_len)).astype(np.int32)
        dpsgd.train_dpsgd(build_model(SMALL), x, x, sampling_rate=0.25, steps=0, learning_rate=0.01,
                          clipping_norm=1.0, noise_multiplier=1.0, batch_size=16)
    assert built[0] == built[1] and built[0]["denominator"] == 16.0


LSTM = ModelConfig(architecture="lstm", vocab_size=2000, seq_len=10, embed_dim=16, ffn_dim=32)


class _NoGrid:
    def get_node_ids(self):
        raise AssertionError("the server asked for devices before refusing the config")


def test_dpsgd_with_a_layer_it_cannot_clip_is_refused_before_any_device_trains(tmp_path):
    from flwr.app import Context, RecordDict

    from server_app.app import main

    cfg = Config(model=LSTM, dp=Config().dp.__class__(sgd=True), out_dir=str(tmp_path))
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=cfg.to_run_config())
    with pytest.raises(ConfigError, match=r"'dp.sgd'.*lstm \(LSTM\).*supports Embedding, Dense, LayerNormalization"):
        main(_NoGrid(), context)
    assert not (tmp_path / "run-1" / "metrics.json").exists()  # no round, no epsilon booked


def test_under_dpsgd_no_evaluation_reply_tells_how_long_the_device_computed():
    from dataclasses import replace

    from tests.unit.test_client_app import CFG, assert_no_timing_is_sent

    assert_no_timing_is_sent(replace(CFG.dp, sgd=True, delta=1e-4), participation=True)
