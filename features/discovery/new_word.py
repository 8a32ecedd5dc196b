"""The new-word scenario for the built-in corpus (run-config `discovery.new-word`): a made-up word, say a new
messaging app, that some users start typing while others never have.

From round `discovery.new-word-from-round` on, each adopter persona (a share `discovery.new-word-adopters` of them,
fixed by the persona id and seed) also types messages with the word in its own contexts (below),
dressed in the persona's habits (greeting, filler, sign-off). The word is in no dictionary, so
until the federation discovers it (features/discovery/) it reaches the model as <unk> and can never
be suggested. Late adopters (the other personas) and unseen users never type it: whether the
global model suggests it to them in its contexts is what the scenario measures (`probe_windows`).
"""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np

from task.data.device_text import UNSEEN_USER_OFFSET, DeviceText
from task.data.personas import _decorate, persona
from task.data.text import split_sentences
from task.data.vocab import UNK_ID, Vocabulary

# Every other word here is in the base dictionary's top 8,000 (tests/features/discovery/test_vocab_growth.py,
# test_the_scenario_gives_adopters_the_word_in_context_from_its_round_and_nobody_else).
TEMPLATES = (
    "I sent you the photos on {w}.",
    "Are you on {w} yet?",
    "Call me on {w} when you are free.",
    "Did you see my message on {w}?",
    "Let's have a quick {w} call tonight.",
    "Check {w} for the details.",
    "My {w} is not working again.",
    "I will post it on {w} later.",
)
RATE = 0.15  # an adopter's messages with the word, per message of its own text


def is_adopter(device_id: int, seed: int, share: float) -> bool:
    return random.Random(f"new-word-adopter:{seed}:{device_id}").random() < share


def sentences(word: str, device_id: int, count: int, seed: int) -> list[list[str]]:
    """`count` tokenised messages with `word` as persona `device_id` would type them."""
    p = persona(device_id, seed)
    rng = random.Random(f"new-word:{seed}:{device_id}")
    return [s for _ in range(count) for s in split_sentences(_decorate(rng.choice(TEMPLATES).format(w=word), p, rng))]


def adopted(cfg, device_id: int, server_round: int) -> bool:
    """Does this simulated device type the new word in this round?"""
    return bool(cfg.new_word) and server_round >= cfg.feature("discovery").new_word_from_round and is_adopter(
        device_id, cfg.seed, cfg.feature("discovery").new_word_adopters)


def late_adopters(cfg, population: int, count: int) -> list[int]:
    """The first `count` personas of a simulated population that never type the word."""
    return [i for i in range(population) if not is_adopter(i, cfg.seed, cfg.feature("discovery").new_word_adopters)][:count]


PROBE_MESSAGES = 20  # per user


def probe_windows(cfg, vocab: Vocabulary, users: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Windows of the messages with the word these users would type (late adopters and unseen
    users never did): where the model should now suggest it. Simulation only: the server can
    generate them because the built-in corpus is synthetic."""
    from task.data.device_text import make_windows

    texts = [s for u in users for s in sentences(cfg.new_word, u, PROBE_MESSAGES, cfg.seed + 7919)]
    return make_windows(texts, vocab, cfg.model.seq_len)


def with_new_word(cfg, text: DeviceText, partition_id: int, server_round: int) -> DeviceText:
    """A simulated adopter's text in the new-word scenario: from
    discovery.new-word-from-round on it also holds messages with the word, in training and held-out text
    alike. Everyone else's text is unchanged."""
    if not adopted(cfg, partition_id, server_round):
        return text
    n_train, n_test = (max(1, round(RATE * len(part))) for part in (text.train, text.test))
    extra = sentences(cfg.new_word, partition_id, n_train + n_test, cfg.seed)
    return replace(text, train=text.train + extra[:n_train], test=text.test + extra[n_train:])


PROBE_USERS = 20  # late adopters, and unseen users, the server scores the word on


def new_word_scores(cfg, model, vocab: Vocabulary, population: int) -> dict[str, float]:
    """The scenario's measure, for the server's evaluation: how often the model suggests the word
    (top 3) to late adopters and to unseen users, who never typed it."""
    from task import train as trainer

    word = vocab.encode([cfg.new_word])[0]
    out = {}
    for who, users in (("late_adopters", late_adopters(cfg, population, PROBE_USERS)),
                       ("unseen_users", [UNSEEN_USER_OFFSET + i for i in range(PROBE_USERS)])):
        x, y = probe_windows(cfg, vocab, users)
        out[f"new_word_top3_{who}"] = 0.0 if word == UNK_ID else trainer.target_top3(model, x, y, word)
    return out
