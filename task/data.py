"""Each device's text: where it comes from, its train/test split, and training windows.

Where a device's text comes from:
- a real device: every readable text file under its node-config `data-path`;
- simulation: `data-source` "builtin" (a synthetic persona per partition id, task.corpus), or a
  corpus ("text-dir", "corpus", "shakespeare") dealt to devices by task.partition.

Reading is streamed: files are read in 1 MiB chunks and cut into sentences as they go, so a
device with huge text never holds it whole, and `max-sentences` caps what is read at all.
Unusable files are skipped and the reason is kept in `DeviceText.notes` (said once per file):
binary files, unreadable or vanished files; bytes that are not UTF-8 are replaced.

Each device holds out `test-fraction` of its sentences for evaluation, chosen from (seed,
sentence index) alone, so it is deterministic and needs no second pass over the text.

Training examples are next-word targets at every position of a sentence window:
x = <bos> w1 .. w(T-1), y = w1 .. wT (<eos> at the end), padded with <pad> on the right.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from task import corpus
from task.config import Config
from task.text import SENTENCE_ENDS, split_sentences
from task.vocab import PAD_ID, Vocabulary

Sentences = list[list[str]]
CHUNK_CHARS = 1 << 20  # read this much text at a time


class DataError(ValueError):
    """A device's text cannot be used. The message names the device, its files and the problem,
    for the device's own log; `reason` is a category without names or paths, the only part
    that may leave the device."""

    def __init__(self, message: str, reason: str = "unusable text"):
        super().__init__(message)
        self.reason = reason


@dataclass
class DeviceText:
    name: str
    sentences: Sentences  # all of it, in order
    train: Sentences
    test: Sentences
    notes: list[str] = field(default_factory=list)  # files skipped or repaired, and why


def load_device_text(cfg: Config, *, partition_id: int = 0, num_partitions: int = 1,
                     data_path: str | None = None) -> DeviceText:
    """The text of one device: its own `data_path` if given, else its simulated partition."""
    notes: list[str] = []
    if data_path:
        name = f"device data-path={data_path}"
        sentences = read_sentences(Path(data_path), notes, cfg.max_sentences)
    else:
        if not 0 <= partition_id < num_partitions:
            raise DataError(f"partition-id {partition_id} is outside [0, {num_partitions})",
                            reason="bad partition-id")
        if cfg.data_source == "builtin":
            where = f"persona {partition_id}"
            sentences = [s for line in corpus.device_sentences(partition_id, cfg.sentences_per_device, cfg.seed)
                         for s in split_sentences(line)]
        else:
            from task.partition import partition_sentences  # Flower Datasets: only for corpora

            where, sentences = partition_sentences(cfg, partition_id, num_partitions, notes)
        name = f"partition {partition_id}/{num_partitions} of data-source={cfg.data_source} ({where})"
        if cfg.max_sentences:
            sentences = sentences[: cfg.max_sentences]
    if len(sentences) < 2:
        raise DataError(f"{name}: {len(sentences)} sentence(s) of text; need at least 2 "
                        "(one to train on, one to evaluate on)" + (f" [{'; '.join(notes)}]" if notes else ""),
                        reason="too little text" + (f" ({len(notes)} file(s) skipped or repaired)" if notes else ""))
    train, test = split_train_test(sentences, cfg.test_fraction, seed=cfg.seed)
    return DeviceText(name, sentences, train, test, notes)


def split_train_test(sentences: Sentences, test_fraction: float, seed: int) -> tuple[Sentences, Sentences]:
    """Hold out `test_fraction` of the sentences, spread evenly (in any prefix the share is
    exact to one sentence), from a seeded offset; at least one sentence on each side."""
    u = random.Random(f"split:{seed}").random()
    is_test = [math.floor((i + 1) * test_fraction + u) > math.floor(i * test_fraction + u)
               for i in range(len(sentences))]
    if not any(is_test):
        is_test[-1] = True
    if all(is_test):
        is_test[0] = False
    return ([s for s, t in zip(sentences, is_test) if not t], [s for s, t in zip(sentences, is_test) if t])


def make_windows(sentences: Sentences, vocab: Vocabulary, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) int32 arrays of shape [N, seq_len]; long sentences are cut into several windows."""
    xs, ys = [], []
    for sentence in sentences:
        ids = vocab.encode_sentence(sentence)
        for start in range(0, len(ids) - 1, seq_len):
            piece = ids[start : start + seq_len + 1]
            x = np.full(seq_len, PAD_ID, np.int32)
            y = np.full(seq_len, PAD_ID, np.int32)
            x[: len(piece) - 1] = piece[:-1]
            y[: len(piece) - 1] = piece[1:]
            xs.append(x)
            ys.append(y)
    if not xs:
        return np.zeros((0, seq_len), np.int32), np.zeros((0, seq_len), np.int32)
    return np.stack(xs), np.stack(ys)


