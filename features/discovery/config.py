"""Run-config group "discovery.": new-word discovery (TrieHH, docs/vocabulary-discovery.md) and the
built-in new-word scenario, their checks, and the refusals discovery needs of other features."""

from __future__ import annotations

from dataclasses import dataclass

from task.config import Config, check

GROUP = "discovery"


@dataclass(frozen=True)
class Settings:
    enabled: bool = False
    every: int = 0  # rounds between discoveries; 0 = before round 1 only
    epsilon: float = 8.0  # per discovery, all its levels together (delta: dp.delta)
    max_length: int = 12  # letters; one query round per letter plus one
    max_words: int = 100  # most new words one discovery may add
    new_word: str = ""  # the built-in new-word scenario (new_word.py); "" = off
    new_word_adopters: float = 0.5
    new_word_from_round: int = 1


def validate(cfg: Config) -> None:
    """discovery.* and what discovery refuses of the other features."""
    d = cfg.feature(GROUP)
    check("discovery.every", d.every, d.every >= 0, "an integer >= 0 (0 = only before the first round)")
    check("discovery.epsilon", d.epsilon, d.epsilon > 0, "a number > 0")
    check("discovery.max-length", d.max_length, 1 <= d.max_length <= 40, "an integer in [1, 40] (letters)")
    check("discovery.max-words", d.max_words, d.max_words >= 1, "an integer >= 1")
    if cfg.vocab_discovery:
        for key, ok, why in (
            ("server-optimizer", not cfg.server_keeps_state, "its momentum / moments have no rows for new words"),
            ("dp.mode", cfg.dp.mode not in ("central-ftrl", "central-blt"),
             "the correlated noise's running state has no rows for new words"),
            ("secagg.enabled", not cfg.secure_aggregation, "SecAgg+ fixes the update's length per run"),
        ):
            value = {"server-optimizer": cfg.server_optimizer, "dp.mode": cfg.dp.mode,
                     "secagg.enabled": cfg.secure_aggregation}[key]
            check(key, value, ok, f"not this value with discovery.enabled = true ({why})")
    if cfg.new_word:
        from task.data.text import tokenise

        check("discovery.new-word", cfg.new_word, tokenise(cfg.new_word) == [cfg.new_word],
               "one lower-case word (letters, digits, apostrophes)")
        check("discovery.new-word", cfg.new_word, cfg.data_source == "builtin", 'used with data.source = "builtin" only')
        check("discovery.new-word-adopters", d.new_word_adopters, 0 < d.new_word_adopters < 1, "a share in (0, 1)")
        check("discovery.new-word-from-round", d.new_word_from_round, d.new_word_from_round >= 1, "a round >= 1")
