"""Simulation only: deal one corpus out to N simulated devices.

The corpus becomes an in-memory Hugging Face dataset of sentences, each tagged with its natural
unit, and Flower Datasets' partitioners do the dealing (a standalone data library, not the
Flower runtime):
- "iid": IidPartitioner over shuffled sentences;
- "natural": GroupedNaturalIdPartitioner over units, so every device gets whole units
  (a file of a "text-dir"; an article, a play character or a paragraph of a "corpus"; a
  character of "shakespeare"), ceil(units / devices) units each;
- "size-skew": IdToSizeFncPartitioner with shard sizes proportional to 1/(i+1) over shuffled
  sentences (Zipf-like: a few devices with much text, many with little, as real populations).

Natural units of a single corpus file are found from its layout: WikiText ` = Title = `
headings (articles), else play-script speaker lines such as `ROMEO:` (speakers), else blank-line
paragraphs. The dealt corpus is cached per process: simulated devices in one worker share it.
"""

from __future__ import annotations

import math
import random
import re
from functools import lru_cache
from pathlib import Path

from task.config import Config
from task.data.files import DataError, Sentences, iter_file_sentences, read_text, text_files
from task.data.text import split_sentences

Units = list[tuple[str, Sentences]]  # (natural unit id, its sentences)
SHAKESPEARE = "flwrlabs/shakespeare"
_ARTICLE = re.compile(r"^ ?= [^=].* = ?$", re.MULTILINE)
_SPEAKER = re.compile(r"^([A-Z][A-Za-z .'-]{0,40}):[ \t]*$", re.MULTILINE)


def partition_sentences(cfg: Config, partition_id: int, num_partitions: int,
                        notes: list[str]) -> tuple[str, Sentences]:
    """A description of the partition and its sentences."""
    units, unit_notes = _units(cfg.data_source, cfg.data_path)
    notes.extend(unit_notes)
    parts = _dealt(cfg.data_source, cfg.data_path, cfg.partitioner, num_partitions, cfg.seed)
    if partition_id >= len(parts):
        raise DataError(f"{cfg.data_path or cfg.data_source}: {len(units)} natural unit(s) make only {len(parts)} "
                        f"device(s) with partitioner='natural'; partition {partition_id} gets none",
                        reason="partition has no text")
    names, sentences = parts[partition_id]
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return f"partitioner={cfg.partitioner}: {shown}", sentences


def deal(units: Units, partitioner: str, num_partitions: int, seed: int) -> list[tuple[list[str], Sentences]]:
    """Every partition's (unit names, sentences), dealt by a Flower Datasets partitioner."""
    # Imported here: Hugging Face datasets takes seconds to import, and built-in devices never need it.
    from datasets import Dataset
    from flwr_datasets.partitioner import (
        GroupedNaturalIdPartitioner,
        IdToSizeFncPartitioner,
        IidPartitioner,
    )

    rows = [{"unit": unit, "sentence": " ".join(s)} for unit, sentences in units for s in sentences]
    if not rows:
        raise DataError("the corpus has no sentences to deal out", reason="corpus has no sentences")
    if partitioner != "natural" and len(rows) < 2 * num_partitions:  # the partitioners fail with IndexError
        raise DataError(f"the corpus has {len(rows)} sentence(s) for {num_partitions} devices; each device needs "
                        "at least 2 (one to train on, one to evaluate on)", reason="corpus too small for the devices")
    if partitioner == "natural":
        group = math.ceil(len(units) / num_partitions)
        p = GroupedNaturalIdPartitioner(partition_by="unit", group_size=group, sort_unique_ids=True)
        p.dataset = Dataset.from_list(rows)
        count = p.num_partitions
    else:
        random.Random(f"deal:{seed}").shuffle(rows)
        p = (IidPartitioner(num_partitions) if partitioner == "iid" else
             IdToSizeFncPartitioner(num_partitions, lambda ids: 1.0 / ids))  # ids run 1..N
        p.dataset = Dataset.from_list(rows)
        count = num_partitions
    parts = []
    for pid in range(count):
        part = p.load_partition(pid)
        parts.append((sorted(set(part["unit"])), [s.split() for s in part["sentence"]]))
    return parts


