"""The privacy audit's measures against hand-computed cases, and canary planting."""

import math

import numpy as np
import pytest

from client_app.app import _device_text
from features.audit import canary, membership
from task.config import Config, ConfigError
from task.data.files import DataError
from tests.helpers import context


def test_exposure_is_log2_candidates_minus_log2_rank():
    assert canary.exposure(1, 10_000) == pytest.approx(math.log2(10_000))  # 13.29: ranked first
    assert canary.exposure(10_000, 10_000) == 0.0
    assert canary.exposure(5_000, 10_000) == pytest.approx(1.0)
    assert canary.rank_of(2.5, np.array([1.0, 2.0, 3.0])) == 3
    assert canary.rank_of(2.0, np.array([1.0, 2.0, 3.0])) == 2  # a tie counts in the canary's favour
    assert len(canary.candidates()) == 10_000


def test_loss_membership_attack_matches_hand_computed_roc():
    assert membership.attack([1.0, 2.0], [3.0, 4.0])["auc"] == 1.0  # members have the lower losses
    assert membership.attack([3.0, 4.0], [1.0, 2.0])["auc"] == 0.0
    # pairs (member, non-member) ranked right: (1,2) (1,4) (3,4) of 4 -> 0.75
    assert membership.attack([1.0, 3.0], [2.0, 4.0])["auc"] == pytest.approx(0.75)
    perfect = membership.attack([0.1] * 5, [1.0] * 200)
    assert perfect["tpr_at_1pct_fpr"] == 1.0 and perfect["members"] == 5 and perfect["nonmembers"] == 200


def device_text(cfg: Config, partition_id: int):
    """A simulated device's text as the ClientApp reads it."""
    return _device_text(cfg, context(cfg, {"partition-id": partition_id, "num-partitions": 4}), 1)


def test_canaries_go_into_k_devices_r_times_and_a_never_inserted_one_is_kept_apart():
    planted, reference = canary.planted("2:3,1:5", seed=7)
    assert [(c.devices, c.repeats) for c in planted] == [(range(0, 2), 3), (range(2, 3), 5)]
    assert len({c.secret for c in planted} | {reference}) == 3
    assert planted == canary.planted("2:3,1:5", seed=7)[0]  # the audit knows what it planted
    cfg = Config.from_run_config({"audit.canaries": "2:3,1:5"})
    counts = [sum(s[:3] == list(canary.PREFIX) for s in device_text(cfg, p).train) for p in range(4)]
    assert counts == [3, 3, 5, 0]
    with pytest.raises(ConfigError, match="audit.canaries"):
        Config.from_run_config({"audit.canaries": "2:0"})


def test_canaries_are_refused_on_a_device_with_real_text(tmp_path):
    (tmp_path / "t.txt").write_text("One sentence here. Another one there.")
    with pytest.raises(DataError, match="audit.canaries is for simulations") as err:
        _device_text(Config().with_run_config({"audit.canaries": "1:1"}), context(Config(), {"data-path": str(tmp_path)}), 1)
    assert err.value.reason == "audit.canaries refused on a real device"


def test_a_model_that_memorised_a_canary_ranks_it_first_and_an_untrained_one_does_not():
    from features.audit.audit import secret_log_perplexities
    from task.data.device_text import make_windows
    from task.data.vocab import default_vocabulary
    from task.model import build_model
    from task.train import train
    from tests.helpers import SMALL_MODEL

    vocab = default_vocabulary(SMALL_MODEL.vocab_size)
    planted, _ = canary.planted("1:1", seed=3)
    secret = planted[0].secret
    pool = canary.candidates()
    model = build_model(SMALL_MODEL)
    before = dict(zip(pool, secret_log_perplexities(model, vocab, pool, SMALL_MODEL.seq_len)))
    others = np.array([v for s, v in before.items() if s != secret])
    assert canary.exposure(canary.rank_of(before[secret], others), len(pool)) < 8  # nothing memorised yet
    x, y = make_windows([planted[0].sentence] * 64, vocab, SMALL_MODEL.seq_len)
    train(model, x, y, epochs=20, batch_size=16, learning_rate=0.01)
    after = dict(zip(pool, secret_log_perplexities(model, vocab, pool, SMALL_MODEL.seq_len)))
    others = np.array([v for s, v in after.items() if s != secret])
    assert canary.rank_of(after[secret], others) == 1  # exposure 13.3 bits
