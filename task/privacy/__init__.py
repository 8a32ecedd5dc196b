"""Differential privacy that needs no Flower. This package's root holds only what every run uses,
DP or not, so a run without DP never loads the accounting: the ledger (task/privacy/ledger.py,
dp-accounting) and the mechanisms' rules (task/privacy/mechanisms.py) load when a mechanism is on."""

DP_WEIGHT = "dp-weight"  # FedAvg's weighting key when any DP is on: every device sends 1


class PrivacyBudgetExceeded(RuntimeError):
    """The next release would spend more than dp.max-epsilon."""


def released_train_metrics(dp, metrics: dict) -> dict:
    """What a device sends about its training. Under DP only the weight FedAvg needs: loss,
    accuracy on its own text, its window count and its compute time are functions of its text
    that no noise covers. dp.report-train-metrics opts out (documented as outside the guarantee)."""
    if not dp.enabled or dp.report_train_metrics:
        return metrics
    return {DP_WEIGHT: 1}
