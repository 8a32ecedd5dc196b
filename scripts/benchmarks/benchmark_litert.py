"""Benchmark the on-device model: file size, latency of one suggestion, agreement with Keras.

    .venv/bin/python scripts/benchmarks/benchmark_litert.py                      # default model, trained briefly here
    .venv/bin/python scripts/benchmarks/benchmark_litert.py --run-dir runs/run-123   # a run's final model

Prints one row per LiteRT variant. Latency is one `suggest()` call (tokenise the context, run
the interpreter, pick the top 3) on real contexts from held-out builtin text, measured in this
process after a warm-up; agreement is the share of positions where the variant suggests the same
three words as the Keras model.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, help="benchmark this run's latest checkpoint")
    parser.add_argument("--devices", type=int, default=6, help="builtin devices to train/test on")
    parser.add_argument("--calls", type=int, default=2000, help="timed suggestions per variant")
    args = parser.parse_args()
    # Imported after parsing the arguments: TensorFlow takes seconds to import, --help should not.
    from features.int8.export import INT8
    from task.config import Config
    from task.data.device_text import load_device_text, make_windows
    from task.data.vocab import default_vocabulary
    from task.litert.export import VARIANTS, export_litert, top3_agreement
    from task.litert.suggest import Suggester
    from task.model import build_model
    from task.run.checkpoint import latest_checkpoint, load_weights, run_config
    from task.train import train


    cfg = run_config(args.run_dir) if args.run_dir else Config()
    vocab = default_vocabulary(cfg.model.vocab_size)
    texts = [load_device_text(cfg, partition_id=i, num_partitions=args.devices) for i in range(args.devices)]
    model = build_model(cfg.model)
    if args.run_dir:
        model.set_weights(load_weights(latest_checkpoint(args.run_dir)))
    else:
        x, y = make_windows([s for t in texts for s in t.train], vocab, cfg.model.seq_len)
        train(model, x, y, epochs=3, batch_size=32, learning_rate=0.005)
    test_x, _ = make_windows([s for t in texts for s in t.test], vocab, cfg.model.seq_len)
    contexts = [" ".join(s[: len(s) // 2 + 1]) for t in texts for s in t.test]

    print(f"model: {model.count_params():,} parameters, vocab {cfg.model.vocab_size}, window {cfg.model.seq_len}")
    print(f"{'variant':<9} {'size MB':>8} {'p50 ms':>7} {'p95 ms':>7} {'top-3 agreement':>16}")
    with tempfile.TemporaryDirectory() as out:
        paths = export_litert(model, vocab, Path(out), {**VARIANTS, **INT8})
        for variant in paths:
            suggester = Suggester.from_files(paths[variant])
            for text in contexts[:50]:
                suggester.suggest(text)  # warm-up
            times = []
            for i in range(args.calls):
                start = time.perf_counter()
                suggester.suggest(contexts[i % len(contexts)])
                times.append(time.perf_counter() - start)
            share, ties, total = top3_agreement(model, suggester, test_x[:300])
            p50, p95 = np.percentile(times, [50, 95]) * 1000
            print(f"{variant:<9} {paths[variant].stat().st_size / 1e6:>8.2f} {p50:>7.3f} {p95:>7.3f} "
                  f"{share:>9.2%} of {total}" + (f" (+{ties} ties)" if ties else ""))
        print(personal_row(Suggester.from_files(paths["int8"]), texts[0], args.calls))
    return 0


def personal_row(suggester, text, calls: int) -> str:
    """int8 with one user's own counts mixed in (task/litert/my_words.py): latency, and the memory
    and file size of the counts, built from that user's training text."""
    import json
    import tracemalloc

    from task.litert.my_words import MyWords
    from task.personal import DEFAULT_POINT, GRID

    tracemalloc.start()
    my_words = MyWords()
    for sentence in text.train:
        my_words.learn(sentence)
    memory = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    personal = (my_words, GRID[DEFAULT_POINT])
    contexts = [" ".join(s[: len(s) // 2 + 1]) for s in text.test]
    for context in contexts[:50]:
        suggester.suggest(context, personal=personal)  # warm-up
    times = []
    for i in range(calls):
        start = time.perf_counter()
        suggester.suggest(contexts[i % len(contexts)], personal=personal)
        times.append(time.perf_counter() - start)
    p50, p95 = np.percentile(times, [50, 95]) * 1000
    saved = len(json.dumps({"words": my_words.words, "pairs": my_words.pairs}, ensure_ascii=False).encode())
    return (f"{'int8+own':<9} {'':>8} {p50:>7.3f} {p95:>7.3f}   counts of {len(text.train)} sentences "
            f"({len(my_words.words)} words): {memory / 1e6:.2f} MB in memory, {saved / 1e3:.0f} kB saved")


if __name__ == "__main__":
    sys.exit(main())
