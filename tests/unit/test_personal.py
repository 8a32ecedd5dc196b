"""The personal mix (task/personal.py): the shared model for a new user, the user's own words once
they have typed them, chosen by each device on its own earlier text (never the text it is scored
on), "off" whenever the mix does not beat the shared model there, and nothing sent under DP."""

import numpy as np
import pytest
import tensorflow as tf

from task.config import ModelConfig
from task.data.device_text import make_windows
from task.data.vocab import EOS_ID, FIRST_WORD_ID, default_vocabulary
from task.keystrokes import KeystrokeCount, PrefixIndex
from task.model import build_model
from task.personal import (
    GRID,
    OFF,
    PersonalCounts,
    PointScorer,
    Ranked,
    Tally,
    choose,
    contexts,
    summarise,
    word_probabilities,
)
from task.train import evaluate, train

MODEL = ModelConfig(vocab_size=2000, seq_len=10, embed_dim=16, num_heads=2, ffn_dim=32)
VOCAB = default_vocabulary(MODEL.vocab_size)


def score_at(model, x, y, counts, point, index=None, logits=None):
    """The mix at `point` on windows x, y, from the model's logits (or those given)."""
    scorer = PointScorer(point, counts, index or PrefixIndex(VOCAB), len(VOCAB))
    scorer.add(x, y, logits if logits is not None else model(tf.constant(x), training=False).numpy())
    return scorer.result()


def test_a_user_without_text_gets_exactly_the_shared_models_suggestions():
    """With no counts every grid point is the shared model: its top-1/top-3 equal the shared
    evaluation's, which ranks with TensorFlow over the words a keyboard shows (task/train.py)."""
    tf.keras.utils.set_random_seed(1)
    model = build_model(MODEL)
    x, y = make_windows([s.split() for s in ["the day was long and the night was cold"] * 20], VOCAB, MODEL.seq_len)
    train(model, x, y, epochs=1, batch_size=8, learning_rate=0.01)
    test_x, test_y = make_windows([["a", "long", "day", "and", "a", "cold", "night"]] * 5, VOCAB, MODEL.seq_len)
    empty = PersonalCounts.from_windows(np.zeros((0, MODEL.seq_len), np.int32), np.zeros((0, MODEL.seq_len), np.int32),
                                        len(VOCAB))
    shared = evaluate(model, test_x, test_y)
    for point in GRID:
        personal = score_at(model, test_x, test_y, empty, point)
        assert (personal.top1, personal.top3) == pytest.approx((shared.top1, shared.top3))


def test_the_mix_is_a_distribution_over_words_and_the_users_pairs_win_once_typed_often():
    sentences = [["my", "dog", "is", "called", "jack"]] * 30
    x, y = make_windows(sentences, VOCAB, MODEL.seq_len)
    counts = PersonalCounts.from_windows(x, y, len(VOCAB))
    logits = np.random.default_rng(0).normal(size=(4, len(VOCAB)))
    logits[:, EOS_ID] = 50.0  # a model sure the sentence ends
    p_model = word_probabilities(logits)
    assert p_model[:, :FIRST_WORD_ID].sum() == 0 and np.allclose(p_model.sum(axis=1), 1)
    prev = np.array(VOCAB.encode(["my", "called", "the", "the"]))
    before = np.array(VOCAB.encode(["<bos>", "is", "my", "at"]))
    rows = counts.rows(before, prev)
    for point in GRID:
        p = counts.mix(p_model, rows, point)
        assert np.allclose(p.sum(axis=1), 1) and p[:, :FIRST_WORD_ID].sum() == 0
        assert p[0].argmax() == VOCAB.encode(["dog"])[0] and p[1].argmax() == VOCAB.encode(["jack"])[0]  # 30 times each
    # a context the user never typed keeps the model's ranking of the words they never typed
    never = [w for w in range(FIRST_WORD_ID, len(VOCAB)) if counts.words[w] == 0]
    p = counts.mix(p_model, rows, GRID[0])
    assert np.argsort(p[2, never])[-5:].tolist() == np.argsort(p_model[2, never])[-5:].tolist()


