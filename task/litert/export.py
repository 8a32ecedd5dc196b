"""Export the global model to LiteRT (TensorFlow Lite) flatbuffers for on-device suggestions.

The exported function does exactly what a keyboard needs and nothing more: given the last
`seq_len` token ids (right-padded) and the index of the last real token, it returns the
next-word probabilities at that position. The batch is fixed to 1, and the hidden state is
gathered before the output layer, so the vocabulary-sized matrix product runs for one
position instead of `seq_len` (the largest cost of the model).

Variants: float32 (reference) and float16 (half the size); int8 (1.50 MB for the default model)
is features/int8/, exported when int8.enabled (server_app/app.py adds its Variant).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

import task  # noqa: F401  (selects tf-keras before TensorFlow resolves tf.keras)
from task.data.vocab import FIRST_WORD_ID, PAD_ID, Vocabulary
from task.model import FINAL_NORM, OUTPUT


@dataclass(frozen=True)
class Variant:
    """One exported file: the function it holds (model -> tf.function), whether its float constants
    are stored in float16, and the top-3 agreement with the Keras model it must reach to be fit to
    ship (positions whose top 3 differ only by words whose Keras scores tie count as agreeing)."""

    next_word: Callable
    float16: bool
    bar: float


def export_litert(model: tf.keras.Model, vocab: Vocabulary, out_dir: Path,
                  variants: Mapping[str, Variant] | None = None) -> dict[str, Path]:
    """Write model-<variant>.tflite and vocab.json into `out_dir`; returns the model paths.
    `variants`: by name (default: VARIANTS)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, variant in (VARIANTS if variants is None else variants).items():
        next_word = variant.next_word(model)
        converter = tf.lite.TFLiteConverter.from_concrete_functions([next_word.get_concrete_function()], model)
        if variant.float16:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        path = out_dir / f"model-{name}.tflite"
        with _root_logging_untouched():
            path.write_bytes(converter.convert())
        paths[name] = path
    vocab.save(out_dir / "vocab.json")
    return paths


def export_checked(model: tf.keras.Model, vocab: Vocabulary, out_dir: Path, windows: np.ndarray,
                   variants: Mapping[str, Variant] | None = None) -> dict[str, dict]:
    """Export each variant and check its top-3 against the Keras model on `windows`; per variant
    {"file", "top3_agreement", "positions", "bar", "fit_to_ship"}, or {"error", "fit_to_ship"}.
    Never raises: a file that falls short is renamed model-<variant>-unfit.tflite, so it cannot be
    shipped by mistake, and a conversion that fails is reported, not fatal."""
    from task.litert.suggest import Suggester

    report: dict[str, dict] = {}
    for name, variant in (VARIANTS if variants is None else variants).items():
        try:
            path = export_litert(model, vocab, out_dir, {name: variant})[name]
            share, ties, total = top3_agreement(model, Suggester.from_files(path), windows)
            agreement = share + ties / max(total, 1)
            fit = total > 0 and agreement >= variant.bar
            if not fit:
                path = path.replace(path.with_name(f"model-{name}-unfit.tflite"))
            report[name] = {"file": str(path), "top3_agreement": agreement, "positions": total,
                            "bar": variant.bar, "fit_to_ship": fit}
        except Exception as e:  # noqa: BLE001  (any converter failure: the trained model is already saved)
            logging.getLogger("flwr").exception("LiteRT export of %s failed", name)
            report[name] = {"error": f"{type(e).__name__}: {e}"[:1000], "fit_to_ship": False}
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


def signature(model: tf.keras.Model) -> list[tf.TensorSpec]:
    return [tf.TensorSpec([1, model.input_shape[1]], tf.int32, name="tokens"),
            tf.TensorSpec([1], tf.int32, name="last_index")]


def folded_output(model: tf.keras.Model) -> tuple[np.ndarray, np.ndarray]:
    # The last LayerNorm's scale and shift are folded into the output layer (exactly the same
    # function), so the exported graph applies one matrix where Keras applies two.
    gamma, beta = model.get_layer(FINAL_NORM).get_weights()
    kernel, bias = model.get_layer(OUTPUT).get_weights()
    return gamma[:, None] * kernel, bias + beta @ kernel


def normalise(x: tf.Tensor, epsilon: float) -> tf.Tensor:
    mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
    return (x - mean) * tf.math.rsqrt(variance + epsilon)


def float_next_word(model: tf.keras.Model):
    final_ln = model.get_layer(FINAL_NORM)
    trunk = tf.keras.Model(model.input, final_ln.input)  # the residual stream before the last norm
    kernel, bias = (tf.constant(a) for a in folded_output(model))

    @tf.function(input_signature=signature(model))
    def next_word(tokens, last_index):
        x = tf.gather(trunk(tokens, training=False)[0], last_index)  # [1, embed_dim]
        logits = tf.matmul(normalise(x, final_ln.epsilon), kernel) + bias
        return {"probabilities": tf.nn.softmax(logits)}

    return next_word


# The core's files (features/int8/ adds "int8"): the same function, float constants in 32 or 16 bits.
VARIANTS = {"float32": Variant(float_next_word, float16=False, bar=0.99),
            "float16": Variant(float_next_word, float16=True, bar=0.99)}


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
