"""TrieHH (Zhu, Kairouz, McMahan, Sun, Li, AISTATS 2020): private federated discovery of the words
many devices type that the vocabulary lacks.

The server grows a trie of word prefixes one character per level. At each level it samples every
connected device independently with probability gamma; a sampled device picks one of its own
out-of-vocabulary words at random and, if the word's prefix one character shorter is already in
the trie, votes for its prefix at this level. It sends that one vote and nothing else. The server
keeps the prefixes with at least theta votes. A word ends with END, so a prefix ending in END is a
discovered word. Discovery stops when a level keeps nothing or at max-length.

Why it is private: a device changes one vote per level, and a prefix needs theta votes from a
random sample. Per level the released trie is (ln(1 / (1 - gamma theta)), delta_level)-DP with
delta_level = (theta - 2) / ((theta - 3) theta!), for theta >= 4 and gamma (theta + 1) <= 1 (the
paper's Theorem 1 as its authors' reference code applies it: sample share
gamma = (e^eps - 1) / (theta e^eps)). The levels compose; here by basic composition (epsilon and
delta both add up over the levels run), which is looser than the paper's total, never tighter.
No library accountant covers this mechanism (dp-accounting has no thresholded-sampling event), so
the two formulas are written here; tests/features/discovery/test_triehh.py checks them against a brute-force
computation of the mechanism's privacy loss.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

END = "$"  # never inside a token (task.data.text tokenises letters, digits and apostrophes)


def level_delta(theta: int) -> float:
    """delta of one level at threshold theta (Theorem 1 needs theta >= 4)."""
    if theta < 4:
        raise ValueError(f"TrieHH needs a threshold of at least 4 votes, not {theta}")
    return (theta - 2) / ((theta - 3) * math.factorial(theta))


def threshold_for(delta: float, levels: int) -> int:
    """The smallest threshold whose `levels` levels together spend at most `delta`."""
    theta = 4
    while levels * level_delta(theta) > delta:
        theta += 1
    return theta


def level_epsilon(gamma: float, theta: int) -> float:
    if not 0 < gamma * (theta + 1) <= 1:
        raise ValueError(f"TrieHH's guarantee needs gamma x (theta + 1) <= 1; gamma = {gamma:g}, theta = {theta}")
    return -math.log1p(-gamma * theta)


def share_for(epsilon_per_level: float, theta: int) -> float:
    """The sampling share gamma that spends `epsilon_per_level` at threshold theta (capped so the
    theorem's condition gamma (theta + 1) <= 1 holds)."""
    return min(-math.expm1(-epsilon_per_level) / theta, 1 / (theta + 1))


@dataclass(frozen=True)
class Plan:
    """One discovery's public parameters: everything a device and the accountant need."""

    theta: int  # votes a prefix needs
    gamma: float  # each device's chance to be asked at a level
    max_length: int  # longest word discovered (letters); levels = max_length + 1 for END

    @property
    def levels(self) -> int:
        return self.max_length + 1

    @classmethod
    def for_budget(cls, epsilon: float, delta: float, max_length: int) -> Plan:
        """The plan whose every level run together spends at most (epsilon, delta)."""
        levels = max_length + 1
        theta = threshold_for(delta, levels)
        return cls(theta=theta, gamma=share_for(epsilon / levels, theta), max_length=max_length)

    def spent(self, levels_run: int) -> tuple[float, float]:
        """(epsilon, delta) after `levels_run` levels: basic composition."""
        return levels_run * level_epsilon(self.gamma, self.theta), levels_run * level_delta(self.theta)


def device_vote(words: Counter, trie: set[str], depth: int, rng: np.random.Generator) -> str | None:
    """A device's one vote at level `depth` (1 = first letter): it picks one of its out-of-
    vocabulary word occurrences uniformly at random (`words` counts them) and votes for that
    word's prefix of `depth` characters (END appended) if the prefix one shorter is in the trie.
    A device without such a word, or whose pick does not extend the trie, sends no vote."""
    if not words:
        return None
    names = sorted(words)
    counts = np.array([words[w] for w in names], dtype=float)
    word = names[int(rng.choice(len(names), p=counts / counts.sum()))] + END
    if depth > len(word) or (depth > 1 and word[: depth - 1] not in trie):
        return None
    return word[:depth]


@dataclass
class Discovery:
    """The server's side of one TrieHH discovery."""

    plan: Plan
    trie: set[str] = field(default_factory=set)  # prefixes kept so far (all levels)
    levels_run: int = 0
    votes_seen: list[int] = field(default_factory=list)  # votes received per level (for the log)

    @property
    def depth(self) -> int:
        """The level the next query asks for."""
        return self.levels_run + 1

    @property
    def done(self) -> bool:
        if self.levels_run >= self.plan.levels:
            return True
        return self.levels_run > 0 and not any(len(p) == self.levels_run and not p.endswith(END) for p in self.trie)

    def add_level(self, votes: Iterable[str | None]) -> list[str]:
        """Count one level's votes; keep the prefixes with at least theta votes. Returns them."""
        counts = Counter(v for v in votes if v is not None and len(v) == self.depth)
        self.votes_seen.append(sum(counts.values()))
        kept = sorted(p for p, n in counts.items() if n >= self.plan.theta
                      and (self.depth == 1 or p[:-1] in self.trie) and not p[:-1].endswith(END))
        self.trie.update(kept)
        self.levels_run += 1
        return kept

    @property
    def words(self) -> list[str]:
        """The discovered words (prefixes that end with END), A-Z. TrieHH's guarantee covers only
        which prefixes passed the threshold: an order by vote count would let one device's vote
        swap two words (or, under a cap, decide which word is added), so no count is kept."""
        return sorted(p[:-1] for p in self.trie if p.endswith(END))


def capped(words: list[str], cap: int, rng: np.random.Generator) -> list[str]:
    """At most `cap` of `words`, chosen uniformly at random by `rng` (secret: the server's), A-Z.
    A choice that ignores the votes is post-processing of the thresholded set, so it spends no
    privacy; keeping the most voted would not be."""
    if len(words) <= cap:
        return sorted(words)
    return sorted(words[i] for i in rng.choice(len(words), size=cap, replace=False))


def out_of_vocabulary(sentences: Iterable[list[str]], known) -> Counter:
    """How often each word the vocabulary lacks occurs in a device's text."""
    return Counter(w for s in sentences for w in s if w not in known)
