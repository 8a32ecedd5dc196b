"""Bad device text: a clear message, nothing lost, never a crash."""

import os

import pytest

from task.config import Config
from task.data import files
from task.data.device_text import load_device_text
from task.data.files import DataError
from task.data.partition import load_shakespeare, shakespeare_units
from tests.helpers import SMALL_MODEL

GOOD = "Meet me at the station. See you soon. Bring the umbrella."


def words_of(dev):
    return {w for s in dev.train + dev.test for w in s}


def test_non_utf8_bytes_are_replaced_and_said_once(tmp_path):
    (tmp_path / "latin1.txt").write_bytes(("caf\xe9 time. " * 50 + "ni\xf1o here. ").encode("latin-1"))
    dev = load_device_text(Config(), data_path=str(tmp_path))
    assert "time" in words_of(dev)
    assert len([n for n in dev.notes if "not UTF-8" in n]) == 1


def test_binary_files_are_skipped_with_a_note(tmp_path):
    (tmp_path / "notes.txt").write_text(GOOD)
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8\xff\x00\x00JFIF binary data. more binary.")
    dev = load_device_text(Config(), data_path=str(tmp_path))
    assert "jfif" not in words_of(dev) and "station" in words_of(dev)
    assert any("photo.jpg: skipped, binary" in n for n in dev.notes)


