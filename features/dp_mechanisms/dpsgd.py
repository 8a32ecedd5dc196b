"""Sample-level DP-SGD on the device: every sentence window's gradient is clipped to an L2 norm,
and Gaussian noise is added to their sum before the optimiser sees it.

Per-example gradient norms come from tensorflow-privacy's fast gradient clipping (its layer
registry computes them from layer inputs and output gradients, without per-example gradients).
Three things are done here instead of by its DPModel, each for a reason:
- The forward pass is recorded once on a persistent tape and reused for the clipped gradient;
  DPModel runs the model a second time, which is most of its extra cost.
- Windows are Poisson-sampled (each step takes each window with probability q, the public
  dp.sgd-sampling-rate), the sampling the accountant in task/privacy.py assumes. A shuffled
  fixed-size batch would need a different, much weaker analysis.
- The noisy sum is divided by `batch-size`, a public constant: neither the sampled batch's size
  nor the expected one (q x the device's windows) may be used, since adding or removing one
  window would rescale the whole release, which is not post-processing of the Gaussian mechanism.
- Noise and sampling are secret: the noise comes from a tf.random.Generator whose whole state is
  OS entropy (task.privacy.mechanisms.secret_tf_generator) and the sampling from secret_rng. tensorflow-privacy draws from
  TensorFlow's global generator, which `tf.keras.utils.set_random_seed` (used to build the model
  reproducibly) makes predictable: the same noise in every round and on every device.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

import task  # noqa: F401  (selects tf-keras before TensorFlow resolves tf.keras)

sys.skip_tf_privacy_import = True  # its package __init__ imports estimator code absent on TF 2.21
from tensorflow_privacy.privacy.fast_gradient_clipping import clip_grads, gradient_clipping_utils, layer_registry  # noqa: E402
from tensorflow_privacy.privacy.fast_gradient_clipping.registry_functions import (  # noqa: E402
    layer_normalization,
    multi_head_attention,
)

from task.config import Config, ConfigError  # noqa: E402
from task.data.files import DataError  # noqa: E402
from task.privacy.mechanisms import dpsgd_steps, secret_rng, secret_tf_generator  # noqa: E402
from task.train import MaskedNextWordLoss, Metrics, metrics_after_training, round_learning_rate  # noqa: E402


@dataclass(frozen=True)
class DPSGDStats:
    """What the accountant needs from one round of local DP-SGD, plus a health figure."""

    sampling_rate: float
    steps: int
    clipped_fraction: float  # share of sampled windows whose gradient was clipped
    seconds: float


def registry() -> layer_registry.LayerRegistry:
    """tensorflow-privacy's default registry knows Dense and Embedding; the model also has
    attention and LayerNorm layers, whose rules ship with the library but must be inserted."""
    r = layer_registry.make_default_layer_registry()
    r.insert(tf.keras.layers.MultiHeadAttention, multi_head_attention.multi_head_attention_layer_computation)
    r.insert(tf.keras.layers.LayerNormalization, layer_normalization.layer_normalization_computation)
    return r


def unsupported_layers(model: tf.keras.Model) -> list[str]:
    """The layers with weights that `registry` has no per-example gradient rule for, as "name (Type)"."""
    reg = registry()
    return [f"{layer.name} ({type(layer).__name__})" for layer in model.layers
            if layer.trainable_weights and not reg.is_elem(layer)]


SUPPORTED_LAYERS = "Embedding, Dense, LayerNormalization, MultiHeadAttention"


def clipped_gradient_sum(model: tf.keras.Model, reg: layer_registry.LayerRegistry, x, y, clipping_norm):
    """Sum over examples of each example's gradient clipped to `clipping_norm`.

    Returns (clipped gradients in model.trainable_variables order, per-example losses, per-example
    gradient norms before clipping)."""
    per_example_loss = MaskedNextWordLoss(reduction=tf.keras.losses.Reduction.NONE)
    tape = tf.GradientTape(persistent=True)
    registry_generator = clip_grads.get_registry_generator_fn(tape, reg, None)

    def generator(layer, args, kwargs):  # the library's, remembering which layer each output is from
        outputs, extra = registry_generator(layer, args, kwargs)
        return outputs, (None if extra is None else (layer, *extra))

    with tape:
        logits, generated = gradient_clipping_utils.model_forward_pass(model, x, generator)
        losses = per_example_loss(y, logits)
        summed_loss = tf.reduce_sum(losses)
    layers = [g for g in generated if g is not None]  # (layer, its base tensors, squared-norm fn, weights)
    grads = tape.gradient(summed_loss, [base for _, base, _, _ in layers],
                          unconnected_gradients=tf.UnconnectedGradients.ZERO)
    norms = tf.sqrt(tf.add_n([sqr_norm(g) for g, (_, _, sqr_norm, _) in zip(grads, layers)]))
    clip_weights = tf.stop_gradient(clipping_norm / tf.maximum(clipping_norm, norms))
    # Each example only reaches the loss through its own activations, so the clipped loss's
    # gradient at any layer's output is the first pass's, scaled per example: every layer's weight
    # gradient follows from it locally, with no second backward pass through the network.
    clipped = {}
    for (layer, base, _, weights), grad in zip(layers, grads):
        for target, sources, upstream in _local_pieces(layer, base, weights, _scale(grad, clip_weights)):
            if target is None:  # an embedding table: the scaled gradient is the weight gradient
                clipped[sources[0].ref()] = upstream
            else:
                for v, g in zip(sources, tape.gradient(target, sources, output_gradients=upstream,
                                                       unconnected_gradients=tf.UnconnectedGradients.ZERO)):
                    clipped[v.ref()] = g
    del tape
    missing = [v.name for v in model.trainable_variables if v.ref() not in clipped]
    if missing:
        raise NotImplementedError(f"no per-example gradient rule for {missing}")
    return [tf.convert_to_tensor(clipped[v.ref()]) for v in model.trainable_variables], losses, norms


def _scale(grad, weights):
    """A gradient w.r.t. a per-example tensor, each example's part times its weight."""
    if isinstance(grad, (list, tuple)):
        return [_scale(g, weights) for g in grad]
    if isinstance(grad, tf.IndexedSlices):  # one row per looked-up id, examples in order
        rows_per_example = tf.shape(grad.values)[0] // tf.maximum(tf.shape(weights)[0], 1)  # an empty batch has none
        per_row = tf.repeat(weights, rows_per_example)
        return tf.IndexedSlices(grad.values * per_row[:, None], grad.indices, grad.dense_shape)
    return grad * tf.reshape(weights, [-1] + [1] * (grad.shape.rank - 1))


