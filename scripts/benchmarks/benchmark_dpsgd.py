"""What sample-level DP-SGD costs: one local epoch on the default model, with and without it.

    .venv/bin/python scripts/benchmarks/benchmark_dpsgd.py [--windows 2000] [--repeats 5]

Three ways to run one epoch, each after a warm-up epoch (so graph tracing is not timed), interleaved
in one process so machine noise hits all alike: the template's plain training (Keras fit), the
same plain step as a compiled loop like the DP-SGD one (the fairer baseline: it isolates what
privacy costs), and DP-SGD. The ratio to the faster plain variant is the one that counts.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=2000, help="training windows in the epoch")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    # Imported after parsing the arguments: TensorFlow takes seconds to import, --help should not.
    import tensorflow as tf

    import task  # noqa: F401  (selects tf-keras before TensorFlow resolves tf.keras)
    from features.dp_mechanisms.dpsgd import make_step
    from task.config import Config
    from task.data import personas
    from task.data.device_text import make_windows
    from task.data.vocab import default_vocabulary
    from task.model import build_model
    from task.train import MaskedNextWordLoss, compile_model

    cfg = Config()
    sentences = [s for i in range(100) for s in personas.device_sentences(i, 60)]
    x, y = make_windows(sentences, default_vocabulary(cfg.model.vocab_size), cfg.model.seq_len)
    x, y = x[: args.windows], y[: args.windows]
    batch = cfg.batch_size

    plain = build_model(cfg.model)
    compile_model(plain, cfg.learning_rate)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x)).batch(batch).prefetch(2)

    private = build_model(cfg.model)
    q = batch / len(x)  # one expected pass at the plain batch size, for a like-for-like epoch
    steps = math.ceil(len(x) / batch)
    step = make_step(private, tf.keras.optimizers.Adam(cfg.learning_rate), clipping_norm=cfg.dp.sgd_clipping_norm,
                     noise_multiplier=cfg.dp.sgd_noise_multiplier, denominator=float(cfg.batch_size))
    rng = np.random.default_rng(0)

    looped = build_model(cfg.model)
    optimizer = tf.keras.optimizers.Adam(cfg.learning_rate)
    loss_fn = MaskedNextWordLoss()
    spec = tf.TensorSpec([None, cfg.model.seq_len], tf.int32)

    @tf.function(input_signature=[spec, spec])
    def plain_step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, looped(xb, training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, looped.trainable_variables), looped.trainable_variables))

    def plain_epoch() -> None:
        plain.fit(dataset, epochs=1, verbose=0)

    def loop_epoch() -> None:
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch):
            chosen = order[start : start + batch]
            plain_step(tf.constant(x[chosen]), tf.constant(y[chosen]))

    def dpsgd_epoch() -> None:
        for _ in range(steps):
            chosen = np.flatnonzero(rng.random(len(x)) < q)
            step(tf.constant(x[chosen]), tf.constant(y[chosen]))

    plain_epoch(); loop_epoch(); dpsgd_epoch()  # warm-up: traces the graphs
    times: dict[str, list[float]] = {"plain": [], "loop": [], "dpsgd": []}
    for _ in range(args.repeats):
        for name, epoch in (("plain", plain_epoch), ("loop", loop_epoch), ("dpsgd", dpsgd_epoch)):
            start = time.perf_counter()
            epoch()
            times[name].append(time.perf_counter() - start)
    p, lp, d = (statistics.median(times[k]) for k in ("plain", "loop", "dpsgd"))
    base = "loop" if lp < p else "plain"
    ratios = [b / a for a, b in zip(times[base], times["dpsgd"])]
    print(f"default model ({plain.count_params():,} parameters), {len(x)} windows, batch {batch}, "
          f"{steps} steps per epoch; median of {args.repeats}")
    print("| training | one epoch (s) | ratio |")
    print("|---|---|---|")
    best = min(p, lp)
    print(f"| plain, Keras fit (the template's training) | {p:.2f} | {p / best:.2f} |")
    print(f"| plain, compiled loop | {lp:.2f} | {lp / best:.2f} |")
    print(f"| DP-SGD (fast clipping, Poisson sampling) | {d:.2f} | **{d / best:.2f}** |")
    print(f"DP-SGD / {base} per interleaved repeat: min {min(ratios):.2f}, max {max(ratios):.2f}")
    for name, label in (("plain", "Keras fit"), ("loop", "compiled loop"), ("dpsgd", "DP-SGD")):
        print(f"epoch seconds, {label}:", " ".join(f"{t:.2f}" for t in times[name]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
