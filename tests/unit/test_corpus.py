"""The synthetic corpus is the default data: it must be reproducible, lazy, exactly described by
vocabulary_words() and non-IID across devices."""

import collections
import hashlib
import os
import re
import subprocess
import sys

import pytest

from task.data import personas
from task.data.personas import TOPICS, device_sentences, persona, vocabulary_words
from task.data.text import tokenise


def _digest(sentences: list[str]) -> str:
    return hashlib.sha256("\n".join(sentences).encode()).hexdigest()


def test_same_device_and_seed_give_same_text():
    assert device_sentences(7, 60) == device_sentences(7, 60)
    assert persona(7) == persona(7)
    assert device_sentences(7, 60, seed=1) != device_sentences(7, 60)


def test_same_text_in_a_fresh_process_with_another_hash_seed():
    code = (
        "import hashlib; from task.data.personas import device_sentences; "
        "print(hashlib.sha256('\\n'.join(device_sentences(7, 60)).encode()).hexdigest())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == _digest(device_sentences(7, 60))


@pytest.mark.parametrize("n", [0, 1, 37, 300])
def test_returns_n_sentences(n):
    sentences = device_sentences(3, n)
    assert len(sentences) == n
    assert all(s and s[0].isupper() and tokenise(s) for s in sentences)


def test_shorter_request_is_a_prefix_of_a_longer_one():
    assert device_sentences(11, 100)[:40] == device_sentences(11, 40)


def test_a_high_device_id_is_generated_alone(monkeypatch):
    seen = []
    real_persona = personas.persona

    def spy(device_id, seed=0):
        seen.append(device_id)
        return real_persona(device_id, seed)

    monkeypatch.setattr(personas, "persona", spy)
    sentences = personas.device_sentences(9999, 300)
    assert len(sentences) == 300
    assert seen == [9999]  # no other persona was built: the cost does not grow with the id


def test_vocabulary_words_covers_every_generated_token_exactly():
    vocab = vocabulary_words()
    emitted = collections.Counter(
        tok for d in range(100) for s in device_sentences(d, 100) for tok in tokenise(s)
    )
    assert set(emitted) <= vocab
    # Exact, not a loose superset: nearly every listed word shows up in 10,000 sentences.
    assert len(set(emitted)) > 0.9 * len(vocab)
    assert all(w == w.lower() and tokenise(w) == [w] for w in vocab)


def test_no_slot_is_glued_to_a_word():
    """A slot next to a letter or apostrophe ("{friend}'s") would mint tokens not in the lists."""
    templates = [*personas.GENERAL_TEMPLATES, *personas.HABIT_TEMPLATES]
    templates += [t for ts in personas.TOPIC_TEMPLATES.values() for t in ts]
    glued = [t for t in templates if re.search(r"[\w']\{|\}[\w']", t)]
    assert glued == []


def test_enough_topics_and_templates():
    assert len(TOPICS) >= 12
    assert all(len(personas.TOPIC_TEMPLATES[t]) >= 8 for t in TOPICS)


def test_devices_have_different_personas():
    people = [persona(d) for d in range(50)]
    assert len({p.topics for p in people}) > 40
    assert len({p.topics[0] for p in people}) >= 10
    assert len({p.friends for p in people}) > 40
    assert all(2 <= len(p.topics) <= 3 and len(set(p.topics)) == len(p.topics) for p in people)


def test_topic_mix_follows_the_persona():
    mixes = {}
    for d in range(6):
        p = persona(d)
        counts = collections.Counter(t for t, _ in personas.device_sentences_with_topics(d, 400))
        assert set(counts) <= {*p.topics, "general"}
        assert counts.most_common(2)[0][0] in (p.topics[0], "general")
        assert max(counts, key=lambda t: counts[t] if t != "general" else -1) == p.topics[0]
        assert 0.2 < counts["general"] / 400 < 0.45
        mixes[d] = counts
    dominant = {max(c, key=lambda t: c[t] if t != "general" else -1) for c in mixes.values()}
    assert len(dominant) >= 3


def test_personal_habits_show_up_in_the_text():
    p = persona(5)
    text = " ".join(device_sentences(5, 300))
    assert p.greeting.capitalize() in text
    assert p.sign_off.capitalize() in text
    assert sum(text.count(name) for name in p.friends) >= 10
