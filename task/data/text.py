"""Keyboard-text normalisation and word tokenisation.

Decisions (a keyboard suggests words, not punctuation):
- Unicode NFKC, lower-case, typographic apostrophes become "'".
- A token is a run of letters/digits, optionally joined by inner apostrophes ("don't", "o'clock").
  Punctuation, symbols and emoji are dropped.
- Sentence ends (. ! ? and line breaks) split the text into sentences; each sentence is framed by
  <bos>/<eos> later, so the model learns how sentences start.
"""

from __future__ import annotations

import re
import unicodedata

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})
# "<unk>" is kept whole: corpora such as WikiText mark the rare words they removed with it, and
# as the vocabulary's own <unk> it is never taken for a word (nor voted for as a new one).
_TOKEN = re.compile(r"<unk>|[^\W_]+(?:'[^\W_]+)*")
SENTENCE_ENDS = ".!?;:\n\u3002"
_SENTENCE_END = re.compile(f"[{re.escape(SENTENCE_ENDS)}]+")


def normalise(text: str) -> str:
    return unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).lower()


def tokenise(text: str) -> list[str]:
    """Words of one sentence (or any text) after normalisation."""
    return _TOKEN.findall(normalise(text))


def split_sentences(text: str) -> list[list[str]]:
    """Tokenised sentences of a text; empty sentences are dropped."""
    sentences = (tokenise(part) for part in _SENTENCE_END.split(normalise(text)))
    return [s for s in sentences if s]
