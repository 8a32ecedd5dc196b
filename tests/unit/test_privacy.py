"""Differential privacy, piece by piece, checked against the papers and published figures, never
against a copy of the code's own computation:

- noise and sampling are secret: two runs with every global generator seeded alike differ;
- the noise in a released aggregate has the claimed std (a tight test over ~10^5 weights);
- the average divides by the devices sampled, so one device moves it by at most C / sampled;
- epsilon matches published numbers (tensorflow-privacy's MNIST table), a tight accountant
  (PLD) and the exact analytic Gaussian mechanism;
- what a device sends and the server stores under DP is only what the guarantee covers.
"""

from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from client_app.app import app
from server_app.privacy import CentralDP, require_equal_weights, without_norm_bits
from server_app.strategy import build_strategy, population_and_sample
from task.config import Config, ConfigError, DPConfig
from task.model import build_model
from task.privacy import DP_WEIGHT, released_train_metrics
from task.privacy.ledger import PrivacyLedger
from tests.helpers import SMALL_MODEL, context, l2, message, seed_every_global_generator

SMALL = SMALL_MODEL


# --- clipping ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("clip", [0.05, 0.3])
def test_a_clipped_update_never_exceeds_the_clipping_norm(clip):
    cfg = Config(sentences_per_device=40, model=SMALL, dp=DPConfig(mode="central-client-clip", clipping_norm=clip))
    sent = build_model(SMALL).get_weights()
    # the server's wrapper puts the norm into the message; the ClientApp's mod clips to it
    content = RecordDict(
        {"arrays": ArrayRecord(sent), "config": ConfigRecord({"server-round": 1, "clipping_norm": clip})}
    )
    reply = app(message(content), context(cfg))
    assert not reply.has_error(), reply.error
    update_norm = l2(reply.content["arrays"].to_numpy_ndarrays(), sent)
    assert update_norm <= clip * (1 + 1e-5)
    assert update_norm > clip * 0.99  # local training moves the model far more than `clip`
    # under DP the device sends the weight FedAvg needs and nothing else about its training
    assert dict(reply.content["metrics"]) == {DP_WEIGHT: 1}


def test_only_covered_metrics_leave_a_device_unless_the_user_opts_in():
    measured = {"loss": 2.0, "top3": 0.4, "num-examples": 37, "compute-seconds": 1.2, DP_WEIGHT: 1}
    assert released_train_metrics(DPConfig(), measured) == measured  # no DP: everything
    for dp in (DPConfig(mode="local"), DPConfig(mode="central-client-clip"), DPConfig(sgd=True)):
        assert released_train_metrics(dp, measured) == {DP_WEIGHT: 1}
    assert released_train_metrics(DPConfig(sgd=True, report_train_metrics=True), measured) == measured


def test_the_server_keeps_no_device_norm_bit():
    records = [RecordDict({"metrics": MetricRecord({DP_WEIGHT: 1, "norm_bit": 1})})]
    assert dict(without_norm_bits(records)[0]["metrics"]) == {DP_WEIGHT: 1}
    assert "norm_bit" in records[0]["metrics"]  # the strategy still reads the original


# --- central DP -----------------------------------------------------------------------------------
def central(mode="central-client-clip", sampled=4, z=1.0, clip=2.0, rng=None, **dp):
    cfg = Config(dp=DPConfig(mode=mode, noise_multiplier=z, clipping_norm=clip, **dp))
    ledger = PrivacyLedger(cfg.dp, population=sampled, sampled=sampled)
    strategy = CentralDP(FedAvg(weighted_by_key=DP_WEIGHT), cfg, ledger, rng=rng)
    return strategy, ledger


def aggregate(strategy, d, updates, norm_bits=None, current=None):
    # what configure_train remembers: the model the devices received
    strategy._current = ArrayRecord([np.zeros(d, np.float32) if current is None else current])
    replies = []
    for i, update in enumerate(updates):
        metrics = {DP_WEIGHT: 1, **({"norm_bit": norm_bits[i]} if norm_bits is not None else {})}
        replies.append(
            message(
                RecordDict({"arrays": ArrayRecord([update]), "metrics": MetricRecord(metrics)}), reply=True, src=i + 1
            )
        )
    arrays, _ = strategy.aggregate_train(1, replies)
    return arrays.to_numpy_ndarrays()[0]


def one_hot(d, value, at=0):
    update = np.zeros(d, np.float32)
    update[at] = value
    return update


def test_central_noise_has_std_z_c_over_sampled_and_is_fresh_every_time():
    z, clip, n, d = 1.0, 2.0, 4, 800_000  # the std within 0.5% is then 6 standard errors: no flakes
    results = []
    for _ in range(2):
        seed_every_global_generator()
        strategy, ledger = central(sampled=n, z=z, clip=clip)
        results.append(aggregate(strategy, d, [one_hot(d, 100.0)] * n))  # each clipped to `clip` here
        assert ledger.central_releases == [[z]]
    assert not np.allclose(results[0][1:], results[1][1:])
    for result in results:
        assert result[0] == pytest.approx(clip, abs=5 * z * clip / n)  # the mean of the clipped updates
        assert np.std(result[1:]) == pytest.approx(z * clip / n, rel=0.005)  # z*C on the sum, / n


