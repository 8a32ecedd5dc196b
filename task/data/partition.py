"""Simulation only: deal one corpus out to N simulated devices.

A corpus is read as a stream of (natural unit, sentence) pairs and each sentence is assigned a
partition:
- "iid": shuffled sentences cut into N equal contiguous shards (as Flower Datasets' IidPartitioner);
- "natural": units sorted by name and grouped, ceil(units / devices) whole units per device (a
  file of a "text-dir"; a person's top-level subfolder of "folders"; an article, a play character
  or a paragraph of a "corpus"; a paragraph of "paragraphs"; a character of "shakespeare"), as
  GroupedNaturalIdPartitioner(sort_unique_ids=True);
- "size-skew": shuffled sentences in shards of size proportional to 1/i, i = 1..N (Zipf-like: a few
  devices with much text, many with little), as IdToSizeFncPartitioner(lambda i: 1 / i).

Why not Flower Datasets' partitioners themselves (they are the test oracle): they need the whole
corpus as one in-memory dataset, in every simulation worker. Here the assignment needs one int32
per sentence, and task.data.shard_store writes the shards to disk once for all workers.

Natural units of a single corpus file are found from its lines: WikiText ` = Title = ` headings
(articles), else play-script speaker lines such as `ROMEO:` (speakers), else blank-line paragraphs.

The two registries, each the one list of its names (task.config checks `data.source` and
`data.partitioner` against them): SOURCES and PARTITIONERS. Importing this module never imports
TensorFlow or Flower.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from task.data import shard_store
from task.data.files import DataError, Sentences, iter_file_lines, iter_file_sentences, text_files
from task.data.text import split_sentences

if TYPE_CHECKING:  # task.config reads the registries below while it validates: no import cycle
    from task.config import Config

Pairs = Iterator[tuple[str, list[str]]]  # (natural unit id, one of its sentences)
SHAKESPEARE = "flwrlabs/shakespeare"
_ARTICLE = re.compile(r"^ ?= [^=].* = ?$")
_SPEAKER = re.compile(r"^([A-Z][A-Za-z .'-]{0,40}):[ \t]*$")
_HEADING = re.compile(r"^ ?=.*= ?$")  # a WikiText article heading or section heading
MIN_PARAGRAPH_SENTENCES = 2  # "paragraphs": one to train on, one to hold out


def partition_sentences(cfg: Config, partition_id: int, num_partitions: int,
                        notes: list[str]) -> tuple[str, Sentences]:
    """A description of the partition and its sentences (at most `data.max-sentences`)."""
    source, path = cfg.data_source, cfg.data_path
    if SOURCES.get(source) is None:
        raise DataError(f"data.source={source!r} is not a corpus dealt to devices", reason="not a corpus source")
    shards = shard_store.materialise(
        key=(source, *_fingerprint(source, path), cfg.partitioner, num_partitions, cfg.seed),
        pairs=lambda build_notes: SOURCES[source](path, build_notes),
        assign=lambda units, names: assign(units, names, cfg.partitioner, num_partitions, cfg.seed))
    notes.extend(shards.new_notes())  # said by the first device of this process only, not by every one
    if partition_id >= shards.partitions:
        raise DataError(f"{path or source}: {shards.units} natural unit(s) make only {shards.partitions} "
                        f"device(s) with data.partitioner='natural'; partition {partition_id} gets none",
                        reason="partition has no text")
    names, sentences = shards.read(partition_id, cfg.max_sentences + 1 if cfg.max_sentences else 0)
    shown = ", ".join(names[:3]) + (f" and {shards.unit_count(partition_id) - 3} more"
                                    if shards.unit_count(partition_id) > 3 else "")
    return f"partitioner={cfg.partitioner}: {shown}", sentences


def assign(units: np.ndarray, names: list[str], partitioner: str, num_partitions: int,
           seed: int) -> tuple[np.ndarray, int]:
    """Each sentence's partition (from its unit index into `names`), and the number of partitions."""
    if len(units) == 0:
        raise DataError("the corpus has no sentences to deal out", reason="corpus has no sentences")
    return PARTITIONERS[partitioner](units, names, num_partitions, seed)


