"""What crosses the network each round: the model down, the device's update up.

`transfer-dtype = "float16"` halves the bytes both ways. Down, the server sends the global
model rounded to float16. Up, the device sends its update (new weights minus the model it
received) in float16 rather than its new weights: an update is small and float16 keeps ~3
significant digits of it, whereas rounding the full weights would wipe out a small change.

Encoding runs after any DP clipping and noising on the device. It rounds toward zero, so no
coordinate of an update grows and a clipped update's norm stays within the clipping norm; the
privacy guarantee is unchanged (post-processing of a released value).
"""

from __future__ import annotations

import numpy as np

Weights = list[np.ndarray]


def encode_model(weights: Weights, dtype: str) -> Weights:
    """The global model as sent to devices."""
    return [w.astype(dtype) for w in weights]


def decode_model(arrays: Weights) -> Weights:
    """The model a device trains from (float32, whatever was sent)."""
    return [np.asarray(a, np.float32) for a in arrays]


def encode_update(new: Weights, received: Weights, dtype: str) -> Weights:
    """A device's reply: float32 weights as they are, else its update rounded toward zero."""
    if dtype == "float32":
        return new
    return [_toward_zero(n.astype(np.float32) - r, np.dtype(dtype)) for n, r in zip(new, received)]


def decode_update(arrays: Weights, received: Weights, dtype: str) -> Weights:
    """The server's view of a device's new weights, from its reply and the model it was sent."""
    if dtype == "float32":
        return arrays
    return [r + np.asarray(a, np.float32) for a, r in zip(arrays, received)]


def _toward_zero(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    # NumPy rounds to nearest, which can move a value away from zero; step those back by one ulp.
    y = x.astype(dtype)
    grew = np.abs(y.astype(np.float32)) > np.abs(x)
    y[grew] = np.nextafter(y[grew], np.zeros((), dtype))
    return y
