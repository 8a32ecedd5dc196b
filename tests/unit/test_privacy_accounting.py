"""Privacy accounting checked against what others published and computed, never against the
same calls the ledger makes: tensorflow-privacy's MNIST table, the PLD accountant, the exact
analytic Gaussian mechanism; the budget stop; the ledger's state across a resume."""

import math
import random

import pytest
from dp_accounting import pld, rdp

from task.config import DPConfig
from task.privacy import PrivacyBudgetExceeded
from task.privacy.ledger import PrivacyLedger
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
    with pytest.raises(PrivacyBudgetExceeded, match="dp.max-epsilon = 6.0"):
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
    with pytest.raises(PrivacyBudgetExceeded, match="dp.max-epsilon = 8.0"):
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
    # nothing per device (no sampling rates: they reveal text sizes; no device ids: see below)
    assert set(ledger.state_dict()) == {
        "population",
        "sampled",
        "selected",
        "central_releases",
        "sampled_from",  # devices connected at each central release's sampling
        "carried_participations",  # the worst device's rounds
        "trees",  # DP-FTRL: rounds per tree, no device ids
        "discoveries",  # vocabulary discovery: (epsilon, delta) each, no votes
        "bookings",  # how many things were booked: a journal ahead of a checkpoint has more
        "lineage",  # the run directories whose journals hold these charges (server paths, no device)
    }
    # a resumed run may give device "a" a new id: its 2 rounds carry over to whichever device is worst
    resumed = PrivacyLedger.from_state(dp, ledger.state_dict(), resumed=True)
    resumed.record_asked_to_train(["c"])
    assert resumed.most_participations() == 3 and resumed.report()["epsilon-local"] > ledger.report()["epsilon-local"]


def test_two_consecutive_checkpoints_do_not_tell_who_was_sampled_between_them():
    """The state a checkpoint keeps must be the same whichever devices a round asked."""
    dp = DPConfig(mode="central-client-clip")
    states = []
    for asked in (["1", "2"], ["3", "4"]):
        ledger = PrivacyLedger(dp, population=10, sampled=2)
        ledger.record_asked_to_train(["5", "6"], sampled_from=10)
        ledger.record_central([1.0])
        ledger.record_asked_to_train(asked, sampled_from=10)
        ledger.record_central([1.0])
        states.append(ledger.state_dict())
    assert states[0] == states[1]




def _sampled_central_ledger(**dp_changes) -> PrivacyLedger:
    dp = DPConfig(mode="central-client-clip", noise_multiplier=1.0, **dp_changes)
    ledger = PrivacyLedger(dp, population=1000, sampled=10)
    for _ in range(3):
        ledger.record_asked_to_train(list(range(10)), sampled_from=1000)
        ledger.record_central([1.0])
    return ledger


def test_the_total_with_discovery_adds_figures_of_one_relation_and_reports_its_delta():
    """Discovery's figure is add/remove-one, which bounds the zero-out pair (a device whose text is
    none votes nothing); the model's plain central figure is zero-out. The total adds those two, and
    both deltas; the amplified model figure (replace-one) is not used."""
    ledger = _sampled_central_ledger()
    ledger.record_discovery(2.0, 1e-6)
    report = ledger.report()
    assert report["epsilon-central-amplified"] < report["epsilon-central"]
    assert report["epsilon-with-discovery"] == pytest.approx(report["epsilon-central"] + 2.0)
    assert report["delta-with-discovery"] == pytest.approx(1e-5 + 1e-6)
    # DP-SGD alone bounds one window, not one device: no user-level total at all
    sgd_only = PrivacyLedger(DPConfig(sgd=True), population=100, sampled=10)
    sgd_only.record_asked_to_train(["a"])
    sgd_only.record_discovery(2.0, 1e-6)
    assert "epsilon-with-discovery" not in sgd_only.report() and sgd_only.report()["epsilon-discovery"] == 2.0


def test_local_dp_and_discovery_report_no_total():
    """O2: local DP holds against the server, TrieHH only against those who see the trie (the
    server sees every vote): no one adversary gets their sum, so none is reported or budgeted."""
    local = PrivacyLedger(DPConfig(mode="local", local_epsilon=1.0, max_epsilon=5.0), population=100, sampled=10)
    local.record_asked_to_train(["a"])
    local.record_discovery(2.0, 1e-6)
    report = local.report()
    assert report["epsilon-local"] == pytest.approx(1.0, abs=0.01) and report["epsilon-discovery"] == 2.0
    assert "epsilon-with-discovery" not in report and "delta-with-discovery" not in report
    assert local.with_discovery() is None
    local.check_discovery(2.9, 1e-6)  # the budget bounds each figure alone: 2 + 2.9 of discovery fits 5
    assert any("no total with vocabulary discovery" in line for line in local.assumptions(12))


def test_the_central_figure_is_zero_out_and_equals_the_exact_gaussian_at_sensitivity_c():
    """B2: the plain central figure is labelled zero-out (one device's update replaced by zero,
    the number of devices public), never add/remove. Under that pair the release
    (sum of clipped updates + N(0, (zC)^2)) / sampled moves by at most C / sampled: a Gaussian
    mechanism of multiplier z, whose exact epsilon (Balle & Wang 2018) the figure bounds closely.
    At z = 1, delta = 1e-5: 4.73 for one round, 39.8 for 30."""
    ledger = PrivacyLedger(DPConfig(mode="central-client-clip", noise_multiplier=1.0, delta=1e-5), 10, 10)
    ledger.record_central([1.0])
    assert analytic_gaussian_epsilon(1.0, 1e-5) <= ledger.central_epsilon() == pytest.approx(4.73, abs=0.005)
    for _ in range(29):
        ledger.record_central([1.0])
    assert analytic_gaussian_epsilon(1 / math.sqrt(30), 1e-5) <= ledger.central_epsilon() == pytest.approx(39.83, abs=0.01)
    text = " ".join(ledger.assumptions(12))
    assert "zero-out" in text and "REPLACE_SPECIAL" in text and "number of devices is public" in text
    assert "added or removed" not in text and "add or remove one device" not in text


