"""Dealing a corpus to simulated devices: the same partitions as Flower Datasets' partitioners (the
oracle), dealt once on disk, and each device reading only its own shard."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset
from flwr_datasets.partitioner import GroupedNaturalIdPartitioner, IdToSizeFncPartitioner, IidPartitioner

from task.config import Config
from task.data import files, partition, shard_store
from task.data.device_text import load_device_text
from task.data.partition import assign

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("units", "devices"), [(7, 3), (20, 20), (23, 4), (5, 2)])
def test_natural_partitions_are_the_grouped_natural_id_partitioners(units, devices):
    rng = np.random.default_rng(units)
    names = [f"unit-{rng.integers(10**6)}-{i}" for i in range(units)]
    unit_of = rng.integers(0, units, size=300).astype(np.int32)
    unit_of[:units] = np.arange(units)  # every unit has a sentence
    part_of, count = assign(unit_of, names, "natural", devices, seed=0)

    oracle = GroupedNaturalIdPartitioner(partition_by="unit", group_size=-(-units // devices), sort_unique_ids=True)
    oracle.dataset = Dataset.from_dict({"unit": [names[u] for u in unit_of]})
    assert count == oracle.num_partitions
    for pid in range(count):
        assert set(oracle.load_partition(pid)["unit"]) == {names[u] for u in unit_of[part_of == pid]}


@pytest.mark.parametrize(("partitioner", "library"), [
    ("iid", lambda n: IidPartitioner(n)),
    ("size-skew", lambda n: IdToSizeFncPartitioner(n, lambda ids: 1.0 / ids))])
@pytest.mark.parametrize(("sentences", "devices"), [(60, 3), (1001, 7), (500, 25)])
def test_iid_and_size_skew_shard_sizes_are_the_librarys(partitioner, library, sentences, devices):
    part_of, count = assign(np.zeros(sentences, np.int32), ["one"], partitioner, devices, seed=3)
    oracle = library(devices)
    oracle.dataset = Dataset.from_dict({"i": list(range(sentences))})
    assert count == devices
    assert np.bincount(part_of, minlength=devices).tolist() == [len(oracle.load_partition(p)) for p in range(devices)]
    other, _ = assign(np.zeros(sentences, np.int32), ["one"], partitioner, devices, seed=4)
    assert (part_of != other).any()  # the seed picks which sentences go where


def test_a_size_skew_device_dealt_nothing_says_so(tmp_path):
    (tmp_path / "c.txt").write_text(" ".join(f"sentence number s{i}." for i in range(50)))
    cfg = Config(data_source="corpus", data_path=str(tmp_path / "c.txt"), partitioner="size-skew")
    with pytest.raises(files.DataError, match="0 sentence"):  # the library raises a ValueError here
        load_device_text(cfg, partition_id=20, num_partitions=25)


def _corpus(tmp_path, sentences=200):
    path = tmp_path / "corpus.txt"
    path.write_text("".join(f" = Title {i} = \n" + "".join(f"Line {j} of article a{i}.\n" for j in range(10))
                            for i in range(sentences // 10)))
    return path


def test_a_corpus_is_read_once_and_a_new_worker_reads_only_its_own_shard(tmp_path, monkeypatch):
    cfg = Config(data_source="corpus", data_path=str(_corpus(tmp_path)), partitioner="natural", max_sentences=4)
    first = load_device_text(cfg, partition_id=0, num_partitions=4)
    assert len(first.sentences) == 4  # data.max-sentences holds for corpora too

    shard_store._OPENED.clear()  # as a new simulation worker process

    def never(*args, **kwargs):
        raise AssertionError("the corpus was read again")

    monkeypatch.setattr(partition, "iter_file_lines", never)
    monkeypatch.setattr(files, "_open", never)
    other = load_device_text(cfg, partition_id=3, num_partitions=4)
    articles = [{w for s in dev.sentences for w in s if w[:1] == "a" and w[1:].isdigit()} for dev in (first, other)]
    assert articles[0] and articles[1] and not articles[0] & articles[1] and len(other.sentences) == 4


def test_a_changed_corpus_is_dealt_again(tmp_path):
    path = _corpus(tmp_path)
    cfg = Config(data_source="corpus", data_path=str(path), partitioner="natural")
    assert "a0" in {w for s in load_device_text(cfg, partition_id=0, num_partitions=2).sentences for w in s}
    path.write_text(" = Other = \nA brand new text. With words.\n = More = \nAnd more of it. Yes.\n")
    words = {w for p in (0, 1) for s in load_device_text(cfg, partition_id=p, num_partitions=2).sentences for w in s}
    assert "a0" not in words and {"brand", "yes"} <= words


def test_a_build_that_dies_half_way_leaves_nothing_in_use(tmp_path, monkeypatch, shard_cache):
    cfg = Config(data_source="corpus", data_path=str(_corpus(tmp_path)), partitioner="iid")

    def killed(folder, pairs, assign):
        (folder / "part-000000.txt").write_text("half written\n")
        raise KeyboardInterrupt

    monkeypatch.setattr(shard_store, "_deal", killed)
    with pytest.raises(KeyboardInterrupt):
        load_device_text(cfg, partition_id=0, num_partitions=2)
    assert [p.name for p in shard_cache.iterdir() if not p.name.endswith(".lock")] == []
    monkeypatch.undo()
    monkeypatch.setenv("FEDNEXTWORD_CACHE", str(shard_cache.parent))
    assert len(load_device_text(cfg, partition_id=0, num_partitions=2).sentences) == 100


def test_file_notes_are_said_by_one_device_not_every_device(tmp_path):
    for i in range(4):
        (tmp_path / f"u{i}.txt").write_text(f"Hello from {i}. Goodbye from {i}.")
    (tmp_path / "photo.png").write_bytes(b"\x89PNG\x00\x00")
    cfg = Config(data_source="text-dir", data_path=str(tmp_path), partitioner="natural")
    notes = [load_device_text(cfg, partition_id=p, num_partitions=4).notes for p in range(4)]
    assert [len(n) for n in notes] == [1, 0, 0, 0] and "binary" in notes[0][0]


def test_concurrent_workers_deal_the_corpus_once(tmp_path, shard_cache):
    path = _corpus(tmp_path, sentences=2000)
    code = ("import sys; from task.config import Config; from task.data import shard_store; "
            "from task.data.partition import partition_sentences; "
            f"cfg = Config(data_source='corpus', data_path={str(path)!r}, partitioner='iid'); "
            "partition_sentences(cfg, int(sys.argv[1]), 4, []); "
            "print(sum(s.built_here for s in shard_store._OPENED.values()))")
    env = {"FEDNEXTWORD_CACHE": str(shard_cache.parent), "PATH": "/usr/bin:/bin"}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(p)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for p in range(4)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sorted(int(out) for out, _ in outs) == [0, 0, 0, 1]


# ---- registries, "folders" (a folder per person), "paragraphs" (a paragraph per device) ----------


def test_the_registries_name_every_source_and_partitioner_without_tensorflow_or_flower():
    code = ("import sys, task.data.partition as p; "
            "print(sorted(p.SOURCES), sorted(p.PARTITIONERS), "
            "[m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'flwr', 'keras', 'tf_keras')])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == ("['builtin', 'corpus', 'folders', 'paragraphs', 'shakespeare', 'text-dir'] "
                           "['iid', 'natural', 'size-skew'] []")


def test_a_registered_source_is_dealt_through_partition_sentences(tmp_path, monkeypatch):
    def toy(data_path, notes):  # three users, two sentences each
        return ((f"user-{u}", [f"w{u}", f"s{i}"]) for u in "cab" for i in range(2))

    monkeypatch.setitem(partition.SOURCES, "toy", toy)
    (tmp_path / "users.txt").write_text("the toy's data")  # its fingerprint: a changed file deals again
    cfg = Config(data_source="toy", data_path=str(tmp_path), partitioner="natural")
    dealt = [partition.partition_sentences(cfg, pid, 3, []) for pid in range(3)]
    assert [d[0] for d in dealt] == [f"partitioner=natural: user-{u}" for u in "abc"]
    assert [d[1] for d in dealt] == [[[f"w{u}", "s0"], [f"w{u}", "s1"]] for u in "abc"]


def _people(root: Path, people: int = 4) -> Path:
    for p in range(people):  # several files each, one of them nested
        person = root / f"person-{p}"
        (person / "notes" / "2024").mkdir(parents=True)
        (person / "chat.txt").write_text(f"Hello from p{p}. Second line of p{p}.\n")
        (person / "notes" / "2024" / "diary.txt").write_text(f"Diary of p{p} here. More of p{p}.\n")
    return root


def _owners(sentences):
    return {w for s in sentences for w in s if w[:1] == "p" and w[1:].isdigit()}


@pytest.mark.parametrize("devices", [4, 6])
def test_folders_natural_gives_each_device_exactly_one_persons_text(tmp_path, devices):
    cfg = Config(data_source="folders", data_path=str(_people(tmp_path / "people")), partitioner="natural")
    for pid in range(4):
        text = load_device_text(cfg, partition_id=pid, num_partitions=devices)
        assert _owners(text.sentences) == {f"p{pid}"} and len(text.sentences) == 4  # every file, nested ones too
        assert text.name.endswith(f"(partitioner=natural: person-{pid})")
    for pid in range(4, devices):  # more devices than people: the rest get none, and say so
        with pytest.raises(files.DataError, match="4 natural unit"):
            load_device_text(cfg, partition_id=pid, num_partitions=devices)


def test_folders_with_fewer_devices_than_people_keep_each_persons_folders_whole(tmp_path):
    cfg = Config(data_source="folders", data_path=str(_people(tmp_path / "people", 5)), partitioner="natural")
    owners = [_owners(load_device_text(cfg, partition_id=pid, num_partitions=2).sentences) for pid in range(2)]
    assert owners == [{"p0", "p1", "p2"}, {"p3", "p4"}]  # ceil(5 / 2) = 3 whole people per device


def test_folders_refuse_a_file_directly_in_the_root_naming_it(tmp_path):
    root = _people(tmp_path / "people", 2)
    (root / "stray.txt").write_text("Whose is this.")
    cfg = Config(data_source="folders", data_path=str(root), partitioner="natural")
    with pytest.raises(files.DataError, match=r"stray\.txt: a file directly in"):
        load_device_text(cfg, partition_id=0, num_partitions=2)


def test_each_device_names_its_own_units_not_the_next_devices():
    # 4 units, one per device: each device's log named itself and the next two devices' units
    unit_of = np.array([3, 3, 0, 1, 2, 2], np.int32)
    part_of, count = assign(unit_of, ["d", "a", "b", "c"], "natural", 4, seed=0)
    first, counts = shard_store._units_per_partition(unit_of, part_of, ["d", "a", "b", "c"], count)
    assert first == [["a"], ["b"], ["c"], ["d"]] and counts == [1, 1, 1, 1]


WIKI = """ 
 = First Article = 
 
 One sentence only . 
 Two here . And two . 
 
 = = A section = = 
 
 Three a . Three b . Three c . 
 Lonely last . 
 
 = Second Article = 
 
 Too short . 
 
 = Third Article = 
 
 Fine one . Fine two . 
