"""scripts/deployment/check_fresh_noise.py catches a feature's noise or sampling drawn from a seeded
generator: each source, made to draw from one (what a regression to `np.random`, Python's `random`
or a seeded TensorFlow generator would do), fails the check by name. The check passing on the
shipped code: tests/unit/test_privacy.py."""

from __future__ import annotations

import numpy as np
import pytest

from scripts.deployment import check_fresh_noise


def _seeded_numpy():
    return np.random.default_rng(0)


def _seeded_tensorflow():
    import tensorflow as tf

    return tf.random.Generator.from_seed(0)


@pytest.mark.parametrize("source, module, name, seeded", [
    ("DP-FTRL tree noise (server)", "features.dp_mechanisms.tree_noise", "secret_tf_generator", _seeded_tensorflow),
    ("adaptive clipping count (server)", "server_app.privacy", "secret_rng", _seeded_numpy),  # the strategy's rng
    ("DP-SGD Poisson windows (device)", "features.dp_mechanisms.dpsgd", "secret_rng", _seeded_numpy),
    ("DP-SGD step (device)", "features.dp_mechanisms.dpsgd", "secret_tf_generator", _seeded_tensorflow),
    ("TrieHH device sampling (server)", "features.discovery.server", "secret_rng", _seeded_numpy),
])
def test_a_source_drawing_from_a_seeded_generator_fails_the_check(source, module, name, seeded, monkeypatch, capsys):
    import importlib

    monkeypatch.setattr(importlib.import_module(module), name, seeded)
    assert check_fresh_noise.main(only=[source]) == 1
    out = capsys.readouterr().out
    assert f"| {source} | NO: the draws repeat |" in out and "FAILED" in out
