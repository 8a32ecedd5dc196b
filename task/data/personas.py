"""Built-in synthetic keyboard corpus: many simulated users ("devices"), each with a persona.

Why synthetic: the template must run out of the box with no download, and federated learning
only shows its value on non-IID data. Every device therefore gets
- a shared everyday language (plans, thanks, feelings, time) that every user types, and
- device-specific structure: 2-3 favourite topics (the first dominant), favourite words within
  those topics, friends' names, a pet, a home city and typing habits (greeting, sign-off, filler).
A model trained on one device alone sees only its own topics and words; the federated model
learns the common language plus every topic.

Design rules:
- Deterministic across machines and processes: RNGs are seeded from strings (random.Random
  hashes str seeds with SHA-512), never from the salted built-in hash().
- Lazy: a device's persona and sentences depend only on (device_id, seed), so device 9,999 is
  generated without touching devices 0..9,998. Sentences come from one RNG stream, so a shorter
  request is a prefix of a longer one.
- Small vocabulary: every word is among the 8,000 most frequent English words (wordfreq), so a
  modest model vocabulary covers the corpus. vocabulary_words() is derived from personas.json.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from task.data.text import tokenise

# --- The word lists and templates: data, in personas.json ------------------------------------
# Persona building blocks (names, pets, cities, typing habits); words every device shares
# (SHARED_SLOTS); topics, each with templates whose {slots} are filled from its own slot words,
# then from the persona (friend, pet, pet_kind, home), then from SHARED_SLOTS (a slot name may end
# in a digit, {dish2}, to draw a second, different word); whole-message habits ({Greeting} and
# {Sign_off} are the persona's habits with a capital letter).
_DATA = json.loads(Path(__file__).with_name("personas.json").read_text(encoding="utf-8"))
NAMES: tuple[str, ...] = tuple(_DATA["names"])
PET_NAMES: tuple[str, ...] = tuple(_DATA["pet_names"])
PET_KINDS: tuple[str, ...] = tuple(_DATA["pet_kinds"])
CITIES: tuple[str, ...] = tuple(_DATA["cities"])
GREETINGS: tuple[str, ...] = tuple(_DATA["greetings"])
SIGN_OFFS: tuple[str, ...] = tuple(_DATA["sign_offs"])
OPENER_FILLERS: tuple[str, ...] = tuple(_DATA["opener_fillers"])
TAIL_FILLERS: tuple[str, ...] = tuple(_DATA["tail_fillers"])
SHARED_SLOTS: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in _DATA["shared_slots"].items()}
GENERAL_TEMPLATES: tuple[str, ...] = tuple(_DATA["general_templates"])
TOPIC_TEMPLATES: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in _DATA["topic_templates"].items()}
TOPIC_SLOTS: dict[str, dict[str, tuple[str, ...]]] = {
    topic: {slot: tuple(words) for slot, words in slots.items()} for topic, slots in _DATA["topic_slots"].items()}
TOPICS: tuple[str, ...] = tuple(TOPIC_TEMPLATES)
HABIT_TEMPLATES: tuple[str, ...] = tuple(_DATA["habit_templates"])


# How a device splits its sentences: share of topic sentences, then weights within its topics.
TOPIC_SHARE = 0.65
TOPIC_WEIGHTS = {2: (0.7, 0.3), 3: (0.55, 0.25, 0.2)}
FAVOURITES_PER_SLOT = 3
FAVOURITE_RATE = 0.5  # how often a topic slot uses one of the persona's favourite words

_SLOT = re.compile(r"\{(\w+)\}")


# --- Personas ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Persona:
    """One simulated keyboard user; everything that makes a device's text its own."""

    device_id: int
    topics: tuple[str, ...]  # 2-3 favourite topics, first one dominant
    friends: tuple[str, ...]  # names this user writes about/to
    greeting: str  # habitual opener
    sign_off: str  # habitual closing phrase
    fillers: tuple[str, ...]  # one opener filler, one tail filler
    pet: str  # pet's name
    pet_kind: str
    home: str  # home city
    # Favourite words per "topic.slot", e.g. (("food.dish", ("curry", "pie", "fish")), ...): the
    # same user keeps typing the same dishes, teams, subjects.
    favourites: tuple[tuple[str, tuple[str, ...]], ...]

    @property
    def topic_weights(self) -> tuple[float, ...]:
        return TOPIC_WEIGHTS[len(self.topics)]


def persona(device_id: int, seed: int = 0) -> Persona:
    """The persona of one device; depends only on (device_id, seed)."""
    rng = random.Random(f"persona:{seed}:{device_id}")
    topics = tuple(rng.sample(TOPICS, rng.choice((2, 3))))
    favourites = tuple(
        (f"{topic}.{slot}", tuple(rng.sample(words, min(FAVOURITES_PER_SLOT, len(words)))))
        for topic in topics
        for slot, words in TOPIC_SLOTS[topic].items()
    )
    return Persona(
        device_id=device_id,
        topics=topics,
        friends=tuple(rng.sample(NAMES, rng.randint(3, 5))),
        greeting=rng.choice(GREETINGS),
        sign_off=rng.choice(SIGN_OFFS),
        fillers=(rng.choice(OPENER_FILLERS), rng.choice(TAIL_FILLERS)),
        pet=rng.choice(PET_NAMES),
        pet_kind=rng.choice(PET_KINDS),
        home=rng.choice(CITIES),
        favourites=favourites,
    )


