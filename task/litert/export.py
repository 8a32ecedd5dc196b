"""Export the global model to LiteRT (TensorFlow Lite) flatbuffers for on-device suggestions.

The exported function does exactly what a keyboard needs and nothing more: given the last
`seq_len` token ids (right-padded) and the index of the last real token, it returns the
next-word probabilities at that position. The batch is fixed to 1, and the hidden state is
gathered before the output layer, so the vocabulary-sized matrix product runs for one
position instead of `seq_len` (the largest cost of the model).

Variants: float32 (reference), float16 (half the size), int8 (the embedding table and output
layer, 96% of the weights, in 8 bits per weight with 16 for the most frequent words' rows:
task/litert/quantize.py; the Transformer block in float16).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tensorflow as tf

import task  # noqa: F401  (selects tf-keras before TensorFlow resolves tf.keras)
from task.data.vocab import FIRST_WORD_ID, PAD_ID, Vocabulary
from task.litert.quantize import WordRows
from task.model import EMBEDDING, FINAL_NORM, OUTPUT

VARIANTS = ("float32", "float16", "int8")
FREQUENT_WORDS = 250  # int8 file: words whose embedding and output rows keep 16 bits
# The top-3 agreement with the Keras model (positions whose top 3 differ only by words whose Keras
# scores tie count as agreeing) a file must reach to be fit to ship. int8 rounds the two
# vocabulary-sized matrices, so it may differ where two words score almost alike.
SHIP_BARS = {"float32": 0.99, "float16": 0.99, "int8": 0.98}


def export_litert(model: tf.keras.Model, vocab: Vocabulary, out_dir: Path,
                  variants: tuple[str, ...] = VARIANTS) -> dict[str, Path]:
    """Write model-<variant>.tflite and vocab.json into `out_dir`; returns the model paths."""
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown LiteRT variant(s) {unknown}; choose from {list(VARIANTS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for variant in variants:
        next_word = _int8_next_word(model) if variant == "int8" else _float_next_word(model)
        converter = tf.lite.TFLiteConverter.from_concrete_functions([next_word.get_concrete_function()], model)
        if variant in ("float16", "int8"):
            # Float constants stored in float16; for int8 that is only the block between the two
            # vocabulary-sized matrices (4% of the weights), whose int8 run-time quantisation of
            # activations alone cost 1.2 points of top-3 agreement.
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        path = out_dir / f"model-{variant}.tflite"
        with _root_logging_untouched():
            path.write_bytes(converter.convert())
        paths[variant] = path
    vocab.save(out_dir / "vocab.json")
    return paths


def export_checked(model: tf.keras.Model, vocab: Vocabulary, out_dir: Path, windows: np.ndarray,
                   variants: tuple[str, ...] = VARIANTS) -> dict[str, dict]:
    """Export each variant and check its top-3 against the Keras model on `windows`; per variant
    {"file", "top3_agreement", "positions", "bar", "fit_to_ship"}, or {"error", "fit_to_ship"}.
    Never raises: a file that falls short is renamed model-<variant>-unfit.tflite, so it cannot be
    shipped by mistake, and a conversion that fails is reported, not fatal."""
    from task.litert.suggest import Suggester

    report: dict[str, dict] = {}
    for variant in variants:
        try:
            path = export_litert(model, vocab, out_dir, (variant,))[variant]
            share, ties, total = top3_agreement(model, Suggester.from_files(path), windows)
            agreement = share + ties / max(total, 1)
            fit = total > 0 and agreement >= SHIP_BARS[variant]
            if not fit:
                path = path.replace(path.with_name(f"model-{variant}-unfit.tflite"))
            report[variant] = {"file": str(path), "top3_agreement": agreement, "positions": total,
                               "bar": SHIP_BARS[variant], "fit_to_ship": fit}
        except Exception as e:  # noqa: BLE001  (any converter failure: the trained model is already saved)
            logging.getLogger("flwr").exception("LiteRT export of %s failed", variant)
            report[variant] = {"error": f"{type(e).__name__}: {e}"[:1000], "fit_to_ship": False}
    return report


def check_windows(seq_len: int, vocab_size: int, count: int = 200, seed: int = 0) -> np.ndarray:
    """Windows to compare an export with Keras on when no held-out text is at hand: word ids drawn
    with Zipf-like frequencies (ids are in frequency order), random lengths, right-padded."""
    rng = np.random.default_rng(seed)
    words = vocab_size - FIRST_WORD_ID
    windows = np.full((count, seq_len), PAD_ID, np.int32)
    for row in windows:
        length = int(rng.integers(1, seq_len + 1))
        row[:length] = FIRST_WORD_ID + np.minimum(rng.zipf(1.3, length) - 1, words - 1)
    return windows


@contextlib.contextmanager
def _root_logging_untouched() -> Iterator[None]:
    """The converter logs through absl, which calls logging.basicConfig() on first use: a root
    handler that printed every later line of the ServerApp (its run summary) a second time."""
    root = logging.getLogger()
    handlers = list(root.handlers)
    try:
        yield
    finally:
        for handler in set(root.handlers) - set(handlers):
            root.removeHandler(handler)


def _signature(model: tf.keras.Model) -> list[tf.TensorSpec]:
    return [tf.TensorSpec([1, model.input_shape[1]], tf.int32, name="tokens"),
            tf.TensorSpec([1], tf.int32, name="last_index")]


def _folded_output(model: tf.keras.Model) -> tuple[np.ndarray, np.ndarray]:
    # The last LayerNorm's scale and shift are folded into the output layer (exactly the same
    # function), so the exported graph applies one matrix where Keras applies two.
    gamma, beta = model.get_layer(FINAL_NORM).get_weights()
    kernel, bias = model.get_layer(OUTPUT).get_weights()
    return gamma[:, None] * kernel, bias + beta @ kernel


def _normalise(x: tf.Tensor, epsilon: float) -> tf.Tensor:
    mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
    return (x - mean) * tf.math.rsqrt(variance + epsilon)


def _float_next_word(model: tf.keras.Model):
    final_ln = model.get_layer(FINAL_NORM)
    trunk = tf.keras.Model(model.input, final_ln.input)  # the residual stream before the last norm
    kernel, bias = (tf.constant(a) for a in _folded_output(model))

    @tf.function(input_signature=_signature(model))
    def next_word(tokens, last_index):
        x = tf.gather(trunk(tokens, training=False)[0], last_index)  # [1, embed_dim]
        logits = tf.matmul(_normalise(x, final_ln.epsilon), kernel) + bias
        return {"probabilities": tf.nn.softmax(logits)}

    return next_word


def _int8_next_word(model: tf.keras.Model):
    # Per-word int8 / int16 storage of both vocabulary-sized matrices (task/litert/quantize.py); the
    # converter stores the block in between in float16.
    final_ln, embedding = model.get_layer(FINAL_NORM), model.get_layer(EMBEDDING)
    trunk, needs_tokens = _trunk_from_embedded(model, embedding.output, final_ln.input)
    kernel, bias = _folded_output(model)
    embedded = WordRows(embedding.get_weights()[0], FREQUENT_WORDS)
    output = WordRows(kernel.T, FREQUENT_WORDS)
    bias = tf.constant(bias)

    @tf.function(input_signature=_signature(model))
    def next_word(tokens, last_index):
        rows = embedded.rows(tokens)
        x = tf.gather(trunk([tokens, rows] if needs_tokens else rows, training=False)[0], last_index)
        table = output.table(runtime_zero=tf.minimum(last_index[0], 0))
        logits = tf.matmul(_normalise(x, final_ln.epsilon), table, transpose_b=True) + bias
        return {"probabilities": tf.nn.softmax(logits)}

    return next_word


def _trunk_from_embedded(model: tf.keras.Model, embedded, end) -> tuple[tf.keras.Model, bool]:
    """The model from the embedded tokens to `end`, and whether it also needs the token ids: a
    Transformer derives its position ids from them, a model fed only through its embedding does
    not (and Keras refuses an input that nothing uses)."""
    try:
        return tf.keras.Model(embedded, end), False
    except ValueError:  # the graph reaches the token ids by another route
        return tf.keras.Model([model.input, embedded], end), True


def top3_agreement(model: tf.keras.Model, suggester, windows: np.ndarray) -> tuple[float, int, int]:
    """How often the exported model suggests the same three words as the Keras model.

    Checked at every real position of `windows` ([N, seq_len] input ids). Returns the share of
    positions with the same top-3 set, the number of other positions that differ only by words
    whose Keras scores tie (within 1e-5), and the number of positions.
    """
    logits = model(windows, training=False).numpy()
    same = ties = total = 0
    for row, ids in enumerate(windows):
        for pos in range(len(ids)):
            if ids[pos] == PAD_ID:
                break
            ref = logits[row, pos].copy()
            ref[:FIRST_WORD_ID] = -np.inf
            expected = np.argsort(-ref, kind="stable")[:3]
            got = np.array([s.word_id for s in suggester.suggest_after_ids(ids[: pos + 1], k=3)])
            total += 1
            if set(got) == set(expected):
                same += 1
            elif np.allclose(np.sort(ref[got]), np.sort(ref[expected]), rtol=0, atol=1e-5):
                ties += 1
    return same / max(total, 1), ties, total
