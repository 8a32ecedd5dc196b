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
  modest model vocabulary covers the corpus. vocabulary_words() is derived from the lists below.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from task.text import tokenise

# --- Persona building blocks -------------------------------------------------------------------

NAMES = (
    "Emma", "James", "Sarah", "Alex", "John", "David", "Michael", "Chris", "Anna", "Kate",
    "Tom", "Sam", "Ben", "Jack", "Lucy", "Mark", "Paul", "Mike", "Jessica", "Laura", "Rachel",
    "Daniel", "Ryan", "Adam", "Amy", "Emily", "Matt", "Nick", "Lisa", "Jake", "Josh", "Kevin",
    "Steve", "Dan", "Joe", "Luke", "Grace", "Hannah", "Lily", "Ruby", "Oscar", "Leo", "Tony",
    "Peter", "George", "Harry", "Henry", "Jim", "Katie", "Noah", "Liam", "Lucas", "Jacob",
    "Nathan", "Tim", "Andy", "Simon",
)
PET_NAMES = ("Max", "Charlie", "Buddy", "Rocky", "Bailey", "Lucy", "Oscar", "Leo", "Ruby", "Lily")
PET_KINDS = ("dog", "cat", "puppy", "rabbit", "bird")
CITIES = (
    "London", "Paris", "Rome", "Berlin", "Tokyo", "Dublin", "Madrid", "Boston", "Chicago",
    "Sydney", "Amsterdam", "Barcelona", "Vienna", "Edinburgh", "Glasgow", "Manchester",
    "Toronto", "Vancouver", "Miami", "Seattle", "Denver", "Portland", "Austin", "Dallas",
    "Atlanta",
)
GREETINGS = ("hey", "hi", "hello", "morning", "yo", "hey there", "good morning", "evening")
SIGN_OFFS = (
    "see you soon", "talk later", "love you", "cheers", "take care", "speak soon", "bye for now",
    "have a good one", "later", "catch you later", "lots of love",
)
# Openers go before a sentence ("Honestly, ..."), tails after it ("... lol").
OPENER_FILLERS = ("honestly", "omg", "btw", "anyway", "so", "actually", "well", "ok so")
TAIL_FILLERS = ("lol", "haha", "tbh", "literally", "to be fair", "i guess")

# --- Words every device shares -----------------------------------------------------------------

SHARED_SLOTS: dict[str, tuple[str, ...]] = {
    "time": (
        "tonight", "tomorrow", "this weekend", "on Friday", "later", "next week", "this morning",
        "this afternoon", "tomorrow night", "on Saturday", "on Sunday", "after work",
        "after lunch", "this evening",
    ),
    "past_time": ("last night", "yesterday", "on Saturday", "this afternoon", "at the weekend"),
    "day": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "month": (
        "January", "February", "March", "April", "May", "June", "July", "August", "September",
        "October", "November", "December",
    ),
    "clock": ("six", "seven", "eight", "nine", "ten", "noon", "half six", "seven o'clock"),
    "minutes": ("five", "ten", "twenty", "thirty"),
    "period": ("day", "week", "morning", "afternoon", "weekend"),
    "feeling": (
        "tired", "happy", "excited", "bored", "stressed", "busy", "hungry", "sick", "nervous",
        "exhausted", "annoyed", "relaxed",
    ),
    "low": ("tired", "sick", "down", "stressed", "exhausted"),
    "meal": ("lunch", "dinner", "breakfast", "coffee", "drinks"),
    "place": ("the pub", "the park", "town", "the beach", "the station", "my place", "the bar"),
    "favour": ("the help", "dinner", "the lift", "everything", "the card", "coming", "the gift"),
    "event": ("the interview", "the exam", "the game", "the test", "the meeting", "the race"),
    "thing": ("your keys", "a jacket", "some cash", "some food", "a bottle of wine", "your laptop"),
    "excuse": (
        "in the shower", "driving", "at the doctor", "asleep", "in a meeting", "at the shop",
    ),
    "nice": ("amazing", "great", "lovely", "brilliant", "perfect", "so good", "incredible"),
    "bad": ("awful", "terrible", "so boring", "a disaster", "really bad", "so annoying"),
}

