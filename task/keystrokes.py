"""Keystroke savings: the share of keystrokes a user does not type because the word they were
typing was among the keyboard's three suggestions (the usual measure of word prediction for
keyboards; e.g. Trnka & McCoy 2008, Fowler et al. 2015).

Typed in full, a word costs len(word) + 1 keystrokes (its space). With suggestions, after each
prefix the user has typed (the empty one first, as the word starts) the keyboard shows the three
most likely vocabulary words that begin with it; if the word is among them, one tap enters it and
its space: k + 1 keystrokes after k typed characters. Savings = 1 - keystrokes with suggestions
/ keystrokes in full, over the scored words.

Scored words are those in the vocabulary: an out-of-vocabulary word (<unk>) cannot be suggested
by any model here, and its length is not known after encoding. Ties count against the word (a
word that scores the same as others is shown after them), so a counting baseline suggests a word
it never saw only once the typed prefix leaves at most three words.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from task.data.vocab import FIRST_WORD_ID, Vocabulary

SUGGESTIONS = 3


class PrefixIndex:
    """Vocabulary words in alphabetical order, so the words with a prefix are one slice."""

    def __init__(self, vocab: Vocabulary):
        order = sorted(range(FIRST_WORD_ID, len(vocab)), key=lambda i: vocab.words[i])
        self.words = [vocab.words[i] for i in order]
        self.ids = np.array(order, dtype=np.int64)
        self.vocab = vocab

    def with_prefix(self, prefix: str) -> np.ndarray:
        lo = bisect.bisect_left(self.words, prefix)
        hi = bisect.bisect_left(self.words, prefix + "\U0010ffff", lo)
        return self.ids[lo:hi]


def keystrokes(scores: np.ndarray, target: int, index: PrefixIndex) -> tuple[int, int]:
    """(keystrokes in full, keystrokes with suggestions) for one word, given the scores the
    keyboard gives every vocabulary id at this position."""
    word = index.vocab.words[target]
    full = len(word) + 1
    score = scores[target]
    for typed in range(len(word)):
        candidates = scores[index.with_prefix(word[:typed])]
        ahead = int(np.count_nonzero(candidates > score)) + int(np.count_nonzero(candidates == score)) - 1
        if ahead < SUGGESTIONS:
            return full, typed + 1
    return full, full


@dataclass
class KeystrokeCount:
    full: int = 0
    with_suggestions: int = 0

    def add(self, scores: np.ndarray, targets: np.ndarray, index: PrefixIndex) -> None:
        """`scores`: [n, vocabulary] for the n positions whose next word is `targets`."""
        for row, target in zip(scores, targets):
            if target >= FIRST_WORD_ID:
                self.count(*keystrokes(row, int(target), index))

    def count(self, full: int, used: int) -> None:
        """One word: its keystrokes in full and with suggestions (`keystrokes`)."""
        self.full += full
        self.with_suggestions += used

    @property
    def savings(self) -> float:
        return 1.0 - self.with_suggestions / self.full if self.full else 0.0