def test_one_device_moves_the_release_by_at_most_c_over_the_number_sampled():
    """Add/remove-one device: a missing reply counts as a zero update, the denominator is public.
    Flower 1.42 divides by the replies: here 3 instead of 4, a third more than the noise covers."""
    d, clip, n = 1000, 1.0, 4
    outputs = []
    for replies in (4, 3):  # the same noise draw, with and without the fourth device
        strategy, _ = central(sampled=n, z=0.5, clip=clip, rng=np.random.default_rng(7))
        outputs.append(aggregate(strategy, d, [one_hot(d, 5.0, at=i) for i in range(replies)]))
    difference = outputs[0] - outputs[1]
    assert np.linalg.norm(difference) == pytest.approx(clip / n, rel=1e-5)
    assert difference[3] == pytest.approx(clip / n, rel=1e-5)  # exactly the fourth device's clipped update


# --- device sampling ------------------------------------------------------------------------------
class FakeGrid:
    def __init__(self, nodes: int):
        self.nodes = list(range(1, nodes + 1))

    def get_node_ids(self):
        return self.nodes


def sampled_nodes(cfg: Config) -> list[int]:
    ledger = PrivacyLedger(cfg.dp, population=100, sampled=10)
    strategy = build_strategy(cfg, ledger)
    strategy._construct_messages = lambda record, node_ids, message_type: node_ids  # no runtime to address
    seed_every_global_generator()
    return sorted(strategy.configure_train(1, ArrayRecord([np.zeros(3, np.float32)]), ConfigRecord(), FakeGrid(100)))


def test_devices_are_sampled_secretly_under_dp_and_reproducibly_without():
    private = Config(fraction_train=0.1, dp=DPConfig(mode="local"))
    draws = [sampled_nodes(private) for _ in range(3)]
    assert all(len(d) == 10 for d in draws) and len({tuple(d) for d in draws}) == 3  # C(100,10): no repeats
    plain = Config(fraction_train=0.1)
    assert sampled_nodes(plain) == sampled_nodes(plain)  # `seed` keeps non-private runs reproducible


# --- bad settings ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "run_config, key",
    [
        ({"dp.mode": "central-client-clip", "dp.clipping-norm": 0.0}, "dp.clipping-norm"),  # noise, no clipping
        ({"dp.mode": "local", "dp.clipping-norm": -1.0}, "dp.clipping-norm"),
        ({"dp.mode": "central-server-clip", "dp.noise-multiplier": 0.0}, "dp.noise-multiplier"),
        ({"dp.mode": "central", "dp.noise-multiplier": 1.0}, "dp.mode"),
        ({"dp.delta": 1.5}, "dp.delta"),
        ({"dp.sgd": "yes"}, "dp.sgd"),
        ({"dp.max-epsilon": -2.0}, "dp.max-epsilon"),
        ({"dp.max-epsilon": 5.0}, "dp.max-epsilon"),  # a budget with nothing to spend it
    ],
)
def test_bad_dp_settings_are_refused_naming_the_key(run_config, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        Config.from_run_config(run_config)


def test_delta_must_be_below_one_over_the_population():
    cfg = Config.from_run_config({"dp.mode": "central-client-clip", "dp.delta": 0.05, "min-available-nodes": 2})
    assert population_and_sample(FakeGrid(10), cfg) == (10, 10)
    with pytest.raises(ConfigError, match="'dp.delta'.*1/50"):
        population_and_sample(FakeGrid(50), cfg)


def test_sampling_more_devices_than_exist_is_refused_before_training():
    cfg = Config.from_run_config(
        {
            "dp.mode": "central-client-clip",
            "min-train-nodes": 8,
            "min-available-nodes": 8,
            "min-evaluate-nodes": 2,
            "round-timeout": 1.0,
        }
    )
    with pytest.raises(ConfigError, match="'min-available-nodes' = 8: only 5 device"):
        population_and_sample(FakeGrid(5), cfg)
    # min-train-nodes <= min-available-nodes (checked in the config), so sampling more devices than
    # exist is refused by the same check; the runner also names min-train-nodes before starting
    from scripts.run_simulation import check_run_config

    assert "'min-train-nodes' = 8 is invalid: expected at most the 5 connected devices" in check_run_config(
        "min-train-nodes=8 min-available-nodes=8", devices=5)


def test_the_fresh_noise_check_users_run_on_their_deployment_passes(capsys, monkeypatch):
    """Every secret random source is checked, each passes all three checks; a sampler made to draw
    from a seeded generator fails the check (tests/features/dp/test_fresh_noise_sources.py: the
    features' ones)."""
    import random

    from scripts.deployment import check_fresh_noise

    # Each feature's sources are checked while its folder is in the tree (tests/integration/
    # test_core_alone.py deletes features/).
    features = Path(__file__).resolve().parents[2] / "features"
    sources = ["central DP (server)", "device sampling under DP (server)"]
    if (features / "dp_mechanisms").is_dir():
        sources += ["DP-FTRL tree noise (server)", "BLT-DP-FTRL noise (server)", "adaptive clipping count (server)",
                    "local DP (device)",
                    "DP-SGD step (device)", "DP-SGD Poisson windows (device)"]
    if (features / "discovery").is_dir():
        sources += ["TrieHH device sampling (server)", "TrieHH vote choice (device)",
                    "discovery.max-words pick (server)"]
    if (features / "secagg").is_dir():
        sources += ["SecAgg+ masks (device)"]
    assert check_fresh_noise.main() == 0
    out = capsys.readouterr().out
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith("| ") and not line.startswith("| source")]
    passed = [row[0].strip("| ") for row in rows if row[1] == "yes" and row[3].startswith("yes: ")]
    assert sorted(passed) == sorted(sources) and "all noise and sampling fresh, as claimed and from OS entropy alone" in out

    # The server's sample from Python's global generator (FedAvg's own), seeded alike both times.
    monkeypatch.setattr(random, "SystemRandom", lambda: random.Random(0))
    assert check_fresh_noise.main(only=["device sampling under DP (server)"]) == 1
    assert "| device sampling under DP (server) | NO: the draws repeat |" in capsys.readouterr().out


