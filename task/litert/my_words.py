"""The suggestion CLI's personal part: the user's own word counts, kept on the device between
sessions, mixed with the LiteRT model's probabilities (the same mix as the federated evaluation,
task/personal.py).

Counts are kept by word, not by vocabulary id, so a word the shared vocabulary lacks (a name, a
place, slang) is counted too and can be suggested once the user has typed it: the personal
dictionary. They are saved as JSON with the files they came from, so reading the same folder
again next session adds only what is new.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from task.data.files import DataError, iter_file_sentences, text_files
from task.data.vocab import BOS, FIRST_WORD_ID, PAD, SPECIALS, Vocabulary
from task.personal import PersonalCounts
from task.run.files import atomic_write

FORMAT = 1


class MyWords:
    def __init__(self, words: Counter | None = None, pairs: dict[str, Counter] | None = None,
                 triples: dict[str, Counter] | None = None, files: dict[str, list] | None = None):
        self.words = words or Counter()  # word -> times typed
        self.pairs = pairs or {}  # previous word (BOS at a sentence start) -> Counter of next words
        self.triples = triples or {}  # "word before<TAB>previous word" -> Counter of next words
        self.files = files or {}  # path -> [size, mtime] of each file already counted
        self._cached: tuple = (None, None)  # _columns: rebuilt only after learning

    def learn(self, sentence: list[str]) -> None:
        """Count one sentence the user typed."""
        sentence = [w for w in sentence if w not in SPECIALS]  # WikiText-style "<unk>" marks
        for before, prev, word in zip([PAD, BOS, *sentence], [BOS, *sentence], sentence):
            self.words[word] += 1
            self.pairs.setdefault(prev, Counter())[word] += 1
            self.triples.setdefault(f"{before}\t{prev}", Counter())[word] += 1

    def read_folder(self, folder: Path) -> list[str]:
        """Learn every text file under `folder` not counted before (or changed since); the notes of
        files skipped (binary, unreadable) are returned."""
        notes: list[str] = []
        try:
            files = text_files(Path(folder))
        except DataError as e:
            return [str(e)]
        for file in files:
            stat = file.stat()
            key, seen = str(file.resolve()), [stat.st_size, stat.st_mtime_ns]
            if self.files.get(key) == seen:
                continue
            for sentence in iter_file_sentences(file, notes):
                self.learn(sentence)
            self.files[key] = seen
        return notes

    def probabilities(self, vocab: Vocabulary, p_model: np.ndarray, context: list[str],
                      point: tuple) -> tuple[list[str], np.ndarray]:
        """(words, mixed probabilities at the GRID `point` of task/personal.py): the vocabulary's
        words followed by the user's own words it lacks (which the model gives 0), after
        `context` (the current sentence's words)."""
        words, ids, counts = self._columns(vocab)
        before, prev = ([PAD, BOS, *context])[-2:]
        rows = np.zeros((2, 1, len(words)))
        for level, counter in enumerate((self.pairs.get(prev, {}), self.triples.get(f"{before}\t{prev}", {}))):
            for w, n in counter.items():
                rows[level, 0, ids[w]] = n
        p = np.zeros((1, len(words)))
        p[0, : len(p_model)] = p_model
        p[0, :FIRST_WORD_ID] = 0.0
        p /= p.sum()
        return words, PersonalCounts(counts, {}, {}).mix(p, (rows[0], rows[1]), point)[0]

    def _columns(self, vocab: Vocabulary) -> tuple[list[str], dict[str, int], np.ndarray]:
        """The word list, its ids and the word counts as a vector: rebuilt only after learning."""
        key = (id(vocab), sum(self.words.values()), len(self.words))
        if self._cached[0] != key:
            words = vocab.words + sorted(w for w in self.words if w not in vocab)
            ids = {w: i for i, w in enumerate(words)}
            counts = np.zeros(len(words))
            for w, n in self.words.items():
                counts[ids[w]] = n
            self._cached = (key, (words, ids, counts))
        return self._cached[1]

    def save(self, path: Path) -> None:
        data = {"format": FORMAT, "words": self.words, "pairs": self.pairs, "triples": self.triples,
                "files": self.files}
        with atomic_write(Path(path)) as f:
            json.dump(data, f, ensure_ascii=False)

    @classmethod
    def load(cls, path: Path) -> MyWords:
        """The counts saved at `path`, or none if there is no such file yet."""
        path = Path(path)
        if not path.exists():
            return cls()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {FORMAT}")
            return cls(Counter(data["words"]), {k: Counter(v) for k, v in data["pairs"].items()},
                       {k: Counter(v) for k, v in data["triples"].items()}, data["files"])
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{path}: not a personal-counts file of this template ({e}); move it away to start "
                             "afresh") from e
