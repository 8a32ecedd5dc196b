"""New users on real text the project never saw, through the on-device path (LiteRT + the user's
own counts, task/litert/my_words.py): does personalisation beat the shared model and the user's
own bigram?

    .venv/bin/python scripts/benchmarks/benchmark_new_user.py --model runs/<run>/final/litert/model-int8.tflite \\
        --text ../shared/data/wikitext-2/test.txt --users 20

Each natural unit of the text (a WikiText article, a play's speaker, a file of a folder) is one
user. The user's first 80% of sentences are what they typed before (their counts, read as the
suggestion CLI reads a folder); on the last 20% every word they type next is scored: is it among
the three suggestions the keyboard shows? Three keyboards: the shared model alone, the user's own
bigram (their counts alone, backing off to their most frequent words; by word, so it knows their
words the vocabulary lacks), and the personalised keyboard as the suggestion CLI ships it: the
shared model alone or mixed with their counts, as the keyboard chose from their earlier text (the
last of it judged before counted: task/litert/my_words.py; --mix fixes a point instead). Scored
over every word typed, and over the vocabulary's words; "hurt" and "helped" are the users whose
top-3 over every word the personalised keyboard lowered or raised by more than one prediction.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="an exported .tflite (vocab.json beside it)")
    parser.add_argument("--text", type=Path, required=True, help="a corpus file or folder no run trained on")
    parser.add_argument("--users", type=int, default=20, help="the first N units with at least 20 sentences")
    parser.add_argument("--scratch", default="/tmp/new-user-benchmark", help="where each user's typed text is put")
    parser.add_argument("--mix", help="KAPPA2,MU,KAPPA3 for every user (default: each keyboard chooses its own)")
    args = parser.parse_args()
    from task.data.files import iter_file_lines, text_files
    from task.data.partition import corpus_layout, corpus_pairs
    from task.data.vocab import BOS, SPECIALS
    from task.litert.my_words import MyWords
    from task.litert.suggest import Suggester, judge, mix_weights

    suggester = Suggester.from_files(args.model)
    fixed = mix_weights(argparse.Namespace(mix=args.mix)) if args.mix else None
    files = text_files(args.text)
    units: dict[str, list] = defaultdict(list)
    for file in files:
        layout = corpus_layout(iter_file_lines(file, []))
        for unit, sentence in corpus_pairs(iter_file_lines(file, []), layout):
            units[f"{file.name}: {unit}"].append(sentence)
    users = [(name, s) for name, s in units.items() if len(s) >= 20][: args.users]
    print(f"{len(users)} users from {args.text}; mix point {fixed or 'chosen by each keyboard'}")
    results = []
    for name, sentences in users:
        cut = round(len(sentences) * 0.8)
        typed, later = sentences[:cut], sentences[cut:]
        mine = MyWords()
        folder = Path(args.scratch) / f"user-{len(results)}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "typed.txt").write_text("\n".join(" ".join(s) for s in typed) + "\n")
        mine.read_folder(folder, judge(suggester))  # as the suggestion CLI reads --my-text
        point = fixed or mine.choice()
        top_words = [w for w, _ in mine.words.most_common(3)]
        hits = Counter()
        for sentence in later:
            for k, word in enumerate(sentence):
                context = sentence[:k]
                prev = context[-1] if context else BOS
                bigram = [w for w, _ in mine.pairs.get(prev, Counter()).most_common(3)]
                bigram += [w for w in top_words if w not in bigram]
                shown = {"shared": [s.word for s in suggester.suggest(" ".join(context))],
                         "own bigram": bigram[:3],
                         "personalised": [s.word for s in suggester.suggest(" ".join(context), personal=(mine, point))]}
                known = word in suggester.vocab and word not in SPECIALS
                hits["all"] += 1
                hits["known"] += known
                for keyboard, words in shown.items():
                    hits[f"{keyboard} all"] += word in words
                    hits[f"{keyboard} known"] += known and word in words
        hits["on"] = point is not None
        results.append((name, hits))
        print(f"  {name[:50]:<50} {hits['all']:>5} words: " + ", ".join(
            f"{k} {hits[f'{k} all'] / hits['all']:.1%}" for k in ("shared", "own bigram", "personalised")), flush=True)
    _table(results)
    return 0


def _table(results) -> None:
    total = sum((h for _, h in results), Counter())
    print("\n| keyboard | top-3, every word typed | top-3, the vocabulary's words | users helped | users hurt |")
    print("|---|---|---|---|---|")
    for keyboard in ("shared", "own bigram", "personalised"):
        gain = [h[f"{keyboard} all"] - h["shared all"] for _, h in results]
        helped, hurt = (f"{np.mean([g > 1 for g in gain]):.0%}", f"{np.mean([g < -1 for g in gain]):.0%}") \
            if keyboard != "shared" else ("—", "—")
        print(f"| {keyboard} | {total[f'{keyboard} all'] / total['all']:.1%} | "
              f"{total[f'{keyboard} known'] / total['known']:.1%} | {helped} | {hurt} |")
    print(f"\n{np.mean([h['on'] for _, h in results]):.0%} of the keyboards chose to mix")
    print(f"\n{total['all']:,} words typed by {len(results)} users, {1 - total['known'] / total['all']:.1%} of them "
          "outside the vocabulary")


if __name__ == "__main__":
    sys.exit(main())
