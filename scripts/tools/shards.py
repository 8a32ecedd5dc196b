"""Per-device shards of a corpus: statistics, and folders to copy onto devices.

    .venv/bin/python scripts/tools/shards.py stats --devices 10                               # builtin data
    .venv/bin/python scripts/tools/shards.py stats --data-source corpus --data-path wiki.txt \
        --partitioner natural --devices 20
    .venv/bin/python scripts/tools/shards.py materialise --out shards/ --data-source corpus --data-path wiki.txt --devices 20

`materialise` writes shards/device-NNN/text.txt (one tokenised sentence a line, in order; each
device splits it into train and test itself, exactly as in simulation), ready to be a
SuperNode's data-path.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from task.config import Config  # noqa: E402
from task.data.device_text import load_device_text  # noqa: E402
from task.data.files import DataError  # noqa: E402
from task.data.partition import PARTITIONERS, SOURCES  # noqa: E402
from task.data.vocab import default_vocabulary  # noqa: E402


def shards(cfg: Config, devices: int):
    """(partition id, DeviceText or the DataError that device would report) for each device."""
    for pid in range(devices):
        try:
            yield pid, load_device_text(cfg, partition_id=pid, num_partitions=devices)
        except DataError as e:
            yield pid, e


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["stats", "materialise"])
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--data-source", choices=list(SOURCES), default="builtin")
    parser.add_argument("--data-path", default="")
    parser.add_argument("--partitioner", choices=list(PARTITIONERS), default="iid")
    parser.add_argument("--vocab-size", type=int, default=Config().model.vocab_size)
    parser.add_argument("--out", type=Path, help="materialise: where the device folders go")
    args = parser.parse_args(argv)
    cfg = Config.from_run_config(
        {
            "data.source": args.data_source,
            "data.path": args.data_path,
            "data.partitioner": args.partitioner,
            "model.vocab-size": args.vocab_size,
        }
    )
    if args.command == "materialise" and not args.out:
        parser.error("materialise needs --out")

    vocab = default_vocabulary(args.vocab_size)
    sizes, words, oov, failed = [], 0, 0, []
    for pid, text in shards(cfg, args.devices):
        if isinstance(text, DataError):
            failed.append(f"device {pid}: {text}")
            continue
        sentences = text.sentences
        sizes.append(len(sentences))
        words += sum(len(s) for s in sentences)
        oov += sum(w not in vocab for s in sentences for w in s)
        if args.command == "materialise":
            folder = args.out / f"device-{pid:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "text.txt").write_text("\n".join(" ".join(s) for s in sentences) + "\n", encoding="utf-8")
    print(f"devices: {args.devices} ({len(sizes)} usable, {len(failed)} without usable text)")
    if sizes:
        q = np.percentile(sizes, [0, 25, 50, 75, 100])
        print(
            f"sentences: {sum(sizes)}; per device min {q[0]:.0f}, p25 {q[1]:.0f}, median {q[2]:.0f}, "
            f"p75 {q[3]:.0f}, max {q[4]:.0f}"
        )
        print(f"words: {words}; out of vocabulary (vocab {args.vocab_size}): {oov / max(words, 1):.2%}")
    for line in failed:
        print(line)
    if args.command == "materialise":
        print(f"wrote {len(sizes)} device folders under {args.out}")
    return 0 if sizes else 1


if __name__ == "__main__":
    sys.exit(main())
