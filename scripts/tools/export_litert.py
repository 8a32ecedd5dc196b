"""Export any checkpoint of a run to LiteRT flatbuffers (float32, float16, int8) + vocab.json.

    .venv/bin/python scripts/tools/export_litert.py runs/run-123                 # latest checkpoint
    .venv/bin/python scripts/tools/export_litert.py runs/run-123 --round 2 --out /tmp/litert

The server already exports the final model to <run>/final/litert/; use this for other rounds.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from task.data.vocab import Vocabulary  # noqa: E402
from task.run.checkpoint import latest_checkpoint, load_checkpoint, run_config  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run directory (holds config.json, vocab.json, checkpoints/)")
    parser.add_argument("--round", type=int, help="checkpoint round (default: the latest)")
    parser.add_argument("--out", type=Path, help="output directory (default: <run>/litert-round-N)")
    parser.add_argument("--variants", default="float32,float16,int8", help="of float32, float16, int8")
    args = parser.parse_args(argv)

    checkpoint = (args.run_dir / "checkpoints" / f"round-{args.round:03d}.npz" if args.round is not None
                  else latest_checkpoint(args.run_dir))
    cfg = run_config(args.run_dir)
    saved = load_checkpoint(checkpoint)
    weights = saved.weights
    # The base words from the run's vocabulary, then the words discovered by this checkpoint's round
    # (a later checkpoint, and the run's vocab.json at its end, may hold more).
    base = Vocabulary.load(args.run_dir / "vocab.json").words[: cfg.model.vocab_size]
    vocab = Vocabulary(base + list(saved.state.get("vocab_added", [])))
    if len(weights[0]) != len(vocab):
        print(f"{checkpoint}: {len(weights[0])} word rows, but its vocabulary has {len(vocab)} words", file=sys.stderr)
        return 2

    from features.int8.export import INT8  # TensorFlow: only once the inputs are known to be good
    from task.litert.export import VARIANTS, export_litert
    from task.model import build_model

    every = {**VARIANTS, **INT8}
    unknown = sorted(set(args.variants.split(",")) - set(every))
    if unknown:
        print(f"--variants: unknown {unknown}; expected some of {sorted(every)}", file=sys.stderr)
        return 2

    model = build_model(replace(cfg.model, vocab_size=len(vocab)))
    model.set_weights(weights)
    out = args.out or args.run_dir / f"litert-{checkpoint.stem}"
    for variant, path in export_litert(model, vocab, out, {v: every[v] for v in args.variants.split(",")}).items():
        print(f"{variant}\t{path}\t{path.stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
