"""scripts/deployment/check_fresh_noise.py catches a feature's noise, sampling or pick drawn from a
seeded generator: each source, made to draw from one (what a regression to `np.random`, Python's
`random` or a seeded TensorFlow generator would do), fails the check by name. It also catches one
drawn from too little OS entropy (a 16- or 32-bit seed, outside DP review N1) and SecAgg+ masks from
Flower's own 32-bit-folding generator. The check passing on the shipped code: tests/unit/test_privacy.py."""

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
    ("TrieHH vote choice (device)", "task.privacy.mechanisms", "secret_rng", _seeded_numpy),  # client_app's query
])
def test_a_source_drawing_from_a_seeded_generator_fails_the_check(source, module, name, seeded, monkeypatch, capsys):
    import importlib

    monkeypatch.setattr(importlib.import_module(module), name, seeded)
    assert check_fresh_noise.main(only=[source]) == 1
    out = capsys.readouterr().out
    assert f"| {source} | NO: the draws repeat |" in out and "FAILED" in out


def test_the_words_kept_when_discovery_max_words_binds_are_checked_on_their_own(monkeypatch, capsys):
    """The pick from a seeded generator, the devices still sampled from the secret one."""
    from features.discovery import server, triehh

    monkeypatch.setattr(server, "capped", lambda words, cap, rng: triehh.capped(words, cap, _seeded_numpy()))
    assert check_fresh_noise.main(only=["discovery.max-words pick (server)", "TrieHH device sampling (server)"]) == 1
    out = capsys.readouterr().out
    assert "| discovery.max-words pick (server) | NO: the draws repeat |" in out
    assert "| TrieHH device sampling (server) | yes |" in out


def _weak_numpy():  # 2**16 streams, seeded from the OS (outside DP review, N1)
    import secrets

    return np.random.default_rng(secrets.randbits(16))


def _weak_tensorflow():  # 2**32 streams, seeded from the OS
    import secrets

    import tensorflow as tf

    return tf.random.Generator.from_seed(secrets.randbits(32))


@pytest.mark.parametrize("source, module, name, weak, bits", [
    ("local DP (device)", "features.dp_mechanisms.local_dp", "secret_rng", _weak_numpy, 16),
    ("DP-SGD step (device)", "features.dp_mechanisms.dpsgd", "secret_tf_generator", _weak_tensorflow, 32),
    ("TrieHH vote choice (device)", "task.privacy.mechanisms", "secret_rng", _weak_numpy, 16),
])
def test_a_source_seeded_with_too_few_bits_of_os_entropy_fails_the_check(source, module, name, weak, bits,
                                                                         monkeypatch, capsys):
    import importlib

    monkeypatch.setattr(importlib.import_module(module), name, weak)
    assert check_fresh_noise.main(only=[source]) == 1
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(f"| {source} |"))
    assert row.startswith(f"| {source} | yes |") and f"NO: a seed of {bits} bits (fewer than 128)" in row, row


def test_secagg_masks_from_a_seeded_seed_or_from_flowers_folding_generator_fail_the_check(monkeypatch, capsys):
    import importlib
    import random
    from types import SimpleNamespace

    from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen as flowers

    source = "SecAgg+ masks (device)"
    device = importlib.import_module("flwr.client.mod.secure_aggregation.secaggplus_mod")
    server = importlib.import_module("flwr.server.workflow.secure_aggregation.secaggplus_workflow")
    check_fresh_noise.secagg_seed_use()  # both sides have installed the template's generator
    with monkeypatch.context() as m:  # the private mask's seed from a seeded generator
        m.setattr(device, "os", SimpleNamespace(urandom=lambda n: random.Random(0).randbytes(n)))
        assert check_fresh_noise.main(only=[source]) == 1
        assert f"| {source} | NO: the draws repeat (private mask) |" in capsys.readouterr().out
    for side, module in (("device", device), ("server", server)):
        with monkeypatch.context() as m:  # Flower's own generator: each mask one of 2**32
            m.setattr(module, "pseudo_rand_gen", flowers)
            assert check_fresh_noise.main(only=[source]) == 1
            row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(f"| {source} |"))
            assert row.startswith(f"| {source} | yes |") and f"NO: the {side}'s mask generator folds its seed" in row
