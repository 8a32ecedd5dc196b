"""The next-word models, and the one contract every model here keeps.

Two architectures (run-config key `model.architecture`):
- "transformer" (default): a small causal Transformer. Sample-level DP-SGD is only affordable with
  tensorflow-privacy's fast gradient clipping, whose rules cover Embedding, Dense,
  LayerNormalization and MultiHeadAttention, and those layers convert to LiteRT builtin ops.
  Default: vocab 8,000, width 80, one block, window 12: 1.34 M parameters (int8 file 1.50 MB).
- "lstm": one LSTM layer between the same embedding and output. Unrolled, so its LiteRT file is
  plain builtin ops that agree with Keras (rolled, it agreed on 40% of top-3 suggestions). DP-SGD
  has no per-example rule for LSTM, so dp.sgd = true refuses it by name; user-level DP works.

The contract (`check_contract`), what the rest of the template relies on:
- the input is [batch, seq_len] int32 token ids; the output [batch, seq_len, vocab] logits;
- an Embedding named EMBEDDING, the model's first weight, the only way tokens may enter (the
  Transformer also derives position ids from them; LiteRT int8 export handles both);
- the last two layers are a LayerNormalization named FINAL_NORM and a Dense named OUTPUT over the
  vocabulary, whose kernel and bias are the last two weights (LiteRT export folds the norm into
  the output; new-word discovery grows the first and the last two weights by a row per word);
- for DP-SGD, every layer with weights needs a rule (features/dp_mechanisms/dpsgd.py, `unsupported_layers`).
To add an architecture: a builder below and its line in ARCHITECTURES; nothing else changes (the
config check reads the names from that dict: task/registry.py).
"""

from __future__ import annotations

import tensorflow as tf

import task  # noqa: F401  (selects tf-keras before TensorFlow resolves tf.keras)
from task.config import ModelConfig

EMBEDDING, FINAL_NORM, OUTPUT = "token_embedding", "final_ln", "next_word_logits"


@tf.keras.utils.register_keras_serializable(package="fednextword")
class PositionIds(tf.keras.layers.Layer):
    """0, 1, ..., T-1 for every row of a [batch, T] input (a named layer so saving needs no lambda)."""

    def call(self, tokens):
        return tf.zeros_like(tokens) + tf.range(tf.shape(tokens)[1], dtype=tokens.dtype)


def build_model(cfg: ModelConfig, seed: int = 0) -> tf.keras.Model:
    """Logits over the vocabulary at every position: [batch, seq_len] ids -> [batch, seq_len, vocab]."""
    tf.keras.utils.set_random_seed(seed)
    tokens = tf.keras.Input((cfg.seq_len,), dtype="int32", name="tokens")
    h = tf.keras.layers.Embedding(cfg.vocab_size, cfg.embed_dim, name=EMBEDDING)(tokens)
    h = ARCHITECTURES[cfg.architecture](cfg, tokens, h)
    h = tf.keras.layers.LayerNormalization(epsilon=1e-5, name=FINAL_NORM)(h)
    logits = tf.keras.layers.Dense(cfg.vocab_size, name=OUTPUT)(h)
    return tf.keras.Model(tokens, logits, name=f"next_word_{cfg.architecture}")


def _transformer(cfg: ModelConfig, tokens, h):
    layers = tf.keras.layers
    positions = PositionIds(name="positions")(tokens)
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
    return h


def _lstm(cfg: ModelConfig, tokens, h):
    h = tf.keras.layers.LSTM(cfg.ffn_dim, return_sequences=True, unroll=True, dropout=cfg.dropout, name="lstm")(h)
    return tf.keras.layers.Dense(cfg.embed_dim, name="lstm_out")(h)


# The architectures by their `model.architecture` name, one line each (the config check reads the
# names from here without importing TensorFlow: task/registry.py).
ARCHITECTURES = {"transformer": _transformer, "lstm": _lstm}


def check_contract(model: tf.keras.Model) -> None:
    """Raise ValueError naming what a model lacks of the contract in the module docstring."""
    names = [layer.name for layer in model.layers]
    for name, kind in ((EMBEDDING, tf.keras.layers.Embedding), (FINAL_NORM, tf.keras.layers.LayerNormalization),
                       (OUTPUT, tf.keras.layers.Dense)):
        if name not in names or not isinstance(model.get_layer(name), kind):
            raise ValueError(f"model {model.name}: no {kind.__name__} layer named {name!r}")
    if names[-2:] != [FINAL_NORM, OUTPUT]:
        raise ValueError(f"model {model.name}: must end with {FINAL_NORM!r} then {OUTPUT!r}, not {names[-2:]}")
    weights = model.weights
    embedding, output = model.get_layer(EMBEDDING), model.get_layer(OUTPUT)
    if weights[0] is not embedding.embeddings or weights[-2] is not output.kernel or weights[-1] is not output.bias:
        raise ValueError(f"model {model.name}: its first weight must be {EMBEDDING!r}'s table and its last two "
                         f"{OUTPUT!r}'s kernel and bias")
