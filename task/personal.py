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

Each device chooses for itself, on the device, whether to mix and at which point: "off" (the
shared model alone) or one of GRID's (kappa2, mu, kappa3). It scores every candidate on the later
part of its *training* text with counts from the part before (`choose_on_device`), never on the
text it is then scored on, and mixes only when the mix beats the shared model there by more than
chance (`choose`); a new user, or one whose own history predicts little, keeps the shared model.
The suggestion CLI makes the same choice for its user (task/litert/my_words.py).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from task.data.vocab import FIRST_WORD_ID, PAD_ID, UNK_ID
from task.keystrokes import KeystrokeCount, PrefixIndex

DISCOUNT = 0.75
GRID = tuple((k2, mu, k3) for k2 in (1.0, 4.0, 16.0, 64.0) for mu in (3000.0, 30000.0) for k3 in (1.0, 4.0))
OFF = None  # the shared model alone: always a candidate, and the choice without evidence
DEFAULT_POINT = GRID.index((4.0, 3000.0, 1.0))  # the CLI's --mix default shape (kept for reference)
VALIDATION_FRACTION = 0.2  # the later share of the training sentences a device chooses on
MAX_VALIDATION_SENTENCES = 100  # ... at most: the choice costs a forward pass over them


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


def word_probabilities(logits: np.ndarray, columns: int | None = None, dtype=np.float64) -> np.ndarray:
    """Softmax over the words a keyboard can show (special tokens get 0), in `columns` columns (the
    rest 0: the user's own words the model lacks)."""
    n, words = logits.shape
    p = np.zeros((n, columns or words), dtype)
    z = p[:, :words]
    z[:] = logits
    z[:, :FIRST_WORD_ID] = -np.inf
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return p


@dataclass
class Tally:
    """Each GRID point against the shared model on the same targets: `wins`, positions where the mix
    has the word in its top 3 and the shared model does not; `losses`, the reverse."""

    wins: np.ndarray
    losses: np.ndarray

    @classmethod
    def empty(cls) -> Tally:
        return cls(np.zeros(len(GRID), np.int64), np.zeros(len(GRID), np.int64))

    def add(self, other: Tally) -> None:
        self.wins += other.wins
        self.losses += other.losses


def choose(tally: Tally) -> tuple | None:
    """The point to mix at, or OFF. A point is chosen only if its net gain over the shared model
    (wins - losses) is at least 2 and at least one standard deviation of that difference under no
    effect (sqrt(wins + losses), the sign test's): otherwise the shared model alone, so noise alone
    rarely switches a keyboard to a mix that hurts it."""
    gain = tally.wins - tally.losses
    best = int(np.argmax(gain))
    if gain[best] >= max(2.0, float(np.sqrt(tally.wins[best] + tally.losses[best]))):
        return GRID[best]
    return OFF


