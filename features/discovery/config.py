"""The run-config checks of new-word discovery and the new-word scenario, with the refusals
discovery needs of other features."""

from __future__ import annotations

from task.config import Config, check


def validate(cfg: Config) -> None:
    """discovery.* and what discovery refuses of the other features (called when a discovery.* key is set)."""
    check("discovery.every", cfg.vocab_discovery_every, cfg.vocab_discovery_every >= 0,
           "an integer >= 0 (0 = only before the first round)")
    check("discovery.epsilon", cfg.vocab_discovery_epsilon, cfg.vocab_discovery_epsilon > 0, "a number > 0")
    check("discovery.max-length", cfg.vocab_discovery_max_length,
           1 <= cfg.vocab_discovery_max_length <= 40, "an integer in [1, 40] (letters)")
    check("discovery.max-words", cfg.vocab_discovery_max_words, cfg.vocab_discovery_max_words >= 1,
           "an integer >= 1")
    if cfg.vocab_discovery:
        for key, ok, why in (
            ("server-optimizer", not cfg.server_keeps_state, "its momentum / moments have no rows for new words"),
            ("dp.mode", cfg.dp.mode != "central-ftrl", "the tree's running noise has no rows for new words"),
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
        check("discovery.new-word-adopters", cfg.new_word_adopters, 0 < cfg.new_word_adopters < 1, "a share in (0, 1)")
        check("discovery.new-word-from-round", cfg.new_word_from_round, cfg.new_word_from_round >= 1, "a round >= 1")
