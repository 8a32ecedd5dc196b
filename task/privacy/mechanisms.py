"""The privacy mechanisms' rules, shared by the device, the server and the ledger: where secret
randomness comes from, how noise is calibrated, DP-SGD's public plan (what a device may send:
task/privacy/__init__.py).
"""

from __future__ import annotations

import math
import secrets
from functools import lru_cache

import dp_accounting
import numpy as np
from dp_accounting import rdp

from task.config import DPConfig


def secret_rng() -> np.random.Generator:
    """NumPy's `Generator` on a PCG64 bit generator, new at every call, seeded with a 128-bit
    integer from `secrets.randbits` (the OS's entropy source, os.urandom); NumPy's SeedSequence
    expands it into PCG64's 128-bit state and 128-bit increment, so a call gives one of 2**128
    streams. Anyone may know the run config and every library's global seed and still cannot
    predict, regenerate or subtract the noise. PCG64 is not a cryptographic generator: the
    secrecy rests on the 128-bit seed, not on PCG64 resisting prediction from its outputs."""
    return np.random.Generator(np.random.PCG64(secrets.randbits(128)))


def secret_tf_generator():
    """A TensorFlow Philox generator whose whole state (3 x 64 bits) comes from one 192-bit read of
    OS entropy (`secrets.randbits`).
    `tf.random.Generator.from_non_deterministic_state()` fills it from a process-wide mt19937_64
    seeded once with a 32-bit `std::random_device()`: about 2**32 possible noise streams per
    process, few enough for a server holding the update to try them all."""
    import tensorflow as tf  # only the mechanisms that draw on TensorFlow need it

    bits = secrets.randbits(192)  # one read of OS entropy for the whole state (check_fresh_noise counts reads)
    state = [(bits >> (64 * i) & (2**64 - 1)) - 2**63 for i in range(3)]  # three 64-bit words, as signed int64
    return tf.random.Generator.from_state(state, alg="philox")


@lru_cache(maxsize=32)
def local_noise_multiplier(target_epsilon: float, delta: float) -> float:
    """Noise std / sensitivity for one local-DP release whose RDP epsilon is `target_epsilon`.

    Flower's LocalDpMod uses the classic calibration sqrt(2 ln(1.25/delta)) / epsilon, which is
    only valid for epsilon < 1 and which the RDP accountant composing the releases rates
    differently (8.51 for a nominal 8); calibrating with the accountant makes them agree."""
    add_or_remove = dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
    return float(dp_accounting.calibrate_dp_mechanism(
        lambda: rdp.RdpAccountant(neighboring_relation=add_or_remove), dp_accounting.GaussianDpEvent,
        target_epsilon, delta, dp_accounting.LowerEndpointAndGuess(1e-3, 1.0)))


def adaptive_noise(dp: DPConfig, sampled: int) -> tuple[float, float]:
    """(noise multiplier on the update sum, noise std on the centred unclipped count).

    Andrew et al. 2021, "Differentially Private Learning with Adaptive Clipping", Theorem 1: with
    centred bits (sensitivity 1/2) the count is a Gaussian mechanism of multiplier 2 x stddev,
    and both releases together equal one Gaussian mechanism of multiplier z when the update's
    multiplier is (z^-2 - (2 stddev)^-2)^-1/2."""
    stddev = dp.clipped_count_stddev or sampled / 20
    z = dp.noise_multiplier
    if z >= 2 * stddev:
        raise ValueError(f"dp.noise-multiplier {z} must be below 2 x clipped-count stddev = {2 * stddev:g}")
    return (z ** -2 - (2 * stddev) ** -2) ** -0.5, stddev


def dpsgd_steps(local_epochs: int, sampling_rate: float, max_local_steps: int = 0) -> int:
    """DP-SGD steps per round: `local_epochs` expected passes at the public sampling rate.
    The same for every device, so the server can account a device without hearing from it."""
    steps = math.ceil(local_epochs / sampling_rate - 1e-9)
    return min(steps, max_local_steps) if max_local_steps > 0 else steps