GENERAL_TEMPLATES = (
    "Are we still on for {meal} {time}?",
    "What time are you free {time}?",
    "I'm so {feeling} today.",
    "Thanks so much for {favour}!",
    "Can you call me when you get home?",
    "I'll be there in {minutes} minutes.",
    "Running a bit late, sorry!",
    "Do you want to get {meal} {time}?",
    "Let me know when you're free.",
    "Happy birthday {friend}! Have a great day.",
    "Good night, sleep well.",
    "How was your day?",
    "I can't wait for the weekend.",
    "Sorry I missed your call, I was {excuse}.",
    "See you at {clock}.",
    "Are you coming to {place} {time}?",
    "Just got home, what a long day.",
    "Can we talk {time}?",
    "I'm on my way now.",
    "Thank you, that's really kind of you.",
    "No worries at all.",
    "What are you up to {time}?",
    "Don't forget to bring {thing}.",
    "Did you get my message?",
    "I'm free {time} if you want to meet up.",
    "Hope you feel better soon.",
    "Good luck with {event} {time}!",
    "{friend} says hi.",
    "Is it okay if I bring {friend}?",
    "Meet you at {place} at {clock}?",
    "I'm feeling a bit {low}, might stay in {time}.",
    "That sounds {nice}, count me in!",
    "It's so nice outside today.",
    "Did you hear from {friend} {past_time}?",
    "Let's do something fun {time}.",
    "I'll text you when I leave.",
)

# --- Topics ------------------------------------------------------------------------------------
# Each topic: templates with {slots} plus its own slot words. Slots not defined by the topic fall
# back to the persona (friend, pet, pet_kind, home) and then to SHARED_SLOTS. A slot name may end in
# a digit ({dish2}) to draw a second, different word from the same list.

