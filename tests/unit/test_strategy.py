"""The server's strategies: every configured optimiser exists and samples devices itself, and the
aggregate does not depend on the order replies arrive in (a run is reproducible to the bit)."""

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from server_app.strategy import build_strategy
from task.config import EVALUATE_FIRST, Config
from task.privacy.ledger import PrivacyLedger
from tests.helpers import message


def test_every_server_optimizer_name_has_a_strategy_that_selects_devices_itself():
    from server_app.strategy import STRATEGIES, SelectsDevices, build_strategy
    from task import registry
    from task.privacy.ledger import PrivacyLedger

    assert registry.names(registry.STRATEGIES) == tuple(STRATEGIES)  # what the config check allows
    assert set(registry.names(registry.STATEFUL_STRATEGIES)) < set(STRATEGIES)
    for name in STRATEGIES:
        cfg = Config(server_optimizer=name)
        strategy = build_strategy(cfg, PrivacyLedger(cfg.dp, 0, 0))
        # our selection sits below FedAvgM's / FedOpt's / FedProx's configure_train
        order = type(strategy).__mro__
        assert order.index(SelectsDevices) < [c.__name__ for c in order].index("FedAvg")
        assert type(strategy).configure_train is not SelectsDevices.configure_train or name == "fedavg"


def test_the_average_is_the_same_bits_whatever_order_the_replies_arrive_in():
    rng = np.random.default_rng(0)
    cfg = Config()
    strategy = build_strategy(cfg, PrivacyLedger(cfg.dp, 0, 0))
    replies = [message(RecordDict({"arrays": ArrayRecord([rng.normal(0, 1, 10_000).astype(np.float32)]),
                                   "metrics": MetricRecord({"num-examples": int(n)})}), reply=True, src=i + 1)
               for i, n in enumerate(rng.integers(50, 500, 10))]
    first = strategy.aggregate_train(1, replies)[0].to_numpy_ndarrays()[0]
    again = strategy.aggregate_train(1, list(reversed(replies)))[0].to_numpy_ndarrays()[0]
    assert np.array_equal(first, again)
    # without the fixed order, float32 sums in another order differ in their last bits
    weights = np.array([r.content["metrics"]["num-examples"] for r in replies], np.float32)
    arrays = [r.content["arrays"].to_numpy_ndarrays()[0] for r in replies]
    forward = sum(w * a for w, a in zip(weights, arrays))
    backward = sum(w * a for w, a in zip(weights[::-1], arrays[::-1]))
    assert not np.array_equal(forward, backward)


class Nodes:
    def get_node_ids(self):
        return [11, 12, 13]


def _strategy(cfg: Config):
    strategy = build_strategy(cfg, PrivacyLedger(cfg.dp, 0, 0))
    strategy.last_round = 5
    # what each message would hold (Flower needs a runtime to address real ones)
    strategy._construct_messages = lambda record, node_ids, message_type: [record for _ in node_ids]
    return strategy


def test_with_evaluate_in_train_devices_score_the_model_they_train_and_only_the_last_round_evaluates():
    strategy = _strategy(Config())
    arrays = ArrayRecord([np.zeros(3, np.float32)])
    train = list(strategy.configure_train(1, arrays, ConfigRecord(), Nodes()))
    assert len(train) == 3 and all(m["config"][EVALUATE_FIRST] is True for m in train)
    assert list(strategy.configure_evaluate(4, arrays, ConfigRecord(), Nodes())) == []
    assert len(list(strategy.configure_evaluate(5, arrays, ConfigRecord(), Nodes()))) == 3  # the final model

    strategy = _strategy(Config(evaluate_in_train=False))
    assert not list(strategy.configure_train(1, arrays, ConfigRecord(), Nodes()))[0]["config"][EVALUATE_FIRST]
    assert len(list(strategy.configure_evaluate(1, arrays, ConfigRecord(), Nodes()))) == 3


def test_scores_sent_with_training_go_to_the_round_whose_model_was_scored(tmp_path):
    from server_app.observed_grid import PhaseCounts
    from server_app.run_record import RunRecord
    from task.data.vocab import default_vocabulary

    cfg = Config()
    record = RunRecord(tmp_path, cfg, default_vocabulary(2000))
    arrays = ArrayRecord([np.zeros(3, np.float32)])
    record.end_round(0, arrays, {}, None)
    replies = [RecordDict({"metrics": MetricRecord({"loss": 5.0, "num-examples": 10, "eval-loss": loss, "eval-top1": 0.1,
                                                    "eval-top3": 0.2, "eval-num-examples": n,
                                                    "eval-baseline-bigram-top3": 0.3})})
               for loss, n in ((6.0, 30), (8.0, 10))]
    train = record.aggregate_train_metrics(replies, "num-examples")
    assert train["loss"] == 5.0  # the training loss alone
    record.end_round(1, arrays, {"train": PhaseCounts(sampled=3, replied=2, failed=1)}, None)
    before, after = record.rows
    assert before["round"] == 0 and before["eval_loss"] == 6.5  # per scored word: (6*30 + 8*10) / 40
    assert (before["eval_sampled"], before["eval_replied"], before["eval_failed"]) == (3, 2, 1)
    assert after["eval_sampled"] == 0 and "eval_loss" not in after  # scored in round 2


def test_under_dp_a_lost_device_stops_the_run_with_a_reason_instead_of_waiting_forever():
    """Central DP asks a fixed number of devices per round; Flower's sampler would wait for them
    forever. After round-timeout the strategy gives up with what to do."""
    import time

    import pytest

    from server_app.strategy import TooFewDevices
    from task.config import DPConfig

    cfg = Config(dp=DPConfig(mode="central-client-clip"), round_timeout=1.0)
    strategy = build_strategy(cfg, PrivacyLedger(cfg.dp, population=4, sampled=4, selected=4))
    started = time.monotonic()
    with pytest.raises(TooFewDevices, match="calibrated for 4 devices per round, and only 3 were connected"):
        strategy.configure_train(1, ArrayRecord([np.zeros(3)]), ConfigRecord({}), Nodes())
    assert time.monotonic() - started < 10


def test_under_dp_each_round_is_booked_with_the_devices_connected_when_it_sampled():
    """The amplification credit is for sampling out of those connected then, not the population
    counted at the start (here 1,000, of whom 3 are connected)."""
    from task.config import DPConfig

    cfg = Config(dp=DPConfig(mode="central-client-clip"))
    ledger = PrivacyLedger(cfg.dp, population=1000, sampled=2, selected=2)
    strategy = build_strategy(cfg, ledger)
    strategy._construct_messages = lambda record, node_ids, message_type: [record for _ in node_ids]
    assert len(list(strategy.configure_train(1, ArrayRecord([np.zeros(3)]), ConfigRecord({}), Nodes()))) == 2
    ledger.record_central([1.0])
    assert ledger.sampled_from == [3]
