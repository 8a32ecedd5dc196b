"""Each device's text: where it comes from, its train/test split, and training windows.

Where a device's text comes from:
- a real device: every readable text file under its node-config `data-path`;
- simulation: `data.source` "builtin" (a synthetic persona per partition id, task.data.personas), or a
  corpus ("text-dir", "corpus", "shakespeare") dealt to devices by task.data.partition.

Files are read by task.data.files (streamed; unusable files skipped with a note).

Each device holds out the last `data.test-fraction` of its sentences (in file order) for evaluation.

Training examples are next-word targets at every position of a sentence window:
x = <bos> w1 .. w(T-1), y = w1 .. wT (<eos> at the end), padded with <pad> on the right.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from task.config import Config
from task.data import personas
from task.data.files import DataError, Sentences, read_sentences, text_files
from task.data.text import split_sentences
from task.data.vocab import PAD_ID, Vocabulary


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
    cap = cfg.max_sentences
    if data_path:
        name = f"device data-path={data_path}"
        sentences = read_sentences(Path(data_path), notes, cap + 1 if cap else 0)  # one more: is there more?
    else:
        if not 0 <= partition_id < num_partitions:
            raise DataError(f"partition-id {partition_id} is outside [0, {num_partitions})",
                            reason="bad partition-id")
        if cfg.data_source == "builtin":
            where = f"persona {partition_id}"
            sentences = [s for line in personas.device_sentences(partition_id, cfg.sentences_per_device, cfg.seed)
                         for s in split_sentences(line)]
        else:  # a corpus dealt to devices (Flower Datasets' partitioners): loaded only for these sources
            from task.data.partition import partition_sentences

            where, sentences = partition_sentences(cfg, partition_id, num_partitions, notes)
        name = f"partition {partition_id}/{num_partitions} of data.source={cfg.data_source} ({where})"
    if cap and len(sentences) > cap:
        sentences = sentences[:cap]
        notes.append(f"{name}: only its first {cap} sentences are used (data.max-sentences = {cap}); the rest is not read")
    if len(sentences) < 2:
        raise DataError(f"{name}: {len(sentences)} sentence(s) of text; need at least 2 "
                        "(one to train on, one to evaluate on)" + (f" [{'; '.join(notes)}]" if notes else ""),
                        reason="too little text")  # the files skipped stay in the device's log
    train, test = split_train_test(sentences, cfg.test_fraction)
    return DeviceText(name, sentences, train, test, notes)


_READ: OrderedDict[tuple, DeviceText] = OrderedDict()  # the last devices this process read, newest last
READ_CACHE_SIZE = 16  # a simulation worker plays many devices in turn; 16 x 20,000 sentences at most


def cached_device_text(cfg: Config, *, partition_id: int = 0, num_partitions: int = 1,
                       data_path: str | None = None) -> DeviceText:
    """load_device_text, read once per process while the device's files are unchanged (a device gets
    a train and an evaluate message per round). Its notes come with the first read only."""
    fingerprint: tuple = ()
    if data_path:  # paths, sizes and modification times: a changed or added file is read again
        fingerprint = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in text_files(Path(data_path)))
    key = (cfg.data_source, cfg.data_path, cfg.partitioner, cfg.sentences_per_device, cfg.max_sentences,
           cfg.test_fraction, cfg.seed, partition_id, num_partitions, data_path, fingerprint)
    if key in _READ:
        _READ.move_to_end(key)
        return replace(_READ[key], notes=[])
    text = load_device_text(cfg, partition_id=partition_id, num_partitions=num_partitions, data_path=data_path)
    _READ[key] = text
    while len(_READ) > READ_CACHE_SIZE:
        _READ.popitem(last=False)
    return text


def split_train_test(sentences: Sentences, test_fraction: float) -> tuple[Sentences, Sentences]:
    """Hold out the last `test_fraction` of the sentences: a keyboard learns from what its user
    typed before and is scored on what they type next (and personal counts, task/personal.py,
    must not see the sentences next to a test sentence). At least one sentence on each side."""
    n_test = min(max(round(len(sentences) * test_fraction), 1), len(sentences) - 1)
    return list(sentences[: len(sentences) - n_test]), list(sentences[len(sentences) - n_test :])


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


UNSEEN_USER_OFFSET = 1_000_000  # persona ids no simulated device ever gets


def unseen_users_text(cfg: Config) -> Sentences:
    """Sentences of synthetic users outside the federation, for the server's own evaluation.

    Only for the builtin corpus: the server never holds any device's text.
    """
    if cfg.data_source != "builtin":
        return []
    return [s for i in range(cfg.server_eval_devices)
            for line in personas.device_sentences(UNSEEN_USER_OFFSET + i, cfg.sentences_per_device // 4, cfg.seed)
            for s in split_sentences(line)]