def text_files(path: Path) -> list[Path]:
    """`path` itself, or every regular file below it (sorted; symlinked folders not followed)."""
    if not path.exists():
        raise DataError(f"{path}: no such file or directory", reason="data-path does not exist")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file())
    if not files:
        raise DataError(f"{path}: directory holds no files", reason="data-path holds no files")
    return files


def read_sentences(path: Path, notes: list[str], max_sentences: int = 0) -> Sentences:
    """The tokenised sentences of every usable file under `path`, streamed, up to the cap."""
    sentences: Sentences = []
    for file in text_files(path):
        for sentence in iter_file_sentences(file, notes):
            sentences.append(sentence)
            if max_sentences and len(sentences) >= max_sentences:
                return sentences
    return sentences


def iter_file_sentences(path: Path, notes: list[str]) -> Iterator[list[str]]:
    """Sentences of one file, read in chunks. Problems are noted once and the file skipped
    (binary, unreadable) or kept as far as it was read (vanished or failing mid-way)."""
    try:
        f = _open(path)
    except OSError as e:
        notes.append(f"{path}: skipped, cannot open ({e.strerror or e})")
        return
    with f:
        first = _read(f, path, notes)
        if b"\x00" in first[:8192]:
            notes.append(f"{path}: skipped, binary file")
            return
        decoder = _Utf8Decoder(path, notes)
        tail, chunk = "", first
        while chunk:
            text = tail + decoder.decode(chunk)
            cut = _last_boundary(text)
            if cut < 0 and len(text) > CHUNK_CHARS:  # a huge line without sentence ends
                cut = text.rfind(" ") if " " in text else len(text) - 1
            yield from split_sentences(text[: cut + 1])
            tail = text[cut + 1 :]
            chunk = _read(f, path, notes)
        yield from split_sentences(tail + decoder.decode(b"", final=True))


def _read(f, path: Path, notes: list[str]) -> bytes:
    try:
        return f.read(CHUNK_CHARS)
    except OSError as e:  # e.g. a file on a failing card, or removed from a network share
        notes.append(f"{path}: stopped reading, the file failed mid-way ({e.strerror or e})")
        return b""


def _open(path: Path):
    return open(path, "rb")


def _last_boundary(text: str) -> int:
    return max(text.rfind(c) for c in SENTENCE_ENDS)


class _Utf8Decoder:
    """Incremental UTF-8 decoding that replaces bad bytes and says so once per file."""

    def __init__(self, path: Path, notes: list[str]):
        import codecs

        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._path, self._notes, self._noted = path, notes, False

    def decode(self, data: bytes, final: bool = False) -> str:
        text = self._decoder.decode(data, final)
        if "\ufffd" in text and not self._noted:
            self._notes.append(f"{self._path}: bytes that are not UTF-8 were replaced")
            self._noted = True
        return text


UNSEEN_USER_OFFSET = 1_000_000  # persona ids no simulated device ever gets


def unseen_users_text(cfg: Config) -> Sentences:
    """Sentences of synthetic users outside the federation, for the server's own evaluation.

    Only for the builtin corpus: the server never holds any device's text.
    """
    if cfg.data_source != "builtin":
        return []
    return [s for i in range(cfg.server_eval_devices)
            for line in corpus.device_sentences(UNSEEN_USER_OFFSET + i, cfg.sentences_per_device // 4, cfg.seed)
            for s in split_sentences(line)]
