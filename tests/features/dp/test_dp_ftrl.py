"""DP-FTRL (dp.mode "central-ftrl", Kairouz et al. 2021): the tree's noise, its accounting and
the once-per-tree participation rule, checked against the paper's properties rather than against
the code that computes them."""

from __future__ import annotations

import math

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord
from flwr.serverapp.strategy import FedAvg

from features.dp_mechanisms.ftrl import FtrlDP
from server_app.strategy import build_strategy
from task.config import Config, DPConfig
from task.privacy import DP_WEIGHT
from task.privacy.ledger import PrivacyLedger
from tests.helpers import analytic_gaussian_epsilon, seed_every_global_generator
from tests.unit.test_privacy import FakeGrid, aggregate


def ftrl(population=4, sampled=4, z=1.0, clip=2.0, **dp):
    cfg = Config(dp=DPConfig(mode="central-ftrl", noise_multiplier=z, clipping_norm=clip, **dp))
    ledger = PrivacyLedger(cfg.dp, population=population, sampled=sampled)
    return cfg, ledger


# --- the tree's noise -----------------------------------------------------------------------------
def test_the_noise_on_the_running_sum_grows_with_the_set_bits_of_t_not_with_t():
    """Tree aggregation: the running sum after t rounds is noised by one node per set bit of t
    (variance popcount(t) std^2); fresh noise every round would give t std^2."""
    from features.dp_mechanisms.tree_noise import TreeNoise

    std, d = 2.0, 100_000
    tree = TreeNoise([(d,)], std)
    running = np.zeros(d)
    for t in range(1, 17):
        running += tree.increment()[0]
        assert tree.rounds == t
        expected = bin(t).count("1") * std**2
        assert np.var(running) == pytest.approx(expected, rel=0.03), t
    assert np.var(running) == pytest.approx(std**2, rel=0.03)  # t = 16: one node, where fresh noise has 16
    tree.restart()
    assert tree.rounds == 0 and np.var(tree.increment()[0]) == pytest.approx(std**2, rel=0.03)


def test_the_tree_noise_is_secret_whatever_every_global_generator_is_seeded_to():
    from features.dp_mechanisms.tree_noise import TreeNoise

    draws = []
    for _ in range(2):
        seed_every_global_generator(0)
        draws.append(TreeNoise([(1000,)], 1.0).increment()[0])
    assert abs(np.corrcoef(draws[0], draws[1])[0, 1]) < 0.15


def test_the_server_model_after_t_rounds_carries_the_trees_noise_and_the_exact_sum_of_updates():
    """With updates of zero the model is the noise alone: its variance after round t is
    popcount(t) (zC / sampled)^2; with one device's update it moves by exactly that update / sampled."""
    cfg, ledger = ftrl(population=4, sampled=4, z=1.0, clip=2.0)
    strategy = FtrlDP(FedAvg(weighted_by_key=DP_WEIGHT), cfg, ledger)
    d = 200_000  # the variance within 3% is 9.5 standard errors
    model = np.zeros(d, np.float32)
    for t in range(1, 5):
        ledger.trees = ledger.trees or [0]  # one tree for these 4 rounds (the sampler starts it)
        strategy._current = ArrayRecord([model])
        model = aggregate(strategy, d, [np.zeros(d, np.float32)] * 4, current=model)
        assert np.var(model) == pytest.approx(bin(t).count("1") * (1.0 * 2.0 / 4) ** 2, rel=0.03), t
    assert ledger.trees == [4]


# --- accounting -----------------------------------------------------------------------------------
@pytest.mark.parametrize("rounds, depth", [(1, 1), (3, 2), (7, 3), (8, 4), (100, 7)])
def test_one_tree_costs_what_a_gaussian_mechanism_of_noise_z_over_sqrt_depth_costs(rounds, depth):
    """Kairouz et al. 2021: a device in one round of a T-round tree touches ceil(log2(T + 1)) nodes,
    each with noise z: one Gaussian mechanism of multiplier z / sqrt(depth). The RDP figure is an
    upper bound on the exact (Balle & Wang 2018) epsilon of that mechanism and close to it."""
    z, delta = 4.0, 1e-5
    _, ledger = ftrl(z=z, delta=delta)
    ledger.trees = [rounds]
    ledger.central_releases = [[z]] * rounds
    exact = analytic_gaussian_epsilon(z / math.sqrt(depth), delta)
    assert exact <= ledger.central_epsilon() <= 1.25 * exact


