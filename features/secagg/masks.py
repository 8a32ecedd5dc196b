"""The masks of secure aggregation, from a cryptographic generator.

Flower 1.42 expands every SecAgg+ mask seed (256 bits) with NumPy's Mersenne Twister, after
folding the seed to 32 bits by XOR (`flwr.common.secure_aggregation.secaggplus_utils
.pseudo_rand_gen`): each mask is one of only 2**32, and two seeds that fold alike give the same
mask. The protocol's proofs (Bonawitz et al. 2017, Bell et al. 2020) assume a secure pseudorandom
generator on the whole seed. `mask` expands the whole seed with SHAKE-256, an extendable-output
function, so a mask is as hard to guess as its seed. Both sides of a run must use it (the
ClientApp and the ServerApp each install it: features/secagg/client.py, features/secagg/server.py), or the
masks do not cancel.
"""

from __future__ import annotations

import hashlib

import numpy as np

_DOMAIN = b"fednextword/secagg-mask/v1"


def mask(seed: bytes, num_range: int, dimensions_list: list[tuple[int, ...]]) -> list[np.ndarray]:
    """Arrays of the given shapes, uniform on [0, num_range) (a power of two up to 2**32), int64 as
    Flower's masked arithmetic expects. Same signature as Flower's `pseudo_rand_gen`."""
    if not 0 < num_range <= 2**32 or num_range & (num_range - 1):
        raise ValueError(f"num_range must be a power of two up to 2**32, got {num_range}")
    sizes = [int(np.prod(shape)) for shape in dimensions_list]
    stream = hashlib.shake_256(_DOMAIN + seed).digest(4 * sum(sizes))
    values = np.frombuffer(stream, dtype="<u4").astype(np.int64) & (num_range - 1)
    arrays, start = [], 0
    for shape, size in zip(dimensions_list, sizes):
        arrays.append(values[start:start + size].reshape(shape))
        start += size
    return arrays
