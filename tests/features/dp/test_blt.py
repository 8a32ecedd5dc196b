"""BLT-DP-FTRL (dp.mode "central-blt"; Dvijotham, McMahan et al. 2024, McMahan et al. 2024): its
sensitivity under minimum separation, its error against the binary tree at equal epsilon, fresh
noise, the separation the server enforces, resume, and one short run. Checked against the papers'
definitions (the strategy matrix C built densely from c_0 = 1, c_k = sum_i omega_i theta_i^(k-1);
every allowed participation pattern enumerated; tree aggregation's popcount noise), not against the
code's own recursions."""

from __future__ import annotations

import itertools
import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting import rdp
from flwr.app import ArrayRecord, ConfigRecord
from flwr.serverapp.strategy import FedAvg

from features.dp_mechanisms.blt import BltDP, BltNoise
from server_app.privacy import strategy_state
from server_app.strategy import build_strategy
from task.config import Config, DPConfig
from task.privacy import DP_WEIGHT, PrivacyBudgetExceeded
from task.privacy.ledger import PrivacyLedger
from task.privacy.mechanisms import blt_sensitivities, optimal_blt
from tests.helpers import seed_every_global_generator
from tests.unit.test_privacy import FakeGrid, aggregate


def dense_c(theta, omega, n: int) -> np.ndarray:
    """C from its definition: lower-triangular Toeplitz, c_0 = 1, c_k = sum_i omega_i theta_i^(k-1)."""
    c = [1.0] + [sum(w * t ** (k - 1) for t, w in zip(theta, omega)) for k in range(1, n)]
    return np.array([[c[i - j] if i >= j else 0.0 for j in range(n)] for i in range(n)])


def allowed_patterns(n: int, b: int):
    """Every non-empty set of rounds in 0..n-1 whose gaps are all >= b."""
    for k in range(1, n + 1):
        for rounds in itertools.combinations(range(n), k):
            if all(y - x >= b for x, y in zip(rounds, rounds[1:])):
                yield rounds


def brute_force_sensitivity(C: np.ndarray, b: int) -> float:
    return max(np.linalg.norm(C[:, list(p)].sum(axis=1)) for p in allowed_patterns(C.shape[0], b))


def blt_ledger(population=10, sampled=3, rounds=12, z=1.0, **dp) -> PrivacyLedger:
    return PrivacyLedger(DPConfig(mode="central-blt", noise_multiplier=z, **dp), population=population,
                         sampled=sampled, rounds=rounds)


def gaussian_mix_epsilon(multipliers: list[float], delta: float) -> float:
    accountant = rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_SPECIAL)
    accountant.compose(dp_accounting.ComposedDpEvent([dp_accounting.GaussianDpEvent(m) for m in multipliers]))
    return accountant.get_epsilon(delta)


# --- (a) sensitivity under minimum separation -------------------------------------------------------
@pytest.mark.parametrize("n, b", [(12, 1), (12, 2), (12, 3), (11, 4), (10, 6), (9, 9)])
def test_the_sensitivity_is_the_max_over_every_participation_pattern_min_separation_allows(n, b):
    """For the run's own (optimised) BLT and two others, the ledger's sens(C_t; b) for every prefix t
    equals a brute-force max, over all patterns with gaps >= b, of ||sum of C_t's columns||. With
    C >= 0 entrywise, C^T C >= 0, so updates in one direction are the worst: random unit directions
    never exceed it."""
    ledger = blt_ledger(population=b * 3, sampled=3, rounds=n)
    assert ledger.separation == b
    cases = [ledger.blt_parameters(), ((0.9, 0.5, 0.1), (0.3, 0.3, 0.3)), ((0.99,), (0.95,))]
    for theta, omega in cases:
        C = dense_c(theta, omega, n)
        for t in range(1, n + 1):
            expected = brute_force_sensitivity(C[:t, :t], b)
            assert blt_sensitivities(theta, omega, n, b)[t - 1] == pytest.approx(expected, rel=1e-9), (theta, t)
        if (theta, omega) == cases[0]:
            assert [ledger.blt_sensitivity(t) for t in range(1, n + 1)] == pytest.approx(
                [brute_force_sensitivity(C[:t, :t], b) for t in range(1, n + 1)], rel=1e-9)
    rng = np.random.default_rng(1)
    C, worst = dense_c(*cases[1], n), brute_force_sensitivity(dense_c(*cases[1], n), b)
    patterns = list(allowed_patterns(n, b))
    for _ in range(200):
        pattern = list(patterns[int(rng.integers(len(patterns)))])
        directions = rng.normal(size=(len(pattern), 5))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        assert np.linalg.norm(C[:, pattern] @ directions) <= worst + 1e-9


