"""Privacy accounting checked against what others published and computed, never against the
same calls the ledger makes: tensorflow-privacy's MNIST table, the PLD accountant, the exact
analytic Gaussian mechanism; the budget stop; the ledger's state across a resume."""

import math
import random

import pytest
from dp_accounting import pld, rdp

from task.config import DPConfig
from task.privacy.ledger import PrivacyBudgetExceeded, PrivacyLedger
from tests.helpers import analytic_gaussian_epsilon


def classic_rdp_conversion(event, delta):
    """How tensorflow-privacy computed epsilon when its MNIST table was published (its order list
    and eps = rdp(a) + log(1/delta) / (a - 1)); dp-accounting now converts more tightly."""
    orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
    accountant = rdp.RdpAccountant(orders)
    accountant.compose(event)
    return min(r + math.log(1 / delta) / (a - 1) for a, r in zip(accountant._orders, accountant._rdp))  # noqa: SLF001


@pytest.mark.parametrize("z, epochs, published", [(1.3, 15, 1.19), (1.1, 60, 3.01), (0.7, 45, 7.10)])
def test_dpsgd_epsilon_matches_tensorflow_privacys_published_mnist_table(z, epochs, published):
    # tensorflow/privacy tutorials README: 60,000 examples, batch 256, delta 1e-5
    dp = DPConfig(sgd=True, sgd_noise_multiplier=z, sgd_sampling_rate=256 / 60_000, delta=1e-5)
    ledger = PrivacyLedger(dp, population=3, sampled=3, local_epochs=epochs)
    ledger.record_asked_to_train(["device"])  # one round of `epochs` expected passes
    assert classic_rdp_conversion(ledger.sample_event(1), 1e-5) == pytest.approx(published, abs=0.005)
    tight = pld.PLDAccountant()
    tight.compose(ledger.sample_event(1))
    # the ledger's figure is a valid bound (>= the tight PLD figure) and no looser than the published one
    assert tight.get_epsilon(1e-5) <= ledger.sample_epsilon() <= published


@pytest.mark.parametrize("z, releases", [(1.0, 1), (0.8, 30), (2.0, 100)])
def test_central_epsilon_bounds_the_exact_gaussian_mechanism_closely(z, releases):
    ledger = PrivacyLedger(DPConfig(mode="central-client-clip", noise_multiplier=z, delta=1e-5), 1000, 50)
    for _ in range(releases):
        ledger.record_central([z])
    exact = analytic_gaussian_epsilon(z / math.sqrt(releases), 1e-5)  # k Gaussians = one of z / sqrt(k)
    assert exact <= ledger.central_epsilon() <= 1.25 * exact


def test_an_unseen_devices_dpsgd_projection_is_exact_and_the_budget_holds():
    """The old projection assumed q = 1 for a device not yet seen; 40 windows at batch 32 spent
    more. Now the plan is public: the projection for the next round is what the round spends."""
    dp = DPConfig(sgd=True, sgd_noise_multiplier=1.0, sgd_sampling_rate=0.1, delta=1e-5, max_epsilon=6.0)
    ledger = PrivacyLedger(dp, population=10, sampled=3, local_epochs=1)
    spent = []
    with pytest.raises(PrivacyBudgetExceeded, match="dp-max-epsilon = 6.0"):
        for r in range(100):
            ledger.check_next_round()
            ledger.record_asked_to_train(random.sample(range(10), 3) if r else [0, 1, 2])
            spent.append(ledger.sample_epsilon())
    assert spent and max(spent) <= 6.0
    worst = ledger.most_participations()
    assert ledger.sample_epsilon(rounds=worst + 1) > 6.0  # the refused round would have exceeded it
    assert ledger.sample_epsilon(rounds=worst) == max(spent)


def test_the_budget_stops_before_the_release_that_would_exceed_it():
    dp = DPConfig(mode="central-client-clip", noise_multiplier=1.0, delta=1e-5, max_epsilon=8.0)
    ledger = PrivacyLedger(dp, population=10, sampled=10)
    completed = 0
    with pytest.raises(PrivacyBudgetExceeded, match="dp-max-epsilon = 8.0"):
        while True:
            ledger.check_next_round()
            ledger.record_central([1.0])
            completed += 1
    # Flower's notes: epsilon 4.73, 7.08, 9.01 after 1, 2, 3 releases at z = 1, delta = 1e-5
    assert completed == 2 and ledger.central_epsilon() == pytest.approx(7.077, abs=0.002)


def test_the_ledger_survives_a_round_trip_through_its_state():
    dp = DPConfig(mode="local", sgd=True)
    ledger = PrivacyLedger(dp, 5, 5)
    ledger.record_asked_to_train(["a", "b", "a"])
    again = PrivacyLedger.from_state(dp, ledger.state_dict())
    assert again.report() == ledger.report()
    # nothing per device but how often it was asked (no sampling rates: they reveal text sizes)
    assert set(ledger.state_dict()) == {
        "population",
        "sampled",
        "selected",
        "central_releases",
        "participations",
        "carried_participations",
        "trees",  # DP-FTRL: rounds per tree, no device ids
        "discoveries",  # vocabulary discovery: (epsilon, delta) each, no votes
    }
    assert ledger.state_dict()["participations"] == {"a": 2, "b": 1}
    # a resumed run may give device "a" a new id: its 2 rounds carry over to whichever device is worst
    resumed = PrivacyLedger.from_state(dp, ledger.state_dict(), resumed=True)
    resumed.record_asked_to_train(["c"])
    assert resumed.most_participations() == 3 and resumed.report()["epsilon-local"] > ledger.report()["epsilon-local"]


