"""Which of Flower's strategies applies the devices' average: FedAvg, FedAvgM or FedAdam.

All three average the devices' new weights the same way. FedAvgM and FedAdam then treat the
change of the global model as a pseudo-gradient for an optimiser on the server (momentum, Adam),
which Reddi et al. (2021) found to beat FedAvg on Stack Overflow next-word prediction. Each one
asks the privacy ledger before a round whether the budget allows it.
"""

from __future__ import annotations

from flwr.serverapp.strategy import FedAdam, FedAvg, FedAvgM

from task.config import Config
from task.privacy import PrivacyLedger


class _BudgetCheck:
    """Overrides only configure_train: Flower's accounted DP wrappers require FedAvg's own
    aggregate_train."""

    def __init__(self, ledger: PrivacyLedger, local_epochs: int, **kwargs):
        super().__init__(**kwargs)
        self._ledger = ledger
        self._local_epochs = local_epochs

    def configure_train(self, server_round, arrays, config, grid):
        self._ledger.check_next_round(self._local_epochs)  # raises PrivacyBudgetExceeded
        return super().configure_train(server_round, arrays, config, grid)


class BudgetedFedAvg(_BudgetCheck, FedAvg):
    pass


class BudgetedFedAvgM(_BudgetCheck, FedAvgM):
    pass


class BudgetedFedAdam(_BudgetCheck, FedAdam):
    pass


def build_strategy(cfg: Config, ledger: PrivacyLedger, **fedavg_options) -> FedAvg:
    """`fedavg_options`: FedAvg's own keyword arguments (fractions, weighting, aggregators)."""
    if cfg.server_optimizer == "fedavgm":
        return BudgetedFedAvgM(ledger, cfg.local_epochs, server_learning_rate=cfg.server_learning_rate,
                               server_momentum=cfg.server_momentum, **fedavg_options)
    if cfg.server_optimizer == "fedadam":
        return BudgetedFedAdam(ledger, cfg.local_epochs, eta=cfg.server_learning_rate, eta_l=cfg.learning_rate,
                               **fedavg_options)
    return BudgetedFedAvg(ledger, cfg.local_epochs, **fedavg_options)
