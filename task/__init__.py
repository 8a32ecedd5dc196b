"""Plain ML code for federated next-word prediction: text, vocabulary, data, model, training.

Nothing here imports the Flower runtime (flwr), so the same code runs in simulation, on a device
and in tests; only task.data.partition uses Flower Datasets, a standalone data library, for simulated splits.
TensorFlow is imported only by the modules that need it (model, train), never at package import.
"""

import os

# tensorflow-privacy 0.9.0 supports Keras 2 only: make `tf.keras` resolve to tf-keras. This must
# happen before TensorFlow first resolves tf.keras, so it lives at the top of the package.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