def test_personal_suggestions_beat_the_untrained_shared_model_on_the_users_own_phrases():
    model = build_model(MODEL)
    x, y = make_windows([["see", "you", "at", "the", "station", "tonight"]] * 30, VOCAB, MODEL.seq_len)
    test_x, test_y = make_windows([["see", "you", "at", "the", "station", "tonight"]] * 3, VOCAB, MODEL.seq_len)
    score = score_at(model, test_x, test_y, PersonalCounts.from_windows(x, y, len(VOCAB)), GRID[3])
    shared = evaluate(model, test_x, test_y, vocab=VOCAB)
    assert score.top1 == 1.0 > shared.top1
    assert score.keystroke_savings > shared.keystroke_savings + 0.3


def test_the_keyboard_never_spends_a_suggestion_on_a_special_token():
    """Scored as the keyboard shows it: a model that ranks <eos> first everywhere scores exactly
    as the same model without that preference."""
    tf.keras.utils.set_random_seed(2)
    model = build_model(MODEL)
    x, y = make_windows([s.split() for s in ["we went to the market and bought bread"] * 20], VOCAB, MODEL.seq_len)
    train(model, x, y, epochs=1, batch_size=8, learning_rate=0.01)
    before = evaluate(model, x, y, vocab=VOCAB)
    bias = model.layers[-1].bias
    bias.assign(tf.tensor_scatter_nd_update(bias, [[EOS_ID]], [100.0]))
    after = evaluate(model, x, y, vocab=VOCAB)
    assert (after.top1, after.top3, after.keystroke_savings) == (before.top1, before.top3, before.keystroke_savings)
    assert before.top3 > 0


def test_without_evidence_the_keyboard_stays_off_and_a_clear_gain_switches_the_mix_on():
    tally = Tally.empty()
    assert choose(tally) is OFF  # a new user: the shared model alone
    tally.wins[5], tally.losses[5] = 3, 2  # net gain 1: not more than chance
    assert choose(tally) is OFF
    tally.wins[5], tally.losses[5] = 12, 4  # net 8 >= sqrt(16): a real gain
    assert choose(tally) == GRID[5]
    tally.wins[7], tally.losses[7] = 30, 4  # a better point wins
    assert choose(tally) == GRID[7]
    tally.wins[:], tally.losses[:] = 40, 45  # the mix loses everywhere
    assert choose(tally) is OFF


def test_the_spread_counts_devices_hurt_or_helped_by_more_than_one_prediction():
    def device(shared, personal, n=100, on=1.0):
        return {"num-examples": n, "top3": shared, "personal-top1": personal / 2, "personal-top3": personal,
                "personal-keystroke-savings": 0.5, "personal-all-top3": personal, "personal-on": on}

    devices = [device(0.50, 0.60), device(0.50, 0.49), device(0.50, 0.52), device(0.40, 0.40, on=0.0),
               device(0.50, 0.47, n=200)]  # gains in predictions: +10, -1, +2, 0, -6
    out = summarise(devices)
    assert out["personal-hurt"] == pytest.approx(1 / 5)  # -6 only: -1 is not more than one prediction
    assert out["personal-helped"] == pytest.approx(2 / 5)
    assert out["personal-on"] == pytest.approx(4 / 5)
    assert out["personal-top3"] == pytest.approx((60 + 49 + 52 + 40 + 94) / 600)


def device_text(train, test):
    from task.data.device_text import DeviceText

    return DeviceText("a user", train + test, train, test, [])


def shared_model_that_knows(sentences, seed=6):
    tf.keras.utils.set_random_seed(seed)
    model = build_model(MODEL)
    x, y = make_windows(sentences, VOCAB, MODEL.seq_len)
    train(model, x, y, epochs=8, batch_size=8, learning_rate=0.01)
    return model


