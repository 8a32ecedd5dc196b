"""On-device fine-tuning of the received model on the user's own training text (Wang et al. 2019,
"Federated Evaluation of On-device Personalization"): the whole model, or only its output layer.

The fine-tuned weights stay on the device; like the count mix (task/personal.py) this is
post-processing of local data and changes no privacy figure.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

import task  # noqa: F401  (selects tf-keras before TensorFlow resolves tf.keras)
from task.model import OUTPUT
from task.train import MaskedNextWordLoss

PARTS = ("all", "output")


def fine_tune(model: tf.keras.Model, x: np.ndarray, y: np.ndarray, *, part: str, learning_rate: float,
              epochs: int = 1, batch_size: int = 32, seed: int = 0) -> None:
    """Train `model` in place with a fresh Adam: every weight (`part="all"`), or only the
    vocabulary-sized output layer (`"output"`), the rest frozen."""
    if part not in PARTS:
        raise ValueError(f"part = {part!r}: expected one of {PARTS}")
    variables = model.trainable_variables if part == "all" else model.get_layer(OUTPUT).trainable_variables
    optimizer = tf.keras.optimizers.Adam(learning_rate)
    loss_fn = MaskedNextWordLoss()

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

    order = np.random.default_rng(seed)
    for _ in range(epochs):
        shuffled = order.permutation(len(x))
        for start in range(0, len(x), batch_size):
            batch = shuffled[start : start + batch_size]
            step(tf.constant(x[batch]), tf.constant(y[batch]))
