import numpy as np
import pytest

from task.config import Config
from task.data.device_text import load_device_text, make_windows, split_train_test
from task.data.files import DataError
from task.data.partition import corpus_layout, corpus_pairs
from task.data.vocab import BOS_ID, EOS_ID, PAD_ID, default_vocabulary

VOCAB = default_vocabulary(2000)


def test_windows_are_next_word_targets_at_every_position_padded_right():
    x, y = make_windows([["i", "love", "you"]], VOCAB, seq_len=6)
    ids = VOCAB.encode(["i", "love", "you"])
    assert x.tolist() == [[BOS_ID, *ids, PAD_ID, PAD_ID]]
    assert y.tolist() == [[*ids, EOS_ID, PAD_ID, PAD_ID]]
    assert x.dtype == np.int32


def test_long_sentences_are_cut_into_windows_that_lose_no_target():
    sentence = ["the"] * 11  # 13 ids with <bos>/<eos> -> 12 targets
    x, y = make_windows([sentence], VOCAB, seq_len=5)
    assert x.shape == (3, 5)
    assert (y != PAD_ID).sum() == 12
    assert x[1, 0] == y[0, -1]  # the next window starts where the last one's target ended


def test_the_held_out_text_is_the_users_later_sentences():
    sentences = [[f"w{i}"] for i in range(50)]
    train, test = split_train_test(sentences, 0.2)
    assert train == sentences[:40] and test == sentences[40:]
    assert split_train_test(sentences[:1] * 2, 0.01) == (sentences[:1], sentences[:1])  # one on each side


def test_builtin_partitions_are_different_devices_with_held_out_text():
    cfg = Config(sentences_per_device=50)
    a = load_device_text(cfg, partition_id=0, num_partitions=10)
    b = load_device_text(cfg, partition_id=1, num_partitions=10)
    assert a.train != b.train
    assert abs(len(a.test) - 0.2 * (len(a.train) + len(a.test))) <= 1
    assert load_device_text(cfg, partition_id=0, num_partitions=10) == a


def test_text_dir_natural_split_gives_whole_files_to_devices(tmp_path):
    for i in range(4):
        (tmp_path / f"f{i}.txt").write_text(f"file {i} says hello. and goodbye {i}.")
    cfg = Config(data_source="text-dir", data_path=str(tmp_path), partitioner="natural")
    dev = load_device_text(cfg, partition_id=1, num_partitions=2)  # files f2 and f3
    words = {w for s in dev.train + dev.test for w in s}
    assert {"2", "3"} <= words and not {"0", "1"} & words
    assert "f2.txt" in dev.name


def test_corpus_natural_split_keeps_articles_whole(tmp_path):
    text = "".join(f" = Title {i} = \n Sentence one of article a{i}. Sentence two of a{i}.\n" for i in range(6))
    (tmp_path / "wiki.txt").write_text(text)
    cfg = Config(data_source="corpus", data_path=str(tmp_path / "wiki.txt"), partitioner="natural")
    dev = load_device_text(cfg, partition_id=2, num_partitions=3)  # articles 4 and 5
    words = {w for s in dev.train + dev.test for w in s}
    assert {"a4", "a5"} <= words and not {"a0", "a1", "a2", "a3"} & words


def test_play_scripts_split_naturally_by_speaker():
    play = "ROMEO:\nBut soft, what light. It is the east.\n\nJULIET:\nO Romeo.\n\nROMEO:\nShall I hear more.\n"
    lines = play.split("\n")
    assert corpus_layout(lines) == "speakers"
    units: dict[str, list] = {}
    for unit, sentence in corpus_pairs(lines, "speakers"):
        units.setdefault(unit, []).append(sentence)
    assert set(units) == {"ROMEO", "JULIET"}
    assert ["shall", "i", "hear", "more"] in units["ROMEO"]


def test_paragraphs_are_the_units_of_a_corpus_without_headings_or_speakers():
    lines = ["First paragraph. Still first.", "still first here", "", "  ", "Second one.", "", "Third."]
    assert corpus_layout(lines) == "paragraphs"
    units = [u for u, _ in corpus_pairs(lines, "paragraphs")]
    assert units == ["paragraph 0"] * 3 + ["paragraph 1", "paragraph 2"]


@pytest.mark.parametrize("partitioner", ["iid", "size-skew"])
def test_iid_and_size_skew_deal_every_sentence_exactly_once(tmp_path, partitioner):
    (tmp_path / "c.txt").write_text(" ".join(f"sentence number s{i}." for i in range(60)))
    cfg = Config(data_source="corpus", data_path=str(tmp_path / "c.txt"), partitioner=partitioner)
    seen, sizes = [], []
    for p in range(3):
        dev = load_device_text(cfg, partition_id=p, num_partitions=3)
        seen += [s[-1] for s in dev.train + dev.test]
        sizes.append(len(dev.train) + len(dev.test))
    assert sorted(seen) == sorted(f"s{i}" for i in range(60))
    if partitioner == "size-skew":
        assert sizes[0] > sizes[1] > sizes[2]  # sizes fall like 1/(i+1)
    else:
        assert max(sizes) - min(sizes) <= 1


def test_natural_split_with_fewer_units_than_devices_says_so(tmp_path):
    (tmp_path / "a.txt").write_text("one sentence. another one.")
    (tmp_path / "b.txt").write_text("third sentence. fourth one.")
    cfg = Config(data_source="text-dir", data_path=str(tmp_path), partitioner="natural")
    with pytest.raises(DataError, match="2 natural unit"):
        load_device_text(cfg, partition_id=2, num_partitions=3)


def test_device_data_path_reads_its_own_directory_and_skips_binary_files(tmp_path):
    (tmp_path / "notes.txt").write_text("Meet me at the station. See you soon.")
    (tmp_path / "photo.bin").write_bytes(b"\x89PNG\x00\x00binary")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 time.".encode("latin-1"))  # not UTF-8: replaced
    dev = load_device_text(Config(), data_path=str(tmp_path))
    words = {w for s in dev.train + dev.test for w in s}
    assert {"station", "soon", "time"} <= words and "png" not in words


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: p / "missing", "no such file"),
        (lambda p: p, "holds no files"),
        (lambda p: (p / "empty.txt").write_text("   \n") and p / "empty.txt", "0 sentence"),
        (lambda p: (p / "one.txt").write_text("just one sentence") and p / "one.txt", "1 sentence"),
    ],
)
def test_unusable_device_text_raises_a_clear_error_naming_the_path(tmp_path, setup, message):
    path = setup(tmp_path)
    with pytest.raises(DataError, match=message) as err:
        load_device_text(Config(), data_path=str(path))
    assert str(path) in str(err.value)


def test_partition_outside_the_population_is_refused():
    with pytest.raises(DataError, match="outside"):
        load_device_text(Config(), partition_id=5, num_partitions=5)


def test_every_data_source_name_has_a_reader():
    import task.config
    from task.data.partition import PARTITIONERS, SOURCES

    assert SOURCES["builtin"] is None and all(callable(read) for name, read in SOURCES.items() if name != "builtin")
    if hasattr(task.config, "DATA_SOURCES"):  # until task.config reads the names from task.data.partition
        assert set(task.config.DATA_SOURCES) <= set(SOURCES)
        assert set(task.config.PARTITIONERS) == set(PARTITIONERS)
    else:  # the config accepts exactly the registered names
        for name in SOURCES:
            Config.from_run_config({"data.source": name, "data.path": "x", "data.partitioner": "natural"})
        with pytest.raises(ValueError, match="data.source"):
            Config.from_run_config({"data.source": "nonesuch", "data.path": "x"})
