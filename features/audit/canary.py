"""Canaries (Carlini et al. 2019, "The Secret Sharer"): secret sentences of one fixed format put into
some devices' training text, to measure how much the trained model memorised them.

The format is "my pin is" and four number words, so there are 10^4 candidates and every one is
scored (no sampling). A canary's exposure is log2(#candidates) - log2(rank), where rank 1 is the
lowest log-perplexity among the candidates never inserted and the canary itself: 13.3 bits when
the model ranks it first of 10,000, about 1 bit for a never-inserted one (median rank).

`audit.canaries` = "k:r,k:r,...": canary i goes into k_i devices (the next k_i partition ids
after those of the canaries before it), r_i times each. Which secrets are inserted follows from
`seed`: they are the audit's known inputs, not privacy randomness. One more secret, never
inserted, is the reference.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, replace

import numpy as np

from task.config import Config
from task.data.device_text import DeviceText
from task.data.files import DataError

PREFIX = ("my", "pin", "is")
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
LENGTH = 4


@dataclass(frozen=True)
class Canary:
    devices: range  # partition ids whose training text holds it
    repeats: int  # copies per device
    secret: tuple[str, ...]

    @property
    def sentence(self) -> list[str]:
        return [*PREFIX, *self.secret]


def candidates() -> list[tuple[str, ...]]:
    return list(itertools.product(DIGITS, repeat=LENGTH))


def parse(spec: str) -> list[tuple[int, int]]:
    """"1:1,1:10,3:10" -> [(1, 1), (1, 10), (3, 10)]; "" -> []. ValueError names the bad part."""
    pairs = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        k, sep, r = part.partition(":")
        if not sep or not k.isdigit() or not r.isdigit() or int(k) < 1 or int(r) < 1:
            raise ValueError(f"'{part}' is not k:r with whole numbers k, r >= 1 (devices:repeats)")
        pairs.append((int(k), int(r)))
    return pairs


def planted(spec: str, seed: int) -> tuple[list[Canary], tuple[str, ...]]:
    """The inserted canaries, and the reference secret that is never inserted."""
    pairs = parse(spec)
    pool = candidates()
    picks = random.Random(f"canary:{seed}").sample(range(len(pool)), len(pairs) + 1)
    canaries, first = [], 0
    for (k, r), pick in zip(pairs, picks):
        canaries.append(Canary(range(first, first + k), r, pool[pick]))
        first += k
    return canaries, pool[picks[-1]]


def device_canaries(spec: str, seed: int, partition_id: int) -> list[list[str]]:
    """The canary sentences one simulated device adds to its training text."""
    return [c.sentence for c in planted(spec, seed)[0] if partition_id in c.devices for _ in range(c.repeats)]


def with_canaries(cfg: Config, text: DeviceText, partition_id: int, data_path: str | None = None) -> DeviceText:
    """A simulated device's text with its canaries in its training part (audit.canaries)."""
    if data_path:  # an audit plants secrets in simulated text, never in a person's
        raise DataError(f"{text.name}: audit.canaries is for simulations; refused on a device with a real data-path",
                        reason="audit.canaries refused on a real device")
    return replace(text, train=text.train + device_canaries(cfg.audit_canaries, cfg.seed, partition_id))


def exposure(rank: int, population: int) -> float:
    return math.log2(population) - math.log2(rank)


def rank_of(score: float, others: np.ndarray) -> int:
    """1 + how many of the other candidates have a strictly lower log-perplexity (ties in its favour)."""
    return 1 + int(np.sum(others < score))
