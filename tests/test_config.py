import tomllib
from pathlib import Path

import pytest

from task.config import Config, ConfigError

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def run_config_from_pyproject() -> dict:
    return tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]


def test_pyproject_declares_exactly_the_config_keys_with_the_same_defaults():
    rc = run_config_from_pyproject()
    assert set(rc) == set(Config().to_run_config())
    assert Config.from_run_config(rc) == Config()


def test_round_trip_through_run_config():
    cfg = Config().replace(num_server_rounds=7, learning_rate=0.01)
    assert Config.from_run_config(cfg.to_run_config()) == cfg


def test_ints_are_accepted_for_float_keys():
    assert Config.from_run_config({"round-timeout": 30}).round_timeout == 30.0


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"num-server-rounds": 0}, "num-server-rounds"),
        ({"fraction-train": 1.5}, "fraction-train"),
        ({"learning-rate": -0.1}, "learning-rate"),
        ({"embed-dim": 30, "num-heads": 4}, "num-heads"),
        ({"data-source": "s3"}, "data-source"),
        ({"data-source": "corpus"}, "data-path"),
        ({"min-available-nodes": 1, "min-train-nodes": 3}, "min-available-nodes"),
        ({"batch-size": "32"}, "batch-size"),
        ({"seq-len": 2.5}, "seq-len"),
        ({"transfer-dtype": "bfloat16"}, "transfer-dtype"),
        ({"server-optimizer": "fedprox"}, "server-optimizer"),
        ({"server-optimizer": "fedadam", "dp-mode": "central-client-clip"}, "server-optimizer"),
        ({"server-momentum": 1.0}, "server-momentum"),
    ],
)
def test_bad_values_fail_naming_the_key_and_value(overrides, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        Config.from_run_config(overrides)


def test_unknown_keys_are_rejected():
    with pytest.raises(ConfigError, match="lr"):
        Config.from_run_config({"lr": 0.1})
