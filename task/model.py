"""A small causal Transformer for next-word prediction, sized for phones.

Why a Transformer and not an LSTM: sample-level DP-SGD is only affordable with
tensorflow-privacy's fast gradient clipping, which supports Embedding, Dense, LayerNormalization
and MultiHeadAttention layers but not LSTM; the same layers also convert to LiteRT builtin ops.
The input and output embeddings are not tied for the same reason (a tied custom layer has no
fast-clipping rule). Default: vocab 8,000, width 80, one block, window 12: 1.34 M parameters
(int8 LiteRT file 1.50 MB).
"""

from __future__ import annotations

import tensorflow as tf

import task  # noqa: F401  (selects tf-keras before TensorFlow resolves tf.keras)
from task.config import ModelConfig

# The three layers the on-device export relies on (task/litert/export.py): any model built here
# works there if it embeds tokens in EMBEDDING and ends with the LayerNorm FINAL_NORM followed by
# the Dense OUTPUT over the vocabulary. DP-SGD needs a per-example gradient rule for every layer
# type (task/privacy/dpsgd.py, `registry`): Embedding, Dense, LayerNormalization, MultiHeadAttention.
EMBEDDING, FINAL_NORM, OUTPUT = "token_embedding", "final_ln", "next_word_logits"


@tf.keras.utils.register_keras_serializable(package="fednextword")
class PositionIds(tf.keras.layers.Layer):
    """0, 1, ..., T-1 for every row of a [batch, T] input (a named layer so saving needs no lambda)."""

    def call(self, tokens):
        return tf.zeros_like(tokens) + tf.range(tf.shape(tokens)[1], dtype=tokens.dtype)


def build_model(cfg: ModelConfig, seed: int = 0) -> tf.keras.Model:
    """Logits over the vocabulary at every position: [batch, seq_len] ids -> [batch, seq_len, vocab]."""
    tf.keras.utils.set_random_seed(seed)
    layers = tf.keras.layers
    tokens = tf.keras.Input((cfg.seq_len,), dtype="int32", name="tokens")
    positions = PositionIds(name="positions")(tokens)
    h = layers.Embedding(cfg.vocab_size, cfg.embed_dim, name=EMBEDDING)(tokens)
    h = h + layers.Embedding(cfg.seq_len, cfg.embed_dim, name="position_embedding")(positions)
    h = layers.Dropout(cfg.dropout)(h)
    for i in range(cfg.num_blocks):
        a = layers.LayerNormalization(epsilon=1e-5, name=f"block{i}_ln1")(h)
        a = layers.MultiHeadAttention(cfg.num_heads, cfg.embed_dim // cfg.num_heads, dropout=cfg.dropout,
                                      name=f"block{i}_attention")(a, a, use_causal_mask=True)
        h = h + a
        f = layers.LayerNormalization(epsilon=1e-5, name=f"block{i}_ln2")(h)
        f = layers.Dense(cfg.ffn_dim, activation="gelu", name=f"block{i}_ffn_in")(f)
        f = layers.Dense(cfg.embed_dim, name=f"block{i}_ffn_out")(f)
        h = h + layers.Dropout(cfg.dropout)(f)
    h = layers.LayerNormalization(epsilon=1e-5, name=FINAL_NORM)(h)
    logits = layers.Dense(cfg.vocab_size, name=OUTPUT)(h)
    return tf.keras.Model(tokens, logits, name="next_word_transformer")
