"""Personal suggestions: the shared model's next-word probabilities mixed with the user's own
counts, on the device, from the device's own training text only.

A hierarchical cache with absolute discounting (Kneser & Ney 1995; MacKay & Peto 1995's
hierarchical Dirichlet with a discount), whose base is the shared model:

    q(w)              = (u(w) + mu * p_model(w | context)) / (N + mu)
    p2(w | b)         = (max(c(b, w) - D, 0) + (kappa2 + D * T(b)) * q(w)) / (c(b) + kappa2)
    p3(w | a b)       = (max(c(a b, w) - D, 0) + (kappa3 + D * T(a b)) * p2(w | b)) / (c(a b) + kappa3)

u counts the user's words (N in all), c their word pairs and triples, T how many different words
followed a context; D = 0.75, Kneser and Ney's usual discount, fixed. A user with no text gets
the shared model exactly; the more a user has typed after a context, the more their own counts
decide, so the weight of the personal part grows with how much text the user has. Like Grave et
al. 2017's neural cache, nothing is trained. The counts never leave the device: the mix is
post-processing of local data and changes no privacy figure.

(kappa2, mu, kappa3) is one of GRID, chosen federatedly and never on the text it is scored on:
every device scores every point, and each half of the devices uses the point the other half scored
best (`cross_fitted`, below). On WikiText-2 this beat the undiscounted bigram-only cache by 0.8
points of top-3 (docs/personalisation.md).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from task.data.vocab import FIRST_WORD_ID, PAD_ID, UNK_ID
from task.keystrokes import KeystrokeCount, PrefixIndex

DISCOUNT = 0.75
GRID = tuple((k2, mu, k3) for k2 in (1.0, 4.0, 16.0, 64.0) for mu in (3000.0, 30000.0) for k3 in (1.0, 4.0))
DEFAULT_POINT = GRID.index((4.0, 3000.0, 1.0))  # before any device has scored the grid


def contexts(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(word before the previous, previous word) of every position of windows x, flattened; the
    first position of a window has <pad> two back."""
    before = np.concatenate([np.full((len(x), 1), PAD_ID, x.dtype), x[:, :-1]], axis=1)
    return before.reshape(-1), x.reshape(-1)


@dataclass
class PersonalCounts:
    """The user's counts of words, word pairs and word triples (next words only: a keyboard never
    suggests a special token)."""

    words: np.ndarray  # u: [vocabulary] float64
    pairs: dict  # previous word -> Counter of next words
    triples: dict  # (word before, previous word) -> Counter of next words

    @classmethod
    def from_windows(cls, x: np.ndarray, y: np.ndarray, vocab_size: int) -> PersonalCounts:
        words = np.zeros(vocab_size)
        pairs: dict = defaultdict(Counter)
        triples: dict = defaultdict(Counter)
        before, prev = contexts(x)
        for a, b, nxt in zip(before.tolist(), prev.tolist(), y.ravel().tolist()):
            if b != PAD_ID and nxt >= FIRST_WORD_ID:
                words[nxt] += 1
                pairs[b][nxt] += 1
                triples[(a, b)][nxt] += 1
        return cls(words, dict(pairs), dict(triples))

    def rows(self, before: np.ndarray, prev: np.ndarray, columns: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        """Pair and triple counts of each position's contexts, [positions, columns] (default: every
        word); a count's word is always one the user typed, so `columns` may be just those."""
        columns = np.arange(len(self.words)) if columns is None else columns
        index = dict(zip(columns.tolist(), range(len(columns))))
        pair_rows, triple_rows = np.zeros((2, len(prev), len(columns)))
        for i, (a, b) in enumerate(zip(before.tolist(), prev.tolist())):
            for rows, counter in ((pair_rows, self.pairs.get(b, {})), (triple_rows, self.triples.get((a, b), {}))):
                for w, n in counter.items():
                    rows[i, index[w]] = n
        return pair_rows, triple_rows

    def mix(self, p_model: np.ndarray, rows: tuple[np.ndarray, np.ndarray], point: tuple) -> np.ndarray:
        """p3 above for each position: [positions, vocabulary], each row summing to 1."""
        kappa2, mu, kappa3 = point
        p = (self.words[None] + mu * p_model) / (self.words.sum() + mu)
        for counts, kappa in zip(rows, (kappa2, kappa3)):
            p = _discounted(counts, kappa, p)
        return p


def _discounted(counts: np.ndarray, kappa: float, base: np.ndarray) -> np.ndarray:
    seen = counts.sum(axis=1, keepdims=True)
    kinds = np.count_nonzero(counts, axis=1)[:, None]  # how many words the counts saw after the context
    return (np.maximum(counts - DISCOUNT, 0.0) + (kappa + DISCOUNT * kinds) * base) / (seen + kappa)


def word_probabilities(logits: np.ndarray) -> np.ndarray:
    """Softmax over the words a keyboard can show (special tokens get 0)."""
    z = np.asarray(logits, np.float64).copy()
    z[:, :FIRST_WORD_ID] = -np.inf
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


@dataclass
class PersonalScore:
    """Per grid point: top-1 and top-3 hits over `scored` in-vocabulary word targets. At one point:
    keystroke savings, and top-3 hits over every word target (`all_scored`, the words the shared
    vocabulary lacks included: the user's own are suggested once typed, the others never)."""

    top1: np.ndarray
    top3: np.ndarray
    scored: int
    keystroke_savings: float
    all_top3: float = 0.0
    all_scored: int = 0

    def as_metrics(self) -> dict[str, float]:
        out = {"personal-keystroke-savings": self.keystroke_savings,
               "personal-all-top3": self.all_top3 / max(self.all_scored, 1)}
        for i in range(len(GRID)):
            out[f"personal-top1-{i}"] = self.top1[i] / max(self.scored, 1)
            out[f"personal-top3-{i}"] = self.top3[i] / max(self.scored, 1)
        return out


def score_personal(predict, x: np.ndarray, y: np.ndarray, counts: PersonalCounts, index: PrefixIndex,
                   point: int, batch_size: int = 32, model_words: int | None = None) -> PersonalScore:
    """Score the mixed suggestions on held-out windows; `predict(x)` gives the model's logits
    [batch, seq_len, model_words] (PersonalScorer, for the rest)."""
    scorer = PersonalScorer(counts, index, point, model_words)
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size]
        scorer.add(xb, y[start : start + batch_size], np.asarray(predict(np.where(xb >= scorer.model_words, UNK_ID, xb))))
    return scorer.result()


