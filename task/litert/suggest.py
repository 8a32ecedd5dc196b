"""Offline next-word suggestions from an exported LiteRT model: the part that runs on the phone.

    python -m task.litert.suggest --model runs/run-1/final/litert/model-int8.tflite "see you"

Loads only the LiteRT interpreter (`ai-edge-litert`; TensorFlow's `tf.lite` as a fallback), the
tokeniser and the vocabulary: no TensorFlow training code. Text typed so far is tokenised like
the training text; only the current sentence is context; unknown words become <unk>; text longer
than the model's window keeps its most recent words; empty text gives sentence starters.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from task.data.text import split_sentences
from task.data.vocab import BOS_ID, FIRST_WORD_ID, PAD_ID, UNK_ID, Vocabulary


@dataclass(frozen=True)
class Suggestion:
    word: str
    probability: float
    word_id: int


class Suggester:
    def __init__(self, interpreter, vocab: Vocabulary):
        self._run = interpreter.get_signature_runner()
        self.vocab = vocab
        details = interpreter.get_signature_runner().get_input_details()
        self.seq_len = int(details["tokens"]["shape"][1])
        predicted = int(interpreter.get_signature_runner().get_output_details()["probabilities"]["shape"][-1])
        if predicted != len(vocab.words):
            raise ValueError(f"the model predicts {predicted} words but the vocabulary has {len(vocab.words)}: "
                             "use the vocab.json saved next to this model")

    @classmethod
    def from_files(cls, model_path: str | Path, vocab_path: str | Path | None = None) -> Suggester:
        """A suggester for a `.tflite` model; the vocabulary defaults to vocab.json beside it."""
        model_path = Path(model_path)
        vocab_path = Path(vocab_path) if vocab_path else model_path.with_name("vocab.json")
        for path, what in ((model_path, "LiteRT model"), (vocab_path, "vocabulary")):
            if not path.is_file():
                raise FileNotFoundError(f"{what} not found: {path}")
        return cls(_interpreter(model_path), Vocabulary.load(vocab_path))

    def context_ids(self, text: str) -> list[int]:
        """<bos> + the current sentence's word ids, cut to the model's window (most recent words)."""
        words = _current_sentence(text)
        ids = [BOS_ID, *self.vocab.encode(words)]
        return ids[-self.seq_len :]

    def suggest(self, text: str, k: int = 3, personal: Personal | None = None, prefix: str = "") -> list[Suggestion]:
        """The k most likely next words after the text typed so far; with `personal`, mixed with
        the user's own counts (task/litert/my_words.py), so their own words can be suggested; with
        `prefix`, only words that begin with it (the word being typed)."""
        ids = self.context_ids(text)
        if personal is None or personal[1] is None:  # no counts, or the keyboard chose the shared model alone
            return self.suggest_after_ids(ids, k, prefix)
        my_words, point = personal[0], personal[1]
        words, probs = my_words.probabilities(self.vocab, self.probabilities(ids), _current_sentence(text), point)
        return _top(words, probs, k, prefix)

    def probabilities(self, ids: list[int]) -> np.ndarray:
        """The model's next-word probabilities after a context of word ids (starting with <bos>)."""
        ids = list(ids)[-self.seq_len :]
        tokens = np.full((1, self.seq_len), PAD_ID, np.int32)
        tokens[0, : len(ids)] = ids
        return self._run(tokens=tokens, last_index=np.array([len(ids) - 1], np.int32))["probabilities"][0].copy()

    def suggest_after_ids(self, ids: list[int], k: int = 3, prefix: str = "") -> list[Suggestion]:
        """The k most likely next words after a context of word ids (starting with <bos>)."""
        return _top(self.vocab.words, self.probabilities(ids), k, prefix)


# (MyWords, (kappa2, mu, kappa3) or None, fixed by --mix): the user's counts and the mix's weights (task/personal.py)
Personal = tuple


def judge(suggester: Suggester):
    """MyWords.read_folder's judge: every mix point against the shared model on sentences the
    counts have not seen, each word predicted from the model's probabilities after its context."""
    from task.data.device_text import make_windows
    from task.personal import Tally, tally

    def judged(my_words, sentences) -> Tally:
        own, counts = my_words.as_counts(suggester.vocab)
        x, y = make_windows(sentences, own, suggester.seq_len)
        model_words = len(suggester.vocab)
        out = Tally.empty()
        for start in range(0, len(x), 32):
            xb, yb = x[start : start + 32], y[start : start + 32]
            logits = np.zeros((*xb.shape, model_words), np.float32)
            for w, t in zip(*np.nonzero(yb >= FIRST_WORD_ID)):
                ids = np.where(xb[w, : t + 1] >= model_words, UNK_ID, xb[w, : t + 1])
                logits[w, t] = np.log(np.maximum(suggester.probabilities(ids), 1e-30))
            out.add(tally(counts, xb, yb, logits, model_words))
        return out

    return judged


