"""Type in the terminal and watch the three suggestions change with every key, as on a keyboard.

    python -m task.litert.suggest --model runs/run-1/final/litert/model-int8.tflite --interactive

Tab takes the first suggestion, Enter ends the line (its sentences join the user's own counts, so
a new word of theirs is suggested from then on, and the counts are saved), Ctrl-D or Ctrl-C
quits. Needs a POSIX terminal (termios). Each line is first judged as the suggestions the keyboard
would have made against what was typed (task/litert/my_words.py), so the keyboard mixes in the
user's counts once that running A/B shows the mix beats the shared model, and stops if it no
longer does (unless --mix fixed the point).
"""

from __future__ import annotations

import os
import re
import sys

from task.data.text import normalise, split_sentences

_PARTIAL = re.compile(r"[^\W_]+(?:'[^\W_]*)*$")  # the word being typed at the end of the text


def split_partial(text: str) -> tuple[str, str]:
    """(text before the word being typed, that word so far); ("...", "") right after a space."""
    m = _PARTIAL.search(text)
    return (text, "") if m is None else (text[: m.start()], normalise(m.group()))


def suggestions_line(suggester, text: str, personal) -> str:
    context, prefix = split_partial(text)
    words = [s.word for s in suggester.suggest(context, 3, personal, prefix=prefix)]
    return " | ".join(words) if words else "-"


def accept_first(suggester, text: str, personal) -> str:
    context, prefix = split_partial(text)
    best = suggester.suggest(context, 1, personal, prefix=prefix)
    return f"{context}{best[0].word} " if best else text


def run(suggester, personal, save, fd: int | None = None, out=sys.stdout) -> None:
    """The interactive loop on terminal `fd`; `save()` persists the user's counts after each line."""
    import termios
    import tty

    fd = sys.stdin.fileno() if fd is None else fd
    old = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    text, pending = "", b""

    def draw() -> None:
        out.write(f"\r\x1b[K[ {suggestions_line(suggester, text, personal)} ] > {text}")
        out.flush()

    try:
        out.write("Type; Tab takes the first suggestion, Enter ends a line, Ctrl-D quits.\n")
        draw()
        while True:
            pending += os.read(fd, 1)
            try:
                key = pending.decode("utf-8")
            except UnicodeDecodeError:
                if len(pending) < 4:
                    continue  # the rest of a multi-byte character is on its way
                key = ""
            pending = b""
            if key in ("", "\x04", "\x03"):
                break
            if key in ("\x7f", "\b"):
                text = text[:-1]
            elif key == "\t":
                text = accept_first(suggester, text, personal)
            elif key in ("\r", "\n"):
                personal = _learn(suggester, personal, text)
                save()
                out.write("\n")
                text = ""
            elif key.isprintable():
                text += key
            draw()
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)
        _learn(suggester, personal, text)
        save()
        out.write("\n")


def _learn(suggester, personal, text: str):
    """Judge the line's sentences as the keyboard would have suggested, then count them; returns
    the personal part with the keyboard's choice after it (unless --mix fixed the point)."""
    if personal is None:
        return None
    from task.litert.suggest import judge

    my_words, point, fixed = personal
    sentences = split_sentences(text)
    if sentences:
        my_words.tally.add(judge(suggester)(my_words, sentences))
    for sentence in sentences:
        my_words.learn(sentence)
    return my_words, point if fixed else my_words.choice(), fixed
