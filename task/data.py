"""Each device's text: where it comes from, its train/test split, and training windows.

Sources, chosen by the run config (`data-source`) or, on a real device, by `data-path`:
- "builtin": the synthetic persona corpus (task.corpus), one persona per partition id.
- "text-dir": a directory of plain-text files; in simulation, files go to partitions round-robin.
- "corpus": one file (or directory, concatenated) split into partitions, "iid" by sentence or
  naturally by "article" (WikiText-style ` = Title = ` headings, else blank-line paragraphs).
Every device holds out `test-fraction` of its sentences for evaluation, deterministically.

Training examples are next-word targets at every position of a sentence window:
x = <bos> w1 .. w(T-1), y = w1 .. wT (<eos> at the end), padded with <pad> on the right.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from task import corpus
from task.config import Config
from task.text import split_sentences
from task.vocab import PAD_ID, Vocabulary

Sentences = list[list[str]]
_ARTICLE_HEADING = re.compile(r"^ ?= [^=].* = ?$", re.MULTILINE)


class DataError(ValueError):
    """A device's text cannot be used; the message names the device and the problem."""


@dataclass(frozen=True)
class DeviceText:
    name: str
    train: Sentences
    test: Sentences


def load_device_text(cfg: Config, *, partition_id: int = 0, num_partitions: int = 1,
                     data_path: str | None = None) -> DeviceText:
    """The text of one device: its own `data_path` if given, else its simulated partition."""
    if data_path:
        name = f"device data-path={data_path}"
        sentences = split_sentences(read_text(Path(data_path)))
    else:
        if not 0 <= partition_id < num_partitions:
            raise DataError(f"partition-id {partition_id} is outside [0, {num_partitions})")
        where, sentences = _partition(cfg, partition_id, num_partitions)
        name = f"partition {partition_id}/{num_partitions} of data-source={cfg.data_source} ({where})"
    if len(sentences) < 2:
        raise DataError(f"{name}: {len(sentences)} sentence(s) of text; need at least 2 "
                        "(one to train on, one to evaluate on)")
    train, test = split_train_test(sentences, cfg.test_fraction, seed=cfg.seed)
    return DeviceText(name, train, test)


def split_train_test(sentences: Sentences, test_fraction: float, seed: int) -> tuple[Sentences, Sentences]:
    order = list(range(len(sentences)))
    random.Random(seed).shuffle(order)
    n_test = min(max(1, round(len(sentences) * test_fraction)), len(sentences) - 1)
    test_idx = set(order[:n_test])
    train = [s for i, s in enumerate(sentences) if i not in test_idx]
    test = [s for i, s in enumerate(sentences) if i in test_idx]
    return train, test


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


def read_text(path: Path) -> str:
    """All readable text under `path` (a file, or every file in a directory tree, sorted)."""
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    if not files:
        raise DataError(f"{path}: directory holds no files")
    texts = [_read_file(f) for f in files]
    return "\n".join(t for t in texts if t)


def _read_file(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from e
    if b"\x00" in raw[:8192]:
        return ""  # binary file: not text
    return raw.decode("utf-8", errors="replace")


def _partition(cfg: Config, partition_id: int, num_partitions: int) -> tuple[str, Sentences]:
    """A description of where the partition's text came from, and its sentences."""
    if cfg.data_source == "builtin":
        return f"persona {partition_id}", [
            s for line in corpus.device_sentences(partition_id, cfg.sentences_per_device, cfg.seed)
            for s in split_sentences(line)]
    root = Path(cfg.data_path).expanduser()
    if cfg.data_source == "text-dir":
        files = _text_files(root)
        mine = files[partition_id::num_partitions]
        if not mine:
            raise DataError(f"{root}: {len(files)} file(s) for {num_partitions} partitions; "
                            f"partition {partition_id} gets none")
        return ", ".join(map(str, mine)), [s for f in mine for s in split_sentences(_read_file(f))]
    documents = _documents(root, cfg.corpus_split, cfg.seed)
    return f"{root}, split {cfg.corpus_split}", [s for doc in documents[partition_id::num_partitions] for s in doc]


def _text_files(root: Path) -> list[Path]:
    if not root.is_dir():
        raise DataError(f"data-path {root}: data-source='text-dir' needs a directory")
    files = sorted(p for p in root.rglob("*") if p.is_file())
    if not files:
        raise DataError(f"data-path {root}: directory holds no files")
    return files


@lru_cache(maxsize=2)
def _documents(root: Path, split: str, seed: int) -> list[Sentences]:
    """The corpus as a list of documents to deal out; for "iid", every sentence is a document."""
    text = read_text(root)
    if split == "article":
        parts = _ARTICLE_HEADING.split(text) if _ARTICLE_HEADING.search(text) else re.split(r"\n\s*\n", text)
        return [d for d in (split_sentences(p) for p in parts) if d]
    sentences = split_sentences(text)
    random.Random(seed).shuffle(sentences)
    return [[s] for s in sentences]


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
