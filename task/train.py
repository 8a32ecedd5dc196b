"""Local training and evaluation of the next-word model on one device's windows.

What is scored: what the keyboard would show. A target counts for accuracy only if it is a real
in-vocabulary word, never <pad>, <unk> or <eos>, and the top-1/top-3 are taken over words only, as
the suggestion CLI shows them (a slot spent on <eos> is one the user never sees). The loss (and
so perplexity) is over <pad>/<unk>-free targets, <eos> included, so the model also learns where
sentences end. Perplexity = exp(mean token loss).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from types import MappingProxyType

import numpy as np
import tensorflow as tf

import task  # noqa: F401  (selects tf-keras before TensorFlow resolves tf.keras)
from task.data.vocab import FIRST_WORD_ID, PAD_ID, UNK_ID, Vocabulary
from task.keystrokes import KeystrokeCount, PrefixIndex


@dataclass(frozen=True)
class Metrics:
    loss: float
    perplexity: float
    top1: float
    top3: float
    num_examples: int  # windows used (train) or scored word targets (evaluate)
    keystroke_savings: float | None = None  # evaluate with a vocabulary: task/keystrokes.py

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


class MaskedNextWordLoss(tf.keras.losses.Loss):
    """Cross-entropy over real targets, averaged per example (rank-1 per-example loss, as
    tensorflow-privacy's fast gradient clipping requires)."""

    def call(self, y_true, logits):
        y_true = tf.cast(y_true, tf.int32)
        weights = tf.cast(_loss_mask(y_true), logits.dtype)
        ce = tf.keras.losses.sparse_categorical_crossentropy(y_true, logits, from_logits=True)
        return tf.reduce_sum(ce * weights, axis=-1) / tf.maximum(tf.reduce_sum(weights, axis=-1), 1.0)


# FedProx's key (Flower's FedProx puts it in every round's config; server_app/strategy.py).
PROXIMAL_MU = "proximal-mu"
NO_ROUND_CONFIG: Mapping = MappingProxyType({})


class ProximalLoss(MaskedNextWordLoss):
    """The next-word loss plus FedProx's proximal term mu/2 ||w - w_start||^2 (Li et al. 2020),
    w_start being the weights the round began from (the global model). The term is added to every
    example's loss, so to their mean. mu and w_start are variables a new round assigns: the traced
    train step reads them, so it never keeps a stale value."""

    def __init__(self, model: tf.keras.Model):
        super().__init__()
        self._weights = model.trainable_weights
        self._start = [tf.Variable(w, trainable=False) for w in self._weights]
        self._mu = tf.Variable(0.0, trainable=False, dtype=tf.float32)

    def start_round(self, mu: float) -> ProximalLoss:
        self._mu.assign(mu)
        for start, w in zip(self._start, self._weights):
            start.assign(w)
        return self

    def call(self, y_true, logits):
        term = tf.add_n([tf.reduce_sum(tf.square(w - s)) for w, s in zip(self._weights, self._start)])
        return super().call(y_true, logits) + 0.5 * self._mu * tf.cast(term, logits.dtype)


_NEXT_WORD = MaskedNextWordLoss()
_PROXIMAL: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def training_loss(model: tf.keras.Model, round_config: Mapping = NO_ROUND_CONFIG) -> tf.keras.losses.Loss:
    """The loss of this round's local training. `round_config` is the round's config as the server's
    strategy sent it (every key): FedProx's proximal-mu > 0 adds the proximal term. Add a term the
    same way: read its value here and return a loss that holds it in a variable (fresh_optimizer
    recompiles whenever the loss object changes, so a changed loss is never ignored)."""
    mu = float(round_config.get(PROXIMAL_MU, 0.0))
    if mu <= 0:
        return _NEXT_WORD
    loss = _PROXIMAL.get(model)
    if loss is None:
        loss = _PROXIMAL[model] = ProximalLoss(model)
    return loss.start_round(mu)


def training_loss_term(round_config: Mapping) -> str:
    """The loss term the round's config asks for beyond the next-word loss ("" for none)."""
    return f"{PROXIMAL_MU} = {round_config[PROXIMAL_MU]}" if float(round_config.get(PROXIMAL_MU, 0.0)) > 0 else ""


def round_learning_rate(cfg, server_round: int) -> float:
    """The devices' learning rate in a round (counted over the whole run, resumes included):
    constant, or a cosine from learning-rate in round 1 to final-learning-rate in the last."""
    if cfg.learning_rate_schedule == "constant" or cfg.num_server_rounds <= 1:
        return cfg.learning_rate
    progress = min(max(server_round - 1, 0) / (cfg.num_server_rounds - 1), 1.0)
    low, high = cfg.final_learning_rate, cfg.learning_rate
    return low + 0.5 * (high - low) * (1 + math.cos(math.pi * progress))


def compile_model(model: tf.keras.Model, learning_rate: float, epsilon: float = 1e-7, optimizer: str = "adam",
                  loss: tf.keras.losses.Loss = _NEXT_WORD) -> None:
    opt = (tf.keras.optimizers.SGD(learning_rate) if optimizer == "sgd"
           else tf.keras.optimizers.Adam(learning_rate, epsilon=epsilon))
    model.compile(optimizer=opt, loss=loss)
    model._fednextword_loss = _loss_key(loss)


def _loss_key(loss: tf.keras.losses.Loss) -> tuple:
    """What the traced train step depends on of the loss: the object, its class and its config."""
    return id(loss), type(loss), repr(sorted(loss.get_config().items()))


def fresh_optimizer(model: tf.keras.Model, learning_rate: float, epsilon: float = 1e-7, optimizer: str = "adam",
                    loss: tf.keras.losses.Loss = _NEXT_WORD) -> None:
    """Adam from its initial state. A model compiled before keeps its traced train step: its
    optimiser's step count and moments are zeroed in place, because compiling again would make
    Keras retrace (see task.device.worker_model). A different loss (object, class or config) than
    the one it was compiled with compiles again: Keras's traced step would silently keep the old one."""
    current = getattr(model, "optimizer", None)
    kind = "sgd" if isinstance(current, tf.keras.optimizers.SGD) else "adam"
    if (current is None or kind != optimizer or getattr(current, "epsilon", epsilon) != epsilon
            or getattr(model, "_fednextword_loss", None) != _loss_key(loss)):
        compile_model(model, learning_rate, epsilon, optimizer, loss)
        return
    for variable in current.variables:
        variable.assign(tf.zeros_like(variable))
    current.learning_rate.assign(learning_rate)


def train(model: tf.keras.Model, x: np.ndarray, y: np.ndarray, *, epochs: int, batch_size: int,
          learning_rate: float, max_steps: int = 0, seed: int = 0, adam_epsilon: float = 1e-7,
          optimizer: str = "adam", score: bool = True, round_config: Mapping = NO_ROUND_CONFIG) -> Metrics:
    """Train in place for `epochs` passes (capped at `max_steps` batches if > 0); `score`: also
    the accuracy on the training text afterwards (metrics_after_training). `round_config`: the
    round's config as the server's strategy sent it (training_loss reads what it needs)."""
    if len(x) == 0:
        raise ValueError("no training windows")
    fresh_optimizer(model, learning_rate, adam_epsilon, optimizer, training_loss(model, round_config))
    ds = (tf.data.Dataset.from_tensor_slices((x, y))
          .shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
          .batch(batch_size).repeat(epochs))
    if max_steps > 0:
        ds = ds.take(max_steps)
    history = model.fit(ds.prefetch(2), epochs=1, verbose=0)
    return metrics_after_training(model, x, y, batch_size, history.history["loss"][-1], score)


def evaluate(model: tf.keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int = 256,
             vocab: Vocabulary | None = None, each_batch=None) -> Metrics:
    """Token-level loss, perplexity and top-1/top-3 accuracy over the windows; with `vocab`,
    keystroke savings too. `each_batch(start, logits)` sees every batch's logits (one forward pass
    serves other scores too: task/personal.py)."""
    nll_sum = loss_count = hits1 = hits3 = scored = 0.0
    index, count = (PrefixIndex(vocab), KeystrokeCount()) if vocab is not None else (None, None)
    score = _scorer(model, x.shape[1])
    for start in range(0, len(x), batch_size):
        yb = y[start : start + batch_size]
        logits, b = score(tf.constant(x[start : start + batch_size], tf.int32), tf.constant(yb, tf.int32))
        nll_sum += float(b[0]); loss_count += float(b[1])
        hits1 += float(b[2]); hits3 += float(b[3]); scored += float(b[4])
        if count is not None:
            count.add(logits.numpy().reshape(-1, logits.shape[-1]), yb.ravel(), index)
        if each_batch is not None:
            each_batch(start, logits.numpy())
    loss = nll_sum / max(loss_count, 1.0)
    return Metrics(loss=loss, perplexity=math.exp(min(loss, 50.0)), top1=hits1 / max(scored, 1.0),
                   top3=hits3 / max(scored, 1.0), num_examples=int(scored),
                   keystroke_savings=count.savings if count is not None else None)


def target_top3(model: tf.keras.Model, x: np.ndarray, y: np.ndarray, word: int, batch_size: int = 256) -> float:
    """Share of the positions whose next word is `word` where `word` is among the top 3."""
    hits = total = 0
    for start in range(0, len(x), batch_size):
        yb = y[start : start + batch_size]
        if not (yb == word).any():
            continue
        logits = model(tf.constant(x[start : start + batch_size]), training=False)
        top3 = tf.math.top_k(shown(logits), k=3).indices.numpy()
        at = yb == word
        hits += int((top3[at] == word).any(axis=-1).sum())
        total += int(at.sum())
    return hits / total if total else 0.0


def metrics_after_training(model, x, y, batch_size, train_loss: float, score: bool = True) -> Metrics:
    """The loss the optimiser saw (a running mean over the local steps) and, with `score`, the
    accuracy on the device's own training text after training. Without it top-1/top-3 are NaN:
    that pass over the text cost half a small device's round, for metrics DP never lets leave it."""
    m = evaluate(model, x, y, batch_size=max(batch_size, 256)) if score else None
    return Metrics(loss=float(train_loss), perplexity=math.exp(min(float(train_loss), 50.0)),
                   top1=m.top1 if m else math.nan, top3=m.top3 if m else math.nan, num_examples=int(len(x)))


_SCORERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _scorer(model: tf.keras.Model, seq_len: int):
    """The forward pass and a batch's sums, traced once per model and window length (an unrolled
    LSTM needs it fixed). Run eagerly, every layer is a Python call: scoring a small model on a
    device's text cost more than training it."""
    traced = _SCORERS.setdefault(model, {})
    if seq_len not in traced:
        owner = weakref.ref(model)  # the traced function must not keep the model alive
        spec = tf.TensorSpec([None, seq_len], tf.int32)

        @tf.function(input_signature=[spec, spec])
        def score(x, y):
            logits = owner()(x, training=False)
            return logits, _batch_stats(logits, y)

        traced[seq_len] = score
    return traced[seq_len]


def _batch_stats(logits, y):
    loss_mask = tf.cast(_loss_mask(y), tf.float32)
    score_mask = tf.cast(y >= FIRST_WORD_ID, tf.float32)
    nll = tf.keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
    top3 = tf.math.top_k(shown(logits), k=3).indices
    hit = tf.cast(tf.equal(top3, y[..., None]), tf.float32)
    return (tf.reduce_sum(nll * loss_mask), tf.reduce_sum(loss_mask),
            tf.reduce_sum(hit[..., 0] * score_mask), tf.reduce_sum(tf.reduce_max(hit, -1) * score_mask),
            tf.reduce_sum(score_mask))


def shown(logits):
    """The logits of what a keyboard can suggest: special tokens never fill a suggestion slot."""
    special = tf.range(tf.shape(logits)[-1]) < FIRST_WORD_ID
    return tf.where(special, tf.constant(-1e9, logits.dtype), logits)


def _loss_mask(y_true):
    return tf.logical_and(tf.not_equal(y_true, PAD_ID), tf.not_equal(y_true, UNK_ID))

