"""TrieHH (features/discovery/triehh.py): its privacy formulas against a brute-force computation of
the mechanism, and its voting and threshold against what the paper specifies."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from scipy.stats import binom

from features.discovery.triehh import END, Discovery, Plan, device_vote, level_delta, level_epsilon, threshold_for


def worst_delta(gamma: float, theta: int, epsilon: float, max_voters: int = 3000) -> float:
    """The smallest delta for which one level is (epsilon, delta)-DP, by brute force: one device
    changes at most one prefix's vote count by one; that prefix is released iff at least theta of
    its voters are sampled (each with probability gamma). Over every count c of other voters, both
    outcomes (released or not) and both directions (device present or absent)."""
    c = np.arange(max_voters)
    without = binom.sf(theta - 1, c, gamma)  # P[released] without the device: Bin(c, gamma) >= theta
    with_ = without + gamma * binom.pmf(theta - 1, c, gamma)  # the device sampled and pivotal
    e = math.exp(epsilon)
    gaps = [with_ - e * without, without - e * with_, (1 - with_) - e * (1 - without), (1 - without) - e * (1 - with_)]
    return float(max(g.max() for g in gaps))


@pytest.mark.parametrize("epsilon, delta, max_length", [(4.0, 1e-5, 12), (1.0, 1e-6, 8), (10.0, 1e-3, 10)])
def test_each_level_is_as_private_as_the_plan_says_by_brute_force(epsilon, delta, max_length):
    plan = Plan.for_budget(epsilon, delta, max_length)
    eps_level = level_epsilon(plan.gamma, plan.theta)
    assert eps_level == pytest.approx(epsilon / plan.levels, rel=1e-9) or plan.gamma == 1 / (plan.theta + 1)
    assert worst_delta(plan.gamma, plan.theta, eps_level) <= level_delta(plan.theta)
    total_eps, total_delta = plan.spent(plan.levels)
    assert total_eps <= epsilon * (1 + 1e-9) and total_delta <= delta


def test_the_threshold_meets_delta_and_is_the_smallest_that_does():
    """Published anchor: (theta - 2) / ((theta - 3) theta!) falls below 1e-5 first at theta = 9
    (9! = 362,880)."""
    assert threshold_for(1e-5, 1) == 9
    theta = threshold_for(1e-5, 13)
    assert 13 * level_delta(theta) <= 1e-5 < 13 * level_delta(theta - 1)


def test_a_device_votes_for_one_prefix_of_its_own_unknown_words_extending_the_trie():
    rng = np.random.default_rng(1)
    words = Counter({"zorp": 3})
    assert device_vote(words, set(), 1, rng) == "z"
    assert device_vote(words, {"z"}, 2, rng) == "zo"
    assert device_vote(words, {"y"}, 2, rng) is None  # its prefix did not survive: no vote
    assert device_vote(words, {"z", "zo", "zor", "zorp"}, 5, rng) == "zorp" + END
    assert device_vote(Counter(), set(), 1, rng) is None
    # A device picks in proportion to how often it typed each word.
    picks = Counter(device_vote(Counter({"aa": 9, "bb": 1}), set(), 1, rng) for _ in range(2000))
    assert 0.86 < picks["a"] / 2000 < 0.94


def test_a_word_one_device_uses_is_never_released_and_one_many_use_is():
    """Threshold: a prefix needs theta votes, and a device votes once per level, so a word only
    one device types can never reach theta >= 4."""
    plan = Plan(theta=4, gamma=1.0 / 5, max_length=6)
    rng = np.random.default_rng(0)
    devices = [Counter({"blorf": 5})] * 60 + [Counter({"secret": 50})]  # 'secret': one device only
    discovery = Discovery(plan)
    while not discovery.done:
        votes = [device_vote(w, discovery.trie, discovery.depth, rng) for w in devices if rng.random() < plan.gamma]
        discovery.add_level(votes)
    assert discovery.words == ["blorf"]
    assert not any(p.startswith("s") for p in discovery.trie)
    assert discovery.levels_run == len("blorf") + 1  # done after the END level: nothing left to extend


def test_discovery_stops_when_a_level_keeps_nothing():
    discovery = Discovery(Plan(theta=4, gamma=0.2, max_length=12))
    discovery.add_level(["a", "a", "b"])
    assert discovery.done and discovery.words == []


def test_one_moved_vote_changes_neither_the_released_words_nor_their_order():
    """TrieHH covers only which prefixes pass the threshold: the release must not depend on the
    counts above it. One device moves its vote from "a" to "b", which then outnumbers "a"."""
    def released(votes_a: int, votes_b: int) -> list[str]:
        discovery = Discovery(Plan(theta=4, gamma=0.2, max_length=3))
        discovery.add_level(["a"] * 9 + ["b"] * 9)
        discovery.add_level(["a" + END] * votes_a + ["b" + END] * votes_b)
        return discovery.words

    assert released(7, 6) == released(6, 7) == ["a", "b"]


def test_a_cap_picks_words_at_random_whatever_their_votes():
    from features.discovery.triehh import capped

    words = ["delta", "alpha", "charlie", "bravo"]
    picks = [tuple(capped(words, 2, np.random.default_rng(s))) for s in range(400)]
    assert all(list(p) == sorted(p) and len(set(p)) == 2 for p in picks)
    counts = Counter(w for p in picks for w in p)
    assert set(counts) == set(words) and min(counts.values()) > 150  # each ~200 of 800 (binomial sd 12)
    assert capped(words, 10, np.random.default_rng(0)) == sorted(words)


def test_a_corpus_own_unk_marker_is_the_vocabularys_unk_and_never_an_unknown_word():
    """WikiText marks removed rare words with "<unk>": it must read as <unk>, not as a word "unk"
    that a device could vote for as new (features/discovery/triehh.py)."""
    from features.discovery.triehh import out_of_vocabulary
    from task.data.text import tokenise
    from task.data.vocab import UNK_ID, default_vocabulary

    tokens = tokenise("The <unk> of Manila , 1999 <UNK> .")
    assert tokens == ["the", "<unk>", "of", "manila", "1999", "<unk>"]
    vocab = default_vocabulary(8000)
    assert vocab.encode(tokens)[1] == UNK_ID
    assert "<unk>" not in out_of_vocabulary([tokens], vocab)