def test_when_the_shared_model_beats_the_users_counts_the_device_chooses_off_and_ships_the_shared_model():
    """The user's history predicts nothing of what they type next (random words), and the shared
    model knows their phrases: the device keeps the shared model, and its personalised scores are
    the shared model's exactly."""
    from task.config import Config
    from task.device import evaluate_round

    phrases = [["see", "you", "at", "the", "station", "tonight"], ["we", "went", "to", "the", "market", "today"]]
    model = shared_model_that_knows(phrases * 20)
    rng = np.random.default_rng(7)
    noise = [[VOCAB.words[i] for i in rng.integers(FIRST_WORD_ID, 1500, size=7)] for _ in range(40)]
    train_text = [s for pair in zip(noise, phrases * 20) for s in pair]  # random words between the phrases
    metrics = evaluate_round(Config(model=MODEL), device_text(train_text, phrases * 3), model.get_weights())
    assert metrics["personal-on"] == 0.0
    for k in ("top1", "top3", "keystroke-savings", "all-top3"):
        assert metrics[f"personal-{k}"] == metrics[k], k


def test_when_the_users_counts_predict_well_the_device_chooses_a_mixing_point():
    from task.config import Config
    from task.device import evaluate_round

    model = build_model(MODEL)  # a shared model that knows nothing yet
    mine = [["see", "you", "at", "the", "station", "tonight"], ["my", "dog", "is", "called", "jack"]]
    metrics = evaluate_round(Config(model=MODEL), device_text(mine * 20, mine * 2), model.get_weights())
    assert metrics["personal-on"] == 1.0
    assert metrics["personal-top3"] > metrics["top3"] + 0.5


def test_the_devices_choice_never_uses_the_text_it_is_scored_on(monkeypatch):
    """The choice is made before the held-out text is read, from training windows only: changing
    the held-out text (here to text the mix would win on outright) changes no choice, and no
    held-out window reaches the tally."""
    from task import device as device_module
    from task.config import Config

    model = build_model(MODEL)
    rng = np.random.default_rng(8)
    train_text = [[VOCAB.words[i] for i in rng.integers(FIRST_WORD_ID, 1500, size=7)] for _ in range(40)]
    seen, chosen = [], []
    real_tally, real_choose = device_module.tally, device_module.choose
    monkeypatch.setattr(device_module, "tally", lambda counts, x, y, *a: seen.append(y.copy()) or real_tally(counts, x, y, *a))
    monkeypatch.setattr(device_module, "choose", lambda t: chosen.append(real_choose(t)) or chosen[-1])
    for test_text in (train_text[-3:], [["my", "dog", "is", "called", "jack"]] * 3):
        device_module.evaluate_round(Config(model=MODEL), device_text(train_text, test_text), model.get_weights())
    assert len(chosen) == 2 and chosen[0] == chosen[1]
    val_x, val_y = make_windows(train_text[-8:], VOCAB, MODEL.seq_len)  # the last 20% of the training sentences
    assert all(np.isin(y[y >= FIRST_WORD_ID], val_y).all() for y in seen)
    dog = VOCAB.encode(["dog"])[0]
    assert not any((y == dog).any() for y in seen)  # the second held-out text's words never reached the choice


def test_under_dp_no_personal_score_leaves_the_device():
    """B3/O1: the mix is fit on the user's training text, so under DP neither a train reply nor an
    evaluate reply carries a personal score or a fold (task/releases.py withholds them); the
    server never chooses a point from them."""
    from dataclasses import replace

    from flwr.app import ArrayRecord, ConfigRecord, RecordDict

    from client_app.app import app
    from task.config import EVALUATE_FIRST, Config
    from task.privacy import DP_WEIGHT
    from tests.helpers import context, message

    cfg = Config(sentences_per_device=40, model=MODEL)
    cfg = replace(cfg, dp=replace(cfg.dp, mode="central-client-clip"))
    config = ConfigRecord({"server-round": 1, EVALUATE_FIRST: True, "clipping_norm": 1.0})
    for kind in ("train", "evaluate"):
        reply = app(message(RecordDict({"arrays": ArrayRecord(build_model(MODEL).get_weights()), "config": config}),
                            kind), context(cfg, {"partition-id": 0, "num-partitions": 5}))
        assert not reply.has_error()
        sent = dict(reply.content["metrics"])
        assert not [k for k in sent if "personal" in k or "baseline" in k], kind
        if kind == "train":
            assert set(sent) == {DP_WEIGHT}
        else:
            assert {"loss", "top1", "top3", "all-top3"} <= set(sent)