def test_epsilon_is_one_gaussian_mechanism_of_the_brute_force_sensitivity_with_no_sampling_credit():
    """The first t rounds are C_t x + z: epsilon of the Gaussian of multiplier z / sens(C_t; b), per
    round, under zero-out; nothing amplified though only 3 of 10 devices are asked."""
    z, n, delta = 3.0, 8, 1e-5
    ledger = blt_ledger(population=10, sampled=3, rounds=n, z=z, delta=delta)
    C = dense_c(*ledger.blt_parameters(), n)
    devices = list(range(10))
    for t in range(1, n + 1):
        ledger.record_asked_to_train(ledger.devices_for_next_round(devices)[:3], sampled_from=10)
        ledger.record_central([z])
        sens = brute_force_sensitivity(C[:t, :t], 3)
        assert ledger.central_epsilon() == pytest.approx(gaussian_mix_epsilon([z / sens], delta), rel=1e-9)
    assert ledger.central_amplified_epsilon() is None and ledger.model_epsilon() == ledger.central_epsilon()
    assert ledger.report()["min-separation"] == 3


def test_the_budget_stops_before_a_round_would_exceed_it():
    z, delta = 2.0, 1e-5
    probe = blt_ledger(z=z, delta=delta, rounds=10)
    devices = list(range(10))
    figures = []
    for _ in range(5):
        probe.record_asked_to_train(probe.devices_for_next_round(devices)[:3])
        probe.record_central([z])
        figures.append(probe.central_epsilon())
    ledger = blt_ledger(z=z, delta=delta, rounds=10, max_epsilon=(figures[3] + figures[4]) / 2)
    done = 0
    with pytest.raises(PrivacyBudgetExceeded, match="epsilon"):
        while True:
            ledger.check_next_round(sampled_from=10)
            ledger.record_asked_to_train(ledger.devices_for_next_round(devices)[:3])
            ledger.record_central([z])
            done += 1
    assert done == 4 and ledger.central_epsilon() == pytest.approx(figures[3])


