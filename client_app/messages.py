"""What every handler and mod of the ClientApp reads from a message: the run's config, the
round it belongs to, and the words the run's discoveries added."""

from __future__ import annotations

from functools import lru_cache

from flwr.app import Context, Message

from task.config import ROUND_OFFSET, VOCAB_ADDED, Config

DEVICE_DATA_UNUSABLE = 100  # Error code: the device's text could not be used (see reason)
DEVICE_CONFIG_INVALID = 102  # Error code: a node-config value is wrong (the reason names the key)


def config_of(context: Context) -> Config:
    """Parsed and validated once per run config, not once per mod and handler."""
    return _parsed(tuple(sorted(context.run_config.items())))


@lru_cache(maxsize=8)
def _parsed(run_config: tuple) -> Config:
    return Config.from_run_config(dict(run_config))


def global_round(msg: Message) -> int:
    """The round counted from the run's start (a resumed run's devices keep counting)."""
    config = msg.content.config_records.get("config")
    if config is None:  # a SecAgg+ setup message: its group id is the round (features/secagg/server.py)
        return int(msg.metadata.group_id or 1)
    return int(config.get("server-round", 1)) + int(config.get(ROUND_OFFSET, 0))


def added_words(msg: Message) -> tuple[str, ...]:
    return tuple(msg.content["config"].get(VOCAB_ADDED, [])) if "config" in msg.content.config_records else ()