def test_a_single_huge_line_is_streamed_in_chunks(tmp_path):
    big = tmp_path / "one-line.txt"
    with open(big, "w") as f:  # about 50 MB, one line, no sentence ends
        f.write(("word " * 200_000 + " ") * 50)
    dev = load_device_text(Config(max_sentences=20), data_path=str(big))
    assert len(dev.train) + len(dev.test) == 20
    assert all(len(s) <= files.CHUNK_CHARS // 2 for s in dev.train + dev.test)  # cut at chunk size


def test_max_sentences_stops_reading(tmp_path, monkeypatch):
    (tmp_path / "a.txt").write_text("first sentence here. " * 100)
    (tmp_path / "b.txt").write_text("never read. " * 100)
    opened = []
    real_open = files._open
    monkeypatch.setattr(files, "_open", lambda p: opened.append(p.name) or real_open(p))
    dev = load_device_text(Config(max_sentences=50), data_path=str(tmp_path))
    assert len(dev.train) + len(dev.test) == 50 and opened == ["a.txt"]


def test_a_device_with_huge_text_reads_a_bounded_amount_by_default_and_says_so(tmp_path, monkeypatch):
    """30 MB of text once meant 739k windows, 23k steps per epoch and a round past round-timeout."""
    import logging

    from task import device

    (tmp_path / "huge.txt").write_text("the keyboard learns from this text every day. " * 650_000)  # ~30 MB
    read = []
    real_read = files._read
    monkeypatch.setattr(files, "_read", lambda f, p, n: read.append(len(chunk := real_read(f, p, n))) or chunk)
    cfg = Config()
    dev = load_device_text(cfg, data_path=str(tmp_path))
    assert len(dev.sentences) == cfg.max_sentences > 0
    assert sum(read) <= 4 * files.CHUNK_CHARS  # a few MiB of the 30, not all of it
    assert any("first 20000 sentences" in n and "data.max-sentences" in n and str(tmp_path) in n for n in dev.notes)

    warnings = []
    monkeypatch.setattr(device.log, "warning", lambda msg, *args: warnings.append(msg % args))
    small = Config(max_local_steps=3, batch_size=8, model=SMALL_MODEL)
    text = load_device_text(small, data_path=str(tmp_path))
    from task.model import build_model

    device.train_round(small, text, build_model(small.model).get_weights(), server_round=1)
    assert len(warnings) == 1 and "trains 3 of its" in warnings[0] and str(tmp_path) in warnings[0]
    assert logging.getLogger("task.device") is device.log


@pytest.mark.parametrize("error", [FileNotFoundError(2, "No such file or directory"),
                                   PermissionError(13, "Permission denied")])
def test_a_file_that_vanishes_or_cannot_be_opened_is_skipped(tmp_path, monkeypatch, error):
    # (as root, chmod 000 does not stop reading, so the failing open is simulated)
    (tmp_path / "good.txt").write_text(GOOD)
    (tmp_path / "bad.txt").write_text("secret. words.")
    real_open = files._open

    def failing_open(path):
        if path.name == "bad.txt":
            raise error
        return real_open(path)

    monkeypatch.setattr(files, "_open", failing_open)
    dev = load_device_text(Config(), data_path=str(tmp_path))
    assert "station" in words_of(dev) and "secret" not in words_of(dev)
    assert any("bad.txt: skipped, cannot open" in n and error.strerror in n for n in dev.notes)


def test_a_file_failing_mid_read_keeps_what_was_read(tmp_path, monkeypatch):
    (tmp_path / "flaky.txt").write_text(GOOD)

    class Flaky:
        def __init__(self, path):
            self.f = open(path, "rb")
            self.calls = 0

        def read(self, n):
            self.calls += 1
            if self.calls > 2:
                raise OSError(5, "Input/output error")
            return self.f.read(n)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(files, "CHUNK_CHARS", 20)
    monkeypatch.setattr(files, "_open", Flaky)
    dev = load_device_text(Config(), data_path=str(tmp_path / "flaky.txt"))
    assert "meet" in words_of(dev)
    assert any("failed mid-way" in n for n in dev.notes)


def test_symlink_loops_are_not_followed(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "t.txt").write_text(GOOD)
    os.symlink(tmp_path, tmp_path / "sub" / "loop")
    dev = load_device_text(Config(), data_path=str(tmp_path))
    assert "station" in words_of(dev)


def test_whitespace_only_text_is_reported_not_trained_on(tmp_path):
    (tmp_path / "blank.txt").write_text("  \n\t\n   ")
    with pytest.raises(DataError, match="0 sentence"):
        load_device_text(Config(), data_path=str(tmp_path))


def test_shakespeare_users_are_rebuilt_from_overlapping_windows():
    import datasets
    text = "To be, or not to be. That is the question. Whether tis nobler in the mind."
    w = 10
    rows = [{"character_id": "HAMLET", "x": text[i : i + w], "y": text[i + w]} for i in range(len(text) - w)]
    rows.append({"character_id": "OPHELIA", "x": "Good my lo", "y": "r"})
    units = dict(shakespeare_units(datasets.Dataset.from_list(rows)))
    assert units["HAMLET"] == [["to", "be", "or", "not", "to", "be"], ["that", "is", "the", "question"],
                               ["whether", "tis", "nobler", "in", "the", "mind"]]
    assert units["OPHELIA"] == [["good", "my", "lor"]]


def test_shakespeare_offline_fails_fast_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no network call is made by this test
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # and no cached copy
    with pytest.raises(DataError, match="needs the network") as err:
        load_shakespeare()
    assert "data.source='text-dir'" in str(err.value)


# --- corpus sources (simulated devices dealt a shared corpus) ------------------------------------
def corpus_device(tmp_path, source: str, path, devices: int = 3, partitioner: str = "iid"):
    cfg = Config(data_source=source, data_path=str(path), partitioner=partitioner)
    return load_device_text(cfg, partition_id=0, num_partitions=devices)


def test_a_binary_single_file_corpus_is_refused_not_trained_on(tmp_path):
    binary = tmp_path / "program"
    binary.write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 40 + b" b b b. 8a 0a. " * 50)
    with pytest.raises(DataError, match="binary file, not text") as caught:
        corpus_device(tmp_path, "corpus", binary)
    assert caught.value.reason == "corpus is a binary file"


def test_a_single_file_corpus_with_bad_utf8_says_so(tmp_path):
    corpus = tmp_path / "latin1.txt"
    corpus.write_bytes(("caf\xe9 time is good. " * 40).encode("latin-1"))
    dev = corpus_device(tmp_path, "corpus", corpus)
    assert len([n for n in dev.notes if "not UTF-8" in n]) == 1


def test_a_one_line_corpus_is_one_clear_error_not_an_index_error(tmp_path):
    corpus = tmp_path / "one.txt"
    corpus.write_text("just one sentence here.")
    with pytest.raises(DataError, match=r"1 sentence\(s\) for 3 devices"):
        corpus_device(tmp_path, "corpus", corpus)


def test_a_missing_text_dir_is_said_to_be_missing(tmp_path):
    with pytest.raises(DataError, match="no such file or directory") as caught:
        corpus_device(tmp_path, "text-dir", tmp_path / "nowhere")
    assert caught.value.reason == "data-path does not exist"


