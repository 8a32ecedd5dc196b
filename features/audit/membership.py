"""Membership inference by loss (Yeom et al. 2018): a member (a device that trained the model, or a
sentence it trained on) tends to have a lower loss. The score is minus the loss; scikit-learn's
ROC gives the attack's AUC (0.5: no better than a coin) and its true-positive rate at 1% false
positives (what a careful attacker gets).

Why not tensorflow-privacy's membership-inference tooling: in 0.9.0 that module only re-exports
`privacy_tests`, which the wheel does not ship (the import fails), and an older release has
wrong per-example clipping norms for sequence inputs (0.8.12, the last with the module)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve


def attack(member_losses, nonmember_losses) -> dict:
    losses = np.concatenate([np.asarray(member_losses, float), np.asarray(nonmember_losses, float)])
    truth = np.concatenate([np.ones(len(member_losses)), np.zeros(len(nonmember_losses))])
    fpr, tpr, _ = roc_curve(truth, -losses)
    return {"auc": float(roc_auc_score(truth, -losses)), "tpr_at_1pct_fpr": float(tpr[fpr <= 0.01].max()),
            "members": int(len(member_losses)), "nonmembers": int(len(nonmember_losses))}
