"""Personalisation benchmark: which on-device personalisation helps which users, on a finished run.

    .venv/bin/python scripts/benchmarks/benchmark_personal.py --run-dir runs/bench-wiki/run-<id> --devices 15

For every device of the run (its own training and held-out text, rebuilt from the run's config),
starting from the run's final shared model: the shared model; the device's own bigram; the count
mix (task/personal.py); local fine-tuning of the whole model or of the output layer only
(task/finetune.py), one epoch of the device's training text at each learning rate of LRS; and
fine-tuning with the count mix on top. Every setting that must be chosen (mix point, part,
learning rate) is cross-fitted as in the federated evaluation: a device is scored with the setting
the other half of the devices (node parity here: partition id parity) scored best, never its own.
Prints top-3, keystroke savings and the share of devices each one hurts (top-3 below the shared
model's), and writes personal.json beside the run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

LRS = (3e-4, 1e-3, 3e-3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, required=True, help="a finished run (final/model.keras)")
    parser.add_argument("--devices", type=int, required=True, help="the run's number of devices (partitions)")
    args = parser.parse_args()
    import tensorflow as tf

    from task.baseline import ngram_baseline
    from task.data.device_text import load_device_text, make_windows
    from task.data.files import DataError
    from task.data.vocab import Vocabulary
    from task.finetune import PARTS, fine_tune
    from task.keystrokes import PrefixIndex
    from task.personal import GRID, PersonalCounts, score_personal
    from task.run.checkpoint import run_config
    from task.train import evaluate

    cfg = run_config(args.run_dir)
    vocab = Vocabulary.load(args.run_dir / "final" / "vocab.json")
    model = tf.keras.models.load_model(args.run_dir / "final" / "model.keras", compile=False)
    shared_weights = model.get_weights()
    index = PrefixIndex(vocab)
    tuned = [(part, lr) for part in PARTS for lr in LRS]
    devices = []
    for i in range(args.devices):
        try:
            text = load_device_text(cfg, partition_id=i, num_partitions=args.devices)
        except DataError as e:  # as in the run, a device without usable text takes no part
            print(f"device {i}: skipped: {e}")
            continue
        x, y = make_windows(text.train, vocab, cfg.model.seq_len)
        tx, ty = make_windows(text.test, vocab, cfg.model.seq_len)
        counts = PersonalCounts.from_windows(x, y, len(vocab))
        model.set_weights(shared_weights)
        shared = evaluate(model, tx, ty, vocab=vocab)
        bigram = ngram_baseline(x, y, tx, ty, vocab)
        d = {"fold": i % 2, "n": shared.num_examples, "shared": (shared.top3, shared.keystroke_savings),
             "bigram": (bigram["bigram_top3"], bigram["bigram_keystroke_savings"]),
             "mix": score_personal(_predict(model), tx, ty, counts, index, point=-1).top3 / shared.num_examples,
             "tuned": [], "tuned_mix": []}
        for part, lr in tuned:
            model.set_weights(shared_weights)
            fine_tune(model, x, y, part=part, learning_rate=lr, seed=i)
            d["tuned"].append(evaluate(model, tx, ty).top3)
            d["tuned_mix"].append(score_personal(_predict(model), tx, ty, counts, index, point=-1).top3 / shared.num_examples)
        devices.append(d | {"partition": i})
        print(f"device {i}: shared {shared.top3:.1%}, bigram {bigram['bigram_top3']:.1%}, mix best "
              f"{d['mix'].max():.1%}, fine-tuned best {max(d['tuned']):.1%}", flush=True)
    # the settings each fold uses: the other fold's best, per scored word
    choice = {}
    for fold in (0, 1):
        others = [d for d in devices if d["fold"] != fold] or devices
        w = np.array([d["n"] for d in others], float)
        choice[fold] = {
            "mix": int(np.argmax(w @ np.array([d["mix"] for d in others]))),
            "tuned": int(np.argmax(w @ np.array([d["tuned"] for d in others]))),
            "tuned_mix": np.unravel_index(int(np.argmax(np.einsum("d,dtp->tp", w, np.array([d["tuned_mix"] for d in others])))),
                                          (len(tuned), len(GRID))),
        }
    # keystrokes (and top-3) at each device's cross-fitted settings
    for d in devices:
        i = d["partition"]
        text = load_device_text(cfg, partition_id=i, num_partitions=args.devices)
        x, y = make_windows(text.train, vocab, cfg.model.seq_len)
        tx, ty = make_windows(text.test, vocab, cfg.model.seq_len)
        counts = PersonalCounts.from_windows(x, y, len(vocab))
        c = choice[d["fold"]]
        model.set_weights(shared_weights)
        d["mix_at"] = (d["mix"][c["mix"]], score_personal(_predict(model), tx, ty, counts, index, c["mix"]).keystroke_savings)
        for key, (t, point) in (("tuned_at", (c["tuned"], None)), ("tuned_mix_at", c["tuned_mix"])):
            model.set_weights(shared_weights)
            fine_tune(model, x, y, part=tuned[t][0], learning_rate=tuned[t][1], seed=i)
            if point is None:
                d[key] = (d["tuned"][t], evaluate(model, tx, ty, vocab=vocab).keystroke_savings)
            else:
                d[key] = (d["tuned_mix"][t][point],
                          score_personal(_predict(model), tx, ty, counts, index, int(point)).keystroke_savings)
        for part in PARTS:  # each part at its own cross-fitted learning rate
            best_lr = max((k for k, (p, _) in enumerate(tuned) if p == part),
                          key=lambda k: sum(o["n"] * o["tuned"][k] for o in devices if o["fold"] != d["fold"]))
            d[f"tuned_{part}"] = d["tuned"][best_lr]
    rows = _table(devices, tuned, choice, GRID)
    (args.run_dir / "personal.json").write_text(json.dumps(rows, indent=1))
    print(f"\nWrote {args.run_dir / 'personal.json'}")
    return 0


def _predict(model):
    import tensorflow as tf

    return lambda xb: model(tf.constant(xb), training=False)


def _table(devices: list[dict], tuned, choice, grid) -> list[dict]:
    w = np.array([d["n"] for d in devices], float)
    shared = np.array([d["shared"][0] for d in devices])

    def row(name: str, top3: np.ndarray, keystrokes: np.ndarray | None) -> dict:
        return {"method": name, "top3": float(w @ top3 / w.sum()),
                "keystroke_savings": None if keystrokes is None else float(w @ keystrokes / w.sum()),
                "hurt": float(np.mean(top3 < shared))}

    rows = [row("shared model", shared, np.array([d["shared"][1] for d in devices])),
            row("own bigram", np.array([d["bigram"][0] for d in devices]), np.array([d["bigram"][1] for d in devices])),
            row("count mix", *map(np.array, zip(*[d["mix_at"] for d in devices]))),
            row("fine-tuned: whole model", np.array([d["tuned_all"] for d in devices]), None),
            row("fine-tuned: output layer", np.array([d["tuned_output"] for d in devices]), None),
            row("fine-tuned (part, rate chosen)", *map(np.array, zip(*[d["tuned_at"] for d in devices]))),
            row("fine-tuned + count mix", *map(np.array, zip(*[d["tuned_mix_at"] for d in devices])))]
    bigram = rows[1]["top3"]
    print(f"\n{len(devices)} devices; choices per fold: "
          + "; ".join(f"fold {f}: mix {grid[c['mix']]}, fine-tune {tuned[c['tuned']]}, "
                      f"with mix {tuned[c['tuned_mix'][0]]} {grid[c['tuned_mix'][1]]}" for f, c in choice.items()))
    print("\n| personalisation | top-3 | / own bigram | keystroke savings | devices hurt |\n|---|---|---|---|---|")
    for r in rows:
        ks = "—" if r["keystroke_savings"] is None else f"{r['keystroke_savings']:.1%}"
        print(f"| {r['method']} | {r['top3']:.1%} | {r['top3'] / bigram:.2f}× | {ks} | {r['hurt']:.0%} |")
    return rows


if __name__ == "__main__":
    sys.exit(main())