@lru_cache(maxsize=2)
def _dealt(source: str, data_path: str, partitioner: str, num_partitions: int, seed: int):
    return deal(_units(source, data_path)[0], partitioner, num_partitions, seed)


def _text_dir_units(data_path: str, notes: list[str]) -> Units:
    """A folder of text files, one unit per file (e.g. one per author, chat or article)."""
    root = Path(data_path).expanduser()
    files = text_files(root)  # a missing path is said as such
    if not root.is_dir():
        raise DataError(f"data-path {root}: data-source='text-dir' needs a directory, this is a file",
                        reason="data-path is not a directory")
    return _file_units(root, files, notes)


def _corpus_units(data_path: str, notes: list[str]) -> Units:
    """One file (cut into articles, speakers or paragraphs), or a folder (one unit per file)."""
    root = Path(data_path).expanduser()
    files = text_files(root)
    if len(files) > 1:
        return _file_units(root, files, notes)
    return corpus_units(read_text(files[0], notes))


def _shakespeare_units(data_path: str, notes: list[str]) -> Units:
    return shakespeare_units(load_shakespeare())


def _file_units(root: Path, files: list[Path], notes: list[str]) -> Units:
    units = [(str(f.relative_to(root)), list(iter_file_sentences(f, notes))) for f in files]
    return [(name, sentences) for name, sentences in units if sentences]


# Corpus sources by their `data-source` name: each reads the corpus into natural units. Add a
# source here (and its name to task.config.DATA_SOURCES); "builtin" is task.data.personas.
SOURCES = {"text-dir": _text_dir_units, "corpus": _corpus_units, "shakespeare": _shakespeare_units}


@lru_cache(maxsize=2)
def _units(source: str, data_path: str) -> tuple[Units, list[str]]:
    """The corpus's natural units, and notes on files skipped or repaired while reading it."""
    notes: list[str] = []
    return SOURCES[source](data_path, notes), notes


def corpus_units(text: str) -> Units:
    """Natural units of one corpus text: articles, else speakers, else paragraphs."""
    if _ARTICLE.search(text):
        titles = [m.group(0).strip(" =") for m in _ARTICLE.finditer(text)]
        bodies = _ARTICLE.split(text)[1:]
        return [(t, split_sentences(b)) for t, b in zip(titles, bodies) if split_sentences(b)]
    if len(_SPEAKER.findall(text)) >= 2:
        by_speaker: dict[str, Sentences] = {}
        pieces = _SPEAKER.split(text)  # [before, name1, speech1, name2, speech2, ...]
        for name, speech in zip(pieces[1::2], pieces[2::2]):
            by_speaker.setdefault(name.strip().upper(), []).extend(split_sentences(speech))
        return [(n, s) for n, s in by_speaker.items() if s]
    paragraphs = [split_sentences(p) for p in re.split(r"\n\s*\n", text)]
    return [(f"paragraph {i}", p) for i, p in enumerate(paragraphs) if p]


def load_shakespeare():
    """The LEAF Shakespeare train split from the Hugging Face Hub (needs the network once)."""
    try:
        from datasets import load_dataset

        return load_dataset(SHAKESPEARE, split="train")
    except Exception as e:  # noqa: BLE001 - offline shows up as many exception types
        raise DataError(
            f"data-source='shakespeare' downloads {SHAKESPEARE} from the Hugging Face Hub and needs the network "
            f"({type(e).__name__}: {str(e)[:200]}). Offline, put text files in a folder and use "
            "data-source='text-dir' or 'corpus' with data-path, e.g. a play script split by speaker "
            "with partitioner='natural'.", reason="shakespeare download failed (offline?)") from e


def shakespeare_units(dataset) -> Units:
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
