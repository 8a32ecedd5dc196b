"""The int8 file's next-word function, as a LiteRT export Variant (task/litert/export.py).

Both vocabulary-sized matrices (the embedding table and the output layer, 96% of the weights) are
stored per word (features/int8/quantize.py); the converter stores the block in between in
float16, whose int8 run-time quantisation of activations alone cost 1.2 points of top-3 agreement.
"""

from __future__ import annotations

import tensorflow as tf

import task  # noqa: F401  (selects tf-keras before TensorFlow resolves tf.keras)
from features.int8.quantize import WordRows
from task.litert.export import Variant, folded_output, normalise, signature
from task.model import EMBEDDING, FINAL_NORM

FREQUENT_WORDS = 250  # words whose embedding and output rows keep 16 bits


def int8_next_word(model: tf.keras.Model):
    final_ln, embedding = model.get_layer(FINAL_NORM), model.get_layer(EMBEDDING)
    trunk, needs_tokens = _trunk_from_embedded(model, embedding.output, final_ln.input)
    kernel, bias = folded_output(model)
    embedded = WordRows(embedding.get_weights()[0], FREQUENT_WORDS)
    output = WordRows(kernel.T, FREQUENT_WORDS)
    bias = tf.constant(bias)

    @tf.function(input_signature=signature(model))
    def next_word(tokens, last_index):
        rows = embedded.rows(tokens)
        x = tf.gather(trunk([tokens, rows] if needs_tokens else rows, training=False)[0], last_index)
        table = output.table(runtime_zero=tf.minimum(last_index[0], 0))
        logits = tf.matmul(normalise(x, final_ln.epsilon), table, transpose_b=True) + bias
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


# int8 rounds the two vocabulary-sized matrices, so it may differ where two words score almost alike.
INT8 = {"int8": Variant(int8_next_word, float16=True, bar=0.98)}
