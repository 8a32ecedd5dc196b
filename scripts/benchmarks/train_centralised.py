"""Reference point: the same model trained centrally on the devices' pooled training text.

    .venv/bin/python scripts/benchmarks/train_centralised.py --devices 10 --epochs 6

What federated learning is compared against (it is what a server that saw all the text could
do). Prints held-out loss, top-1 and top-3 after every epoch on the same held-out text the
federated evaluation uses. Adam restarts each epoch, as it does on a device each round.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    # Imported after parsing the arguments: TensorFlow takes seconds to import, --help should not.
    from task.config import Config
    from task.data.device_text import load_device_text, make_windows
    from task.data.vocab import default_vocabulary
    from task.model import build_model
    from task.train import evaluate, train

    cfg = Config()
    vocab = default_vocabulary(cfg.model.vocab_size)
    texts = [load_device_text(cfg, partition_id=i, num_partitions=args.devices) for i in range(args.devices)]
    x, y = make_windows([s for t in texts for s in t.train], vocab, cfg.model.seq_len)
    test_x, test_y = make_windows([s for t in texts for s in t.test], vocab, cfg.model.seq_len)
    model = build_model(cfg.model, seed=cfg.seed)
    print(f"{len(x)} training windows from {args.devices} devices; batch {cfg.batch_size}, lr {cfg.learning_rate}")
    print("epoch  loss   top-1  top-3")
    for epoch in range(1, args.epochs + 1):
        train(model, x, y, epochs=1, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate, seed=epoch,
              adam_epsilon=cfg.adam_epsilon, optimizer=cfg.client_optimizer)
        m = evaluate(model, test_x, test_y)
        print(f"{epoch:>5}  {m.loss:.3f}  {m.top1:.1%}  {m.top3:.1%}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
