"""The suggestion CLI's personal part: the user's own word counts, kept on the device between
sessions, mixed with the LiteRT model's probabilities (the same mix as the federated evaluation,
task/personal.py).

Counts are kept by word, not by vocabulary id, so a word the shared vocabulary lacks (a name, a
place, slang) is counted too and can be suggested once the user has typed it: the personal
dictionary. They are saved as JSON with the files they came from, so reading the same folder
again next session adds only what is new.

Whether to mix at all, and at which point, is chosen as a federated device chooses
(task/personal.py `choose`): the most recent of each newly read batch of sentences is scored by
every candidate *before* it is counted (what the keyboard would have suggested against what the
user typed), and the tally is kept with the counts. Until the mix has beaten the shared model by
more than chance, the keyboard is the shared model alone.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from task.data.files import DataError, iter_file_sentences, text_files
from task.data.vocab import BOS, BOS_ID, FIRST_WORD_ID, PAD, PAD_ID, SPECIALS, Vocabulary
from task.personal import MAX_VALIDATION_SENTENCES, VALIDATION_FRACTION, PersonalCounts, Tally, choose
from task.run.files import atomic_write

FORMAT = 1


class MyWords:
    def __init__(self, words: Counter | None = None, pairs: dict[str, Counter] | None = None,
                 triples: dict[str, Counter] | None = None, files: dict[str, list] | None = None,
                 tally: Tally | None = None):
        self.words = words or Counter()  # word -> times typed
        self.pairs = pairs or {}  # previous word (BOS at a sentence start) -> Counter of next words
        self.triples = triples or {}  # "word before<TAB>previous word" -> Counter of next words
        self.files = files or {}  # path -> [size, mtime] of each file already counted
        self.tally = tally or Tally.empty()  # each mix point against the shared model, on text scored before counted
        self._cached: tuple = (None, None)  # _columns: rebuilt only after learning

    def learn(self, sentence: list[str]) -> None:
        """Count one sentence the user typed."""
        sentence = [w for w in sentence if w not in SPECIALS]  # WikiText-style "<unk>" marks
        for before, prev, word in zip([PAD, BOS, *sentence], [BOS, *sentence], sentence):
            self.words[word] += 1
            self.pairs.setdefault(prev, Counter())[word] += 1
            self.triples.setdefault(f"{before}\t{prev}", Counter())[word] += 1

    def read_folder(self, folder: Path, judge=None) -> list[str]:
        """Learn every text file under `folder` not counted before (or changed since); the notes of
        files skipped (binary, unreadable) are returned. `judge(my_words, sentences)`: a Tally of
        the candidates on sentences not yet counted (task/litert/suggest.py `judge`): the most
        recent of the new sentences are judged first, then counted."""
        notes: list[str] = []
        new: list[list[str]] = []
        try:
            files = text_files(Path(folder))
        except DataError as e:
            return [str(e)]
        for file in files:
            stat = file.stat()
            key, seen = str(file.resolve()), [stat.st_size, stat.st_mtime_ns]
            if self.files.get(key) == seen:
                continue
            new += list(iter_file_sentences(file, notes))
            self.files[key] = seen
        recent = min(max(round(len(new) * VALIDATION_FRACTION), 1), MAX_VALIDATION_SENTENCES, len(new) - 1) \
            if judge and len(new) >= 2 else 0
        for sentence in new[: len(new) - recent]:
            self.learn(sentence)
        if recent:
            self.tally.add(judge(self, new[len(new) - recent :]))
            for sentence in new[len(new) - recent :]:
                self.learn(sentence)
        return notes

    def choice(self) -> tuple | None:
        """The mix point this keyboard uses, or None: the shared model alone (task/personal.py)."""
        return choose(self.tally)

    def as_counts(self, vocab: Vocabulary) -> tuple[Vocabulary, PersonalCounts]:
        """The counts by id: the vocabulary's words, then the user's own words it lacks."""
        words, ids, counts = self._columns(vocab)
        special = {PAD: PAD_ID, BOS: BOS_ID}
        pairs = {ids.get(p, special.get(p)): Counter({ids[w]: n for w, n in c.items()}) for p, c in self.pairs.items()}
        triples = {}
        for key, c in self.triples.items():
            a, b = key.split("\t")
            triples[(ids.get(a, special.get(a)), ids.get(b, special.get(b)))] = Counter({ids[w]: n for w, n in c.items()})
        return Vocabulary(words), PersonalCounts(counts, pairs, triples)

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
                "files": self.files, "tally": {"wins": self.tally.wins.tolist(), "losses": self.tally.losses.tolist()}}
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
            tally = data.get("tally")  # saved before the keyboard chose for itself: nothing judged yet
            tally = Tally(np.array(tally["wins"], np.int64), np.array(tally["losses"], np.int64)) \
                if tally and len(tally["wins"]) == len(Tally.empty().wins) else None
            return cls(Counter(data["words"]), {k: Counter(v) for k, v in data["pairs"].items()},
                       {k: Counter(v) for k, v in data["triples"].items()}, data["files"], tally)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{path}: not a personal-counts file of this template ({e}); move it away to start "
                             "afresh") from e
