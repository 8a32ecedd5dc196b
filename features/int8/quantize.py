"""Int8 storage for the two vocabulary-sized matrices, kept per word, for the LiteRT int8 file.

Why not leave it all to the converter's dynamic-range quantisation: on the default run's model
its int8 file suggested other top-3 words than Keras at 2.2% of positions (goal: at most 1%).
Rounding the weights in Keras showed where that came from: the word-embedding table shared one
scale, and the most frequent words, the ones competing for the top 3, lost most from rounding.
So each word's row (of the embedding table, and of the output layer's transposed kernel) gets its
own scale, and the `frequent` most frequent words (vocabulary ids are in frequency order) keep 16
bits, the rest 8. On that model: 98.8% agreement with the converter's int8 block, 99.8% with the
block in float16 (features/int8/export.py), 1.50 MB.

Two converter behaviours shape the code: a float constant of 1,024+ elements is re-quantised to
int8 with a single scale, so the per-word scales are stored as int16 multiples of a power-of-two
step; and dequantising a constant is folded back into a float constant, so rows are dequantised
after a gather whose indices depend on the model's input (the output table is rebuilt per call,
about 0.3 ms).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

import task  # noqa: F401  (selects tf-keras before TensorFlow resolves tf.keras)


class WordRows:
    """A [words, width] float matrix stored as int16 (frequent words) / int8 rows with per-row scales."""

    def __init__(self, matrix: np.ndarray, frequent: int):
        self.words = matrix.shape[0]
        self.frequent = frequent = min(frequent, self.words)
        limits = np.where(np.arange(self.words) < frequent, 2**15 - 1, 2**7 - 1)
        wanted = np.abs(matrix).max(axis=1) / limits  # the finest scale that does not clip the row
        # Scales are stored as int16 multiples of a power-of-two step, applied as two factors that
        # float16 represents exactly (the converter stores the block's constants in float16).
        exponent = int(np.clip(np.ceil(np.log2(max(float(wanted.max()), 2.0**-40) / 32767)), -28, 28))
        self.step_factors = (2.0 ** (exponent // 2), 2.0 ** (exponent - exponent // 2))
        step = 2.0**exponent
        stored = np.clip(np.ceil(wanted / step), 1, 32767)  # rounded up: the row is never clipped
        q = np.round(matrix / (stored * step)[:, None]).clip(-limits[:, None], limits[:, None])
        self.high = tf.constant(q[:frequent].astype(np.int16))
        self.low = tf.constant(q[frequent:].astype(np.int8))
        self.scales = tf.constant(stored.astype(np.int16))

    def rows(self, ids: tf.Tensor) -> tf.Tensor:
        """Float rows for the word ids `ids` (any shape): [..., width]."""
        high = tf.cast(tf.gather(self.high, tf.minimum(ids, self.frequent - 1)), tf.float32)
        low = tf.cast(tf.gather(self.low, tf.maximum(ids - self.frequent, 0)), tf.float32)
        scale = self._float(tf.gather(self.scales, ids))
        return tf.where((ids < self.frequent)[..., None], high, low) * scale[..., None]

    def table(self, runtime_zero: tf.Tensor) -> tf.Tensor:
        """The whole float matrix; `runtime_zero` is a 0 the converter cannot know (no folding)."""
        high = tf.gather(self.high, tf.range(self.frequent + runtime_zero))
        low = tf.gather(self.low, tf.range(self.words - self.frequent + runtime_zero))
        scale = self._float(tf.gather(self.scales, tf.range(self.words + runtime_zero)))
        return tf.concat([tf.cast(high, tf.float32), tf.cast(low, tf.float32)], axis=0) * scale[:, None]

    def _float(self, stored: tf.Tensor) -> tf.Tensor:
        return tf.cast(stored, tf.float32) * self.step_factors[0] * self.step_factors[1]
