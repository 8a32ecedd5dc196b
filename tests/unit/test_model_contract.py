"""The model contract (task/model.py) and what rests on it: the LSTM next to the Transformer, the
LiteRT export checked against Keras, a run that keeps its model when the export fails, and DP-SGD
refusing a layer it cannot clip before any device trains."""

from __future__ import annotations

import json

import numpy as np
import pytest

from task.config import Config, ModelConfig
from task.data.vocab import default_vocabulary
from task.litert import export
from task.model import build_model, check_contract

LSTM = ModelConfig(architecture="lstm", vocab_size=2000, seq_len=10, embed_dim=16, ffn_dim=32)
TRANSFORMER = ModelConfig(vocab_size=2000, seq_len=10, embed_dim=16, num_heads=2, ffn_dim=32)


@pytest.fixture(scope="module")
def lstm_export(tmp_path_factory):
    model = build_model(LSTM, seed=3)
    out = tmp_path_factory.mktemp("lstm")
    windows = export.check_windows(LSTM.seq_len, LSTM.vocab_size, count=60)
    return model, out, export.export_checked(model, default_vocabulary(2000), out, windows)


def test_both_architectures_keep_the_contract_and_a_broken_model_is_named():
    import tensorflow as tf

    for cfg in (LSTM, TRANSFORMER):
        check_contract(build_model(cfg))
    tokens = tf.keras.Input((10,), dtype="int32")
    h = tf.keras.layers.Embedding(2000, 8, name="token_embedding")(tokens)
    bare = tf.keras.Model(tokens, tf.keras.layers.Dense(2000, name="next_word_logits")(h))
    with pytest.raises(ValueError, match="no LayerNormalization layer named 'final_ln'"):
        check_contract(bare)


def test_the_lstm_trains():
    from task import train as trainer

    x = np.random.default_rng(0).integers(4, 60, (64, LSTM.seq_len)).astype(np.int32)  # a copy task
    model = build_model(LSTM)
    before = trainer.evaluate(model, x, x).loss
    trainer.train(model, x, x, epochs=6, batch_size=16, learning_rate=0.02, max_steps=0, seed=0)
    assert trainer.evaluate(model, x, x).loss < before - 1.0


def test_the_lstm_fed_only_through_its_embedding_exports_every_file_with_agreement_recorded(lstm_export):
    """(int8: tests/features/int8/.)"""
    _, out, report = lstm_export
    assert set(report) == set(export.VARIANTS)
    for variant, r in report.items():
        assert "error" not in r, r
        assert r["fit_to_ship"] and r["positions"] > 200 and r["top3_agreement"] >= export.VARIANTS[variant].bar
        assert (out / f"model-{variant}.tflite").exists()


def test_an_export_that_disagrees_with_keras_is_marked_not_fit_to_ship(tmp_path, monkeypatch):
    """A conversion that silently changes the function (here: the output layer's words shifted by
    one, as a wrong vocabulary order would) must not ship: the check compares file and Keras."""
    model = build_model(TRANSFORMER, seed=1)
    real = export.folded_output

    def shifted(m):
        kernel, bias = real(m)
        return np.roll(kernel, 1, axis=1), np.roll(bias, 1)

    monkeypatch.setattr(export, "folded_output", shifted)
    windows = export.check_windows(TRANSFORMER.seq_len, TRANSFORMER.vocab_size, count=40)
    report = export.export_checked(model, default_vocabulary(2000), tmp_path, windows, variants={"float32": export.VARIANTS["float32"]})
    r = report["float32"]
    assert not r["fit_to_ship"] and r["top3_agreement"] < 0.5
    assert r["file"].endswith("model-float32-unfit.tflite") and not (tmp_path / "model-float32.tflite").exists()


def test_an_export_that_raises_still_leaves_the_model_and_the_summary(tmp_path, monkeypatch):
    from server_app.app import finish
    from server_app.run_record import RunRecord

    def broken(*args, **kwargs):
        raise ValueError("Found unvisited input tensors that are disconnected from the outputs")

    monkeypatch.setattr(export, "export_litert", broken)
    cfg = Config(model=TRANSFORMER, out_dir=str(tmp_path))
    record = RunRecord(tmp_path / "run-1", cfg, default_vocabulary(2000))
    summary = finish(record, build_model(TRANSFORMER), record.vocab, export.check_windows(10, 2000, 20), None, [])
    assert (tmp_path / "run-1" / "final" / "model.keras").exists()
    saved = json.loads((tmp_path / "run-1" / "summary.json").read_text())
    assert saved["litert"] == {} and summary["stopped_early"] is None
    assert all("disconnected" in r["error"] and not r["fit_to_ship"] for r in saved["litert_check"].values())



def test_the_lstm_trains_on_a_device_under_user_level_dp_and_its_update_is_clipped():
    from flwr.app import ArrayRecord, ConfigRecord, RecordDict
    from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

    from client_app.app import app
    from tests.helpers import context, l2, message

    cfg = Config(model=LSTM, sentences_per_device=40, dp=Config().dp.__class__(mode="central-client-clip"))
    weights = build_model(LSTM).get_weights()
    config = ConfigRecord({"server-round": 1, KEY_CLIPPING_NORM: 0.1})
    reply = app(message(RecordDict({"arrays": ArrayRecord(weights), "config": config}), "train"),
                context(cfg, {"partition-id": 0, "num-partitions": 5}))
    assert not reply.has_error(), reply.error.reason if reply.has_error() else ""
    assert 0 < l2(reply.content["arrays"].to_numpy_ndarrays(), weights) <= 0.1 + 1e-6
