"""What a device's scoring costs against the shared model's evaluation alone (issue: scoring that
costs less than training; goal: all of it at most 2x the shared evaluation, on devices with 50 to
600 held-out sentences).

    .venv/bin/python scripts/benchmarks/benchmark_scoring.py [--run-dir runs/<run>] [--repeats 3]

A device's whole scoring is task/device.py evaluate_round: the shared model on the held-out text
(loss, top-1/top-3, keystroke savings), the device's own n-gram baselines, its choice of mix
("off" or a point, on its later training text: one more forward pass there) and, when it mixes,
the mix at that point. Each part is timed on its own, on built-in users of growing size, with the
run's final model (default: an untrained default model, where every device mixes: the dearest
case). Best of --repeats; ratios in one run, so a busy machine moves both sides.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def best_of(repeats: int, fn) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - started)
    return min(times), out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, help="a finished run: its config and final model")
    parser.add_argument("--held-out", default="50,150,300,600", help="held-out sentences per device")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import tensorflow as tf

    from task import device
    from task import train as trainer
    from task.baseline import ngram_baseline
    from task.config import Config
    from task.data.device_text import load_device_text
    from task.data.vocab import run_vocabulary
    from task.model import build_model

    if args.run_dir:
        from task.run.checkpoint import run_config

        cfg = run_config(args.run_dir)
        weights = tf.keras.models.load_model(args.run_dir / "final" / "model.keras", compile=False).get_weights()
    else:
        cfg = Config()
        weights = build_model(cfg.model).get_weights()
    vocab = run_vocabulary(cfg.model.vocab_size)
    print("| held-out sentences | shared evaluation | baselines | choice | mix at its point | whole scoring | "
          "/ shared | mixes |")
    print("|---|---|---|---|---|---|---|---|")
    for held_out in (int(n) for n in args.held_out.split(",")):
        per_device = round(held_out / cfg.test_fraction)
        text = load_device_text(cfg.replace(data_source="builtin", sentences_per_device=per_device, max_sentences=0),
                                partition_id=3, num_partitions=10)
        model = device._model(cfg, vocab, weights)
        x, y = device._windows(cfg, vocab, text.test, text.name, "test")
        tx, ty = device._windows(cfg, vocab, text.train, text.name, "training")
        shared, _ = best_of(args.repeats, lambda: trainer.evaluate(model, x, y, vocab=vocab))
        baselines, _ = best_of(args.repeats, lambda: ngram_baseline(tx, ty, x, y, vocab))
        own = vocab.extended(sorted({w for s in text.train for w in s if w not in vocab}))
        choice, point = best_of(args.repeats, lambda: device._choose_point(cfg, text, own, len(vocab), model))
        whole, _ = best_of(args.repeats, lambda: device.evaluate_round(cfg, text, weights))
        mix = max(whole - shared - baselines - choice, 0.0)
        print(f"| {len(text.test)} | {shared:.2f} s | {baselines:.2f} s | {choice:.2f} s | {mix:.2f} s | "
              f"{whole:.2f} s | **{whole / shared:.2f}×** | {'yes' if point is not None else 'no'} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
