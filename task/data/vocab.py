"""The vocabulary: a fixed, public word list every device shares.

Devices must agree on word ids without the server ever seeing their text, so the vocabulary is
not counted from user data: it is the top of a base dictionary shipped with the code
(`base_dictionary.json`, English word frequencies from the `wordfreq` package). Swap it by saving
another `Vocabulary` as JSON and pointing the model export at it. Words discovered federatedly
(features/discovery/) are appended after the base words: a run's vocabulary is the base dictionary's
top plus the words its discoveries added, in the order they were added (`run_vocabulary`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS = (PAD, UNK, BOS, EOS)
PAD_ID, UNK_ID, BOS_ID, EOS_ID = range(4)
FIRST_WORD_ID = len(SPECIALS)  # ids below are special tokens: never suggested, never scored
BASE_DICTIONARY = Path(__file__).with_name("base_dictionary.json")


class Vocabulary:
    def __init__(self, words: Sequence[str]):
        if tuple(words[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a vocabulary must start with the special tokens {SPECIALS}")
        if len(set(words)) != len(words):
            raise ValueError("a vocabulary must not repeat words")
        self.words = list(words)
        self._ids = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def from_base_dictionary(cls, size: int) -> Vocabulary:
        """The `size - 4` most frequent base-dictionary words after the 4 special tokens."""
        return cls(list(SPECIALS) + _base_words()[: size - len(SPECIALS)])

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self._ids

    def encode(self, tokens: Iterable[str]) -> list[int]:
        return [self._ids.get(t, UNK_ID) for t in tokens]

    def encode_sentence(self, tokens: Sequence[str]) -> np.ndarray:
        """<bos> w1 ... wn <eos> as int32 ids."""
        return np.array([BOS_ID, *self.encode(tokens), EOS_ID], dtype=np.int32)

    def extended(self, words: Iterable[str]) -> Vocabulary:
        """This vocabulary with `words` appended (words it already has are skipped): old ids keep
        their meaning, so a model grown by one row per new word still reads every old id."""
        return Vocabulary(self.words + [w for w in dict.fromkeys(words) if w not in self._ids])

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.words[int(i)] for i in ids]

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps({"format": "fednextword-vocab/1", "words": self.words}, ensure_ascii=False))

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls(data["words"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: not a vocabulary file ({e})") from e


@lru_cache(maxsize=1)
def _base_words() -> list[str]:
    return json.loads(BASE_DICTIONARY.read_text(encoding="utf-8"))["words"]


@lru_cache(maxsize=4)
def default_vocabulary(size: int) -> Vocabulary:
    return Vocabulary.from_base_dictionary(size)


@lru_cache(maxsize=8)
def run_vocabulary(size: int, added: tuple[str, ...] = ()) -> Vocabulary:
    """A run's vocabulary: the base dictionary's top `size` (with the special tokens) plus the words
    its discoveries added, in order."""
    base = default_vocabulary(size)
    return base.extended(added) if added else base


def vocabulary_rows(weights: list) -> int:
    """How many words a model's weights hold: the rows of its first weight, the token embedding
    (the model contract, task/model.py), read without TensorFlow."""
    return int(weights[0].shape[0])
