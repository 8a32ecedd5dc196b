import json

import pytest

from task.data import personas
from task.data.text import split_sentences, tokenise
from task.data.vocab import BOS_ID, EOS_ID, SPECIALS, UNK_ID, Vocabulary, default_vocabulary


def test_tokenise_lowercases_keeps_inner_apostrophes_and_drops_punctuation():
    assert tokenise("Hey Emma, I DON’T know!! 😂 #tbh") == ["hey", "emma", "i", "don't", "know", "tbh"]


def test_tokenise_keeps_non_ascii_letters_and_digits():
    assert tokenise("Café crème at 8") == ["café", "crème", "at", "8"]


def test_split_sentences_on_end_punctuation_and_lines_dropping_empty_ones():
    assert split_sentences("Hi there. How are you?!\n\n...ok") == [["hi", "there"], ["how", "are", "you"], ["ok"]]


def test_vocabulary_starts_with_specials_and_has_requested_size():
    vocab = default_vocabulary(500)
    assert len(vocab) == 500
    assert tuple(vocab.words[:4]) == SPECIALS
    assert vocab.words[4] == "the"  # most frequent English word first


def test_encode_sentence_frames_and_maps_unknown_words():
    vocab = default_vocabulary(1000)
    ids = vocab.encode_sentence(["the", "qwzxv"])
    assert ids[0] == BOS_ID and ids[-1] == EOS_ID and ids[2] == UNK_ID
    assert vocab.decode(ids[1:2]) == ["the"]


def test_vocabulary_save_load_round_trip(tmp_path):
    vocab = default_vocabulary(300)
    vocab.save(tmp_path / "vocab.json")
    assert Vocabulary.load(tmp_path / "vocab.json").words == vocab.words


def test_loading_a_bad_vocabulary_file_names_the_file(tmp_path):
    bad = tmp_path / "vocab.json"
    bad.write_text(json.dumps({"words": ["a", "b"]}))
    with pytest.raises(ValueError, match="vocab.json"):
        Vocabulary.load(bad)


def test_default_vocabulary_covers_the_builtin_corpus():
    vocab = default_vocabulary(8000)
    missing = [w for w in personas.vocabulary_words() if w not in vocab]
    assert not missing
