"""LiteRT export and offline suggestions, checked against the Keras model they came from."""

import subprocess
import sys

import numpy as np
import pytest

from task.config import ModelConfig
from task.data.vocab import FIRST_WORD_ID
from task.litert.export import VARIANTS, export_litert, top3_agreement
from task.litert.suggest import Suggester
from tests.helpers import trained_default_model

MODEL = ModelConfig()  # the default model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A model trained on a few builtin devices (so its ranking is not random), exported."""
    model, vocab, test_x = trained_default_model()
    paths = export_litert(model, vocab, tmp_path_factory.mktemp("litert"))
    return model, vocab, paths, test_x


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_is_written_and_runs_in_the_litert_interpreter(exported, variant):
    _, vocab, paths, _ = exported
    assert paths[variant].stat().st_size > 0
    suggestions = Suggester.from_files(paths[variant]).suggest("see you")
    assert len(suggestions) == 3 and all(s.word in vocab for s in suggestions)
    assert suggestions[0].probability >= suggestions[1].probability >= suggestions[2].probability > 0


def test_the_float16_file_is_smaller(exported):
    sizes = {v: p.stat().st_size for v, p in exported[2].items()}
    assert sizes["float16"] < 0.6 * sizes["float32"]


def test_float32_matches_keras_up_to_ties(exported):
    model, _, paths, test_x = exported
    share, ties, total = top3_agreement(model, Suggester.from_files(paths["float32"]), test_x[:100])
    assert share + ties / total == 1.0


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "task.litert.suggest", *args], capture_output=True, text=True, timeout=60
    )


def test_suggest_command_prints_the_word_the_model_ranks_first(exported):
    model, vocab, paths, _ = exported
    suggester = Suggester.from_files(paths["float32"])
    ids = suggester.context_ids("thanks for the")
    tokens = np.zeros((1, MODEL.seq_len), np.int32)
    tokens[0, : len(ids)] = ids
    logits = model(tokens, training=False).numpy()[0, len(ids) - 1]
    logits[:FIRST_WORD_ID] = -np.inf
    best = vocab.words[int(np.argmax(logits))]
    out = run_cli("--model", str(paths["float16"]), "Thanks for the")
    assert out.returncode == 0, out.stderr
    assert best in [line.split("\t")[0] for line in out.stdout.splitlines()]


@pytest.mark.parametrize(
    "text", ["", "   ", "!!! ...", "zxqv blorft", "Ça va très bien 😂 über", "word " * 500, "Thanks. ", "see you\n"]
)
def test_odd_input_gives_three_suggestions_and_no_traceback(exported, text):
    out = run_cli("--model", str(exported[2]["float16"]), text)
    assert out.returncode == 0 and "Traceback" not in out.stderr
    assert len(out.stdout.splitlines()) == 3


def test_context_is_the_current_sentence_cut_to_the_window(exported):
    suggester = Suggester.from_files(exported[2]["float16"])
    assert suggester.context_ids("") == suggester.context_ids("Great. ") == [2]  # <bos>: sentence start
    assert len(suggester.context_ids("word " * 500)) == MODEL.seq_len
    assert suggester.context_ids("zxqv")[-1] == 1  # unknown word -> <unk>


def test_missing_model_is_a_clear_error_not_a_traceback(tmp_path):
    out = run_cli("--model", str(tmp_path / "nope.tflite"), "hi")
    assert out.returncode == 2 and "LiteRT model not found" in out.stderr and "Traceback" not in out.stderr


