"""A dealt corpus, written to disk once and streamed back by each simulated device.

A simulation worker plays many devices. Dealing in memory made every worker read and hold the whole
corpus, whatever `data.max-sentences` said (a 200 MB file: ~10 min and 6 GB per worker). Here the first
device that needs a corpus deals it once into one file per device, holding one int32 per sentence
while it does; every device then streams its own file and stops at `data.max-sentences`.

Shards live in $FEDNEXTWORD_CACHE/shards/<key>/ (default ~/.cache/fednextword), where the key hashes
the files' paths, sizes and modification times with the partitioner, device count and seed: a changed
file gives new shards. They are built in a temporary folder under a file lock and renamed into
place, so concurrent workers build once and a killed build never leaves half a shard set in use.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from task.data.files import DataError, Sentences

FORMAT = 3  # bump when the shard layout, the dealing or the tokeniser changes: old shards are then not reused
FLUSH_BYTES = 32 << 20  # sentences buffered in memory before they are appended to their shard files
_OPENED: dict[str, Shards] = {}  # per process, by folder: its shards, and whether their notes were said


@dataclass
class Shards:
    folder: Path
    index: dict
    built_here: bool
    _said: bool = field(default=False, repr=False)

    @property
    def partitions(self) -> int:
        return self.index["partitions"]

    @property
    def units(self) -> int:
        return self.index["units"]

    def unit_count(self, pid: int) -> int:
        return self.index["unit_counts"][pid]

    def new_notes(self) -> list[str]:
        """The notes from reading the corpus, once per process: in full where it was read, else
        a pointer to them."""
        if self._said or not self.index["notes"]:
            return []
        self._said = True
        if self.built_here:
            return list(self.index["notes"])
        return [f"{len(self.index['notes'])} note(s) from reading the corpus, in {self.folder / 'index.json'}"]

    def read(self, pid: int, max_sentences: int = 0) -> tuple[list[str], Sentences]:
        """The partition's first unit names, and its sentences in corpus order up to the cap."""
        sentences: Sentences = []
        try:
            with open(self.folder / f"part-{pid:06d}.txt", encoding="utf-8") as f:
                for line in f:
                    sentences.append(line.split())
                    if max_sentences and len(sentences) >= max_sentences:
                        break
        except OSError as e:
            raise DataError(f"{self.folder}: shard {pid} cannot be read ({e.strerror or e}); delete the "
                            "folder to deal the corpus again", reason="corpus shard unreadable") from e
        return self.index["first_units"][pid], sentences


def cache_root() -> Path:
    return Path(os.environ.get("FEDNEXTWORD_CACHE") or Path.home() / ".cache" / "fednextword") / "shards"


def materialise(key: tuple, pairs: Callable[[list[str]], Iterator[tuple[str, list[str]]]],
                assign: Callable[[np.ndarray, list[str]], tuple[np.ndarray, int]]) -> Shards:
    """The shards for `key`, dealt now if no process has dealt them yet.

    `pairs(notes)` streams the corpus as (unit, sentence); `assign(units, names)` gives each
    sentence's partition from its unit index, and the number of partitions."""
    digest = hashlib.sha256(json.dumps([FORMAT, *key], default=str).encode()).hexdigest()[:24]
    root = cache_root()
    folder = root / digest
    if str(folder) in _OPENED:
        return _OPENED[str(folder)]
    root.mkdir(parents=True, exist_ok=True)
    built_here = False
    with open(root / f"{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # other workers wait here while one deals the corpus
        if not (folder / "index.json").exists():
            for stale in root.glob(f"{digest}.tmp*"):  # left by a killed build
                shutil.rmtree(stale, ignore_errors=True)
            tmp = root / f"{digest}.tmp{os.getpid()}"
            try:
                tmp.mkdir()
                _deal(tmp, pairs, assign)
                tmp.rename(folder)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            built_here = True
    shards = Shards(folder, json.loads((folder / "index.json").read_text()), built_here)
    _OPENED[str(folder)] = shards
    return shards


def _deal(folder: Path, pairs, assign) -> None:
    notes: list[str] = []
    names: dict[str, int] = {}
    units = array("i")
    every = folder / "all.txt"  # the tokenised corpus, one sentence a line, read back to deal it
    with open(every, "w", encoding="utf-8") as out:
        for unit, sentence in pairs(notes):
            units.append(names.setdefault(unit, len(names)))
            out.write(" ".join(sentence) + "\n")
    unit_of = np.frombuffer(units, dtype=np.int32) if len(units) else np.zeros(0, np.int32)
    part_of, partitions = assign(unit_of, list(names))
    _write_shards(folder, every, part_of, partitions)
    every.unlink()
    first_units, unit_counts = _units_per_partition(unit_of, part_of, list(names), partitions)
    index = {"format": FORMAT, "partitions": partitions, "units": len(names), "unit_counts": unit_counts,
             "first_units": first_units, "sentences": np.bincount(part_of, minlength=partitions).tolist(),
             "notes": notes}
    (folder / "index.json").write_text(json.dumps(index))


def _write_shards(folder: Path, every: Path, part_of: np.ndarray, partitions: int) -> None:
    buffers: dict[int, list[str]] = {}
    pending = 0

    def flush() -> None:
        for pid, lines in buffers.items():
            with open(folder / f"part-{pid:06d}.txt", "a", encoding="utf-8") as f:
                f.writelines(lines)
        buffers.clear()

    with open(every, encoding="utf-8") as f:
        for line, pid in zip(f, part_of.tolist()):
            buffers.setdefault(pid, []).append(line)
            pending += len(line)
            if pending > FLUSH_BYTES:
                flush()
                pending = 0
    flush()
    for pid in range(partitions):  # a partition dealt nothing still has its (empty) file
        with contextlib.suppress(FileExistsError):
            (folder / f"part-{pid:06d}.txt").touch(exist_ok=False)


def _units_per_partition(unit_of: np.ndarray, part_of: np.ndarray, names: list[str],
                         partitions: int) -> tuple[list[list[str]], list[int]]:
    """Each partition's first three unit names (sorted) and its number of units."""
    if not names:
        return [[] for _ in range(partitions)], [0] * partitions
    order = sorted(range(len(names)), key=names.__getitem__)
    rank = np.empty(len(names), np.int64)
    rank[order] = np.arange(len(names))
    codes = np.unique(part_of.astype(np.int64) * len(names) + rank[unit_of])
    pids, ranks = codes // len(names), codes % len(names)
    counts = np.bincount(pids, minlength=partitions).tolist()
    starts = np.concatenate([[0], np.cumsum(counts)])
    # at most 3, and never past this partition's own units into the next partition's
    first = [[names[order[r]] for r in ranks[starts[p]: starts[p] + min(3, counts[p])].tolist()]
             for p in range(partitions)]
    return first, counts