TOPIC_TEMPLATES: dict[str, tuple[str, ...]] = {
    "food": (
        "I'm making {dish} for {meal} tonight.",
        "Do we have any {ingredient} left?",
        "Can you grab some {ingredient} on your way home?",
        "The {dish} was {nice}, thanks for cooking!",
        "Want to try {restaurant} {time}?",
        "I burnt the {dish} again.",
        "What should we have for {meal}?",
        "This recipe needs more {ingredient}.",
        "We ordered {dish} from {restaurant} and it was {nice}.",
        "My {cook} makes the best {dish}.",
        "I'm so hungry, I could eat {dish} every day.",
        "Should we have {dish} or {dish2} for {meal}?",
    ),
    "sport": (
        "Did you see the {team} game {past_time}?",
        "{team} {result} again, I can't believe it.",
        "What a goal in the second half!",
        "Are you watching the match {time}?",
        "The {official} was a joke {past_time}.",
        "I got tickets for the {team} game on {day}!",
        "Who do you think will win the league this year?",
        "Want to watch the game at {venue}?",
        "Their {player} was {nice} {past_time}.",
        "We have {sport} training on {day} at {clock}.",
        "Our {sport} team finally won a game!",
        "{team} need a new {player}, they look {bad}.",
    ),
    "music": (
        "Have you heard the new {record} yet?",
        "I've been listening to {genre} all {period}.",
        "I'm learning to play the {instrument}.",
        "Got two tickets for the {show} on {day}, want to come?",
        "This song has been stuck in my head all {period}.",
        "The {show} was {nice} last night.",
        "Can you send me that song you played {past_time}?",
        "I love {genre} music so much.",
        "My {instrument} lesson got moved to {day}.",
        "Turn the music up, this is my favourite song!",
        "The {band} are playing in {home} in {month}!",
    ),
    "work": (
        "I have a meeting with my boss at {clock}.",
        "Stuck at work until {clock} again.",
        "Can you send me the {document} before {day}?",
        "The {document} is due {time} and I haven't started.",
        "Our new manager seems really {manner}.",
        "I'm working from home {time}.",
        "The office printer is broken again.",
        "Just finished a {length} call with the client.",
        "Do you want to grab lunch after the meeting?",
        "I might get a promotion this year!",
        "Too many emails today, I need a holiday.",
        "My boss wants the {document} by {day}, no pressure.",
    ),
    "study": (
        "I have a {subject} exam on {day}.",
        "Did you finish the {subject} homework?",
        "Can I borrow your notes from {subject}?",
        "The library is so quiet today.",
        "Our {subject} teacher gave us so much homework.",
        "I need to study for the test {time}.",
        "I got a {grade} on my {subject} essay!",
        "Want to study together at the library {time}?",
        "My {subject} class got cancelled.",
        "I'm so behind on my {subject} project.",
        "The {subject} lecture was {bad} {past_time}.",
    ),
    "travel": (
        "We just landed in {city}!",
        "Our flight to {city} is delayed by an hour.",
        "Have you ever been to {city}?",
        "I'm packing for the trip {time}.",
        "The hotel has a {feature}.",
        "Can you recommend a good place to stay in {city}?",
        "The train to {city} leaves at {clock}.",
        "Don't forget your passport!",
        "We're thinking of going to {city} in {month}.",
        "The {sight} here is {nice}.",
        "Flying back to {home} {time}.",
        "Should we go to {city} or {city2} this summer?",
    ),
    "weather": (
        "It's been wet and grey all {period}.",
        "It's so {weather} today, I'm staying in.",
        "They said it will snow {time}.",
        "Take a coat, it's about to rain.",
        "What a beautiful {weather} day!",
        "The wind is crazy out there.",
        "It's too hot to sleep.",
        "Is it cold where you are?",
        "There's a storm coming {time}.",
        "Rain again in {home}, of course.",
        "I hope it stays {weather} for the weekend.",
    ),
    "family": (
        "My {relative} is coming over {time}.",
        "Can you pick up the kids from school at {clock}?",
        "Give your {relative} a call, it's been a while.",
        "The kids are finally asleep.",
        "We're visiting my {relative} this weekend.",
        "My {relative} says hi to everyone.",
        "Family dinner {time}, are you coming?",
        "My little {young} just started school.",
        "Are you coming home for {holiday}?",
        "I had a long chat with my {relative} {past_time}.",
        "The kids want to go to {outing} {time}.",
    ),
    "pets": (
        "{pet} ate my {object} again.",
        "Taking {pet} for a walk in the park.",
        "{pet} is sleeping on my bed again.",
        "The {pet_kind} needs to see the doctor {time}.",
        "Can you feed {pet} while I'm away?",
        "Look how cute {pet} is today!",
        "We're thinking of getting another {animal}.",
        "{pet} hates the rain.",
        "I need to buy more {supplies} for {pet}.",
        "{pet} learned a new trick!",
        "{pet} keeps chasing the {animal} next door.",
    ),
    "gaming": (
        "Want to play online {time}?",
        "I finally beat the last level!",
        "This game is so {bad}.",
        "Are you on tonight? We need one more player.",
        "I stayed up until {late} in the morning playing again.",
        "The new update broke everything.",
        "Did you get the new {gear}?",
        "My team keeps losing, it's so annoying.",
        "I just got my best score ever!",
        "Let's play {game} {time}.",
        "The boss on this level is impossible.",
        "My {gear} stopped working in the middle of the game.",
    ),
    "garden": (
        "The {plant} are finally growing!",
        "I spent all {period} in the garden.",
        "Need to water the {plant} before it gets dark.",
        "Something is eating my {plant}.",
        "Should I plant the {plant} now or wait until {season}?",
        "The grass needs cutting again.",
        "Picked the first {crop} from the garden today.",
        "Can I borrow your {tool} this weekend?",
        "It's finally warm enough to sit in the garden.",
        "My {plant} died while we were away.",
        "Going to the garden centre to buy some {plant}.",
    ),
    "fitness": (
        "Going to the gym {time}, want to come?",
        "I ran {distance} this morning!",
        "My legs hurt so much after {workout}.",
        "Are you doing the {workout} class on {day}?",
        "I need to drink more water.",
        "Missed the gym again, feeling {low}.",
        "Trying to eat healthy this week.",
        "New personal best on the bike today!",
        "Let's go for a run before work.",
        "I signed up for a {race} in {month}.",
        "Only {distance} to go before the {race}!",
    ),
    "movies": (
        "Have you seen the new {genre} movie?",
        "We're watching a {genre} film {time}, want to join?",
        "I watched the whole series in one day.",
        "Don't tell me what happens, I haven't seen the ending!",
        "That {show} was {nice}.",
        "The cinema was packed {past_time}.",
        "What should we watch {time}?",
        "The last episode was {bad}.",
        "I can't believe they cancelled that show.",
        "I fell asleep halfway through the film.",
        "The {show} was way better than the book.",
    ),
    "shopping": (
        "I found the perfect {item} in the sale!",
        "Do you think this {item} looks okay?",
        "Going to {store} {time}, need anything?",
        "I spent way too much money today.",
        "They didn't have my size.",
        "I need to return the {item}, it's too {fit}.",
        "Can you send me the link to that {item}?",
        "The line at {store} was so long.",
        "Half price on everything this weekend!",
        "Just ordered a new {item} online.",
        "Should I get the {colour} {item} or the {colour2} one?",
    ),
    "tech": (
        "My {device} keeps freezing.",
        "Have you tried turning it off and on again?",
        "I need a new {device}, mine is so slow.",
        "The internet is down again.",
        "Can you help me set up my new {device}?",
        "Did you update your {device}?",
        "I lost all my photos, I should have made a copy.",
        "This new app is {nice}.",
        "My battery died in the middle of the call.",
        "I forgot my password again.",
        "The screen on my {device} is cracked.",
    ),
}