def test_the_shared_scores_under_dp_equal_the_shared_part_of_the_full_scores():
    """Skipping the mix under DP changes no shared-model value (all-top3 counted the same way)."""
    from dataclasses import replace

    from task.config import Config
    from task.data.device_text import load_device_text
    from task.device import evaluate_round

    cfg = Config(sentences_per_device=40, model=MODEL)
    text = load_device_text(cfg, partition_id=1, num_partitions=5)
    weights = build_model(MODEL).get_weights()
    full = evaluate_round(cfg, text, weights)
    shared = evaluate_round(replace(cfg, dp=replace(cfg.dp, mode="central-client-clip")), text, weights, personal=False)
    assert shared == pytest.approx({k: full[k] for k in shared})


def test_ranking_only_the_users_words_and_the_models_top_three_gives_the_full_mixs_ranking():
    """Ranked scores only the words seen after each context plus the top three of u + mu p; a
    brute-force ranking of the whole mix (PersonalCounts.mix, the formula) must agree at every
    point, and its distribution (keystrokes) must be the mix itself."""
    rng = np.random.default_rng(3)
    sentences = [[VOCAB.words[i] for i in rng.integers(FIRST_WORD_ID, 60, size=8)] for _ in range(40)]
    x, y = make_windows(sentences, VOCAB, MODEL.seq_len)
    counts = PersonalCounts.from_windows(x[:30], y[:30], len(VOCAB))
    logits = rng.normal(size=(len(x) - 30, MODEL.seq_len, len(VOCAB)))
    at = y[30:].reshape(-1) >= FIRST_WORD_ID
    p_model = word_probabilities(logits.reshape(-1, len(VOCAB))[at])
    before, prev = (c[at] for c in contexts(x[30:]))
    target, rows = y[30:].reshape(-1)[at], counts.rows(before, prev)
    ranked = Ranked(counts, p_model, before, prev)
    hits = []
    for point in GRID:
        full = counts.mix(p_model, rows, point)
        brute = np.argsort(-full, axis=1, kind="stable")[:, :3]
        assert (ranked.top3(point) == brute).all(), point
        assert np.allclose(ranked.distribution(point, np.arange(len(target))), full)
        hits.append(np.count_nonzero((brute == target[:, None]).any(axis=1)))
    assert max(hits) > min(hits)  # the grid points do differ here
    score = score_at(None, x[30:], y[30:], counts, GRID[0], logits=logits)
    strokes = KeystrokeCount()
    strokes.add(counts.mix(p_model, rows, GRID[0]), target, PrefixIndex(VOCAB))
    assert score.keystroke_savings == pytest.approx(strokes.savings)
    assert score.top3 == hits[0] / len(target)


@pytest.mark.parametrize("part", ["all", "output"])
def test_fine_tuning_learns_the_users_text_and_moves_only_the_part_asked(part):
    from task.finetune import fine_tune
    from task.model import OUTPUT

    tf.keras.utils.set_random_seed(4)
    model = build_model(MODEL)
    x, y = make_windows([["see", "you", "at", "the", "station", "tonight"]] * 30, VOCAB, MODEL.seq_len)
    before = [w.copy() for w in model.get_weights()]
    loss_before = evaluate(model, x, y).loss
    fine_tune(model, x, y, part=part, learning_rate=1e-2, epochs=10)
    assert evaluate(model, x, y).loss < loss_before - 0.5
    output = {id(v) for v in model.get_layer(OUTPUT).trainable_variables}
    for variable, old in zip(model.weights, before):
        moved = not np.array_equal(variable.numpy(), old)
        if part == "output" or id(variable) in output:
            assert moved == (id(variable) in output), variable.name
        elif variable.trainable:
            assert moved, variable.name


