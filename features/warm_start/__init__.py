"""Warm start: a run begins from another run's weights (`warm-start.init-from`), under DP only
from a model pretrained on public proxy text. Doc docs/runs.md; tests tests/features/warm_start/."""
