"""Keystroke savings against hand-counted keystrokes, and its bounds on real text."""

import numpy as np
import pytest

from task.baseline import ngram_baseline
from task.data.vocab import SPECIALS, Vocabulary
from task.keystrokes import KeystrokeCount, PrefixIndex, keystrokes

WORDS = ["the", "then", "there", "they", "cat", "car", "care"]
VOCAB = Vocabulary(list(SPECIALS) + WORDS)
INDEX = PrefixIndex(VOCAB)


def scores(order: list[str]) -> np.ndarray:
    """Scores that rank `order` first to last; special tokens highest of all (never suggested)."""
    s = np.zeros(len(VOCAB))
    s[:4] = 100.0
    for rank, word in enumerate(order):
        s[VOCAB.words.index(word)] = len(order) - rank
    return s


@pytest.mark.parametrize("target, order, typed", [
    ("the", ["the", "cat", "car", "care", "then", "there", "they"], 1),  # suggested at once: one tap
    ("care", ["the", "then", "there", "they", "cat", "car", "care"], 2),  # "c" leaves cat, car, care
    ("there", ["the", "then", "they", "there", "cat", "car", "care"], 5),  # "t", "th", "the" leave 4 words; "ther" 1
    ("they", ["the", "then", "there", "they", "cat", "car", "care"], 5),  # never among three: typed + space
])
def test_keystrokes_are_counted_as_a_user_types(target, order, typed):
    assert keystrokes(scores(order), VOCAB.words.index(target), INDEX) == (len(target) + 1, typed)


def test_a_word_tied_with_others_is_shown_after_them():
    flat = np.zeros(len(VOCAB))
    assert keystrokes(flat, VOCAB.words.index("car"), INDEX) == (4, 2)  # "c": three words tie, all shown
    assert keystrokes(flat, VOCAB.words.index("then"), INDEX) == (5, 5)  # "the" still leaves four: typed in full


def test_savings_of_a_perfect_keyboard_is_one_minus_one_tap_per_word():
    words = ["they", "car", "then", "the", "care"]
    targets = np.array([VOCAB.words.index(w) for w in words] + [1, 0])  # <unk> and <pad>: not scored
    perfect = np.stack([scores([w] + [v for v in WORDS if v != w]) for w in words] + [np.zeros(len(VOCAB))] * 2)
    count = KeystrokeCount()
    count.add(perfect, targets, INDEX)
    assert count.full == sum(len(w) + 1 for w in words) == 23
    assert count.savings == pytest.approx(1 - 5 / 23)


def test_the_bigram_baseline_completes_what_followed_the_previous_word():
    ids = {w: VOCAB.words.index(w) for w in WORDS}
    # training text: "the cat", "the cat", "the car", "they care", "they care", "they care"
    train_x = np.array([[ids["the"]], [ids["the"]], [ids["the"]], [ids["they"]], [ids["they"]], [ids["they"]]])
    train_y = np.array([[ids["cat"]], [ids["cat"]], [ids["car"]], [ids["care"]], [ids["care"]], [ids["care"]]])
    test_x, test_y = np.array([[ids["the"]]]), np.array([[ids["car"]]])
    out = ngram_baseline(train_x, train_y, test_x, test_y, VOCAB)
    # bigram after "the": cat, car first: "car" suggested at once (1 of 4 keystrokes)
    assert out["bigram_keystroke_savings"] == pytest.approx(1 - 1 / 4)
    # unigram: care (3), cat (2), car (1) are the only words seen: "car" is third at once
    assert out["unigram_keystroke_savings"] == pytest.approx(1 - 1 / 4)
    test_y = np.array([[ids["there"]]])  # never seen: suggested only once "ther" leaves no other word
    out = ngram_baseline(train_x, train_y, test_x, test_y, VOCAB)
    assert out["bigram_keystroke_savings"] == pytest.approx(1 - 5 / 6)


def test_on_real_text_counting_the_previous_word_saves_more_than_the_most_frequent_words():
    """The built-in personas: a bigram keyboard beats a unigram one, and both stay below a
    keyboard that always suggests the right word first (an upper bound, one tap per word)."""
    from task.data import personas
    from task.data.device_text import make_windows
    from task.data.text import split_sentences
    from task.data.vocab import default_vocabulary

    vocab = default_vocabulary(2000)
    sentences = [s for line in personas.device_sentences(3, 200) for s in split_sentences(line)]
    train_x, train_y = make_windows(sentences[:160], vocab, 12)
    test_x, test_y = make_windows(sentences[160:], vocab, 12)
    out = ngram_baseline(train_x, train_y, test_x, test_y, vocab)
    scored = [int(t) for t in test_y.ravel() if t >= 4]
    best = 1 - len(scored) / sum(len(vocab.words[t]) + 1 for t in scored)
    assert 0 < out["unigram_keystroke_savings"] < out["bigram_keystroke_savings"] < best
