"""dp.mode = "central-adaptive-clip": central DP whose clipping norm follows a quantile of the
update norms (Andrew et al. 2021, "Differentially Private Learning with Adaptive Clipping").

Each device clips to the current norm with Flower's `adaptiveclipping_mod` and reports whether it
had to (Flower's norm bit: "was clipped"); the server releases a noised count of the updates that
were *not* clipped, centred so that one device moves it by 1/2, and moves the norm by
C <- C exp(-lr (b - target)): it grows when most updates were clipped. Flower 1.42's own wrapper
moves it the other way, and calibrates the noise to the norm after its update instead of the one
the devices clipped to (tests/features/dp/test_adaptive_clipping.py keeps it under test).
"""

from __future__ import annotations

import math

from flwr.app import Message
from flwr.supercore.differential_privacy import KEY_NORM_BIT

from server_app.privacy import CentralDP
from task.privacy.mechanisms import adaptive_noise


class AdaptiveClippingDP(CentralDP):
    """Central DP whose update noise and count noise together make one Gaussian mechanism of
    dp.noise-multiplier (Theorem 1): `adaptive_noise` splits it."""

    MODES = ("central-adaptive-clip",)

    def __init__(self, inner, cfg, ledger, rng=None, device_norm=None):
        super().__init__(inner, cfg, ledger, rng, device_norm)
        self.update_noise, self.count_stddev = adaptive_noise(cfg.dp, self.sampled)

    def release_parts(self) -> list[float]:
        return [self.update_noise, 2 * self.count_stddev]  # centred bits: sensitivity 1/2

    def after_release(self, replies: list[Message]) -> None:
        """Adapt after the release: this round's noise was calibrated to the norm devices clipped to."""
        unclipped = [0.0 if _was_clipped(r) else 1.0 for r in replies]
        self.adapt_clipping_norm(unclipped)

    def adapt_clipping_norm(self, unclipped: list[float]) -> None:
        """Algorithm 1: b = the noised fraction of updates that were *not* clipped, from centred bits
        and a fixed denominator (a missing device counts as its zero)."""
        centred = sum(b - 0.5 for b in unclipped) + self.rng.normal(0.0, self.count_stddev)
        fraction = centred / self.sampled + 0.5
        self.clipping_norm *= math.exp(-self.dp.clip_lr * (fraction - self.dp.target_quantile))


def _was_clipped(reply: Message) -> bool:
    return bool(next(m[KEY_NORM_BIT] for m in reply.content.metric_records.values() if KEY_NORM_BIT in m))