class Ranked:
    """The mix's top 3 at every position, for any GRID point, without scoring the whole vocabulary
    per point. A word never seen after the position's context gets alpha * (u(w) + mu p(w)), alpha
    the same for all such words (module doc), so the top 3 of those is the top 3 of u + mu p, which
    depends on mu only: one vocabulary-wide pass per mu. The words seen after the context (few) are
    scored exactly at each point.

    `p_model`: [positions, vocabulary] the shared model's word probabilities (word_probabilities,
    padded with 0 for the user's own words the model lacks); `before`, `prev`: each position's
    context ids; `counts`: from text other than these positions'."""

    def __init__(self, counts: PersonalCounts, p_model: np.ndarray, before: np.ndarray, prev: np.ndarray):
        self.counts, self.p = counts, p_model
        n = len(prev)
        pos, word, c2, c3 = [], [], [], []
        self.seen2, self.kinds2, self.seen3, self.kinds3 = (np.zeros(n) for _ in range(4))
        for i, (a, b) in enumerate(zip(before.tolist(), prev.tolist())):
            pairs, triples = counts.pairs.get(b), counts.triples.get((a, b), {})
            if not pairs:
                continue
            self.seen2[i], self.kinds2[i] = sum(pairs.values()), len(pairs)
            self.seen3[i], self.kinds3[i] = sum(triples.values()), len(triples)
            for w, c in pairs.items():
                pos.append(i), word.append(w), c2.append(c), c3.append(triples.get(w, 0))
        self.pos, self.word = np.array(pos, np.int64), np.array(word, np.int64)
        self.c2, self.c3 = np.array(c2, np.float64), np.array(c3, np.float64)
        self._unseen: dict[float, np.ndarray] = {}

    def unseen_top3(self, mu: float) -> np.ndarray:
        """[positions, 3]: the best three words by u + mu p among those never seen after the context."""
        if mu not in self._unseen:
            score = mu * self.p
            score += self.counts.words[None, : score.shape[1]]
            score[self.pos, self.word] = -np.inf
            self._unseen[mu] = _top3(score)
        return self._unseen[mu]

    def top3(self, point: tuple) -> np.ndarray:
        """[positions, 3] word ids, best first."""
        kappa2, mu, kappa3 = point
        words = self.counts.words
        scale2 = (kappa2 + DISCOUNT * self.kinds2) / (self.seen2 + kappa2)
        scale3 = (kappa3 + DISCOUNT * self.kinds3) / (self.seen3 + kappa3)
        norm = words.sum() + mu
        unseen = self.unseen_top3(mu)
        rows = np.arange(len(unseen))[:, None]
        unseen_p = (scale2 * scale3)[:, None] * (words[unseen] + mu * self.p[rows, unseen]) / norm
        q = (words[self.word] + mu * self.p[self.pos, self.word]) / norm
        p2 = (np.maximum(self.c2 - DISCOUNT, 0.0) + (kappa2 + DISCOUNT * self.kinds2[self.pos]) * q) / (
            self.seen2[self.pos] + kappa2)
        p3 = (np.maximum(self.c3 - DISCOUNT, 0.0) + (kappa3 + DISCOUNT * self.kinds3[self.pos]) * p2) / (
            self.seen3[self.pos] + kappa3)
        pos = np.concatenate([np.repeat(np.arange(len(unseen)), 3), self.pos])
        word = np.concatenate([unseen.ravel(), self.word])
        score = np.concatenate([unseen_p.ravel(), p3])
        order = np.lexsort((-score, pos))  # by position, best first
        pos, word = pos[order], word[order]
        first = np.searchsorted(pos, np.arange(len(unseen)))
        return np.stack([word[first + k] for k in range(3)], axis=1)

    def distribution(self, point: tuple, rows: np.ndarray) -> np.ndarray:
        """[len(rows), vocabulary] the mix itself at `point` for positions `rows` (sorted), in the
        model's precision (keystrokes)."""
        kappa2, mu, kappa3 = point
        words = self.counts.words
        norm = words.sum() + mu
        alpha = ((kappa2 + DISCOUNT * self.kinds2) / (self.seen2 + kappa2)
                 * (kappa3 + DISCOUNT * self.kinds3) / (self.seen3 + kappa3))[rows]
        out = self.p[rows] * self.p.dtype.type(mu)
        out += words.astype(out.dtype)
        out *= (alpha / norm).astype(out.dtype)[:, None]
        at = np.flatnonzero(np.isin(self.pos, rows))
        pos, word = self.pos[at], self.word[at]
        q = (words[word] + mu * self.p[pos, word]) / norm
        p2 = (np.maximum(self.c2[at] - DISCOUNT, 0.0) + (kappa2 + DISCOUNT * self.kinds2[pos]) * q) / (
            self.seen2[pos] + kappa2)
        out[np.searchsorted(rows, pos), word] = (np.maximum(self.c3[at] - DISCOUNT, 0.0)
                                                 + (kappa3 + DISCOUNT * self.kinds3[pos]) * p2) / (self.seen3[pos] + kappa3)
        return out


def _top3(scores: np.ndarray) -> np.ndarray:
    """The three best columns of each row, best first (three passes of argmax: several times faster
    than an argpartition over a vocabulary-wide row). Overwrites `scores`."""
    rows = np.arange(len(scores))
    best = np.empty((len(scores), 3), np.int64)
    for k in range(3):
        best[:, k] = scores.argmax(axis=1)
        scores[rows, best[:, k]] = -np.inf
    return best


def positions(x: np.ndarray, y: np.ndarray, logits: np.ndarray, vocab_size: int, model_words: int):
    """The positions a keyboard suggests at (the next word is a word: the user's own too), with
    their contexts, targets and the model's probabilities padded to `vocab_size` columns."""
    yb = y.reshape(-1)
    at = (yb >= FIRST_WORD_ID) | (yb == UNK_ID)
    # float32: a device's whole scoring stays within 2x the shared evaluation (benchmark_scoring.py)
    p = word_probabilities(logits.reshape(-1, logits.shape[-1])[at], vocab_size, np.float32)
    before, prev = (c[at] for c in contexts(x))
    return before, prev, yb[at], p


