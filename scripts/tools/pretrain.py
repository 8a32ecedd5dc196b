"""Warm start: train the model centrally on proxy text and write a checkpoint a run can start from.

    .venv/bin/python scripts/tools/pretrain.py ../shared/data/wikitext-2/valid.txt --out runs/pretrained/wiki.npz
    .venv/bin/python scripts/tools/pretrain.py --builtin-users 300 --out runs/pretrained/personas.npz
    flwr run . --run-config 'warm-start.init-from="runs/pretrained/wiki.npz"'

The proxy is text you may use on a server (public, licensed or consented), never the users' own:
it is outside the federation's privacy guarantee. No proxy matches the users exactly; the README
("Warm start") has what a matching and a mismatched proxy did here. The model shape and the
vocabulary come from pyproject.toml with the same --run-config overrides a run takes, and must
match the run's (warm-start.init-from checks both). A share of the proxy is held out and scored after every
epoch; the best epoch's weights are written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

# Persona ids no simulated device (0..devices) and no unseen server-evaluation user (1,000,000..)
# ever gets: a built-in proxy never contains a federation's own users.
PROXY_USER_OFFSET = 2_000_000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("proxy", nargs="?", type=Path, help="a text file or a folder of them")
    parser.add_argument("--builtin-users", type=int, default=0,
                        help="instead of a path: this many synthetic users outside every federation")
    parser.add_argument("--out", type=Path, required=True, help="the checkpoint to write (.npz)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--max-sentences", type=int, default=100_000, help="read at most this many (0 = all)")
    parser.add_argument("--run-config", default="", help="overrides of pyproject.toml, as for flwr run")
    args = parser.parse_args()
    if (args.proxy is None) == (args.builtin_users == 0):
        parser.error("give a proxy path or --builtin-users N (one of them)")
    from scripts.run_simulation import check_run_config

    if problem := check_run_config(args.run_config):
        parser.error(problem)
    pretrain(args.proxy, args.builtin_users, args.out, args.epochs, args.max_sentences, args.run_config)
    return 0


def pretrain(proxy: Path | None, builtin_users: int, out: Path, epochs: int, max_sentences: int,
             overrides: str) -> dict:
    # Imported here: TensorFlow takes seconds to import, --help should not.
    import numpy as np

    from task.data import personas
    from task.data.device_text import make_windows
    from task.data.files import read_sentences
    from task.data.text import split_sentences
    from task.data.vocab import default_vocabulary
    from task.model import build_model
    from task.run.checkpoint import Checkpoint, model_fingerprint, save_checkpoint
    from task.train import evaluate, train

    cfg = _config(overrides)
    notes: list[str] = []
    if proxy is not None:
        sentences, name = read_sentences(proxy, notes, max_sentences), str(proxy)
    else:
        sentences = [s for i in range(builtin_users)
                     for line in personas.device_sentences(PROXY_USER_OFFSET + i, cfg.sentences_per_device, cfg.seed)
                     for s in split_sentences(line)][:max_sentences or None]
        name = f"{builtin_users} built-in synthetic users outside the federation"
    for note in notes:
        print(f"note: {note}")
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(sentences))
    held_out = max(1, len(sentences) // 20)
    vocab = default_vocabulary(cfg.model.vocab_size)
    x, y = make_windows([sentences[i] for i in order[held_out:]], vocab, cfg.model.seq_len)
    test_x, test_y = make_windows([sentences[i] for i in order[:held_out]], vocab, cfg.model.seq_len)
    if len(x) == 0 or len(test_x) == 0:
        raise SystemExit(f"{name}: too little text to pretrain on ({len(sentences)} sentences)")
    model = build_model(cfg.model, seed=cfg.seed)
    print(f"{name}: {len(x)} training windows, {len(test_x)} held out; batch {cfg.batch_size}, lr {cfg.learning_rate}")
    print("epoch  loss   top-1  top-3  (held-out proxy text)")
    best = None
    for epoch in range(1, epochs + 1):
        train(model, x, y, epochs=1, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate, seed=epoch,
              adam_epsilon=cfg.adam_epsilon, optimizer=cfg.client_optimizer)
        m = evaluate(model, test_x, test_y)
        print(f"{epoch:>5}  {m.loss:.3f}  {m.top1:.1%}  {m.top3:.1%}", flush=True)
        if best is None or m.loss < best[1].loss:
            best = (epoch, m, model.get_weights())
    epoch, metrics, weights = best
    info = {"proxy": name, "windows": int(len(x)), "epochs": epoch, "held_out_loss": metrics.loss,
            "held_out_top3": metrics.top3}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, Checkpoint(round=0, weights=weights, state={
        "fingerprint": model_fingerprint(cfg, vocab.words), "pretrained": info}))
    print(f"Wrote {out} (epoch {epoch}: held-out top-3 {metrics.top3:.1%}); start a run from it with "
          f"--run-config 'warm-start.init-from=\"{out.resolve()}\"'")
    return info


def _config(overrides: str):
    from flwr.common.config import parse_config_args

    from scripts.local_flower import app_run_config
    from task.config import Config

    defaults = app_run_config()
    return Config.from_run_config({**defaults, **(parse_config_args([overrides]) if overrides else {})})


if __name__ == "__main__":
    sys.exit(main())
