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