class PersonalScorer:
    """Scores the mix batch by batch, from logits the shared model's evaluation computed anyway.

    Ids from `model_words` on are the user's own words the model lacks (the windows and the counts
    use them; the model read them as <unk>). Keystroke savings and the top-3 over every word
    target are counted at grid point `point` only. A word the user never typed gets the model's
    probability times one factor per position (every count of it is 0), so the mix is computed
    on the user's own words only: its top 3 lie among them and the model's top 3 of the rest, and
    the full distribution (for keystrokes) is the model's scaled, with the user's words over it."""

    CHUNK = 32  # windows at a time: a few [positions, vocabulary] arrays stay small

    def __init__(self, counts: PersonalCounts, index: PrefixIndex, point: int, model_words: int | None = None):
        self.counts, self.index, self.point = counts, index, point
        self.model_words = model_words or len(counts.words)
        self.own = np.flatnonzero(counts.words)
        self.top1, self.top3 = np.zeros(len(GRID)), np.zeros(len(GRID))
        self.scored = self.all_scored = self.all_top3 = 0
        self.strokes = KeystrokeCount()

    def add(self, x: np.ndarray, y: np.ndarray, logits: np.ndarray) -> None:
        for start in range(0, len(x), self.CHUNK):
            end = start + self.CHUNK
            self._add(x[start:end], y[start:end].reshape(-1), logits[start:end])

    def _add(self, xb: np.ndarray, yb: np.ndarray, logits: np.ndarray) -> None:
        counts, own = self.counts, self.own
        at = (yb >= FIRST_WORD_ID) | (yb == UNK_ID)  # every word the user typed next
        if not at.any():
            return
        p_model = np.zeros((int(at.sum()), len(counts.words)), np.float32)
        p_model[:, : self.model_words] = word_probabilities(logits.reshape(-1, logits.shape[-1])[at])
        before, prev = (c[at] for c in contexts(xb))
        target = yb[at]
        known = (target >= FIRST_WORD_ID) & (target < self.model_words)  # what the shared model is scored on
        rows = counts.rows(before, prev, own)
        levels = [(r.sum(axis=1, keepdims=True), np.count_nonzero(r, axis=1)[:, None]) for r in rows]
        others = p_model.copy()
        others[:, own] = -1.0
        others_top = _top3(others)
        ids = np.concatenate([np.broadcast_to(own, (len(target), len(own))), others_top], axis=1)
        short_model = np.take_along_axis(p_model, ids, 1).astype(np.float64)
        zeros = np.zeros((len(target), 3))
        short_words = np.concatenate([np.broadcast_to(counts.words[own], (len(target), len(own))), zeros], axis=1)
        short_rows = [np.concatenate([r, zeros], axis=1) for r in rows]
        total = counts.words.sum()
        self.scored += int(known.sum())
        self.all_scored += len(target)
        for i, (kappa2, mu, kappa3) in enumerate(GRID):
            p = (short_words + mu * short_model) / (total + mu)
            scale = mu / (total + mu)  # what a word never typed gets, times its model probability
            for r, (seen, kinds), kappa in zip(short_rows, levels, (kappa2, kappa3)):
                p = (np.maximum(r - DISCOUNT, 0.0) + (kappa + DISCOUNT * kinds) * p) / (seen + kappa)
                scale = scale * (kappa + DISCOUNT * kinds) / (seen + kappa)
            best = np.argpartition(-p, 2, axis=1)[:, :3]
            ranked = np.take_along_axis(ids, np.take_along_axis(best, np.argsort(-np.take_along_axis(p, best, 1), 1), 1), 1)
            hit3 = (ranked == target[:, None]).any(axis=1)
            self.top1[i] += np.count_nonzero((ranked[:, 0] == target) & known)
            self.top3[i] += np.count_nonzero(hit3 & known)
            if i == self.point:
                self.all_top3 += int(hit3.sum())
                full = (scale * p_model)[known]
                full[:, own] = p[known][:, : len(own)]
                self.strokes.add(full, target[known], self.index)

    def result(self) -> PersonalScore:
        return PersonalScore(self.top1, self.top3, self.scored, self.strokes.savings, self.all_top3, self.all_scored)


