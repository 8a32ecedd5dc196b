"""Personal suggestions: the shared model's next-word probabilities mixed with the user's own
counts, on the device, from the device's own training text only.

A two-level Dirichlet cache (MacKay & Peto 1995, "A hierarchical Dirichlet language model"):

    p(w | prev) = (c(prev, w) + kappa * q(w)) / (c(prev) + kappa)
    q(w)        = (u(w) + mu * p_model(w | context)) / (N + mu)

c counts the user's word pairs, u their words, N their word count. A user with no text gets the
shared model exactly; the more a user has typed after `prev`, the more their own counts decide.
Like Grave et al. 2017's neural cache, nothing is trained. The counts never leave the device, so
the mix is post-processing of local data: it changes no privacy figure.

(kappa, mu) is one of GRID, chosen federatedly and never on the text it is scored on
(server_app/personal.py): every device scores every point, and each half of the devices uses the
point the other half scored best.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from task.data.vocab import FIRST_WORD_ID, PAD_ID
from task.keystrokes import KeystrokeCount, PrefixIndex

GRID = tuple((kappa, mu) for kappa in (0.5, 2.0, 8.0, 32.0) for mu in (100.0, 1000.0, 10000.0))
DEFAULT_POINT = GRID.index((2.0, 1000.0))  # before any device has scored the grid


@dataclass
class PersonalCounts:
    """The user's word and word-pair counts (words only: a keyboard never suggests a special token)."""

    words: np.ndarray  # u: [vocabulary] float64
    pairs: dict[int, Counter]  # c: prev id -> Counter of next word ids

    @classmethod
    def from_windows(cls, x: np.ndarray, y: np.ndarray, vocab_size: int) -> PersonalCounts:
        words = np.zeros(vocab_size)
        pairs: dict[int, Counter] = defaultdict(Counter)
        for prev, nxt in zip(x.ravel().tolist(), y.ravel().tolist()):
            if prev != PAD_ID and nxt >= FIRST_WORD_ID:
                words[nxt] += 1
                pairs[prev][nxt] += 1
        return cls(words, dict(pairs))

    def pair_rows(self, prev: np.ndarray) -> np.ndarray:
        rows = np.zeros((len(prev), len(self.words)))
        for i, p in enumerate(prev.tolist()):
            for w, n in self.pairs.get(p, {}).items():
                rows[i, w] = n
        return rows

    def mix(self, p_model: np.ndarray, pair_rows: np.ndarray, kappa: float, mu: float) -> np.ndarray:
        q = (self.words[None] + mu * p_model) / (self.words.sum() + mu)
        return (pair_rows + kappa * q) / (pair_rows.sum(axis=1, keepdims=True) + kappa)


def word_probabilities(logits: np.ndarray) -> np.ndarray:
    """Softmax over the words a keyboard can show (special tokens get 0)."""
    z = np.asarray(logits, np.float64).copy()
    z[:, :FIRST_WORD_ID] = -np.inf
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


@dataclass
class PersonalScore:
    """Per grid point: top-1 and top-3 hits over `scored` word targets; keystroke savings at one point."""

    top1: np.ndarray
    top3: np.ndarray
    scored: int
    keystroke_savings: float

    def as_metrics(self) -> dict[str, float]:
        out = {"personal-keystroke-savings": self.keystroke_savings}
        for i in range(len(GRID)):
            out[f"personal-top1-{i}"] = self.top1[i] / max(self.scored, 1)
            out[f"personal-top3-{i}"] = self.top3[i] / max(self.scored, 1)
        return out


def score_personal(predict, x: np.ndarray, y: np.ndarray, counts: PersonalCounts, index: PrefixIndex,
                   point: int, batch_size: int = 32) -> PersonalScore:
    """Score the mixed suggestions on held-out windows. `predict(x)` gives the model's logits
    [batch, seq_len, vocabulary]; keystroke savings are counted at grid point `point` only.

    The top 3 of a mix lie among the user's own words and the model's top 3 of the others (a word
    the user never typed keeps the model's order), so every grid point ranks only those."""
    own = np.flatnonzero(counts.words)
    top1, top3 = np.zeros(len(GRID)), np.zeros(len(GRID))
    scored = 0
    strokes = KeystrokeCount()
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size].reshape(-1), y[start : start + batch_size].reshape(-1)
        at = yb >= FIRST_WORD_ID
        if not at.any():
            continue
        logits = np.asarray(predict(x[start : start + batch_size]))
        p_model = word_probabilities(logits.reshape(-1, logits.shape[-1])[at])
        prev, target = xb[at], yb[at]
        rows = counts.pair_rows(prev)
        typed = rows.sum(axis=1, keepdims=True)
        others = p_model.copy()
        others[:, own] = -1.0
        others_top = np.argpartition(-others, 2, axis=1)[:, :3]
        ids = np.concatenate([np.broadcast_to(own, (len(target), len(own))), others_top], axis=1)
        scored += len(target)
        for i, (kappa, mu) in enumerate(GRID):
            q_own = (counts.words[own] + mu * p_model[:, own]) / (counts.words.sum() + mu)
            q_others = mu * np.take_along_axis(p_model, others_top, 1) / (counts.words.sum() + mu)
            p = np.concatenate([rows[:, own] + kappa * q_own, kappa * q_others], axis=1) / (typed + kappa)
            best = np.argpartition(-p, 2, axis=1)[:, :3]
            ranked = np.take_along_axis(ids, np.take_along_axis(best, np.argsort(-np.take_along_axis(p, best, 1), 1), 1), 1)
            top1[i] += np.count_nonzero(ranked[:, 0] == target)
            top3[i] += np.count_nonzero((ranked == target[:, None]).any(axis=1))
            if i == point:
                strokes.add(counts.mix(p_model, rows, kappa, mu), target, index)
    return PersonalScore(top1, top3, scored, strokes.savings)


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