def test_the_personal_part_weighs_more_the_more_the_user_has_typed():
    """A new user gets the shared model exactly; each time the user types a phrase again, the mix
    gives its next word more probability."""
    p_model = word_probabilities(np.random.default_rng(5).normal(size=(1, len(VOCAB))))
    dog = VOCAB.encode(["dog"])[0]
    before, prev = np.array(VOCAB.encode(["<bos>"])), np.array(VOCAB.encode(["my"]))
    shares = []
    for times in (0, 1, 3, 10, 30):
        x, y = make_windows([["my", "dog", "is", "here"]] * times, VOCAB, MODEL.seq_len)
        counts = PersonalCounts.from_windows(x, y, len(VOCAB))
        p = counts.mix(p_model, counts.rows(before, prev), GRID[len(GRID) // 2])
        if times == 0:
            assert np.allclose(p, p_model)
        shares.append(p[0, dog])
    assert all(a < b for a, b in zip(shares, shares[1:])), shares


def test_the_users_own_words_outside_the_vocabulary_count_in_the_every_word_top3():
    """The personal dictionary: a name the vocabulary lacks, typed in training, is suggested in the
    held-out text; the shared model can never suggest it. The in-vocabulary scores ignore it."""
    from task.config import Config
    from task.data.device_text import DeviceText
    from task.device import evaluate_round

    cfg = Config(model=MODEL)
    train_text = ([["i", "met", "zorblax", "at", "the", "market"]] * 4 + [["we", "went", "home"]]) * 5
    test_text = [["i", "met", "zorblax", "again"], ["we", "went", "to", "glimbor"]]
    text = DeviceText("a user", train_text + test_text, train_text, test_text, [])
    metrics = evaluate_round(cfg, text, build_model(MODEL).get_weights())
    # 8 word targets: 'zorblax' (typed before), 'glimbor' (never) and 6 in the vocabulary
    assert metrics["all-top3"] == pytest.approx(metrics["top3"] * 6 / 8)
    assert metrics["personal-all-top3"] >= 2 / 8 + metrics["all-top3"]  # 'zorblax' and 'met' after 'i', at least


def test_the_mix_matches_probabilities_computed_by_hand():
    """Ids 4 = "a", 5 = "b". The user typed "a b." and "a.": u(a) = 2, u(b) = 1, N = 3; after "a"
    (at a sentence start) once "b". Model: 1/2 each. At (kappa2, mu, kappa3) = (1, 3, 1), D = 3/4:
    q(a) = (2 + 3/2) / 6 = 7/12; p2(a | a) = (0 + (1 + 3/4) q(a)) / (1 + 1) = 7/8 q(a);
    p3(a | <bos> a) = (0 + (1 + 3/4) p2(a | a)) / 2 = 49/64 * 7/12; p3(b) = 1 - p3(a)."""
    x = np.array([[2, 4, 5], [2, 4, 0]], np.int32)
    y = np.array([[4, 5, 3], [4, 3, 0]], np.int32)
    counts = PersonalCounts.from_windows(x, y, 6)
    assert counts.words.tolist() == [0, 0, 0, 0, 2, 1]
    p_model = np.array([[0, 0, 0, 0, 0.5, 0.5]])
    p = counts.mix(p_model, counts.rows(np.array([2]), np.array([4])), (1.0, 3.0, 1.0))
    a = 49 / 64 * 7 / 12
    assert p[0].tolist() == pytest.approx([0, 0, 0, 0, a, 1 - a], abs=1e-12)
    # a sentence start the user always began with "a": triple (<pad>, <bos>) seen twice, pair twice
    p = counts.mix(p_model, counts.rows(np.array([0]), np.array([2])), (1.0, 3.0, 1.0))
    q_a, q_b = 7 / 12, 5 / 12
    p2_a, p2_b = (2 - 0.75 + 1.75 * q_a) / 3, 1.75 * q_b / 3
    assert p[0, 4:].tolist() == pytest.approx([(2 - 0.75 + 1.75 * p2_a) / 3, 1.75 * p2_b / 3], abs=1e-12)