def _local_pieces(layer, base, weights, upstream):
    """(tensor, the weights it depends on directly, its upstream gradient) for one layer. Attention
    has four projections, chained through the attention itself: each one is taken on its own so a
    projection's gradient never flows back into an earlier one's weights."""
    if isinstance(base, tf.Variable):
        return [(None, [base], upstream)]
    if isinstance(layer, tf.keras.layers.MultiHeadAttention):
        projections = [layer._query_dense, layer._key_dense, layer._value_dense, layer._output_dense]  # noqa: SLF001
        return [(b, p.trainable_weights, u) for b, p, u in zip(base, projections, upstream)]
    return [(base, weights, upstream)]


def make_step(model: tf.keras.Model, optimizer: tf.keras.optimizers.Optimizer, *, clipping_norm: float,
              noise_multiplier: float, denominator: float):
    """A compiled DP-SGD step: (windows, targets) -> (summed loss, #examples, #clipped).
    `denominator` divides the noisy sum: a public constant, never a function of the data."""
    reg = registry()
    clip = tf.constant(clipping_norm, tf.float32)
    noise_std = noise_multiplier * clipping_norm
    sizes = [int(np.prod(v.shape)) for v in model.trainable_variables]
    total = sum(sizes)
    spec = tf.TensorSpec([None, model.input_shape[1]], tf.int32)
    noise_source = secret_tf_generator()

    @tf.function(input_signature=[spec, spec])
    def step(x, y):
        clipped, losses, norms = clipped_gradient_sum(model, reg, x, y, clip)
        # One draw for all weights (one kernel over 1.3 M values instead of one per variable).
        noise = tf.split(noise_source.normal([total], stddev=noise_std / denominator), sizes)
        noisy = [g / denominator + tf.reshape(n, tf.shape(g)) for g, n in zip(clipped, noise)]
        optimizer.apply_gradients(zip(noisy, model.trainable_variables))
        return tf.reduce_sum(losses), tf.size(losses), tf.reduce_sum(tf.cast(norms > clip, tf.int32))

    step.noise_source = noise_source  # for the test that its state is secret
    return step