def _top(words: list[str], probs: np.ndarray, k: int, prefix: str = "") -> list[Suggestion]:
    if k < 1:
        raise ValueError(f"k = {k}: ask for at least one suggestion")
    probs = probs.astype(np.float64)
    probs[:FIRST_WORD_ID] = -1.0  # never suggest <pad>, <unk>, <bos>, <eos>
    if prefix:
        probs[[i for i, w in enumerate(words) if not w.startswith(prefix)]] = -1.0
    k = min(k, int(np.count_nonzero(probs >= 0)))
    if k == 0:
        return []
    top = np.argpartition(-probs, k - 1)[:k]  # O(V), then sort only the k winners
    best = top[np.argsort(-probs[top], kind="stable")]
    return [Suggestion(words[i], float(probs[i]), int(i)) for i in best]


def _current_sentence(text: str) -> list[str]:
    # The words after the last sentence end. A cursor marker appended to the text always ends
    # the last sentence, so "Thanks. " or "Thanks\n" give [] (a new sentence starts).
    return split_sentences(f"{text} {_CURSOR}")[-1][:-1]


_CURSOR = "cursor0marker"


def _interpreter(model_path: Path):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # TensorFlow's own interpreter (deprecated upstream, same flatbuffers)
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    interpreter = Interpreter(model_path=str(model_path))
    interpreter.allocate_tensors()
    return interpreter


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Suggest the next word for the text typed so far.")
    parser.add_argument("text", nargs="?", default="", help="text typed so far (empty: sentence starters)")
    parser.add_argument("--model", required=True, help="a .tflite file exported by task.litert.export")
    parser.add_argument("--vocab", help="vocab.json (default: beside the model)")
    parser.add_argument("-k", type=int, default=3, help="number of suggestions")
    parser.add_argument("--my-text", type=Path, help="a folder (or file) of your own text: suggestions mix in "
                        "your own word counts (kept on this device, in --counts)")
    parser.add_argument("--counts", type=Path, help="where your counts are kept between sessions "
                        "(default ~/.fednextword/my-words.json when --my-text or --interactive is given)")
    parser.add_argument("--mix", help="KAPPA2,MU,KAPPA3 of the personal mix (task/personal.py; default: the "
                        "keyboard chooses from your own text, the shared model alone until a mix beats it)")
    parser.add_argument("--interactive", action="store_true", help="type and watch the suggestions change")
    args = parser.parse_args(argv)
    try:
        suggester = Suggester.from_files(args.model, args.vocab)
        personal, save = _personal(args, suggester)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.interactive:
        from task.litert.interactive import run

        run(suggester, personal, save)
        return 0
    for s in suggester.suggest(args.text, k=max(1, args.k), personal=personal):
        print(f"{s.word}\t{s.probability:.3f}")
    save()
    return 0


def _personal(args, suggester: Suggester) -> tuple[Personal | None, object]:
    """(the user's counts and the mix point this keyboard uses, or None; a function that saves the counts)."""
    if not (args.my_text or args.interactive or args.counts):
        return None, lambda: None
    from task.litert.my_words import MyWords

    counts = args.counts or Path.home() / ".fednextword" / "my-words.json"
    my_words = MyWords.load(counts)
    if args.my_text:
        for note in my_words.read_folder(args.my_text, judge(suggester)):
            print(f"note: {note}", file=sys.stderr)
    return (my_words, mix_weights(args, my_words), bool(args.mix)), lambda: my_words.save(counts)


def mix_weights(args, my_words=None) -> tuple[float, float, float] | None:
    """(kappa2, mu, kappa3): --mix, else the keyboard's own choice from the user's text
    (task/litert/my_words.py; None: the shared model alone, also for a new user)."""
    if args.mix:
        try:
            point = tuple(float(v) for v in args.mix.split(","))
        except ValueError:
            point = ()
        if len(point) != 3 or min(point) <= 0:
            raise ValueError(f"--mix {args.mix!r}: expected KAPPA2,MU,KAPPA3, three positive numbers such as 4,3000,1")
        return point
    return my_words.choice() if my_words is not None else None


if __name__ == "__main__":
    sys.exit(main())