def _top3(scores: np.ndarray) -> np.ndarray:
    """The three best columns of each row, in any order (three passes of argmax: several times
    faster than an argpartition over a vocabulary-wide row). Overwrites `scores`."""
    rows = np.arange(len(scores))
    best = np.empty((len(scores), 3), np.int64)
    for k in range(3):
        best[:, k] = scores.argmax(axis=1)
        scores[rows, best[:, k]] = -np.inf
    return best


FOLD = "personal-fold"  # which half of the devices a device is in (its node id's parity)
_PER_POINT = ("personal-top1-", "personal-top3-")


def cross_fitted(devices: list[dict]) -> tuple[dict[str, float], list[int], int]:
    """The personalised scores of one evaluation, from every device's scores of every grid point.

    Two-fold cross-fitting over devices (as Motley, Wu et al. 2022, picks one mixing weight on
    validation clients): a device is scored at the point that the *other* fold's devices scored
    best, so no device's reported score was tuned on its own test text. Returns the metrics
    (top-1, top-3 and keystroke savings weighted per scored word, and `personal-hurt`, the share
    of devices whose top-3 the mix lowered), the point each fold uses for keystrokes next time, and
    the point all devices scored best (what a deployed keyboard uses: task/litert/suggest.py).
    """
    scored = [d for d in devices if "personal-top3-0" in d]
    best = [_best_point([d for d in scored if int(d[FOLD]) != fold]) for fold in (0, 1)]
    if not scored:
        return {}, best, DEFAULT_POINT
    weight = np.array([d["num-examples"] for d in scored], np.float64)
    point = [best[int(d[FOLD])] for d in scored]
    top1 = np.array([d[f"personal-top1-{p}"] for d, p in zip(scored, point)])
    top3 = np.array([d[f"personal-top3-{p}"] for d, p in zip(scored, point)])
    savings = np.array([d["personal-keystroke-savings"] for d in scored])
    hurt = np.mean([t < d["top3"] for d, t in zip(scored, top3)])
    return ({"personal-top1": float(weight @ top1 / weight.sum()), "personal-top3": float(weight @ top3 / weight.sum()),
             "personal-keystroke-savings": float(weight @ savings / weight.sum()), "personal-hurt": float(hurt)},
            best, _best_point(scored))


def _best_point(devices: list[dict]) -> int:
    """The grid point with the best top-3 over `devices`, per scored word."""
    if not devices:
        return DEFAULT_POINT
    weight = np.array([d["num-examples"] for d in devices], np.float64)
    top3 = np.array([[d[f"personal-top3-{i}"] for i in range(len(GRID))] for d in devices])
    return int(np.argmax(weight @ top3))


def without_personal(metrics: dict) -> dict:
    """A device's metrics less the per-point scores, which only cross_fitted reads."""
    return {k: v for k, v in metrics.items() if k != FOLD and not k.startswith(_PER_POINT)}