TOPIC_SLOTS: dict[str, dict[str, tuple[str, ...]]] = {
    "food": {
        "dish": (
            "pizza", "curry", "soup", "salad", "chicken", "rice", "steak", "fish", "eggs", "cake",
            "cookies", "bread", "pie", "burger", "sandwich", "beef", "pork", "potatoes",
        ),
        "ingredient": (
            "cheese", "butter", "milk", "flour", "sugar", "lemon", "beans", "salt", "chocolate",
            "pepper", "cream", "bacon", "honey", "apples", "eggs", "oil",
        ),
        "restaurant": (
            "the new Italian place", "that Thai place", "the Chinese place", "the burger place",
            "the Indian place", "that Mexican place", "the Greek place",
        ),
        "cook": ("mum", "dad", "mom", "grandma", "aunt", "wife", "husband"),
        "meal": ("breakfast", "lunch", "dinner"),
    },
    "sport": {
        "team": (
            "City", "United", "the Lions", "the Tigers", "the Eagles", "the Bears", "the Wolves",
            "the Giants", "the Kings", "the Rangers", "the Bulls", "the Saints",
        ),
        "result": ("lost", "won", "drew", "lost at home", "won away"),
        "official": ("ref", "coach", "manager", "captain"),
        "player": ("keeper", "captain", "defence", "coach", "manager", "new signing"),
        "sport": ("football", "soccer", "basketball", "rugby", "tennis", "hockey", "cricket"),
        "venue": ("the pub", "my place", "the bar", "your place", "the club"),
    },
    "music": {
        "record": ("album", "song", "single", "track", "record"),
        "genre": ("rock", "jazz", "pop", "rap", "country", "classical", "metal", "blues"),
        "instrument": ("guitar", "piano", "drums", "bass", "keyboard"),
        "show": ("concert", "gig", "festival", "show"),
        "band": ("Rolling Stones", "Eagles", "Police", "Doors", "Kings"),
    },
    "work": {
        "document": (
            "report", "notes", "numbers", "contract", "budget", "presentation", "proposal",
            "schedule",
        ),
        "manner": ("nice", "strict", "friendly", "weird", "relaxed", "smart"),
        "length": ("long", "really long", "quick", "two hour", "painful"),
    },
    "study": {
        "subject": (
            "math", "history", "science", "English", "biology", "chemistry", "physics",
            "French", "Spanish", "art", "law", "economics", "music",
        ),
        "grade": ("great mark", "good grade", "bad grade", "perfect score", "pass"),
    },
    "travel": {
        "city": CITIES,
        "feature": ("pool", "great view", "nice bar", "gym", "tiny room", "lovely garden"),
        "sight": ("beach", "view", "old town", "castle", "lake", "food", "sunset"),
    },
    "weather": {
        "weather": ("cold", "hot", "warm", "sunny", "wet", "grey", "dark", "freezing", "lovely"),
    },
    "family": {
        "relative": (
            "mum", "dad", "mom", "sister", "brother", "grandma", "aunt", "uncle", "cousin",
            "parents", "son", "daughter",
        ),
        "young": ("brother", "sister", "son", "daughter", "cousin"),
        "holiday": ("Christmas", "Easter", "the holidays", "the summer", "the weekend"),
        "outing": ("the zoo", "the beach", "the park", "the pool", "the cinema"),
    },
    "pets": {
        "object": ("shoes", "socks", "bag", "phone", "remote", "glasses", "homework"),
        "animal": ("dog", "cat", "puppy", "rabbit", "bird", "fish"),
        "supplies": ("food", "treats", "toys"),
    },
    "gaming": {
        "late": ("two", "three", "four", "five"),
        "gear": ("console", "controller", "computer", "game", "keyboard", "mouse"),
        "game": ("chess", "cards", "football online", "that new game", "some games"),
    },
    "garden": {
        "plant": (
            "roses", "flowers", "plants", "seeds", "trees", "beans", "potatoes", "apple trees",
        ),
        "season": ("spring", "summer", "autumn", "winter", "next month"),
        "crop": ("beans", "potatoes", "apples", "cherry", "corn"),
        "tool": ("ladder", "saw", "gloves", "tools", "chair"),
    },
    "fitness": {
        "distance": ("five miles", "three miles", "ten miles", "two miles", "ten k"),
        "workout": ("yoga", "that class", "leg day", "the run", "training", "boxing", "dance"),
        "race": ("race", "marathon", "half marathon", "bike ride", "swim"),
    },
    "movies": {
        "genre": ("horror", "comedy", "action", "drama", "crime", "war", "romantic"),
        "show": ("movie", "film", "series", "show", "documentary"),
    },
    "shopping": {
        "item": ("shoes", "jacket", "dress", "jeans", "shirt", "bag", "coat", "boots", "watch"),
        "store": ("the mall", "town", "the market", "the shops", "the shop"),
        "fit": ("small", "big", "tight", "long", "short"),
        "colour": ("black", "white", "red", "blue", "green", "pink", "grey", "brown"),
    },
    "tech": {
        "device": ("phone", "laptop", "computer", "tablet", "printer", "camera", "tv", "watch"),
    },
}

TOPICS: tuple[str, ...] = tuple(TOPIC_TEMPLATES)

# Typing habits that are whole messages on their own (a quick hello or goodbye).
# {Greeting} and {Sign_off} are the persona's habits with a capital letter.
HABIT_TEMPLATES = (
    "{Greeting} {friend}!", "{Greeting}!", "{Sign_off}!", "Thanks {friend}, {sign_off}!",
)

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
