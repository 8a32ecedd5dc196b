"""Regenerate task/data/base_dictionary.json, the word list every device shares without seeing text.

The list is derived from the `wordfreq` package's English frequency ranking (public word
frequencies, shipped offline with the package; wordfreq's data is CC BY-SA 4.0). Only words that
our tokeniser keeps as a single token are used, in frequency order. Run:

    .venv/bin/python scripts/tools/build_base_dictionary.py --size 20000
"""

import argparse
import json
from pathlib import Path

import wordfreq

from task.data.text import tokenise

OUT = Path(__file__).resolve().parents[2] / "task" / "data" / "base_dictionary.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20000)
    args = parser.parse_args()
    words: list[str] = []
    seen: set[str] = set()
    for word in wordfreq.top_n_list("en", args.size * 2):
        if tokenise(word) == [word] and not word.isdigit() and word not in seen:
            seen.add(word)
            words.append(word)
        if len(words) == args.size:
            break
    OUT.write_text(json.dumps({
        "source": "wordfreq 3.1.1 "
                  "top_n_list('en'), filtered to single tokens of task.data.text.tokenise",
        "licence": "word frequencies from wordfreq, CC BY-SA 4.0",
        "words": words,
    }, indent=0, ensure_ascii=False))
    print(f"wrote {len(words)} words to {OUT}")


if __name__ == "__main__":
    main()
