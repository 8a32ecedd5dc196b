"""The server's strategies: every configured optimiser exists and samples devices itself, and the
aggregate does not depend on the order replies arrive in (a run is reproducible to the bit)."""

import numpy as np
from flwr.app import ArrayRecord, MetricRecord, RecordDict

from server_app.strategy import build_strategy
from task.config import Config
from task.privacy.ledger import PrivacyLedger
from tests.helpers import message


def test_every_server_optimizer_name_has_a_strategy_that_samples_itself():
    from server_app.strategy import STRATEGIES, _PrivateRounds, build_strategy
    from task.config import SERVER_OPTIMIZERS
    from task.privacy.ledger import PrivacyLedger

    assert set(STRATEGIES) == set(SERVER_OPTIMIZERS)
    for name in SERVER_OPTIMIZERS:
        cfg = Config(server_optimizer=name)
        strategy = build_strategy(cfg, PrivacyLedger(cfg.dp, 0, 0))
        # our sampler sits below FedAvgM's / FedOpt's configure_train (which remember the model)
        order = type(strategy).__mro__
        assert order.index(_PrivateRounds) < [c.__name__ for c in order].index("FedAvg")
        assert type(strategy).configure_train is not _PrivateRounds.configure_train or name == "fedavg"


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
