"""Simple baselines a learned model must beat, scored exactly like the model (task.train).

- unigram: always suggest the most frequent words of the device's own training text;
- bigram: suggest the words that most often followed the previous word in the device's own
  training text, backing off to the unigram list. This is the best a device does alone with
  counting, so beating it shows what the shared model brings.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from task.data.vocab import FIRST_WORD_ID, PAD_ID


def ngram_baseline(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray
) -> dict[str, float]:
    """Top-1/top-3 accuracy of unigram and bigram suggestions on the test windows."""
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
    return {k: hits[k] / max(scored, 1) for k in keys}
