"""A budget equal to the planned epsilon lets the run finish (outside review F1): under DP-FTRL
and BLT-DP-FTRL the server decides whether a round grows the current tree / noise segment before
it checks the budget, so the check projects that round, not the worse of the two."""

import dataclasses

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord

from server_app.privacy_plan import noise_for_epsilon
from server_app.strategy import build_strategy
from task.config import Config, DPConfig
from task.privacy import PrivacyBudgetExceeded
from task.privacy.ledger import PrivacyLedger


class Nodes:
    def __init__(self, n):
        self.n = n

    def get_node_ids(self):
        return list(range(1, self.n + 1))


@pytest.mark.parametrize("mode", ["central-ftrl", "central-blt"])
@pytest.mark.parametrize("population, per_round, rounds", [(4, 2, 4), (40, 4, 12)])
def test_a_run_whose_budget_is_its_planned_epsilon_runs_every_round(mode, population, per_round, rounds):
    target = 8.0
    dp = DPConfig(mode=mode, clipping_norm=1.0, delta=1e-3, max_epsilon=target)
    dp = dataclasses.replace(dp, noise_multiplier=noise_for_epsilon(dp, population, per_round, rounds, target))
    cfg = Config(num_server_rounds=rounds, dp=dp, min_train_nodes=per_round, min_available_nodes=per_round,
                 fraction_train=per_round / population)
    ledger = PrivacyLedger(dp, population=population, sampled=per_round, rounds=rounds)
    strategy = build_strategy(cfg, ledger)
    strategy._construct_messages = lambda record, node_ids, message_type: list(node_ids)
    for server_round in range(1, rounds + 1):
        try:
            asked = strategy.configure_train(server_round, ArrayRecord([np.zeros(3)]), ConfigRecord(), Nodes(population))
        except PrivacyBudgetExceeded as e:
            pytest.fail(f"stopped before round {server_round} of {rounds}: {e}")
        assert len(list(asked)) == per_round
        ledger.record_central([dp.noise_multiplier])
    assert ledger.model_epsilon() <= target