# --- Sentences ---------------------------------------------------------------------------------


def _all_slot_words() -> list[str]:
    lists = [*SHARED_SLOTS.values(), NAMES, PET_NAMES, PET_KINDS, CITIES, GREETINGS, SIGN_OFFS]
    lists += [OPENER_FILLERS, TAIL_FILLERS]
    lists += [words for slots in TOPIC_SLOTS.values() for words in slots.values()]
    return [word for words in lists for word in words]


# Capitalised words that keep their capital after a greeting ("Hey, Max is ...").
_PROPER_NOUNS = frozenset(w for w in _all_slot_words() if w[:1].isupper())


def _fill(
    template: str,
    slots: dict[str, tuple[str, ...]],
    favourites: dict[str, tuple[str, ...]],
    rng: random.Random,
) -> str:
    """Replace each {slot}; {slot2} draws a different word from the same list as {slot}."""
    used: set[str] = set()

    def draw(match: re.Match) -> str:
        name = match.group(1).rstrip("0123456789")
        words = slots[name]
        if name in favourites and rng.random() < FAVOURITE_RATE:
            words = favourites[name]
        word = rng.choice(words)
        while word in used and len(words) > 1:
            word = rng.choice(words)
        used.add(word)
        return word

    return _SLOT.sub(draw, template)


def _lower_first(text: str) -> str:
    """Lower-case the first letter unless it starts a name or "I" (for "Hey Sam, the game ...")."""
    first = text.split(" ", 1)[0].rstrip(",!?.")
    if first in ("I", "I'm", "I'll", "I've", "I'd") or first in _PROPER_NOUNS:
        return text
    return text[:1].lower() + text[1:]


def _decorate(text: str, p: Persona, rng: random.Random) -> str:
    """Add the persona's habits: greeting (often to a friend), filler, sign-off."""
    roll = rng.random()
    if roll < 0.2:
        friend = rng.choice(p.friends)
        who = f" {friend}" if rng.random() < 0.6 and friend not in text else ""
        text = f"{p.greeting.capitalize()}{who}, {_lower_first(text)}"
    elif roll < 0.3:
        text = f"{p.fillers[0].capitalize()}, {_lower_first(text)}"
    elif roll < 0.4 and text[-1] in ".!":  # "... again lol", but never after a question mark
        text = f"{text[:-1]} {p.fillers[1]}"
    if rng.random() < 0.1:
        end = "" if text[-1] in ".!?" else "."
        text = f"{text}{end} {p.sign_off.capitalize()}!"
    return text


def device_sentences_with_topics(
    device_id: int, num_sentences: int, seed: int = 0
) -> list[tuple[str, str]]:
    """(topic, sentence) pairs of one device; topic is "general" for shared chat and habits."""
    p = persona(device_id, seed)
    rng = random.Random(f"sentences:{seed}:{device_id}")
    favourites: dict[str, dict[str, tuple[str, ...]]] = {topic: {} for topic in p.topics}
    for key, words in p.favourites:
        topic, slot = key.split(".")
        favourites[topic][slot] = words
    habit_slots = {
        "friend": p.friends,
        "pet": (p.pet,),
        "pet_kind": (p.pet_kind,),
        "home": (p.home,),
        "Greeting": (p.greeting.capitalize(),),
        "Sign_off": (p.sign_off.capitalize(),),
        "sign_off": (p.sign_off,),
    }
    out = []
    for _ in range(num_sentences):
        roll = rng.random()
        if roll < TOPIC_SHARE:
            topic = rng.choices(p.topics, weights=p.topic_weights)[0]
            template = rng.choice(TOPIC_TEMPLATES[topic])
            slots, liked = {**SHARED_SLOTS, **habit_slots, **TOPIC_SLOTS[topic]}, favourites[topic]
        elif roll < 0.95:
            topic, template = "general", rng.choice(GENERAL_TEMPLATES)
            slots, liked = {**SHARED_SLOTS, **habit_slots}, {}
        else:
            topic, template = "general", rng.choice(HABIT_TEMPLATES)
            out.append((topic, _fill(template, habit_slots, {}, rng)))
            continue
        text = _decorate(_fill(template, slots, liked, rng), p, rng)
        out.append((topic, text[:1].upper() + text[1:]))
    return out


def device_sentences(device_id: int, num_sentences: int, seed: int = 0) -> list[str]:
    """num_sentences sentences typed on one device, as raw text with capitals and punctuation."""
    return [text for _, text in device_sentences_with_topics(device_id, num_sentences, seed)]


# --- Vocabulary --------------------------------------------------------------------------------


def vocabulary_words() -> set[str]:
    """Every token the generator can emit, derived from the templates and word lists above.

    Exact because no template puts a slot directly against a letter or apostrophe, so a filled
    sentence tokenises into template tokens plus slot-word tokens.
    """
    templates = [*GENERAL_TEMPLATES, *HABIT_TEMPLATES]
    templates += [t for ts in TOPIC_TEMPLATES.values() for t in ts]
    words = {tok for t in templates for tok in tokenise(_SLOT.sub(" ", t))}
    words |= {tok for w in _all_slot_words() for tok in tokenise(w)}
    return words