def _weak_16_bit_seed():  # the outside DP review's variant (N1): 2**16 streams, seeded from the OS
    import secrets

    return np.random.default_rng(secrets.randbits(16))


def _weak_32_bit_seed():
    import secrets

    return np.random.default_rng(int.from_bytes(secrets.token_bytes(4), "big"))


def _weak_seed_cut_short():  # 128 bits read, 16 used
    import secrets

    return np.random.default_rng(secrets.randbits(128) % 2**16)


def _weak_clock_seed():
    import time

    return np.random.default_rng(time.perf_counter_ns())


@pytest.mark.parametrize("weak, why", [
    (_weak_16_bit_seed, "NO: a seed of 16 bits (fewer than 128)"),
    (_weak_32_bit_seed, "NO: a seed of 32 bits (fewer than 128)"),
    (_weak_seed_cut_short, "NO: only part of a read of 128 bits is used"),
    (_weak_clock_seed, "NO: the draws differ with the OS entropy pinned"),
])
def test_the_fresh_noise_check_fails_noise_from_a_weak_seed_that_still_differs_every_time(weak, why, monkeypatch, capsys):
    """Outside DP review, N1: a generator seeded with 16 or 32 bits of OS entropy, with 128 bits cut
    to 16, or from a clock gives fresh noise of the right std, which the check passed; it must fail."""
    from scripts.deployment import check_fresh_noise

    monkeypatch.setattr("server_app.privacy.secret_rng", weak)
    assert check_fresh_noise.main(only=["central DP (server)"]) == 1
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| central DP (server) |"))
    assert row.startswith("| central DP (server) | yes | ") and why in row, row  # fresh and of the right std: not enough


def test_the_fresh_noise_check_fails_a_device_sample_from_a_generator_seeded_once(monkeypatch, capsys):
    """The server's sample must read the OS for every device it picks (random.SystemRandom): a
    generator seeded once from 128 bits of it reads too little for 100 picks."""
    import random
    import secrets

    from scripts.deployment import check_fresh_noise

    monkeypatch.setattr(random, "SystemRandom", lambda: random.Random(secrets.randbits(128)))
    assert check_fresh_noise.main(only=["device sampling under DP (server)"]) == 1
    assert "| yes | - (nothing claimed: a fixed-size sample or a pick) | NO: 1 reads of OS entropy for 100 picks" in \
        capsys.readouterr().out


def test_unequal_device_weights_are_refused_under_dp():
    ok = [RecordDict({"metrics": MetricRecord({"dp-weight": 1})}) for _ in range(3)]
    require_equal_weights(ok)
    with pytest.raises(ValueError, match="dp-weight = 7"):
        require_equal_weights(ok + [RecordDict({"metrics": MetricRecord({"dp-weight": 7})})])


def test_a_central_dp_class_refuses_a_mode_whose_release_it_does_not_make():
    """Plain CentralDP under DP-FTRL would add fresh noise each round while the ledger counts
    tree noise: an epsilon below the one spent."""
    for mode in ("central-ftrl", "central-adaptive-clip", "local"):
        with pytest.raises(ValueError, match=mode):
            central(mode=mode)


def test_a_device_round_under_dp_sgd_refuses_to_train_without_dp_sgd():
    """Else it would train plainly while the ledger counts DP-SGD steps."""
    from task import device
    from task.data.device_text import DeviceText

    cfg = Config(model=SMALL, dp=DPConfig(sgd=True))
    text = DeviceText("a device", [["a", "b", "c"]] * 4, [["a", "b", "c"]] * 3, [["a", "b", "c"]], [])
    with pytest.raises(ValueError, match="dp.sgd"):
        device.train_round(cfg, text, build_model(SMALL).get_weights(), server_round=1)
