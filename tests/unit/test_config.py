from pathlib import Path

import pytest

from scripts.local_superlink import app_run_config
from task.config import Config, ConfigError

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def run_config_from_pyproject() -> dict:
    return app_run_config(PYPROJECT.parent)


# Run-config groups of the opt-in features (features/<name>/): pyproject.toml declares each whole,
# or not at all once its feature folder is deleted.
FEATURE_GROUPS = {"secagg", "discovery", "participation", "transfer", "audit", "warm-start", "int8"}


def test_pyproject_declares_the_config_keys_with_the_same_defaults():
    rc = run_config_from_pyproject()
    from task.config import _known_keys

    known = set(_known_keys())  # every key the Config knows (the features of this copy included)
    assert set(rc) <= known, f"unknown keys: {set(rc) - known}"
    groups = {key.split(".")[0] for key in rc if "." in key}
    for key in known - set(rc):  # only whole feature groups may be left out
        assert key.split(".")[0] in FEATURE_GROUPS - groups, f"{key} is not declared in pyproject.toml"
    # int8 ships on (pyproject.toml); off is the core's default, so the core alone exports float files
    assert Config.from_run_config(rc) == (Config().with_run_config({"int8.enabled": True}) if "int8" in groups
                                          else Config())


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
        ({"model.embed-dim": 30, "model.num-heads": 4}, "model.num-heads"),
        ({"data.source": "s3"}, "data.source"),
        ({"data.source": "corpus"}, "data.path"),
        ({"min-available-nodes": 1, "min-train-nodes": 3}, "min-available-nodes"),
        ({"batch-size": "32"}, "batch-size"),
        ({"model.seq-len": 2.5}, "model.seq-len"),
        ({"transfer.dtype": "bfloat16"}, "transfer.dtype"),
        ({"server-optimizer": "fedyogi"}, "server-optimizer"),
        ({"server-optimizer": "fedadam", "dp.mode": "central-client-clip"}, "server-optimizer"),
        ({"server-momentum": 1.0}, "server-momentum"),
        ({"learning-rate-schedule": "linear"}, "learning-rate-schedule"),
        ({"learning-rate": 0.001, "final-learning-rate": 0.01}, "final-learning-rate"),  # a schedule that rises
        ({"adam-epsilon": 0.0}, "adam-epsilon"),
        ({"model.preset": "tiny"}, "model.preset"),
        ({"model.preset": "dp-small", "model.embed-dim": 48}, "model.embed-dim"),  # conflicts with the preset's 32
    ],
)
def test_bad_values_fail_naming_the_key_and_value(overrides, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        Config.from_run_config(overrides)


def test_the_dp_small_preset_sets_the_shape_and_keeps_the_other_keys():
    cfg = Config.from_run_config({"model.preset": "dp-small", "model.seq-len": 10, "model.dropout": 0.1})
    assert (cfg.model.vocab_size, cfg.model.embed_dim, cfg.model.num_heads, cfg.model.ffn_dim) == (2000, 32, 2, 64)
    assert (cfg.model.seq_len, cfg.model.dropout) == (10, 0.1)
    assert Config.from_run_config(cfg.to_run_config()) == cfg
    with pytest.raises(ConfigError, match="'model.vocab-size'"):  # a preset's shape cannot be edited around it
        Config(model_preset="dp-small").validate()


def test_unknown_keys_are_rejected():
    with pytest.raises(ConfigError, match="lr"):
        Config.from_run_config({"lr": 0.1})


@pytest.mark.parametrize("overrides, says", [
    ("model.num-heads=3", "'model.num-heads' = 3 is invalid: expected an integer >= 1 that divides model.embed-dim (80)"),
    ("nmu-server-rounds=3", "unknown run-config key(s) ['nmu-server-rounds']"),
    ("dp.mode=local", "quote strings"),
])
def test_the_runner_names_a_bad_key_before_flower_starts(overrides, says):
    from scripts.run_simulation import check_run_config

    assert says in check_run_config(overrides)
    assert check_run_config('num-server-rounds=3 out-dir="/tmp/a folder"') is None  # quoted spaces are fine


def test_the_console_filter_keeps_the_templates_lines_and_drops_ray_and_tensorflow_noise():
    from scripts.local_flower import template_line

    keep = ["\x1b[92mINFO \x1b[0m:      round 3: train 10/10 devices (0 failed) | eval 10/10 devices loss 2.9",
            "INFO :      Privacy accounting: user level, central ...",
            "ERROR :     ServerApp failed", "Successfully started run 123"]
    drop = ["INFO :      configure_train: sampled 10 nodes (out of 10)",
            "INFO :      aggregate_train: Received 10 results and 0 failures",
            "\x1b[36m(ClientAppActor pid=123)\x1b[0m I0000 cuda_platform.cc:52] failed call to cuInit",
            "E0000 00:00:1795998333.334004    5320 cuda_platform.cc:52] failed call to cuInit",
            "INFO :      \t└──> Aggregated MetricRecord: {'loss': 2.1}",
            "INFO :        Federated evaluation on the devices' held-out text: loss 2.45"]  # printed at the end
    assert all(template_line(line) for line in keep)
    assert not any(template_line(line) for line in drop)


def test_the_cosine_schedule_falls_from_the_learning_rate_to_the_final_one_over_the_whole_run():
    from task.train import round_learning_rate

    cfg = Config.from_run_config({"num-server-rounds": 30, "learning-rate": 0.01, "final-learning-rate": 0.001,
                                  "learning-rate-schedule": "cosine"})
    rates = [round_learning_rate(cfg, r) for r in range(1, 31)]
    assert abs(rates[0] - 0.01) < 1e-12 and abs(rates[-1] - 0.001) < 1e-12
    assert all(a > b for a, b in zip(rates, rates[1:]))
    assert abs(rates[14] - 0.0055) < 0.0005  # halfway: the mean of the two ends
    assert round_learning_rate(cfg, 45) == rates[-1]  # beyond the last round (a resume asking for more)
    constant = cfg.replace(learning_rate_schedule="constant")
    assert {round_learning_rate(constant, r) for r in range(1, 31)} == {0.01}
