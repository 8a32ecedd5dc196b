"""One federated round on one device, as plain functions of (config, text, weights).

The ClientApp calls these; so can a test or a script, without Flower.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import lru_cache

import numpy as np
import tensorflow as tf

import task  # noqa: F401  (selects tf-keras before TensorFlow resolves tf.keras)
from task import train as trainer
from task.baseline import ngram_baseline
from task.config import Config, ModelConfig
from task.data.device_text import DeviceText, make_windows
from task.data.files import DataError
from task.data.vocab import FIRST_WORD_ID, UNK_ID, Vocabulary, run_vocabulary, vocabulary_rows
from task.keystrokes import PrefixIndex
from task.model import build_model
from task.personal import (MAX_VALIDATION_SENTENCES, OFF, VALIDATION_FRACTION, PersonalCounts, PersonalScore,
                           PointScorer, Tally, choose, tally)
from task.privacy import DP_WEIGHT

Weights = list[np.ndarray]
# (cfg, model, x, y, *, name, server_round, score) -> (metrics, extra metrics): trains the model in place
Fit = Callable[..., tuple[trainer.Metrics, dict]]
log = logging.getLogger(__name__)


def train_round(cfg: Config, text: DeviceText, weights: Weights, server_round: int,
                added: tuple[str, ...] = (), fit: Fit | None = None,
                round_config: Mapping = trainer.NO_ROUND_CONFIG) -> tuple[Weights, dict]:
    """Train the received global model on the device's training text; new weights + metrics.
    `added`: the words the run's discoveries appended to the vocabulary (the model has their rows);
    `fit`: another way to train (DP-SGD's: features/dp_mechanisms/dpsgd.py); `round_config`: the
    round's config as the server's strategy sent it, for task.train (e.g. FedProx's proximal-mu)."""
    if cfg.dp.sgd and fit is None:  # the ledger would count DP-SGD steps that never ran
        raise ValueError("dp.sgd = true needs DP-SGD's fit (features/dp_mechanisms/dpsgd.py: dpsgd_fit)")
    if fit and trainer.training_loss_term(round_config):  # DP-SGD clips the next-word loss's gradients only
        raise ValueError(f"DP-SGD cannot add the round's loss term ({trainer.training_loss_term(round_config)})")
    vocab = run_vocabulary(cfg.model.vocab_size, added)
    x, y = _windows(cfg, vocab, text.train, text.name, "training")
    model = _model(cfg, vocab, weights)
    # Scores on its own training text leave the device only without DP (or with
    # dp.report-train-metrics): task.privacy.mechanisms.released_train_metrics. Else not computed.
    score = not cfg.dp.enabled or cfg.dp.report_train_metrics
    if fit:  # DP-SGD
        m, extra = fit(cfg, model, x, y, name=text.name, server_round=server_round, score=score)
    else:  # local epochs of minibatch training, capped at max-local-steps
        wanted = cfg.local_epochs * math.ceil(len(x) / cfg.batch_size)
        if cfg.max_local_steps and wanted > cfg.max_local_steps:
            log.warning("%s: trains %d of its %d steps this round (max-local-steps = %d), so the round fits "
                        "round-timeout", text.name, cfg.max_local_steps, wanted, cfg.max_local_steps)
        seed = cfg.seed * 100_003 + server_round  # shuffling of plain training only; never privacy
        m, extra = trainer.train(model, x, y, epochs=cfg.local_epochs, batch_size=cfg.batch_size,
                                 learning_rate=trainer.round_learning_rate(cfg, server_round),
                                 max_steps=cfg.max_local_steps, seed=seed, adam_epsilon=cfg.adam_epsilon,
                                 optimizer=cfg.client_optimizer, score=score, round_config=round_config), {}
    # Under DP every device counts once in the average (dp-weight), so one device's influence, and
    # so the sensitivity the noise is calibrated to, is bounded; the server enforces it. What of
    # these metrics leaves the device under DP: task.privacy.mechanisms.released_train_metrics.
    scores = {"top1": m.top1, "top3": m.top3} if score else {}
    return model.get_weights(), {"loss": m.loss, **scores, "num-examples": m.num_examples, DP_WEIGHT: 1, **extra}


def evaluate_round(cfg: Config, text: DeviceText, weights: Weights, added: tuple[str, ...] = (),
                   personal: bool = True) -> dict:
    """Score the received global model on the device's held-out text, next to local baselines and
    to the keyboard this device would ship: the model alone, or mixed with the user's own counts at
    the point the device chose on its own training text (task/personal.py).
    `personal=False`: the shared model's scores only, nothing fit on the training text (under DP)."""
    if not personal:
        return _shared_scores(cfg, text, weights, added)
    vocab = run_vocabulary(cfg.model.vocab_size, added)
    # the personal dictionary: the words of the user's own training text that the vocabulary lacks
    # get ids of their own; every other id means what it means to the model, so the model's windows
    # are these with the new ids read as <unk>
    own = vocab.extended(sorted({w for s in text.train for w in s if w not in vocab}))
    own_x, own_y = make_windows(text.train, own, cfg.model.seq_len)
    test_x, test_y = _windows(cfg, own, text.test, text.name, "test")
    x, y = (np.where(a >= len(vocab), UNK_ID, a) for a in (test_x, test_y))
    model = _model(cfg, vocab, weights)
    point = _choose_point(cfg, text, own, len(vocab), model)
    scorer = PointScorer(point, PersonalCounts.from_windows(own_x, own_y, len(own)), PrefixIndex(own), len(vocab)) \
        if point is not OFF else None
    m = trainer.evaluate(model, x, y, vocab=vocab, each_batch=scorer and (lambda start, logits: scorer.add(
        test_x[start : start + len(logits)], test_y[start : start + len(logits)], logits)))
    if m.num_examples == 0:
        raise DataError(f"{text.name}: its test text has no in-vocabulary word to score", reason="too little text")
    train_x, train_y = (np.where(a >= len(vocab), UNK_ID, a) for a in (own_x, own_y))
    baseline = ngram_baseline(train_x, train_y, x, y, vocab)
    typed = int(np.count_nonzero((test_y >= FIRST_WORD_ID) | (test_y == UNK_ID)))  # every word typed next
    every_word = m.top3 * m.num_examples / max(typed, 1)  # the shared model never suggests the rest
    personal = scorer.result() if scorer else PersonalScore(OFF, m.top1, m.top3, m.keystroke_savings, every_word)
    return {"loss": m.loss, "top1": m.top1, "top3": m.top3, "keystroke-savings": m.keystroke_savings,
            "num-examples": m.num_examples, DP_WEIGHT: 1, "all-top3": every_word,
            **{f"baseline-{k.replace('_', '-')}": v for k, v in baseline.items()}, **personal.as_metrics()}


def _choose_point(cfg: Config, text: DeviceText, own: Vocabulary, model_words: int, model) -> tuple | None:
    """The device's own choice (task/personal.py): counts of its earlier training sentences, the
    candidates scored on its later ones with the received model; never the held-out text."""
    n = min(max(round(len(text.train) * VALIDATION_FRACTION), 1), MAX_VALIDATION_SENTENCES, len(text.train) - 1)
    if n < 1:
        return OFF  # one training sentence: nothing to choose on
    early_x, early_y = make_windows(text.train[:-n], own, cfg.model.seq_len)
    val_x, val_y = make_windows(text.train[-n:], own, cfg.model.seq_len)
    if not len(val_x):
        return OFF
    counts = PersonalCounts.from_windows(early_x, early_y, len(own))
    votes = Tally.empty()
    mx, my = (np.where(a >= model_words, UNK_ID, a) for a in (val_x, val_y))
    trainer.evaluate(model, mx, my, each_batch=lambda start, logits: votes.add(tally(
        counts, val_x[start : start + len(logits)], val_y[start : start + len(logits)], logits, model_words)))
    return choose(votes)


def _shared_scores(cfg: Config, text: DeviceText, weights: Weights, added: tuple[str, ...]) -> dict:
    """The shared model on the held-out text, and its top-3 over every word typed: functions of the
    model and the held-out text alone."""
    vocab = run_vocabulary(cfg.model.vocab_size, added)
    x, y = _windows(cfg, vocab, text.test, text.name, "test")
    m = trainer.evaluate(_model(cfg, vocab, weights), x, y, vocab=vocab)
    if m.num_examples == 0:
        raise DataError(f"{text.name}: its test text has no in-vocabulary word to score", reason="too little text")
    typed = int(np.count_nonzero((y >= FIRST_WORD_ID) | (y == UNK_ID)))  # words the user typed next, unknown ones too
    return {"loss": m.loss, "top1": m.top1, "top3": m.top3, "keystroke-savings": m.keystroke_savings,
            "num-examples": m.num_examples, DP_WEIGHT: 1, "all-top3": m.top3 * m.num_examples / max(typed, 1)}


def _windows(cfg: Config, vocab: Vocabulary, sentences, name: str, part: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = make_windows(sentences, vocab, cfg.model.seq_len)
    if len(x) == 0:
        raise DataError(f"{name}: too little {part} text to make one example", reason="too little text")
    return x, y


def _model(cfg: Config, vocab: Vocabulary, weights: Weights) -> tf.keras.Model:
    if vocabulary_rows(weights) != len(vocab):
        raise DataError(f"the received model has {vocabulary_rows(weights)} word rows and the run's vocabulary "
                        f"{len(vocab)} words", reason="model and vocabulary disagree")
    model = worker_model(replace(cfg.model, vocab_size=len(vocab)))
    model.set_weights(weights)  # every weight, so nothing of the previous device survives
    return model


@lru_cache(maxsize=1)
def worker_model(model_cfg: ModelConfig) -> tf.keras.Model:
    """One model per process, reused for every device and round it plays.

    A simulation worker plays many devices in turn; a model built per message made Keras trace its
    train step per message (1.2-1.8 s, more than a default round's training). The weights are
    overwritten and the optimiser reset on every use (task.train.fresh_optimizer), so a device
    trains exactly as it would on a new model.
    """
    return build_model(model_cfg)
