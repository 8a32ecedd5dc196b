"""Before a run: the epsilon a planned private run will report, and the noise that meets a target.

Both drive a real `PrivacyLedger` through the planned rounds exactly as the server does (DP-FTRL's
trees restart when every device has taken part; with participation.selection-factor > 1 the
server asks `selected` devices per round and one device can displace another's update, which the
ledger accounts), so a plan and the run's own figure cannot disagree. The figure is the ledger's
`model_epsilon`, the one the budget stop (dp.max-epsilon) bounds too: DP-FTRL's (no credit for
sampling), and for the other central modes the sampling-amplified one when the server samples,
else the plain central one. A plan assumes the whole population is connected at every round; a
round that samples from fewer gets less credit.

The planner itself lives in the core (server_app/privacy_plan.py): every DP run prints its planned
epsilon at the start, and dp.target-epsilon plans its noise there, also with features/ deleted.
This module keeps the planner's place among the DP mechanisms for scripts (the privacy benchmark)
that plan runs without a ServerApp.
"""

from __future__ import annotations

from server_app.privacy_plan import noise_for_epsilon, plan, planned_epsilon, planned_ledger

__all__ = ["noise_for_epsilon", "plan", "planned_epsilon", "planned_ledger"]
