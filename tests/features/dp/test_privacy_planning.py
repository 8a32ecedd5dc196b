"""Planning a private run (features/dp_mechanisms/planning.py): the epsilon it predicts and the noise it
picks, checked against the exact Gaussian mechanism and against the properties the plan relies on.
That a real run reports the planned figure is checked end to end by the privacy benchmark's smoke
run (tests/e2e/test_benchmark.py)."""

from __future__ import annotations

import math

import pytest

from features.dp_mechanisms.planning import noise_for_epsilon, planned_epsilon
from task.config import DPConfig
from task.privacy import PrivacyBudgetExceeded
from task.privacy.ledger import PrivacyLedger
from tests.helpers import analytic_gaussian_epsilon

FEDAVG = DPConfig(mode="central-client-clip", delta=1e-5)
FTRL = DPConfig(mode="central-ftrl", delta=1e-5)


def test_without_sampling_dp_fedavg_plans_the_composition_of_its_gaussian_releases():
    """R Gaussian releases of multiplier z compose to one of z / sqrt(R) (the RDP accountant's
    figure is an upper bound on the exact Balle & Wang epsilon, and close to it)."""
    z, rounds = 8.0, 16
    exact = analytic_gaussian_epsilon(z / math.sqrt(rounds), 1e-5)
    planned = planned_epsilon(DPConfig(mode="central-client-clip", noise_multiplier=z, delta=1e-5), 50, 50, rounds)
    assert exact <= planned <= 1.25 * exact


def test_sampling_devices_lowers_dp_fedavgs_epsilon_but_not_dp_ftrls():
    z = 2.0
    every = planned_epsilon(DPConfig(mode="central-client-clip", noise_multiplier=z), 1000, 1000, 40)
    sampled = planned_epsilon(DPConfig(mode="central-client-clip", noise_multiplier=z), 1000, 50, 40)
    assert sampled < every / 3
    # DP-FTRL: each tree (here 20 rounds, every device once) costs what it costs whoever was picked.
    one_tree = planned_epsilon(DPConfig(mode="central-ftrl", noise_multiplier=z), 1000, 50, 20)
    depth = math.ceil(math.log2(21))
    assert analytic_gaussian_epsilon(z / math.sqrt(depth), 1e-5) <= one_tree
    assert planned_epsilon(DPConfig(mode="central-ftrl", noise_multiplier=z), 1000, 50, 40) > one_tree  # 2 trees


@pytest.mark.parametrize("dp", [FEDAVG, FTRL], ids=["dp-fedavg", "dp-ftrl"])
@pytest.mark.parametrize("target", [2.0, 10.0])
def test_the_noise_found_is_the_smallest_that_meets_the_target(dp, target):
    z = noise_for_epsilon(dp, 1000, 50, 40, target, tolerance=0.005)
    at = lambda m: planned_epsilon(DPConfig(mode=dp.mode, noise_multiplier=m, delta=dp.delta), 1000, 50, 40)  # noqa: E731
    assert at(z) <= target < at(z / 1.01)


def test_a_smaller_target_needs_more_noise_and_a_bad_plan_is_refused():
    assert noise_for_epsilon(FEDAVG, 1000, 50, 40, 3.0) > noise_for_epsilon(FEDAVG, 1000, 50, 40, 10.0)
    with pytest.raises(ValueError, match="dp.mode"):
        planned_epsilon(DPConfig(mode="local"), 100, 10, 5)
    with pytest.raises(ValueError, match="population"):
        planned_epsilon(FEDAVG, 10, 20, 5)


def test_planning_and_the_budget_stop_bound_the_same_figure():
    """Planning calibrates to the amplified figure when the server samples: a run planned to reach
    the budget must not be stopped earlier by the plain central figure."""
    from features.dp_mechanisms.planning import noise_for_epsilon, planned_epsilon

    rounds, target = 20, 3.0
    dp = DPConfig(mode="central-client-clip", max_epsilon=target)
    z = noise_for_epsilon(dp, population=1000, per_round=10, rounds=rounds, target=target)
    dp = DPConfig(mode="central-client-clip", noise_multiplier=z, max_epsilon=target)
    ledger = PrivacyLedger(dp, population=1000, sampled=10)
    for _ in range(rounds):
        ledger.check_next_round(sampled_from=1000)
        ledger.record_asked_to_train(list(range(10)), sampled_from=1000)
        ledger.record_central([z])
    assert ledger.model_epsilon() == pytest.approx(planned_epsilon(dp, 1000, 10, rounds)) and ledger.model_epsilon() <= target
    assert ledger.central_epsilon() > target  # the figure the stop used to bound would have stopped it early
    with pytest.raises(PrivacyBudgetExceeded, match="the model's user-level epsilon"):
        for _ in range(rounds):  # and the stop still holds the planned figure at the budget
            ledger.check_next_round(sampled_from=1000)
            ledger.record_asked_to_train(list(range(10)), sampled_from=1000)
            ledger.record_central([z])
    assert ledger.model_epsilon() <= target


def test_over_selection_is_planned_as_the_ledger_books_it():
    """O6: with participation.selection-factor 2 the server asks 2 x per_round devices (the
    ledger's `selected`) and one device can displace another's update (sensitivity 2C): the plan
    must be the figure the run's own ledger then books."""
    from server_app.privacy import ledger_for
    from task.config import Config

    z, rounds = 2.0, 10
    cfg = Config(dp=DPConfig(mode="central-client-clip", noise_multiplier=z, delta=1e-5)).with_run_config(
        {"participation.selection-factor": 2.0})
    ledger = ledger_for(cfg, 1000, 10, None)  # as the ServerApp builds it
    assert ledger.selected == 20
    for _ in range(rounds):  # as the strategy books a round: `selected` devices asked out of 1,000
        ledger.record_asked_to_train(list(range(ledger.selected)), sampled_from=1000)
        ledger.record_central([z])
    planned = planned_epsilon(cfg.dp, 1000, 10, rounds, selection_factor=2.0)
    assert planned == pytest.approx(ledger.model_epsilon(), rel=1e-9)
    assert planned > planned_epsilon(cfg.dp, 1000, 10, rounds)  # over-selection costs privacy
    # against the definition: everyone connected asked (no sampling credit) and sensitivity 2C,
    # so `rounds` Gaussian releases of multiplier z / 2
    everyone = planned_epsilon(cfg.dp, 20, 10, rounds, selection_factor=2.0)
    exact = analytic_gaussian_epsilon(z / 2 / math.sqrt(rounds), 1e-5)
    assert exact <= everyone <= 1.25 * exact
    assert noise_for_epsilon(FEDAVG, 1000, 10, rounds, 3.0, selection_factor=2.0) > \
        noise_for_epsilon(FEDAVG, 1000, 10, rounds, 3.0)