def _natural(units: np.ndarray, names: list[str], num_partitions: int, seed: int) -> tuple[np.ndarray, int]:
    """Units sorted by name, ceil(units / devices) whole units per device: one unit per device when
    there are at least as many devices as units (the devices beyond the units get none)."""
    group = math.ceil(len(names) / num_partitions)
    rank = np.empty(len(names), np.int64)
    rank[sorted(range(len(names)), key=names.__getitem__)] = np.arange(len(names))
    return (rank // group)[units], math.ceil(len(names) / group)


def _iid(units: np.ndarray, names: list[str], num_partitions: int, seed: int) -> tuple[np.ndarray, int]:
    n = len(units)
    return _deal(n, np.full(num_partitions, n // num_partitions) + (np.arange(num_partitions) < n % num_partitions),
                 seed)


def _size_skew(units: np.ndarray, names: list[str], num_partitions: int, seed: int) -> tuple[np.ndarray, int]:
    n = len(units)
    share = 1.0 / np.linspace(1, num_partitions, num_partitions)
    sizes = (share / share.sum() * n).astype(np.int64)
    sizes[-1] += n - sizes.sum()
    return _deal(n, sizes, seed)


def _deal(n: int, sizes: np.ndarray, seed: int) -> tuple[np.ndarray, int]:
    """Shuffled sentences cut into contiguous shards of `sizes`."""
    if n < 2 * len(sizes):  # the library's partitioners fail with an IndexError here
        raise DataError(f"the corpus has {n} sentence(s) for {len(sizes)} devices; each device needs "
                        "at least 2 (one to train on, one to evaluate on)", reason="corpus too small for the devices")
    digest = hashlib.sha256(f"deal:{seed}".encode()).digest()
    position = np.empty(n, np.int64)  # where each sentence lands in the shuffled order
    position[np.random.default_rng(int.from_bytes(digest[:8], "big")).permutation(n)] = np.arange(n)
    return np.searchsorted(np.cumsum(sizes), position, side="right"), len(sizes)


# Partitioners by their `data.partitioner` name: (unit of each sentence, unit names, devices, seed)
# -> (partition of each sentence, number of partitions). The one list of partitioner names.
PARTITIONERS: dict[str, Callable[[np.ndarray, list[str], int, int], tuple[np.ndarray, int]]] = {
    "iid": _iid, "natural": _natural, "size-skew": _size_skew}


def _fingerprint(source: str, data_path: str) -> tuple:
    """What the shards depend on: every file's path, size and modification time."""
    if source == "shakespeare":
        return (SHAKESPEARE,)
    root = Path(data_path).expanduser().resolve()
    return (str(root), *((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in text_files(root)))


def _folders_pairs(data_path: str, notes: list[str]) -> Pairs:
    """A folder of people: each top-level subfolder is one person, and every file below it
    (recursively) is that person's. A file directly in the folder belongs to no one: refused."""
    root = Path(data_path).expanduser()
    text_files(root)  # a missing or empty path is said as such
    if not root.is_dir():
        raise DataError(f"data-path {root}: data.source='folders' needs a directory of people's folders, this is a "
                        "file", reason="data-path is not a directory")
    loose = sorted(p for p in root.iterdir() if p.is_file())
    if loose:
        raise DataError(f"{loose[0]}: a file directly in the data.source='folders' directory {root} belongs to no "
                        "person; move it into a person's folder (each top-level subfolder is one person)"
                        + (f" ({len(loose) - 1} more such file(s))" if len(loose) > 1 else ""),
                        reason="a file outside every person's folder")
    people = sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())
    if not people:
        raise DataError(f"{root}: data.source='folders' found no subfolders (one per person)",
                        reason="no person folders")
    for person in people:
        files = sorted(p for p in person.rglob("*") if p.is_file())
        if not files:
            notes.append(f"{person}: skipped, this person's folder holds no files")
        for f in files:
            yield from ((person.name, s) for s in iter_file_sentences(f, notes))


def _paragraphs_pairs(data_path: str, notes: list[str]) -> Pairs:
    """One unit per paragraph of a file or of every file in a folder (e.g. WikiText-2's
    valid.txt and test.txt): with `data.partitioner = "natural"` and as many devices as
    paragraphs, one paragraph per device. See paragraph_units for what a paragraph is."""
    root = Path(data_path).expanduser()
    number = 0
    for f in text_files(root):
        for article, sentences in paragraph_units(iter_file_lines(f, notes), notes, str(f.relative_to(root))
                                                  if root.is_dir() else f.name):
            name = f"{number:07d} {article}"  # sorted by name = corpus order
            number += 1
            yield from ((name, s) for s in sentences)


def paragraph_units(lines: Iterable[str], notes: list[str], where: str = "") -> Iterator[tuple[str, Sentences]]:
    """(article, sentences) of each paragraph, in order. In a file with WikiText ` = Title = `
    headings every non-blank, non-heading line is a paragraph (as WikiText stores them), and
    paragraphs belong to the article of the heading above; elsewhere paragraphs are blank-line
    separated blocks and the whole file is one article.

    A paragraph of fewer than MIN_PARAGRAPH_SENTENCES sentences holds out nothing: it is merged
    into the next paragraph of the same article (the last one of an article into the one before);
    an article whose text is too short altogether is left out, and counted in the notes."""
    lines = iter(lines)
    first = []
    for line in lines:  # up to the first non-blank line: is this WikiText?
        first.append(line)
        if line.strip():
            break
    wikitext = bool(first) and bool(_ARTICLE.match(first[-1]))
    article, paragraphs, current, skipped = where, [], [], [0, 0]

    def close_article():
        merged: list[Sentences] = []
        pending: Sentences = []
        for p in paragraphs:
            pending = pending + p
            if len(pending) >= MIN_PARAGRAPH_SENTENCES:
                merged.append(pending)
                pending = []
        if pending and merged:
            merged[-1] = merged[-1] + pending
        elif pending:
            skipped[0] += 1
            skipped[1] += len(pending)
        paragraphs.clear()
        return ((article, p) for p in merged)

    def end_paragraph():
        if current:
            paragraphs.append(list(current))
            current.clear()

    for line in itertools.chain(first, lines):
        if wikitext and _HEADING.match(line):
            end_paragraph()
            if _ARTICLE.match(line):
                yield from close_article()
                article = line.strip(" =")
            continue
        if not line.strip():
            end_paragraph()
            continue
        current.extend(split_sentences(line))
        if wikitext:
            end_paragraph()
    end_paragraph()
    yield from close_article()
    if skipped[0]:
        notes.append(f"{where}: {skipped[0]} article(s) with fewer than {MIN_PARAGRAPH_SENTENCES} sentences in all "
                     f"({skipped[1]} sentence(s)) left out: nothing to hold out")


def _text_dir_pairs(data_path: str, notes: list[str]) -> Pairs:
    """A folder of text files, one unit per file (e.g. one per author, chat or article)."""
    root = Path(data_path).expanduser()
    files = text_files(root)  # a missing path is said as such
    if not root.is_dir():
        raise DataError(f"data-path {root}: data.source='text-dir' needs a directory, this is a file",
                        reason="data-path is not a directory")
    return _file_pairs(root, files, notes)


def _corpus_pairs(data_path: str, notes: list[str]) -> Pairs:
    """One file (cut into articles, speakers or paragraphs), or a folder (one unit per file)."""
    root = Path(data_path).expanduser()
    files = text_files(root)
    if len(files) > 1:
        return _file_pairs(root, files, notes)
    layout = corpus_layout(iter_file_lines(files[0], []))  # a first pass, holding nothing
    return corpus_pairs(iter_file_lines(files[0], notes), layout)


def _shakespeare_pairs(data_path: str, notes: list[str]) -> Pairs:
    return ((user, s) for user, sentences in shakespeare_units(load_shakespeare()) for s in sentences)


def _file_pairs(root: Path, files: list[Path], notes: list[str]) -> Pairs:
    return ((str(f.relative_to(root)), s) for f in files for s in iter_file_sentences(f, notes))


# Sources by their `data.source` name, the one list of them: each streams its corpus as (unit,
# sentence) from (data.path, notes). "builtin" deals nothing: each device generates its own persona
# (task.data.personas, read in task.data.device_text). Add a source here and nowhere else.
SOURCES: dict[str, Callable[[str, list[str]], Pairs] | None] = {
    "builtin": None, "text-dir": _text_dir_pairs, "folders": _folders_pairs, "corpus": _corpus_pairs,
    "paragraphs": _paragraphs_pairs, "shakespeare": _shakespeare_pairs}


def corpus_layout(lines: Iterable[str]) -> str:
    """"articles" if any line is a WikiText heading, else "speakers" with two speaker lines or
    more, else "paragraphs"."""
    speakers = 0
    for line in lines:
        if _ARTICLE.match(line):
            return "articles"
        speakers += bool(_SPEAKER.match(line))
    return "speakers" if speakers >= 2 else "paragraphs"


def corpus_pairs(lines: Iterable[str], layout: str) -> Pairs:
    """(unit, sentence) of a corpus's lines. Text before the first heading or speaker has no unit
    and is left out; a speaker's unit is the speaker's name in capitals, whichever play it is in."""
    unit, paragraph, blank = None, 0, False
    for line in lines:
        if layout == "articles" and _ARTICLE.match(line):
            unit = line.strip(" =")
            continue
        if layout == "speakers" and (match := _SPEAKER.match(line)):
            unit = match.group(1).strip().upper()
            continue
        if layout == "paragraphs":
            if not line.strip():
                blank = True
                continue
            paragraph += blank
            blank, unit = False, f"paragraph {paragraph}"
        if unit is not None:
            yield from ((unit, s) for s in split_sentences(line))


def load_shakespeare():
    """The LEAF Shakespeare train split from the Hugging Face Hub (needs the network once)."""
    try:
        from datasets import load_dataset

        return load_dataset(SHAKESPEARE, split="train")
    except Exception as e:  # noqa: BLE001 - offline shows up as many exception types
        raise DataError(
            f"data.source='shakespeare' downloads {SHAKESPEARE} from the Hugging Face Hub and needs the network "
            f"({type(e).__name__}: {str(e)[:200]}). Offline, put text files in a folder and use "
            "data.source='text-dir' or 'corpus' with data-path, e.g. a play script split by speaker "
            "with partitioner='natural'.", reason="shakespeare download failed (offline?)") from e


def shakespeare_units(dataset) -> list[tuple[str, Sentences]]:
    """One unit per LEAF user (a character in a play). Rows are 80-character windows `x` with the
    next character `y`; consecutive windows of a user overlap, so the text is rebuilt from them."""
    pieces: dict[str, list[str]] = {}
    tails: dict[str, str] = {}  # the last window's worth of each user's rebuilt text
    for row in dataset:
        user, x, y = row["character_id"], row["x"], row["y"]
        if tails.get(user, "").endswith(x):
            pieces[user].append(y)  # the next window of the same passage
        else:
            pieces.setdefault(user, []).append(f"\n{x}{y}")  # a new passage
        tails[user] = (tails.get(user, "") + pieces[user][-1])[-len(x) - 1 :]
    return [(user, split_sentences("".join(p))) for user, p in pieces.items()]
