"""The int8 LiteRT file (features/int8/): the size a phone keyboard can ship, the same suggestions
as the Keras model, per-word rounding, and both architectures of the model contract."""

import subprocess
import sys

import numpy as np
import pytest

from features.int8.export import INT8
from features.int8.quantize import WordRows
from task.config import Config, ModelConfig
from task.data.vocab import default_vocabulary
from task.litert import export
from task.litert.suggest import Suggester
from task.model import build_model
from tests.helpers import trained_default_model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The default model, briefly trained, exported. Its ~3,000 positions of unseen users give the
    int8 share below a standard error of 0.15% (0.35% on the ~1,000 of held-out text alone)."""
    model, vocab, test_x = trained_default_model()
    paths = export.export_litert(model, vocab, tmp_path_factory.mktemp("litert"), {**export.VARIANTS, **INT8})
    return model, vocab, paths, test_x


def test_the_int8_file_is_the_smallest_and_within_the_phone_keyboard_budget(exported):
    sizes = {v: p.stat().st_size for v, p in exported[2].items()}
    assert sizes["int8"] < sizes["float16"] < sizes["float32"]
    assert sizes["int8"] <= 1.5e6  # the phone-keyboard budget for the default model


def test_int8_top3_agrees_with_keras_on_99_percent_of_positions(exported):
    model, _, paths, test_x = exported
    share, _, total = export.top3_agreement(model, Suggester.from_files(paths["int8"]), test_x[:400])
    assert total > 2500
    assert share >= 0.99


def test_the_suggestion_cli_runs_the_int8_file(exported):
    out = subprocess.run([sys.executable, "-m", "task.litert.suggest", "--model", str(exported[2]["int8"]),
                          "Thanks for the"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 3


def test_per_word_quantisation_rounds_each_row_within_half_a_step():
    rng = np.random.default_rng(0)
    matrix = rng.normal(0, 0.05, (300, 16)) * rng.uniform(0.1, 3, (300, 1))  # rows of very different size
    rows = WordRows(matrix.astype(np.float32), frequent=20)
    back = rows.table(runtime_zero=0).numpy()
    step = rows.step_factors[0] * rows.step_factors[1] * rows.scales.numpy().astype(np.float64)
    assert np.all(np.abs(back - matrix) <= step[:, None] / 2 + 1e-7)
    assert rows.high.dtype == np.int16 and rows.low.dtype == np.int8
    # a row's scale is its own: the smallest rows are rounded far finer than one table-wide scale
    assert np.abs(back - matrix)[np.argmin(np.abs(matrix).max(1))].max() < np.abs(matrix).max() / 127 / 4
    assert np.allclose(rows.rows(np.array([[3, 250]])).numpy()[0], back[[3, 250]])


def test_the_lstm_fed_only_through_its_embedding_exports_an_int8_file_fit_to_ship(tmp_path):
    """A Transformer's trunk also reads the token ids (positions); an LSTM's does not, and Keras
    refuses an input nothing uses: the int8 function builds either."""
    lstm = ModelConfig(architecture="lstm", vocab_size=2000, seq_len=10, embed_dim=16, ffn_dim=32)
    windows = export.check_windows(lstm.seq_len, lstm.vocab_size, count=60)
    report = export.export_checked(build_model(lstm, seed=3), default_vocabulary(2000), tmp_path, windows, INT8)
    r = report["int8"]
    assert "error" not in r, r
    assert r["fit_to_ship"] and r["positions"] > 200 and r["top3_agreement"] >= INT8["int8"].bar
    assert (tmp_path / "model-int8.tflite").exists()


def test_a_run_exports_int8_only_when_asked():
    from server_app.app import _litert_variants

    assert set(_litert_variants(Config())) == {"float32", "float16"}
    assert set(_litert_variants(Config().with_run_config({"int8.enabled": True}))) == {"float32", "float16", "int8"}
