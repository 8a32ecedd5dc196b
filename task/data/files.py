"""Reading a device's text files: streamed, so a device with huge text never holds it whole.

Files are read in 1 MiB chunks and cut into sentences as they go, and `data.max-sentences` caps what
is read at all. Unusable files are skipped and the reason is kept in the caller's notes (said
once per file): binary files, unreadable or vanished files; bytes that are not UTF-8 are replaced.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from pathlib import Path

from task.data.text import SENTENCE_ENDS, split_sentences

Sentences = list[list[str]]
CHUNK_CHARS = 1 << 20  # read this much text at a time


class DataError(ValueError):
    """A device's text cannot be used. The message names the device, its files and the problem,
    for the device's own log; `reason` is a category without names or paths, the only part
    that may leave the device."""

    def __init__(self, message: str, reason: str = "unusable text"):
        super().__init__(message)
        self.reason = reason


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
    tail = ""
    for text in _decoded_chunks(path, notes):
        text = tail + text
        cut = _last_boundary(text)
        if cut < 0 and len(text) > CHUNK_CHARS:  # a huge line without sentence ends
            cut = text.rfind(" ") if " " in text else len(text) - 1
        yield from split_sentences(text[: cut + 1])
        tail = text[cut + 1 :]
    yield from split_sentences(tail)


def iter_file_lines(path: Path, notes: list[str]) -> Iterator[str]:
    """Lines of one file, streamed, for a corpus whose structure (articles, speakers) is in its
    lines. The same rules as sentences, except that a binary file is refused: a single-file
    corpus that is not text is a mistake to name, not a file to skip."""
    tail = ""
    for text in _decoded_chunks(path, notes, refuse_binary=True):
        lines = (tail + text).split("\n")
        tail = lines.pop()
        if len(tail) > CHUNK_CHARS:  # a huge line: given in pieces cut between words
            cut = tail.rfind(" ") if tail.rfind(" ") > 0 else len(tail)
            lines.append(tail[:cut])
            tail = tail[cut:]
        yield from lines
    if tail:
        yield tail


def _decoded_chunks(path: Path, notes: list[str], refuse_binary: bool = False) -> Iterator[str]:
    try:
        f = _open(path)
    except OSError as e:
        if refuse_binary:
            raise DataError(f"{path}: cannot open ({e.strerror or e})", reason="corpus cannot be read") from e
        notes.append(f"{path}: skipped, cannot open ({e.strerror or e})")
        return
    with f:
        chunk = _read(f, path, notes)
        if is_binary(chunk):
            if refuse_binary:
                raise DataError(f"{path}: a binary file, not text", reason="corpus is a binary file")
            notes.append(f"{path}: skipped, binary file")
            return
        decoder = _Utf8Decoder(path, notes)
        while chunk:
            yield decoder.decode(chunk)
            chunk = _read(f, path, notes)
        yield decoder.decode(b"", final=True)


def is_binary(data: bytes) -> bool:
    """Text files hold no NUL byte in their first 8 KiB; executables, images and archives do."""
    return b"\x00" in data[:8192]


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
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._path, self._notes, self._noted = path, notes, False

    def decode(self, data: bytes, final: bool = False) -> str:
        text = self._decoder.decode(data, final)
        if "\ufffd" in text and not self._noted:
            self._notes.append(f"{self._path}: bytes that are not UTF-8 were replaced")
            self._noted = True
        return text


