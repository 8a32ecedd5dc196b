"""DP-FTRL's noise (Kairouz et al. 2021, "Practical and Private (Deep) Learning without Sampling
or Shuffling"): the server releases noisy *running sums* of the clipped updates, each running sum
noised by tree aggregation, so the noise on the model after t rounds has variance
popcount(t) x std^2 (at most log2(t) + 1 nodes), where noising every round afresh gives t x std^2.

The tree comes from tensorflow-privacy (`TreeAggregator`); its node values do not. Its own
`GaussianNoiseGenerator` seeds itself from the clock when no seed is given (predictable, so
anyone who knows roughly when a round ran could regenerate and subtract the noise), so each node
here is drawn from a TensorFlow generator whose whole Philox state comes from OS entropy.
"""

from __future__ import annotations

import sys

import numpy as np

sys.skip_tf_privacy_import = True  # its package __init__ imports estimator code absent on TF 2.21
from tensorflow_privacy.privacy.dp_query.tree_aggregation import TreeAggregator, get_step_idx  # noqa: E402

from task.privacy.mechanisms import secret_tf_generator  # noqa: E402


class TreeNoise:
    """Noise for the running sum of one tree's rounds; `restart` begins a new tree."""

    def __init__(self, shapes: list[tuple[int, ...]], std: float):
        self.std = float(std)
        self._shapes = [tuple(s) for s in shapes]
        self._gen = secret_tf_generator()
        self._tree = TreeAggregator(lambda: [self._gen.normal(s, stddev=self.std) for s in self._shapes])
        self.restart()

    def restart(self) -> None:
        self._state = self._tree.init_state()
        self._previous = [np.zeros(s, np.float64) for s in self._shapes]

    @property
    def rounds(self) -> int:
        """Rounds noised in the current tree."""
        return int(get_step_idx(self._state).numpy())

    def increment(self) -> list[np.ndarray]:
        """The next running sum's noise minus the previous one's: added to this round's sum, the
        model after round t carries exactly the tree's noise on the running sum of rounds 1..t."""
        total, self._state = self._tree.get_cumsum_and_update(self._state)
        total = [np.asarray(t.numpy(), np.float64) for t in total]
        step = [t - p for t, p in zip(total, self._previous)]
        self._previous = total
        return step