"""


def test_paragraphs_one_per_device_short_ones_merged_within_their_article(tmp_path):
    folder = tmp_path / "wikitext"
    folder.mkdir()
    (folder / "test.txt").write_text(WIKI)
    (folder / "valid.txt").write_text(WIKI.replace("Article", "Page"))
    notes = []
    units = {}
    for unit, sentence in partition.SOURCES["paragraphs"](str(folder), notes):
        units.setdefault(unit, []).append(" ".join(sentence))
    assert list(units.values()) == 2 * [
        ["one sentence only", "two here", "and two"],  # merged into the next paragraph
        ["three a", "three b", "three c", "lonely last"],  # the article's last one: into the one before
        ["fine one", "fine two"]]  # Second Article: 1 sentence in all, left out
    assert list(units)[:3] == ["0000000 First Article", "0000001 First Article", "0000002 Third Article"]
    assert len(notes) == 2 and "1 article(s) with fewer than 2 sentences" in notes[0]

    cfg = Config(data_source="paragraphs", data_path=str(folder), partitioner="natural", test_fraction=0.2)
    devices = [load_device_text(cfg, partition_id=pid, num_partitions=6) for pid in range(6)]
    assert [len(d.sentences) for d in devices] == [3, 4, 2, 3, 4, 2]
    assert devices[1].test == [["lonely", "last"]]  # the held-out text is the paragraph's later sentences


def test_paragraphs_of_plain_text_are_blank_line_blocks():
    lines = ["First line. Second line.", "Still the first paragraph.", "", "", "Alone.", "", "Next one. And more."]
    got = [(a, [" ".join(s) for s in p]) for a, p in partition.paragraph_units(lines, [], "notes.txt")]
    assert got == [("notes.txt", ["first line", "second line", "still the first paragraph"]),
                   ("notes.txt", ["alone", "next one", "and more"])]
