"""dp.mode = "central-blt": BLT-DP-FTRL, central DP whose noise is correlated across rounds through a
buffered linear Toeplitz (BLT) matrix factorisation (Dvijotham, McMahan, Pillutla, Steinke, Thakurta
2024, "Efficient and near-optimal noise generation for streaming differential privacy"; McMahan,
Xu, Zhang 2024, "BLT-DP-FTRL"; docs/privacy.md).

The model after round t carries, on the running sum of the clipped updates, the noise (A C^-1 z)_t:
z ~ N(0, (z_mult x clipping norm)^2) fresh every round, C the lower-triangular Toeplitz matrix with
c_0 = 1 and c_k = sum_i omega_i theta_i^(k-1). Round t's noise is w_t = (C^-1 z)_t, found by forward
substitution through C's own structure:

    w_t = z_t - sum_i omega_i S_i,        then   S_i <- theta_i S_i + w_t   (S_i = 0 at the start),

so the server keeps d buffers S_i of the model's size (d = BLT_BUFFERS = 4), whatever the number of
rounds, and one round at a time. The parameters (theta, omega) are optimised for the run's rounds n
and its minimum separation b, and the accounting (task/privacy/ledger.py) uses the same ones: both
come from the ledger (task/privacy/mechanisms.py `optimal_blt`, on numpy/scipy; why not jax-privacy
is said there: jax, jaxlib, optax and chex for a few recursions).

Secrecy. The z_t come from the strategy's secret generator (task/privacy/mechanisms.py secret_rng:
128 bits of OS entropy, never the seed). The buffers are secret too (whoever holds them and the
next model subtracts most of the next noise): they live in this object only, never in a checkpoint
(server_app/privacy.py strategy_state saves the clipping norm alone) or a file. A resumed run
therefore restarts the noise with empty buffers, and the ledger accounts the restarted mechanism
as a new segment composed with the earlier ones (the model so far, with its noise, as its anchor).
"""

from __future__ import annotations

import logging

import numpy as np

from server_app.privacy import CentralDP

log = logging.getLogger("flwr")


class BltNoise:
    """The noise C^-1 z of one segment, streamed round by round from d buffers per weight array."""

    def __init__(self, shapes: list[tuple[int, ...]], theta, omega, std: float, rng: np.random.Generator):
        self.theta = np.asarray(theta, np.float64)
        self.omega = np.asarray(omega, np.float64)
        self.std = float(std)
        self.rng = rng
        self.shapes = [tuple(s) for s in shapes]
        self.restart()

    def restart(self) -> None:
        """A new segment: empty buffers (the old ones are dropped, never written anywhere)."""
        self._buffers = [[np.zeros(s, np.float64) for _ in self.theta] for s in self.shapes]
        self.rounds = 0

    def increment(self, shapes: list[tuple[int, ...]] | None = None) -> list[np.ndarray]:
        """This round's noise w_t, one array per weight array."""
        if shapes is not None and [tuple(s) for s in shapes] != self.shapes:
            raise RuntimeError("BLT-DP-FTRL: the model's shapes changed mid-run; the noise buffers have no rows for "
                               "them (vocabulary discovery is refused with central-blt)")
        out = []
        for shape, buffers in zip(self.shapes, self._buffers, strict=True):
            w = self.rng.normal(0.0, self.std, shape)
            for weight, buffer in zip(self.omega, buffers):
                w -= weight * buffer
            for decay, buffer in zip(self.theta, buffers):
                buffer *= decay
                buffer += w
            out.append(w)
        self.rounds += 1
        return out


class BltDP(CentralDP):
    MODES = ("central-blt",)

    def __init__(self, inner, cfg, ledger, rng=None, device_norm=None):
        super().__init__(inner, cfg, ledger, rng, device_norm)
        self.theta, self.omega = ledger.blt_parameters()
        self._noise: BltNoise | None = None  # made at the first release; restarted with each new segment

    def summary(self) -> None:
        log.info("\t├──> BLT-DP-FTRL: %d buffers, decays %s, weights %s, minimum separation %d rounds",
                 len(self.theta), [round(t, 4) for t in self.theta], [round(w, 4) for w in self.omega],
                 self.ledger.separation)
        super().summary()

    def noise(self, current: list[np.ndarray], std: float) -> list[np.ndarray]:
        """This round's row of C^-1 z; a new segment (the ledger's sampler began one for this round,
        or this is a resumed run's first round) restarts it from empty buffers."""
        shapes = [c.shape for c in current]
        new_segment = not self.ledger.segments or self.ledger.segments[-1] == 0
        if self._noise is None:
            if not new_segment:  # the buffers of a segment already begun are gone: continuing it unaccounted
                raise RuntimeError("BLT-DP-FTRL: the noise of a segment cannot continue without its buffers; the "
                                   "ledger must start a new segment (PrivacyLedger.from_state(resumed=True) does)")
            self._noise = BltNoise(shapes, self.theta, self.omega, std, self.rng)
        elif new_segment:
            self._noise.restart()
        if self._noise.std != float(std):  # the accounting assumes one noise multiplier and clipping norm
            raise RuntimeError(f"BLT-DP-FTRL: the noise std changed from {self._noise.std} to {std} within a run")
        return self._noise.increment(shapes)