def test_suggesting_does_not_load_tensorflow(exported):
    code = (
        "import sys; from task.litert.suggest import Suggester; "
        f"Suggester.from_files({str(exported[2]['float16'])!r}).suggest('hi'); "
        "print('tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_suggestion_edge_cases_get_clear_messages(exported, tmp_path):
    from task.data.vocab import Vocabulary

    paths = exported[2]
    suggester = Suggester.from_files(paths["float32"])
    with pytest.raises(ValueError, match="k = -1: ask for at least one suggestion"):
        suggester.suggest("see you", k=-1)
    small = tmp_path / "vocab.json"
    Vocabulary(suggester.vocab.words[:100]).save(small)
    with pytest.raises(ValueError, match=r"predicts \d+ words but the vocabulary has 100"):
        Suggester.from_files(paths["float32"], small)


def test_exporting_leaves_the_apps_logging_as_it_was(tmp_path):
    """absl, inside the converter, adds a root handler on first use: every later line of the
    ServerApp, its run summary included, was then printed twice. Outside pytest, whose own
    handlers hide this."""
    code = ("import logging; from pathlib import Path; from task.config import ModelConfig; "
            "from task.model import build_model; from task.data.vocab import default_vocabulary; "
            "from task.litert.export import VARIANTS, export_litert; "
            "m = ModelConfig(vocab_size=2000, seq_len=10, embed_dim=16, num_heads=2, ffn_dim=32); "
            f"export_litert(build_model(m), default_vocabulary(2000), Path({str(tmp_path)!r}), "
            "{'float32': VARIANTS['float32']}); "
            "print('root handlers', len(logging.getLogger().handlers))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "root handlers 0" in out.stdout


MY_TEXT = "I met Zorblax at the harbour today. Zorblax says hi.\n" * 12  # a name the vocabulary lacks


def test_the_users_own_words_are_suggested_from_their_folder_and_kept_between_sessions(exported, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text(MY_TEXT)
    counts = tmp_path / "my-words.json"
    assert "zorblax" not in exported[1]
    model = str(exported[2]["float16"])
    plain = run_cli("--model", model, "I met")
    assert "zorblax" not in plain.stdout
    first = run_cli("--model", model, "--my-text", str(tmp_path / "mine"), "--counts", str(counts), "I met")
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[0].split("\t")[0] == "zorblax"  # typed 12 times after "met"
    saved = counts.read_text()
    again = run_cli("--model", model, "--counts", str(counts), "I met")  # next session, no folder given
    assert again.stdout == first.stdout
    reread = run_cli("--model", model, "--my-text", str(tmp_path / "mine"), "--counts", str(counts), "I met")
    assert reread.returncode == 0 and counts.read_text() == saved  # a folder read before adds nothing
    assert "harbour" in saved and str(tmp_path / "mine" / "notes.txt") in saved


def test_a_bad_counts_file_or_mix_is_a_clear_error_and_is_left_alone(exported, tmp_path):
    counts = tmp_path / "my-words.json"
    counts.write_text("{not json")
    model = str(exported[2]["float16"])
    out = run_cli("--model", model, "--counts", str(counts), "hi")
    assert out.returncode == 2 and str(counts) in out.stderr and "Traceback" not in out.stderr
    assert counts.read_text() == "{not json"
    out = run_cli("--model", model, "--counts", str(tmp_path / "new.json"), "--mix", "2,3", "hi")
    assert out.returncode == 2 and "--mix" in out.stderr and "KAPPA2,MU,KAPPA3" in out.stderr


def test_interactive_mode_updates_the_suggestions_as_the_user_types_and_learns_their_new_words(exported, tmp_path):
    """A real terminal (a pty): typing a prefix narrows the suggestions, Tab takes the first, and a
    word first typed in this session is suggested once its line is entered."""
    import os
    import pty
    import time

    counts = tmp_path / "my-words.json"
    pid, fd = pty.fork()
    if pid == 0:  # the child: the CLI on the pty
        os.execv(sys.executable, [sys.executable, "-m", "task.litert.suggest", "--model", str(exported[2]["float16"]),
                                  "--counts", str(counts), "--interactive"])
    seen = b""

    def until(text: bytes, deadline: float = 120) -> bytes:
        nonlocal seen
        end = time.monotonic() + deadline
        while text not in seen:
            assert time.monotonic() < end, f"no {text!r} in {seen[-600:]!r}"
            try:
                seen += os.read(fd, 4096)
            except OSError:
                break
        return seen

    try:
        until(b"Ctrl-D quits")
        for line in ["I met Quorbly today.", "Quorbly waved."] * 4:
            os.write(fd, line.encode() + b"\r")
        until(b"> Quorbly waved.")
        os.write(fd, b"I met q")  # the word being typed: only words beginning with it
        screen = until(b"> I met q").rsplit(b"\r", 1)[-1]
        assert b"quorbly" in screen.split(b"]")[0], screen
        os.write(fd, b"\t")
        until(b"> I met quorbly ")
        os.write(fd, b"\x04")
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    finally:
        os.close(fd)
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
    assert '"quorbly": 9' in counts.read_text()  # 8 lines and the accepted suggestion, saved at exit