def tally(counts: PersonalCounts, x: np.ndarray, y: np.ndarray, logits: np.ndarray, model_words: int) -> Tally:
    """Every GRID point against the shared model on windows x, y (text the counts never saw)."""
    before, prev, target, p = positions(x, y, logits, len(counts.words), model_words)
    out = Tally.empty()
    if not len(target):
        return out
    known = target < model_words
    shared = (_top3(p.copy()) == target[:, None]).any(axis=1) & known
    ranked = Ranked(counts, p, before, prev)
    for i, point in enumerate(GRID):
        mixed = (ranked.top3(point) == target[:, None]).any(axis=1) & known
        out.wins[i] = int(np.count_nonzero(mixed & ~shared))
        out.losses[i] = int(np.count_nonzero(shared & ~mixed))
    return out


def choose_on_device(counts_before: PersonalCounts, x: np.ndarray, y: np.ndarray, logits: np.ndarray,
                     model_words: int) -> tuple | None:
    """The device's own choice: the candidates scored on its later training windows x, y with the
    counts of its training text before them."""
    return choose(tally(counts_before, x, y, logits, model_words))


@dataclass
class PersonalScore:
    """The keyboard the device ships, scored at its chosen point (OFF: the shared model's own
    scores, exactly). top1/top3 over `scored` in-vocabulary word targets; `all_top3` over every
    word target, the user's own words the vocabulary lacks included."""

    point: tuple | None
    top1: float
    top3: float
    keystroke_savings: float
    all_top3: float

    def as_metrics(self) -> dict[str, float]:
        return {"personal-top1": self.top1, "personal-top3": self.top3,
                "personal-keystroke-savings": self.keystroke_savings, "personal-all-top3": self.all_top3,
                "personal-on": float(self.point is not None)}


class PointScorer:
    """The mix at one point on held-out windows, batch by batch from the logits the shared model's
    evaluation computes anyway (ids from model_words on: the user's own words the model lacks)."""

    def __init__(self, point: tuple, counts: PersonalCounts, index: PrefixIndex, model_words: int):
        self.point, self.counts, self.index, self.model_words = point, counts, index, model_words
        self.hits1 = self.hits3 = self.scored = self.all_hits3 = self.all_scored = 0
        self.strokes = KeystrokeCount()

    def add(self, x: np.ndarray, y: np.ndarray, logits: np.ndarray) -> None:
        before, prev, target, p = positions(x, y, logits, len(self.counts.words), self.model_words)
        if not len(target):
            return
        known = (target >= FIRST_WORD_ID) & (target < self.model_words)
        ranked = Ranked(self.counts, p, before, prev)
        top = ranked.top3(self.point)
        hit3 = (top == target[:, None]).any(axis=1)
        self.hits1 += int(np.count_nonzero((top[:, 0] == target) & known))
        self.hits3 += int(np.count_nonzero(hit3 & known))
        self.scored += int(known.sum())
        self.all_hits3 += int(hit3.sum())
        self.all_scored += len(target)
        rows = np.flatnonzero(known)
        for chunk in np.array_split(rows, max(1, len(rows) // 512)):  # a few [positions, vocabulary] at a time
            self.strokes.add(ranked.distribution(self.point, chunk), target[chunk], self.index)

    def result(self) -> PersonalScore:
        return PersonalScore(self.point, self.hits1 / max(self.scored, 1), self.hits3 / max(self.scored, 1),
                             self.strokes.savings, self.all_hits3 / max(self.all_scored, 1))


def summarise(devices: list[dict]) -> dict[str, float]:
    """One evaluation's personalised scores over its devices (each device's own choice), weighted
    per scored word, and their spread: `personal-hurt` / `personal-helped`, the share of devices
    whose top-3 the shipped keyboard lowered / raised by more than one prediction against the
    shared model, and `personal-on`, the share that chose to mix."""
    scored = [d for d in devices if "personal-top3" in d]
    if not scored:
        return {}
    weight = np.array([d["num-examples"] for d in scored], np.float64)
    out = {k: float(weight @ np.array([d[k] for d in scored]) / weight.sum())
           for k in ("personal-top1", "personal-top3", "personal-keystroke-savings", "personal-all-top3")}
    gained = np.rint([(d["personal-top3"] - d["top3"]) * d["num-examples"] for d in scored])  # in predictions
    out.update({"personal-hurt": float(np.mean(gained < -1)), "personal-helped": float(np.mean(gained > 1)),
                "personal-on": float(np.mean([d.get("personal-on", 0.0) for d in scored]))})
    return out