# --- (b) error against the binary tree at the same epsilon ------------------------------------------
def tree_prefix_nodes(rounds: int, tree_length: int) -> np.ndarray:
    """Kairouz et al. 2021 as this template runs it: trees of `tree_length` rounds, restarted with the
    model so far as the anchor, so round t's running sum carries popcount(tree_length) nodes per
    finished tree and popcount(t mod tree_length) of the current one."""
    return np.array([(t // tree_length) * bin(tree_length).count("1") + bin(t % tree_length).count("1")
                     for t in range(1, rounds + 1)], np.float64)


@pytest.mark.parametrize("rounds", [20, 100])
def test_at_the_same_epsilon_blt_noise_on_the_running_sums_is_below_the_trees(rounds):
    """1,000 devices, 50 a round: b = 20 and the tree restarts every 20 rounds. Both noise multipliers
    are planned (noise_for_epsilon) for epsilon 4; the BLT's noise is drawn by BltNoise as the server
    draws it and its running sums measured; the tree's is popcount(t) nodes of std z_tree each."""
    from features.dp_mechanisms.planning import noise_for_epsilon

    population, per_round, target = 1000, 50, 4.0
    z_tree = noise_for_epsilon(DPConfig(mode="central-ftrl"), population, per_round, rounds, target)
    z_blt = noise_for_epsilon(DPConfig(mode="central-blt"), population, per_round, rounds, target)
    ledger = blt_ledger(population=population, sampled=per_round, rounds=rounds, z=z_blt)
    noise = BltNoise([(4000,)], *ledger.blt_parameters(), z_blt, np.random.default_rng(7))
    running = np.cumsum([noise.increment()[0] for _ in range(rounds)], axis=0)
    blt_var = running.var(axis=1)
    tree_var = z_tree**2 * tree_prefix_nodes(rounds, population // per_round)
    assert blt_var.max() < 0.6 * tree_var.max() and blt_var.mean() < 0.6 * tree_var.mean()


def test_noise_for_epsilon_plans_central_blt():
    from features.dp_mechanisms.planning import noise_for_epsilon, planned_epsilon

    dp = DPConfig(mode="central-blt")
    z = noise_for_epsilon(dp, 100, 10, 20, 3.0)
    at = lambda m: planned_epsilon(DPConfig(mode="central-blt", noise_multiplier=m), 100, 10, 20)  # noqa: E731
    assert at(z) <= 3.0 < at(z / 1.01)


def test_the_streamed_noise_is_c_inverse_z():
    """w = C^-1 z (so the running sums carry A C^-1 z = B z), from d buffers, one round at a time."""
    n, theta, omega = 15, (0.95, 0.6, 0.2), (0.3, 0.2, 0.1)
    z = np.random.default_rng(3).normal(size=(n, 6))

    class Replay:
        def __init__(self):
            self.t = 0

        def normal(self, loc, scale, shape):
            self.t += 1
            return z[self.t - 1].reshape(shape).copy()

    noise = BltNoise([(6,)], theta, omega, 1.0, Replay())
    streamed = np.array([noise.increment()[0] for _ in range(n)])
    assert np.allclose(streamed, np.linalg.solve(dense_c(theta, omega, n), z))


# --- (c) fresh noise ------------------------------------------------------------------------------
def blt_strategy(population=4, sampled=4, rounds=5, z=1.0, clip=1.0):
    cfg = Config(num_server_rounds=rounds, dp=DPConfig(mode="central-blt", noise_multiplier=z, clipping_norm=clip))
    ledger = blt_ledger(population=population, sampled=sampled, rounds=rounds, z=z, clipping_norm=clip)
    return BltDP(FedAvg(weighted_by_key=DP_WEIGHT), cfg, ledger), ledger


def blt_draw(d: int = 50_000, rounds: int = 3) -> tuple[np.ndarray, float]:
    """A server's first `rounds` releases with no replies (the noise alone, / 4 sampled), as a run
    makes them: every round's noise, and the claimed std of the first (buffers still empty)."""
    strategy, ledger = blt_strategy(rounds=rounds)
    model, rows = np.zeros(d, np.float32), []
    for _ in range(rounds):
        ledger.devices_for_next_round([1, 2, 3, 4])
        new = aggregate(strategy, d, [], current=model)
        rows.append(new - model)
        model = new
    return np.concatenate(rows), 1.0 * 1.0 / 4


def test_two_servers_seeded_alike_draw_different_noise_from_os_entropy_alone():
    from scripts.deployment import check_fresh_noise

    draws = []
    for _ in range(2):
        seed_every_global_generator(0)
        draws.append(blt_draw()[0].reshape(3, -1))
    for a, b in zip(*draws):
        assert abs(np.corrcoef(a, b)[0, 1]) < 0.05
    first, claimed = blt_draw()
    assert np.std(first[:50_000]) == pytest.approx(claimed, rel=0.05)
    passed, why = check_fresh_noise.provenance(lambda: blt_draw(d=2000), check_fresh_noise.SEED)
    assert passed, why


# --- (d) minimum separation -----------------------------------------------------------------------
def test_no_device_is_asked_again_within_b_rounds():
    cfg = Config(fraction_train=0.3, num_server_rounds=12, dp=DPConfig(mode="central-blt"))
    ledger = PrivacyLedger(cfg.dp, population=10, sampled=3, rounds=12)
    assert ledger.separation == 3  # floor(10 / 3)
    strategy = build_strategy(cfg, ledger)
    strategy._construct_messages = lambda record, node_ids, message_type: node_ids  # no runtime to address
    asked = []
    for server_round in range(1, 13):
        asked.append(set(strategy.configure_train(server_round, ArrayRecord([np.zeros(3, np.float32)]),
                                                  ConfigRecord(), FakeGrid(10))))
        ledger.record_central([1.0])
    for t, devices in enumerate(asked):
        assert len(devices) == 3
        for later in asked[t + 1:t + 3]:  # the next b - 1 = 2 rounds
            assert not devices & later
    assert ledger.segments == [12]  # 10 devices always hold 3 eligible: the noise never restarted
    with pytest.raises(RuntimeError, match="minimum separation"):
        ledger.record_asked_to_train(sorted(asked[-1]))


def test_too_few_eligible_devices_restart_the_noise_as_a_new_segment():
    ledger = blt_ledger(population=10, sampled=3, rounds=12)
    ledger.record_asked_to_train(ledger.devices_for_next_round(list(range(10)))[:3])
    ledger.record_central([1.0])
    # only 4 connected now, 3 of them asked last round: 1 eligible, a round needs 3
    assert ledger.devices_for_next_round([0, 1, 2, 9]) == [0, 1, 2, 9] and ledger.segments == [1, 0]


# --- (e) resume -----------------------------------------------------------------------------------
def test_a_resume_restarts_the_noise_and_composes_the_segments():
    """The buffers are never saved (checkpoint: the clipping norm only), so a resumed run draws from
    empty buffers, and the ledger composes the new segment with the old one: epsilon of the Gaussians
    of z / sens(C_t1; b) and z / sens(C_t2; b) (brute force)."""
    z, delta, n = 2.0, 1e-5, 10
    strategy, ledger = blt_strategy(population=4, sampled=2, rounds=n, z=z)  # b = 2
    for _ in range(4):
        ledger.record_asked_to_train(ledger.devices_for_next_round([1, 2, 3, 4])[:2])
        aggregate(strategy, 10, [])
    assert strategy_state(strategy) == {"clipping_norm": 1.0}  # what a checkpoint keeps of the strategy
    state = ledger.state_dict()
    assert set(state) - {"population", "sampled", "selected", "central_releases", "sampled_from",
                         "carried_participations", "trees", "discoveries", "bookings", "lineage"} == {"blt", "segments"}
    assert set(state["blt"]) == {"theta", "omega", "separation", "rounds"} and state["segments"] == [4]
    resumed = PrivacyLedger.from_state(ledger.dp, state, resumed=True)
    assert resumed.segments == [4, 0] and resumed.central_epsilon() == pytest.approx(ledger.central_epsilon())
    cfg = Config(num_server_rounds=n, dp=ledger.dp)
    again = BltDP(FedAvg(weighted_by_key=DP_WEIGHT), cfg, resumed)
    d = 100_000
    for _ in range(3):
        resumed.record_asked_to_train(resumed.devices_for_next_round([5, 6, 7, 8])[:2])
        aggregate(again, d, [])
    C = dense_c(*ledger.blt_parameters(), n)
    expected = gaussian_mix_epsilon([z / brute_force_sensitivity(C[:4, :4], 2),
                                     z / brute_force_sensitivity(C[:3, :3], 2)], delta)
    assert resumed.segments == [4, 3] and resumed.central_epsilon() == pytest.approx(expected, rel=1e-9)
    assert resumed.central_epsilon() > ledger.central_epsilon()
    # a server that lost its buffers cannot continue a segment the ledger has not restarted
    unaccounted = BltDP(FedAvg(weighted_by_key=DP_WEIGHT), cfg, PrivacyLedger.from_state(ledger.dp, state))
    with pytest.raises(RuntimeError, match="without its buffers"):
        aggregate(unaccounted, 10, [])


def test_a_resumed_servers_first_noise_is_uncorrelated_like_a_first_round():
    """Empty buffers: the first round of a new segment has std z C / sampled exactly."""
    strategy, ledger = blt_strategy(population=4, sampled=2, rounds=6, z=1.0, clip=2.0)
    for _ in range(3):
        ledger.record_asked_to_train(ledger.devices_for_next_round([1, 2, 3, 4])[:2])
        aggregate(strategy, 10, [])
    resumed = PrivacyLedger.from_state(ledger.dp, ledger.state_dict(), resumed=True)
    again = BltDP(FedAvg(weighted_by_key=DP_WEIGHT), Config(num_server_rounds=6, dp=ledger.dp), resumed)
    resumed.record_asked_to_train(resumed.devices_for_next_round([5, 6, 7, 8])[:2])
    assert np.std(aggregate(again, 200_000, [])) == pytest.approx(1.0 * 2.0 / 2, rel=0.02)


# --- (f) one short run ----------------------------------------------------------------------------
def test_a_short_central_blt_run_completes_with_a_finite_epsilon(tmp_path):
    from tests.helpers import SMALL_RC, only_covered_train_fields
    from tests.inprocess import run_inprocess

    run = run_inprocess(tmp_path, 6, {**SMALL_RC, "num-server-rounds": 2, "dp.mode": "central-blt",
                                      "dp.noise-multiplier": 0.5, "dp.clipping-norm": 5.0, "dp.delta": 1e-3,
                                      "fraction-train": 0.5})
    rows = run.rows
    assert [r["dp_central_releases"] for r in rows] == [0, 1, 2]
    epsilons = [r["dp_epsilon_central"] for r in rows[1:]]
    assert all(math.isfinite(e) and e > 0 for e in epsilons) and epsilons == sorted(epsilons)
    assert rows[-1]["dp_min_separation"] == 2 and rows[-1]["dp_blt_segments"] == 1  # 6 devices, 3 a round
    assert "dp_epsilon_central_amplified" not in rows[-1]
    assert "BLT-DP-FTRL: no credit for sampling" in " ".join(run.summary["privacy_assumptions"])
    assert "user-level ε (BLT-DP-FTRL" in run.output and "central DP: 3/3 updates clipped to 5" in run.output
    assert only_covered_train_fields(rows)
