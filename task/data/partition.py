"""Simulation only: deal one corpus out to N simulated devices.

A corpus is read as a stream of (natural unit, sentence) pairs and each sentence is assigned a
partition:
- "iid": shuffled sentences cut into N equal contiguous shards (as Flower Datasets' IidPartitioner);
- "natural": units sorted by name and grouped, ceil(units / devices) whole units per device (a
  file of a "text-dir"; an article, a play character or a paragraph of a "corpus"; a character of
  "shakespeare"), as GroupedNaturalIdPartitioner(sort_unique_ids=True);
- "size-skew": shuffled sentences in shards of size proportional to 1/i, i = 1..N (Zipf-like: a few
  devices with much text, many with little), as IdToSizeFncPartitioner(lambda i: 1 / i).

Why not Flower Datasets' partitioners themselves (they are the test oracle): they need the whole
corpus as one in-memory dataset, in every simulation worker. Here the assignment needs one int32
per sentence, and task.data.shard_store writes the shards to disk once for all workers.

Natural units of a single corpus file are found from its lines: WikiText ` = Title = ` headings
(articles), else play-script speaker lines such as `ROMEO:` (speakers), else blank-line paragraphs.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from task.config import Config
from task.data import shard_store
from task.data.files import DataError, Sentences, iter_file_lines, iter_file_sentences, text_files
from task.data.text import split_sentences

Pairs = Iterator[tuple[str, list[str]]]  # (natural unit id, one of its sentences)
SHAKESPEARE = "flwrlabs/shakespeare"
_ARTICLE = re.compile(r"^ ?= [^=].* = ?$")
_SPEAKER = re.compile(r"^([A-Z][A-Za-z .'-]{0,40}):[ \t]*$")


def partition_sentences(cfg: Config, partition_id: int, num_partitions: int,
                        notes: list[str]) -> tuple[str, Sentences]:
    """A description of the partition and its sentences (at most `data.max-sentences`)."""
    source, path = cfg.data_source, cfg.data_path
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
    n = len(units)
    if n == 0:
        raise DataError("the corpus has no sentences to deal out", reason="corpus has no sentences")
    if partitioner == "natural":
        group = math.ceil(len(names) / num_partitions)
        rank = np.empty(len(names), np.int64)
        rank[sorted(range(len(names)), key=names.__getitem__)] = np.arange(len(names))
        return (rank // group)[units], math.ceil(len(names) / group)
    if n < 2 * num_partitions:  # the library's partitioners fail with an IndexError here
        raise DataError(f"the corpus has {n} sentence(s) for {num_partitions} devices; each device needs "
                        "at least 2 (one to train on, one to evaluate on)", reason="corpus too small for the devices")
    if partitioner == "iid":
        sizes = np.full(num_partitions, n // num_partitions) + (np.arange(num_partitions) < n % num_partitions)
    else:  # size-skew
        share = 1.0 / np.linspace(1, num_partitions, num_partitions)
        sizes = (share / share.sum() * n).astype(np.int64)
        sizes[-1] += n - sizes.sum()
    digest = hashlib.sha256(f"deal:{seed}".encode()).digest()
    position = np.empty(n, np.int64)  # where each sentence lands in the shuffled order
    position[np.random.default_rng(int.from_bytes(digest[:8], "big")).permutation(n)] = np.arange(n)
    return np.searchsorted(np.cumsum(sizes), position, side="right"), num_partitions


def _fingerprint(source: str, data_path: str) -> tuple:
    """What the shards depend on: every file's path, size and modification time."""
    if source == "shakespeare":
        return (SHAKESPEARE,)
    root = Path(data_path).expanduser().resolve()
    return (str(root), *((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in text_files(root)))


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


# Corpus sources by their `data.source` name: each streams the corpus as (unit, sentence). Add a
# source here (and its name to task.config.DATA_SOURCES); "builtin" is task.data.personas.
SOURCES: dict[str, Callable[[str, list[str]], Pairs]] = {
    "text-dir": _text_dir_pairs, "corpus": _corpus_pairs, "shakespeare": _shakespeare_pairs}


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
