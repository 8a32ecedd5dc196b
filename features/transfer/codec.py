"""What crosses the network each round: the model down, the device's update up.

`transfer.dtype = "float16"` halves the bytes both ways. Down, the server sends the global
model rounded to float16. Up, the device sends its update (new weights minus the model it
received) in float16 rather than its new weights: an update is small and float16 keeps ~3
significant digits of it, whereas rounding the full weights would wipe out a small change.

`transfer.dtype = "int8"` sends the model down in float16 too, and the update up in 8 bits: each
array gets one float32 scale per index of its longest axis (per word for the embedding table and
the output layer, which are 96% of the weights), so a word whose update is small keeps its own
resolution instead of sharing the scale of the largest one.

Encoding runs after any DP clipping and noising on the device. It rounds toward zero, so no
coordinate of an update grows and a clipped update's norm stays within the clipping norm; the
privacy guarantee is unchanged (post-processing of a released value).
"""

from __future__ import annotations

import numpy as np

Weights = list[np.ndarray]


def encode_model(weights: Weights, dtype: str) -> Weights:
    """The global model as sent to devices (int8 transfer sends the model in float16: rounding
    the weights themselves to 8 bits would cost far more accuracy than rounding an update)."""
    return [w.astype("float16" if dtype == "int8" else dtype) for w in weights]


def decode_model(arrays: Weights) -> Weights:
    """The model a device trains from (float32, whatever was sent)."""
    return [np.asarray(a, np.float32) for a in arrays]


def encode_update(new: Weights, received: Weights, dtype: str) -> Weights:
    """A device's reply: float32 weights as they are, else its update rounded toward zero."""
    if dtype == "float32":
        return new
    updates = [n.astype(np.float32) - r for n, r in zip(new, received)]
    if dtype == "int8":  # two arrays per weight: the 8-bit values, then their scales
        return [part for u in updates for part in _int8_toward_zero(u)]
    return [_toward_zero(u, np.dtype(dtype)) for u in updates]


def decode_update(arrays: Weights, received: Weights, dtype: str) -> Weights:
    """The server's view of a device's new weights, from its reply and the model it was sent."""
    if dtype == "float32":
        return arrays
    if dtype == "int8":
        if len(arrays) != 2 * len(received):
            raise ValueError(f"an int8 update has 2 arrays per weight: expected {2 * len(received)}, got {len(arrays)}")
        return [r + _int8_decode(q, scale).reshape(r.shape) for q, scale, r in zip(arrays[::2], arrays[1::2], received)]
    return [r + np.asarray(a, np.float32) for a, r in zip(arrays, received)]


def _toward_zero(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    # NumPy rounds to nearest, which can move a value away from zero; step those back by one ulp.
    y = x.astype(dtype)
    grew = np.abs(y.astype(np.float32)) > np.abs(x)
    y[grew] = np.nextafter(y[grew], np.zeros((), dtype))
    return y


def _int8_toward_zero(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-bit values and float32 scales (one per index of the longest axis) with
    |value * scale| <= |x| everywhere."""
    x = np.asarray(x, np.float32)
    if x.ndim == 0:
        x = x.reshape(1)
    longest = int(np.argmax(x.shape))
    others = tuple(i for i in range(x.ndim) if i != longest)
    scale = (np.max(np.abs(x), axis=others, keepdims=True) / 127).astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1))
    q = np.clip(np.trunc(x / safe), -127, 127)
    grew = np.abs(q * scale) > np.abs(x)  # x / scale rounded up to the next integer
    q[grew] -= np.sign(q[grew])
    return q.astype(np.int8), scale


def _int8_decode(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return q.astype(np.float32) * np.asarray(scale, np.float32)