def train_dpsgd(model: tf.keras.Model, x: np.ndarray, y: np.ndarray, *, sampling_rate: float, steps: int,
                learning_rate: float, clipping_norm: float, noise_multiplier: float, batch_size: int,
                report_batch_size: int = 256, adam_epsilon: float = 1e-7,
                score: bool = True) -> tuple[Metrics, DPSGDStats]:
    """Train in place with `steps` DP-SGD steps, each taking each window with probability
    `sampling_rate` (both public: task.privacy.mechanisms.dpsgd_steps); the noisy sum is divided
    by the public `batch_size`, the batch a device's rate is meant to give on average."""
    if len(x) == 0:
        raise ValueError("no training windows")
    start = time.perf_counter()
    q = sampling_rate
    optimizer = tf.keras.optimizers.Adam(learning_rate, epsilon=adam_epsilon)
    step = make_step(model, optimizer, clipping_norm=clipping_norm, noise_multiplier=noise_multiplier,
                     denominator=float(batch_size))
    rng = secret_rng()
    loss_sum = examples = clipped = 0
    for _ in range(steps):
        chosen = np.flatnonzero(rng.random(len(x)) < q)  # Poisson sampling; may be empty
        s = step(tf.constant(x[chosen], tf.int32), tf.constant(y[chosen], tf.int32))
        loss_sum += float(s[0]); examples += int(s[1]); clipped += int(s[2])
    metrics = metrics_after_training(model, x, y, report_batch_size, loss_sum / max(examples, 1), score)
    return metrics, DPSGDStats(sampling_rate=q, steps=steps, clipped_fraction=clipped / max(examples, 1),
                               seconds=time.perf_counter() - start)


def dpsgd_fit(cfg: Config, model: tf.keras.Model, x: np.ndarray, y: np.ndarray, *, name: str, server_round: int,
              score: bool) -> tuple[Metrics, dict]:
    """The device's round under dp.sgd (task.device.train_round's `fit`, chosen by the ClientApp)."""
    if cfg.dp.delta >= 1 / len(x):
        raise DataError(f"{name}: dp.delta = {cfg.dp.delta} must be below 1/(training windows) = "
                        f"1/{len(x)} for sample-level DP-SGD", reason="dp.delta too large for the text")
    dp = cfg.dp
    m, stats = train_dpsgd(model, x, y, sampling_rate=dp.sgd_sampling_rate,
                           steps=dpsgd_steps(cfg.local_epochs, dp.sgd_sampling_rate, cfg.max_local_steps),
                           learning_rate=round_learning_rate(cfg, server_round), clipping_norm=dp.sgd_clipping_norm,
                           noise_multiplier=dp.sgd_noise_multiplier, batch_size=cfg.batch_size,
                           adam_epsilon=cfg.adam_epsilon, score=score)
    return m, {"dpsgd-clipped-fraction": stats.clipped_fraction}


def require_rules(model) -> None:
    """Refuse, by name, a model with a layer DP-SGD has no per-example gradient rule for."""
    missing = unsupported_layers(model)
    if missing:
        raise ConfigError(f"run-config key 'dp.sgd' = true: DP-SGD has no per-example gradient rule for layer(s) "
                          f"{', '.join(missing)} of model {model.name!r}; it supports {SUPPORTED_LAYERS} "
                          "(features/dp_mechanisms/dpsgd.py, `registry`). Use user-level DP (dp.mode) with this model, or "
                          "add a rule")
