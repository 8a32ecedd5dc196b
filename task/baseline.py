"""Simple baselines a learned model must beat, scored exactly like the model (task.train).

- unigram: always suggest the most frequent words of the device's own training text;
- bigram: suggest the words that most often followed the previous word in the device's own
  training text, backing off to the unigram list. This is the best a device does alone with
  counting, so beating it shows what the shared model brings.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from task.data.vocab import FIRST_WORD_ID, PAD_ID, Vocabulary
from task.keystrokes import KeystrokeCount, PrefixIndex, keystrokes


def ngram_baseline(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, vocab: Vocabulary | None = None
) -> dict[str, float]:
    """Top-1/top-3 accuracy of unigram and bigram suggestions on the test windows; with `vocab`,
    their keystroke savings too (the same orders, completing the typed prefix)."""
    unigram = Counter(int(t) for t in train_y.ravel() if t >= FIRST_WORD_ID)
    follows: dict[int, Counter] = defaultdict(Counter)
    for prev, nxt in zip(train_x.ravel(), train_y.ravel()):
        if prev != PAD_ID and nxt >= FIRST_WORD_ID:
            follows[int(prev)][int(nxt)] += 1
    top_unigram = [w for w, _ in unigram.most_common(3)]
    bigram_cache: dict[int, list[int]] = {}

    def bigram_top3(prev: int) -> list[int]:
        if prev not in bigram_cache:
            own = [w for w, _ in follows[prev].most_common(3)] if prev in follows else []
            bigram_cache[prev] = (own + [w for w in top_unigram if w not in own])[:3]
        return bigram_cache[prev]

    hits = Counter()
    scored = 0
    for prev, target in zip(test_x.ravel(), test_y.ravel()):
        if target < FIRST_WORD_ID:
            continue
        scored += 1
        target, prev = int(target), int(prev)
        for name, suggestions in (("unigram", top_unigram), ("bigram", bigram_top3(prev))):
            hits[f"{name}_top1"] += bool(suggestions[:1] == [target])
            hits[f"{name}_top3"] += target in suggestions
    keys = ("unigram_top1", "unigram_top3", "bigram_top1", "bigram_top3")
    out = {k: hits[k] / max(scored, 1) for k in keys}
    if vocab is not None:
        out.update(_keystroke_savings(unigram, follows, test_x, test_y, vocab))
    return out


def _keystroke_savings(unigram: Counter, follows: dict[int, Counter], test_x, test_y, vocab: Vocabulary) -> dict:
    """Scores that order words as the suggestions above do: the bigram's own counts first, then
    the unigram counts; words never seen score 0 and so are never suggested."""
    index = PrefixIndex(vocab)
    unigram_scores = np.zeros(len(vocab))
    for word, n in unigram.items():
        unigram_scores[word] = n
    counts = {"unigram": KeystrokeCount(), "bigram": KeystrokeCount()}
    by_prev: dict[int, list[int]] = defaultdict(list)  # one score vector per context, not per position
    for prev, target in zip(test_x.ravel().tolist(), test_y.ravel().tolist()):
        if target >= FIRST_WORD_ID:
            by_prev[prev].append(target)
    top = 1 + unigram_scores.max()
    unigram_done: dict[int, tuple[int, int]] = {}  # the unigram's keystrokes depend on the word only
    for prev, targets in by_prev.items():
        bigram_scores = unigram_scores.copy()
        for word, n in follows.get(prev, {}).items():
            bigram_scores[word] += n * top  # any bigram count outranks every unigram
        for target in targets:
            if target not in unigram_done:
                unigram_done[target] = keystrokes(unigram_scores, target, index)
            counts["unigram"].count(*unigram_done[target])
        counts["bigram"].add(np.broadcast_to(bigram_scores, (len(targets), len(bigram_scores))), np.array(targets), index)
    return {f"{name}_keystroke_savings": c.savings for name, c in counts.items()}