def test_every_delta_stays_below_one_over_the_population_budget_or_not():
    """O7: discovery's delta and the total's add up over discoveries; the ledger refuses the
    discovery that would bring either to 1/population (here 1/100), with or without dp.max-epsilon."""
    for max_epsilon in (0.0, 1000.0):
        ledger = PrivacyLedger(DPConfig(mode="central-client-clip", delta=1e-3, max_epsilon=max_epsilon), 100, 10)
        ledger.check_discovery(0.1, 4e-3)
        ledger.record_discovery(0.1, 4e-3)
        ledger.check_discovery(0.1, 4e-3)  # total delta 1e-3 + 8e-3 < 1e-2
        ledger.record_discovery(0.1, 4e-3)
        with pytest.raises(PrivacyBudgetExceeded, match=r"delta-discovery to 0\.012 >= 1/population = 1/100"):
            ledger.check_discovery(0.1, 4e-3)
        assert ledger.report()["delta-with-discovery"] == pytest.approx(9e-3)
        with pytest.raises(PrivacyBudgetExceeded, match=r"delta-with-discovery to 0\.0105 >= 1/population"):
            ledger.check_discovery(0.1, 1.5e-3)  # discovery's own 9.5e-3 fits; the total's 1.05e-2 does not
    # discovery without DP on the model: its own delta is bounded the same way
    alone = PrivacyLedger(DPConfig(delta=1e-3), population=10, sampled=10)
    with pytest.raises(PrivacyBudgetExceeded, match="delta-discovery"):
        alone.check_discovery(1.0, 0.1)


def test_the_budget_covers_discovery_before_it_runs_and_before_each_round():
    ledger = _sampled_central_ledger(max_epsilon=12.0)
    central = ledger.central_epsilon()  # 9.01 after 3 releases at z = 1
    ledger.check_discovery(12.0 - central - 0.1, 1e-6)  # fits
    with pytest.raises(PrivacyBudgetExceeded, match="next vocabulary discovery.*epsilon-with-discovery"):
        ledger.check_discovery(12.0 - central + 0.1, 1e-6)
    ledger.record_discovery(2.5, 1e-6)  # total now 11.51: the model's next release would pass 12
    with pytest.raises(PrivacyBudgetExceeded, match="next round.*epsilon-with-discovery"):
        ledger.check_next_round(sampled_from=1000)



def test_a_round_sampled_from_fewer_connected_devices_is_credited_with_fewer():
    """A population of 1,000 at the start, and 100 connected in one round: that round's sample is
    10 of 100, not 10 of 1,000."""
    def ledger(connected: list[int]) -> PrivacyLedger:
        out = PrivacyLedger(DPConfig(mode="central-client-clip"), population=1000, sampled=10)
        for n in connected:
            out.record_asked_to_train(list(range(10)), sampled_from=n)
            out.record_central([1.0])
        return out

    full, thin, all_thin = ledger([1000] * 10), ledger([1000] * 9 + [100]), ledger([100] * 10)
    assert full.central_amplified_epsilon() < thin.central_amplified_epsilon() < all_thin.central_amplified_epsilon()
    assert all_thin.central_amplified_epsilon() > 2.5 * full.central_amplified_epsilon()  # 17.5 against 6.3
    assert thin.report()["sampled-from-fewest"] == 100 and thin.report()["population"] == 1000
    # the checkpoint keeps it: a resumed run does not forget the thin round
    resumed = PrivacyLedger.from_state(thin.dp, thin.state_dict(), resumed=True)
    assert resumed.central_amplified_epsilon() == pytest.approx(thin.central_amplified_epsilon())


def test_the_clipping_norm_reported_is_the_one_the_last_release_was_calibrated_to():
    """Adaptive clipping moves the norm every round: the report must not keep the initial one."""
    ledger = PrivacyLedger(DPConfig(mode="central-adaptive-clip", clipping_norm=0.5, clipped_count_stddev=5.0), 10, 10)
    assert ledger.report()["clipping-norm"] == 0.5  # before any release: what round 1 clips to
    ledger.record_central([1.0, 10.0], clipping_norm=0.8)
    assert ledger.report()["clipping-norm"] == 0.8


def test_a_central_mode_publishes_nothing_of_how_the_secret_samples_overlapped():
    """Review N-1: the worst device's count went into metrics.json and checkpoints in every mode;
    in a central mode no figure needs it, and it tells how the rounds' secret samples overlapped."""
    from task.config import DPConfig

    central = PrivacyLedger(DPConfig(mode="central-client-clip"), 10, 2)
    central.record_asked_to_train(["a", "b"])
    central.record_asked_to_train(["a", "c"])
    assert "most-rounds-per-device" not in central.report()
    assert central.state_dict()["carried_participations"] == 0
    local = PrivacyLedger(DPConfig(mode="local"), 10, 2)
    local.record_asked_to_train(["a", "b"])
    local.record_asked_to_train(["a", "c"])
    assert local.report()["most-rounds-per-device"] == 2 and local.state_dict()["carried_participations"] == 2
