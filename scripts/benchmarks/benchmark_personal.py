"""Personalisation benchmark: which on-device personalisation helps which users, on a finished run.

    .venv/bin/python scripts/benchmarks/benchmark_personal.py --run-dir runs/bench-wiki/run-<id> --devices 15

For every device of the run (its own training and held-out text, rebuilt from the run's config),
starting from the run's final shared model: the shared model; the device's own bigram; the count
mix as the device ships it (task/device.py evaluate_round: the device chooses "off" or a mix point
on its own earlier training text, task/personal.py); local fine-tuning of the whole model or of
the output layer only (task/finetune.py), one epoch of the device's training text at each learning
rate of LRS, the part and rate cross-fitted (a device uses what the other half of the devices,
by partition parity, scored best); and fine-tuning with the device's own mix choice on top.
Prints top-3, keystroke savings and the share of devices each one hurts / helps by more than one
prediction against the shared model, and writes personal-benchmark.json beside the run.
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

    from task.data.device_text import load_device_text, make_windows
    from task.data.files import DataError
    from task.data.vocab import Vocabulary
    from task.device import evaluate_round
    from task.finetune import PARTS, fine_tune
    from task.run.checkpoint import run_config

    cfg = run_config(args.run_dir)
    vocab = Vocabulary.load(args.run_dir / "final" / "vocab.json")
    added = tuple(vocab.words[cfg.model.vocab_size:])
    model = tf.keras.models.load_model(args.run_dir / "final" / "model.keras", compile=False)
    shared_weights = model.get_weights()
    tuned = [(part, lr) for part in PARTS for lr in LRS]
    devices = []
    for i in range(args.devices):
        try:
            text = load_device_text(cfg, partition_id=i, num_partitions=args.devices)
            base = evaluate_round(cfg, text, shared_weights, added)
        except DataError as e:  # as in the run, a device without usable text takes no part
            print(f"device {i}: skipped: {e}")
            continue
        x, y = make_windows(text.train, vocab, cfg.model.seq_len)
        d = {"partition": i, "n": base["num-examples"], "shared": (base["top3"], base["keystroke-savings"]),
             "bigram": (base["baseline-bigram-top3"], base["baseline-bigram-keystroke-savings"]),
             "mix": (base["personal-top3"], base["personal-keystroke-savings"]), "on": base["personal-on"],
             "tuned": [], "tuned_mix": []}
        for part, lr in tuned:
            model.set_weights(shared_weights)
            fine_tune(model, x, y, part=part, learning_rate=lr, seed=i)
            r = evaluate_round(cfg, text, model.get_weights(), added)
            d["tuned"].append((r["top3"], r["keystroke-savings"]))
            d["tuned_mix"].append((r["personal-top3"], r["personal-keystroke-savings"]))
        devices.append(d)
        print(f"device {i}: shared {d['shared'][0]:.1%}, bigram {d['bigram'][0]:.1%}, mix {d['mix'][0]:.1%} "
              f"({'on' if d['on'] else 'off'}), fine-tuned best {max(t for t, _ in d['tuned']):.1%}", flush=True)
    for d in devices:  # the fine-tuning each device uses: what the other half scored best, per scored word
        others = [o for o in devices if o["partition"] % 2 != d["partition"] % 2] or devices
        w = np.array([o["n"] for o in others], float)
        score = w @ np.array([[t for t, _ in o["tuned"]] for o in others])
        best = int(np.argmax(score))
        d["tuned_at"], d["tuned_mix_at"] = d["tuned"][best], d["tuned_mix"][best]
        for part in PARTS:
            k = max((k for k, (p, _) in enumerate(tuned) if p == part), key=lambda k: score[k])
            d[f"tuned_{part}"] = d["tuned"][k]
    rows = _table(devices)
    (args.run_dir / "personal-benchmark.json").write_text(json.dumps(rows, indent=1))
    print(f"\nWrote {args.run_dir / 'personal-benchmark.json'}")
    return 0


def _table(devices: list[dict]) -> list[dict]:
    w = np.array([d["n"] for d in devices], float)
    shared = np.array([d["shared"][0] for d in devices])

    def row(name: str, pairs: list[tuple]) -> dict:
        top3, keystrokes = (np.array(v) for v in zip(*pairs))
        gained = np.rint((top3 - shared) * w)  # in predictions
        return {"method": name, "top3": float(w @ top3 / w.sum()), "keystroke_savings": float(w @ keystrokes / w.sum()),
                "hurt": float(np.mean(gained < -1)), "helped": float(np.mean(gained > 1))}

    rows = [row("shared model", [d["shared"] for d in devices]), row("own bigram", [d["bigram"] for d in devices]),
            row("count mix, each device's own choice", [d["mix"] for d in devices]),
            row("fine-tuned: whole model", [d["tuned_all"] for d in devices]),
            row("fine-tuned: output layer", [d["tuned_output"] for d in devices]),
            row("fine-tuned (part, rate cross-fitted)", [d["tuned_at"] for d in devices]),
            row("fine-tuned + the device's own mix choice", [d["tuned_mix_at"] for d in devices])]
    bigram = rows[1]["top3"]
    print(f"\n{len(devices)} devices; {np.mean([d['on'] for d in devices]):.0%} chose to mix")
    print("\n| personalisation | top-3 | / own bigram | keystroke savings | devices hurt | devices helped |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['top3']:.1%} | {r['top3'] / bigram:.2f}× | {r['keystroke_savings']:.1%} | "
              f"{r['hurt']:.0%} | {r['helped']:.0%} |")
    return rows


if __name__ == "__main__":
    sys.exit(main())
