import math

import numpy as np
import pytest

from task.baseline import ngram_baseline
from task.config import ModelConfig
from task.data.vocab import EOS_ID, PAD_ID, UNK_ID
from task.model import build_model
from task.train import evaluate, train

SMALL = ModelConfig(vocab_size=300, seq_len=8, embed_dim=16, num_heads=2, num_blocks=1, ffn_dim=32, dropout=0.0)


def toy_windows(n=64, seed=0):
    """A learnable language: each word is followed by (word + 1), starting at a random word."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(4, 200, size=n)
    seq = starts[:, None] + np.arange(SMALL.seq_len + 1)[None, :]
    return seq[:, :-1].astype(np.int32), seq[:, 1:].astype(np.int32)


def test_default_model_is_phone_sized_and_predicts_every_position():
    cfg = ModelConfig()
    model = build_model(cfg)
    assert model.count_params() <= 2_000_000
    out = model(np.zeros((2, cfg.seq_len), np.int32))
    assert out.shape == (2, cfg.seq_len, cfg.vocab_size)


def test_same_seed_gives_the_same_initial_model():
    a, b = build_model(SMALL, seed=1).get_weights(), build_model(SMALL, seed=1).get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_evaluate_metrics_are_consistent():
    x, y = toy_windows()
    m = evaluate(build_model(SMALL), x, y)
    assert m.perplexity == pytest.approx(math.exp(m.loss))
    assert 0 <= m.top1 <= m.top3 <= 1
    assert m.num_examples == y.size
    assert m.loss == pytest.approx(math.log(SMALL.vocab_size), rel=0.2)  # untrained: near uniform


def test_pad_unk_and_eos_targets_are_never_scored_for_accuracy():
    x, y = toy_windows(8)
    y = y.copy()
    y[:, -3:] = [PAD_ID, UNK_ID, EOS_ID]
    m = evaluate(build_model(SMALL), x, y)
    assert m.num_examples == 8 * (SMALL.seq_len - 3)


def test_training_lowers_loss_and_raises_accuracy():
    x, y = toy_windows(128)
    model = build_model(SMALL)
    before = evaluate(model, x, y)
    metrics = train(model, x, y, epochs=15, batch_size=32, learning_rate=0.01)
    after = evaluate(model, x, y)
    assert metrics.num_examples == 128
    assert after.loss < before.loss - 1.0
    assert after.top3 > before.top3 + 0.3


def test_max_steps_caps_local_work():
    x, y = toy_windows(128)
    model = build_model(SMALL)
    start = [w.copy() for w in model.get_weights()]
    train(model, x, y, epochs=50, batch_size=32, learning_rate=0.01, max_steps=1)
    assert model.optimizer.iterations.numpy() == 1
    assert any(not np.array_equal(a, b) for a, b in zip(start, model.get_weights()))


def test_bigram_baseline_counts_the_device_text():
    # "5 -> 6" always; "7 -> 8" twice, "7 -> 9" once
    train_x = np.array([[5, 7, 7, 7]], np.int32)
    train_y = np.array([[6, 8, 8, 9]], np.int32)
    test_x = np.array([[5, 7, 42]], np.int32)
    test_y = np.array([[6, 9, PAD_ID]], np.int32)
    b = ngram_baseline(train_x, train_y, test_x, test_y)
    assert b["bigram_top1"] == 0.5  # 6 after 5 right; 9 after 7 is only 2nd
    assert b["bigram_top3"] == 1.0
    assert b["unigram_top1"] == 0.0  # most frequent word is 8


def test_a_reused_model_trains_exactly_like_a_new_one():
    # task.device reuses one compiled model per worker process; the device after another one
    # must get the same result as on a freshly built model (no optimiser state carried over).
    x, y = toy_windows(96)
    other_x, other_y = toy_windows(64, seed=5)
    start = build_model(SMALL, seed=3).get_weights()

    fresh = build_model(SMALL)
    fresh.set_weights(start)
    train(fresh, x, y, epochs=3, batch_size=32, learning_rate=0.01, seed=7)

    reused = build_model(SMALL)
    train(reused, other_x, other_y, epochs=2, batch_size=16, learning_rate=0.05, seed=1)  # a previous device
    traced = reused.train_function
    reused.set_weights(start)
    train(reused, x, y, epochs=3, batch_size=32, learning_rate=0.01, seed=7)

    assert reused.train_function is traced  # not compiled again
    assert reused.optimizer.iterations.numpy() == 9
    for a, b in zip(fresh.get_weights(), reused.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_adam_epsilon_holds_weights_whose_gradient_is_below_it_in_a_rounds_first_steps():
    """Keras's Adam adds epsilon to the square root of the *uncorrected* second moment (about
    0.03 |g| at step 1), so with the default 1e-7 a round's first steps move every weight whose
    gradient is not exactly zero by ~learning-rate, sign-like. Here the output rows of words no
    window targets get gradients of ~1e-3 (in the default model, trained, ~1e-7): an epsilon well
    above that holds them still, while the rows that matter keep learning."""
    x, y = toy_windows(64)
    unused = np.setdiff1d(np.arange(SMALL.vocab_size), np.concatenate([x.ravel(), y.ravel()]))
    moved = {}
    for epsilon in (1e-7, 1e-2):
        model = build_model(SMALL)
        before = model.get_layer("next_word_logits").get_weights()[0][:, unused].copy()
        train(model, x, y, epochs=1, batch_size=32, learning_rate=0.005, max_steps=2, adam_epsilon=epsilon)
        assert model.optimizer.epsilon == epsilon
        after = model.get_layer("next_word_logits").get_weights()[0][:, unused]
        moved[epsilon] = float(np.median(np.abs(after - before)))
    assert moved[1e-7] > 0.008  # 2 steps of ~learning-rate each, whatever the gradient
    assert moved[1e-2] < moved[1e-7] / 5


def test_the_device_optimiser_can_be_plain_sgd():
    x, y = toy_windows(128)
    model = build_model(SMALL)
    before = evaluate(model, x, y)
    train(model, x, y, epochs=20, batch_size=32, learning_rate=0.5, optimizer="sgd")
    assert type(model.optimizer).__name__ == "SGD" and evaluate(model, x, y).loss < before.loss - 0.5
