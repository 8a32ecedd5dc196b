"""Every DP mode, end to end: the real `flwr run .`, checked through the run status and the
metrics file the ServerApp wrote (epsilon per round, releases, the budget stop).

The noise here is small on purpose (the federation has 3 devices): these tests check that each
mechanism runs and is accounted, not what accuracy it costs (README: "Privacy").
"""

import json
import math

import dp_accounting
import pytest
from dp_accounting import rdp

from scripts.local_flower import run_app
from task.run.checkpoint import latest_checkpoint, load_weights
from tests.helpers import SMALL_RUN

SMALL = f"{SMALL_RUN} local-epochs=2 learning-rate=0.01 data.sentences-per-device=100 server-eval-devices=3"




def run(flower, tmp_path, dp: str, rounds: int = 2, devices: int = 3):
    outcome = run_app(flower, num_supernodes=devices, echo=False,
                      run_config=f'num-server-rounds={rounds} {SMALL} {dp} out-dir="{tmp_path}"')
    assert outcome.status == "finished:completed", outcome.output[-3000:]
    run_dir = tmp_path / f"run-{outcome.run_id}"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    return outcome, metrics, summary


def model_moved(metrics) -> bool:
    # With 3 devices any real noise swamps the signal, so the loss may rise: check the global model
    # changed every round (each release adds noise, and a skipped round would leave it unchanged).
    losses = [r["server_loss"] for r in metrics]
    return all(math.isfinite(x) for x in losses) and len(set(losses)) == len(losses)


def gaussian_epsilon(z: float, releases: int, delta: float) -> float:
    accountant = rdp.RdpAccountant()
    accountant.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(z), releases))
    return accountant.get_epsilon(delta)


# What the server itself observes: who was asked, replied, declined, was late, busy or failed.
TRAIN_COUNTS = {f"train_{k}" for k in ("sampled", "replied", "failed", "not_eligible", "late", "busy", "bytes_sent",
                                        "bytes_received", "compute_seconds")}


def only_covered_train_fields(metrics) -> bool:
    """Under DP the server stores no per-device training figure (loss, accuracy, norm bits...)."""
    return all(k in TRAIN_COUNTS for r in metrics for k in r if k.startswith("train_"))


@pytest.mark.parametrize("mode, dtype", [("central-client-clip", "int8"), ("central-server-clip", "float32")])
def test_fixed_clipping_modes_run_and_report_flowers_epsilon(flower, tmp_path, mode, dtype):
    dp = {"dp.mode": mode, "dp.noise-multiplier": 0.5, "dp.clipping-norm": 5.0, "dp.delta": 1e-3}
    outcome, metrics, summary = run(flower, tmp_path, " ".join(f'{k}="{v}"' if isinstance(v, str) else f"{k}={v}"
                                                               for k, v in dp.items()) + f' transfer.dtype="{dtype}"')
    assert [r["dp_central_releases"] for r in metrics] == [0, 1, 2]
    expected = [gaussian_epsilon(0.5, n, 1e-3) for n in (1, 2)]
    assert [r["dp_epsilon_central"] for r in metrics[1:]] == pytest.approx(expected, rel=1e-6)
    assert "central DP: 3/3 updates clipped to 5, noise std 2.5 on their sum, / 3 sampled" in outcome.output
    assert "dp_epsilon_central_amplified" not in metrics[-1]  # every device trains every round
    assert only_covered_train_fields(metrics)
    assert summary["privacy"]["epsilon_central"] == pytest.approx(expected[-1])
    assert "population = 3 devices" in summary["privacy_assumptions"][0]
    assert "user-level ε (central" in outcome.output
    assert all(r["train_replied"] == 3 for r in metrics[1:])
    assert model_moved(metrics)
    if dtype == "int8":  # devices clip, then send an 8-bit update; the model comes down in float16
        float32_bytes = 4 * sum(w.size for w in load_weights(latest_checkpoint(tmp_path / f"run-{outcome.run_id}")))
        for row in metrics[1:]:
            # 1 byte per weight + a 4-byte scale per row (the small model's rows are short: 0.31 here)
            assert 0.25 < row["train_bytes_received"] / row["train_replied"] / float32_bytes < 0.35
            assert 0.45 < row["train_bytes_sent"] / row["train_sampled"] / float32_bytes < 0.55


def test_adaptive_clipping_moves_the_clipping_norm_and_is_accounted(flower, tmp_path):
    outcome, metrics, _ = run(flower, tmp_path, 'dp.mode="central-adaptive-clip" dp.noise-multiplier=0.3 '
                                                "dp.clipping-norm=0.5 dp.clipped-count-stddev=0.3 dp.delta=1e-3")
    assert [r["dp_central_releases"] for r in metrics] == [0, 1, 2]
    # update noise and count noise together are one Gaussian of z = 0.3 per round (Andrew et al. 2021)
    assert [r["dp_epsilon_central"] for r in metrics[1:]] == pytest.approx(
        [gaussian_epsilon(0.3, n, 1e-3) for n in (1, 2)], rel=1e-6)
    # each round's row: the norm its release was calibrated to, and the one the next round uses
    norms, nexts = ([r[key] for r in metrics] for key in ("dp_clipping_norm", "dp_clipping_norm_next"))
    # 2 local epochs move a model far more than 0.5: every update is clipped, so the norm grows
    assert norms[:2] == [0.5, 0.5] and nexts[0] == 0.5 and nexts[1] > 0.5 and nexts[2] > nexts[1]
    assert norms[2] == pytest.approx(nexts[1])
    assert "central DP: 3/3 updates clipped to 0.5" in outcome.output
    assert only_covered_train_fields(metrics)
    assert model_moved(metrics)