def test_ftrl_spends_far_less_than_dp_fedavg_without_sampling_credit():
    z, rounds = 4.0, 64
    _, tree = ftrl(population=1000, sampled=10, z=z)
    tree.trees, tree.central_releases = [rounds], [[z]] * rounds
    fedavg = PrivacyLedger(DPConfig(mode="central-client-clip", noise_multiplier=z), population=1000, sampled=10)
    fedavg.central_releases = [[z]] * rounds
    assert tree.central_epsilon() < fedavg.central_epsilon() / 3
    assert tree.central_amplified_epsilon() is None  # DP-FTRL takes no credit for sampling
    # Trees compose: two trees of 32 rounds cost more than one of 64 (6 + 6 nodes against 7).
    tree.trees = [32, 32]
    assert tree.central_epsilon() > ftrl_epsilon(z, [64])


def ftrl_epsilon(z, trees):
    _, ledger = ftrl(z=z)
    ledger.trees, ledger.central_releases = list(trees), [[z]] * sum(trees)
    return ledger.central_epsilon()


def test_the_budget_check_projects_the_larger_of_growing_the_tree_and_starting_a_new_one():
    _, ledger = ftrl(population=100, sampled=10, z=2.0, max_epsilon=1e9)
    ledger.trees, ledger.central_releases = [3], [[2.0]] * 3
    # 3 -> 4 rounds adds a level (2 -> 3 nodes); a new tree of 1 round adds 1 node: the same here.
    assert ledger.central_epsilon(extra_releases=1) == pytest.approx(ftrl_epsilon(2.0, [4]))
    ledger.trees = [4]  # 4 -> 5 rounds keeps 3 levels; a new tree would add one: the projection takes it
    assert ledger.central_epsilon(extra_releases=1) == pytest.approx(ftrl_epsilon(2.0, [4, 1]))


# --- once per tree --------------------------------------------------------------------------------
def test_no_device_is_asked_twice_in_a_tree_and_a_new_tree_starts_when_too_few_are_left():
    cfg = Config(fraction_train=0.3, dp=DPConfig(mode="central-ftrl"))
    ledger = PrivacyLedger(cfg.dp, population=10, sampled=3)
    strategy = build_strategy(cfg, ledger)
    strategy._construct_messages = lambda record, node_ids, message_type: node_ids  # no runtime to address
    trees, asked = [], []
    for server_round in range(1, 8):
        nodes = list(strategy.configure_train(server_round, ArrayRecord([np.zeros(3, np.float32)]), ConfigRecord(),
                                              FakeGrid(10)))
        ledger.record_central([1.0])
        trees.append(len(ledger.trees))
        asked.append(set(nodes))
    assert trees == [1, 1, 1, 2, 2, 2, 3]  # 10 devices hold 3 rounds of 3 unused devices
    for tree in (asked[0:3], asked[3:6]):
        assert len(set.union(*tree)) == 9  # nobody twice within a tree
    assert ledger.trees == [3, 3, 1]
    with pytest.raises(RuntimeError, match="asked twice"):
        ledger.record_asked_to_train(sorted(asked[-1]))


def test_a_resumed_run_starts_a_new_tree_and_keeps_the_old_ones():
    _, ledger = ftrl(population=10, sampled=3)
    ledger.trees, ledger.central_releases = [3, 2], [[1.0]] * 5
    resumed = PrivacyLedger.from_state(ledger.dp, ledger.state_dict(), resumed=True)
    assert resumed.trees == [3, 2, 0]
    assert resumed.central_epsilon() == pytest.approx(ledger.central_epsilon())
    assert resumed.devices_for_next_round(list(range(10))) == list(range(10))  # node ids changed: all fresh


def test_ftrl_is_a_valid_dp_mode_and_refuses_a_server_optimiser():
    from task.config import ConfigError

    assert Config.from_run_config({"dp.mode": "central-ftrl"}).dp.central
    with pytest.raises(ConfigError, match="server-optimizer"):
        Config.from_run_config({"dp.mode": "central-ftrl", "server-optimizer": "fedadam"})