# --- run edges ---------------------------------------------------------------------------------------
def test_more_devices_required_than_exist_is_refused_not_waited_for_forever():
    from scripts.run_simulation import check_run_config
    from server_app.strategy import population_and_sample
    from task.config import ConfigError

    assert "more than the 3 simulated devices" in check_run_config("min-available-nodes=5", devices=3)

    class ThreeNodes:
        def get_node_ids(self):
            return [1, 2, 3]

    cfg = Config.from_run_config({"min-available-nodes": 5, "round-timeout": 1.0})  # no DP: checked too
    with pytest.raises(ConfigError, match="'min-available-nodes' = 5: only 3 device"):
        population_and_sample(ThreeNodes(), cfg)


@pytest.mark.parametrize("script", ["benchmark_litert.py", "train_centralised.py", "benchmark_dpsgd.py"])
def test_help_does_not_import_tensorflow(script):
    import subprocess
    import sys

    code = (f"import runpy, sys; sys.argv = ['{script}', '--help']\n"
            f"try:\n    runpy.run_path('scripts/benchmarks/{script}', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().endswith("False"), out.stdout + out.stderr



def test_a_flwr_home_that_would_be_packed_into_the_app_bundle_is_refused():
    from scripts.local_superlink import ROOT, bundle_problem

    assert bundle_problem(ROOT / ".flwr") is None  # Flower's own default: excluded
    assert bundle_problem(ROOT / "runs" / "flwr-home") is None  # git-ignored
    assert bundle_problem(ROOT.parent / "elsewhere") is None  # outside the app
    problem = bundle_problem(ROOT / "my-flower-home")
    assert problem and "add 'my-flower-home/' to .gitignore" in problem


def test_a_half_created_state_database_is_set_aside_and_the_superlink_starts(tmp_path):
    import sqlite3

    from scripts.local_flower import flower_env, start_local_superlink, stop_local_superlink

    home = tmp_path / "flwr" / "local-superlink"
    home.mkdir(parents=True)
    with sqlite3.connect(home / "state.db") as db:  # tables without Flower's migration stamp
        db.execute("CREATE TABLE task (id INTEGER)")
    env = flower_env(tmp_path / "flwr", 39891, 39893)
    try:
        start_local_superlink(env)  # raises unless it answers
    finally:
        assert stop_local_superlink(env)
    assert len(list(home.glob("state.db.broken-*"))) == 1


def test_a_run_that_never_starts_running_is_stopped_and_reported(tmp_path, monkeypatch):
    """A busy machine once left a run in `starting` for 17 minutes; the runner now gives up."""
    import psutil

    from scripts import local_flower

    fake = tmp_path / "flwr"  # `flwr run` that submits and then says nothing; `flwr stop` that records it
    fake.write_text("#!/bin/sh\nif [ \"$1\" = stop ]; then echo stopped \"$2\" >> " + str(tmp_path / "stops")
                    + "; exit 0; fi\necho $$ > " + str(tmp_path / "pid") + "\necho 'Successfully started run 4242'\n"
                    + "exec sleep 300\n")
    fake.chmod(0o755)
    monkeypatch.setattr(local_flower, "VENV_BIN", tmp_path)
    outcome = local_flower.run_app(dict(os.environ), echo=False, start_timeout=2, timeout=60)
    assert outcome.run_id == 4242 and outcome.status == "stopped:not running 2 s after it was submitted"
    assert (tmp_path / "stops").read_text().split() == ["stopped", "4242"]
    pid = int((tmp_path / "pid").read_text())  # the fake `flwr run`, now `sleep`: stopped, not left behind
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_a_device_reads_its_text_once_per_process_while_its_files_are_unchanged(tmp_path, monkeypatch):
    from task.data.device_text import cached_device_text

    (tmp_path / "a.txt").write_bytes("caf\xe9 one. two sentences here. three.".encode("latin-1"))
    first = cached_device_text(Config(), data_path=str(tmp_path))
    assert first.notes  # the bad byte, said on the first read

    def never(path):
        raise AssertionError(f"{path} was read again")

    monkeypatch.setattr(files, "_open", never)
    again = cached_device_text(Config(), data_path=str(tmp_path))
    assert (again.train, again.test) == (first.train, first.test) and again.notes == []  # not said again
    monkeypatch.undo()
    (tmp_path / "a.txt").write_text("A new text here. And more of it. Yes.")
    changed = cached_device_text(Config(), data_path=str(tmp_path))
    assert changed.sentences != first.sentences and ["yes"] in changed.sentences