def test_local_dp_counts_every_devices_releases_and_composes_with_float16_transfer(flower, tmp_path):
    outcome, metrics, _ = run(
        flower,
        tmp_path,
        'dp.mode="local" dp.clipping-norm=1.0 dp.local-epsilon=50 dp.delta=1e-3 transfer.dtype="float16"',
    )
    assert only_covered_train_fields(metrics)
    # The devices noise first, then send their update in float16: half the float32 model's bytes.
    float32_bytes = 4 * sum(w.size for w in load_weights(latest_checkpoint(tmp_path / f"run-{outcome.run_id}")))
    for row in metrics[1:]:
        assert 0.45 < row["train_bytes_received"] / row["train_replied"] / float32_bytes < 0.55
        assert 0.45 < row["train_bytes_sent"] / row["train_sampled"] / float32_bytes < 0.55
    per_release = metrics[-1]["dp_epsilon_local_per_release"]
    assert per_release == pytest.approx(50, abs=0.01)  # noise calibrated so one release spends what was asked
    assert metrics[1]["dp_epsilon_local"] == pytest.approx(per_release)
    assert metrics[2]["dp_epsilon_local"] > per_release  # composed over the 2 releases
    assert "dp_epsilon_central" not in metrics[-1]
    assert model_moved(metrics)


def test_dpsgd_with_central_dp_and_a_budget_that_stops_the_run(flower, tmp_path):
    # Central epsilon is 6.67 after one release and 10.43 after two (delta 1e-3); DP-SGD (rate 0.1,
    # 20 steps a round) 4.37 after one round. A budget of 9 allows round 1 and must refuse round 2,
    # keeping round 1's model. The devices opt in to reporting training metrics (outside DP).
    dp = (
        'dp.mode="central-client-clip" dp.noise-multiplier=0.6 dp.clipping-norm=5.0 dp.delta=1e-3 '
        "dp.sgd=true dp.sgd-noise-multiplier=0.8 dp.sgd-clipping-norm=1.0 dp.max-epsilon=9.0 "
        "dp.report-train-metrics=true"
    )
    outcome, metrics, summary = run(flower, tmp_path, dp, rounds=3)
    assert [r["round"] for r in metrics] == [0, 1]
    assert summary["stopped_early"] and "dp.max-epsilon = 9.0" in summary["stopped_early"]
    assert "Stopped early: privacy budget" in outcome.output
    last = metrics[-1]
    assert last["dp_epsilon_sample"] == pytest.approx(4.37, abs=0.01)
    assert last["dp_epsilon_central"] == pytest.approx(gaussian_epsilon(0.6, 1, 1e-3))
    assert "window of up to 13 consecutive words" in " ".join(summary["privacy_assumptions"])
    assert 0 < last["train_dpsgd_clipped_fraction"] <= 1
    # the model of round 1, exported and checked (after one noisy round its int8 file may fall short)
    check = summary["litert_check"]["int8"]
    name = "model-int8.tflite" if check["fit_to_ship"] else "model-int8-unfit.tflite"
    assert (tmp_path / f"run-{outcome.run_id}" / "final" / "litert" / name).exists() and check["positions"] > 0


def test_dp_ftrl_restarts_its_tree_when_every_device_took_part_and_accounts_the_trees(flower, tmp_path):
    # 9 devices, 3 per round: a tree holds 3 rounds of unused devices, so 4 rounds make trees [3, 1].
    outcome, metrics, summary = run(flower, tmp_path, 'dp.mode="central-ftrl" dp.noise-multiplier=0.5 '
                                    "dp.clipping-norm=5.0 dp.delta=1e-3 fraction-train=0.34", rounds=4, devices=9)
    assert [(r["dp_trees"], r["dp_rounds_in_tree"]) for r in metrics[1:]] == [(1, 1), (1, 2), (1, 3), (2, 1)]
    # Kairouz et al. 2021: a device in one round of a 3-round tree touches ceil(log2 4) = 2 nodes, of a
    # 1-round tree 1 node; the trees compose: 3 Gaussian mechanisms of multiplier z, where DP-FedAvg
    # without sampling credit composes one per round (4).
    assert metrics[-1]["dp_epsilon_central"] == pytest.approx(gaussian_epsilon(0.5, 3, 1e-3), rel=1e-6)
    assert metrics[-1]["dp_epsilon_central"] < gaussian_epsilon(0.5, 4, 1e-3)
    assert "dp_epsilon_central_amplified" not in metrics[-1]  # no credit for how devices were picked
    assert "central DP: 3/3 updates clipped to 5" in outcome.output
    assert "DP-FTRL: no credit for sampling" in " ".join(summary["privacy_assumptions"])
    assert only_covered_train_fields(metrics)
    assert model_moved(metrics)
