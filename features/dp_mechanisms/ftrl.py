"""dp.mode = "central-ftrl": central DP whose noise is tree-aggregated over each tree's rounds
(DP-FTRL, Kairouz et al. 2021). Each round's noise is the difference of two consecutive noised
running sums of the tree (features/dp_mechanisms/tree_noise.py); the ledger starts a new tree when
too few devices are left that have not taken part in the current one (task/privacy/ledger.py).
"""

from __future__ import annotations

import numpy as np

from server_app.privacy import CentralDP


class FtrlDP(CentralDP):
    MODES = ("central-ftrl",)

    def __init__(self, inner, cfg, ledger, rng=None, device_norm=None):
        super().__init__(inner, cfg, ledger, rng, device_norm)
        self._tree = None  # the TreeNoise of the current tree, made at its first round

    def noise(self, current: list[np.ndarray], std: float) -> list[np.ndarray]:
        """This round's share of the tree's noise; a new tree (ledger) starts a new TreeNoise."""
        if self.ledger.trees[-1] == 0:  # the sampler began a new tree for this round
            from features.dp_mechanisms.tree_noise import TreeNoise  # TensorFlow and tensorflow-privacy

            if self._tree is None:
                self._tree = TreeNoise([c.shape for c in current], std)
            else:
                self._tree.restart()
        return self._tree.increment()
