"""Check a device's install: the ClientApp imports, trains and evaluates on a small text in every
privacy setup a run can ask of it (none, clipping, local DP, DP-SGD).

    /opt/fednextword/venv/bin/python scripts/deployment/check_device.py      # in a copy of this repository

A SuperLink ships the app code with every run; the device supplies only the packages of
requirements-device.txt. This runs that code as the SuperNode would, without a SuperLink, and
exits non-zero (naming the missing module or the failing mode) if a run would fail on this device.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

SMALL = {"model.vocab-size": 2000, "model.seq-len": 10, "model.embed-dim": 16, "model.num-heads": 2, "model.ffn-dim": 32, "batch-size": 8}
MODES = {"no DP": {}, "clipping on the device": {"dp.mode": "central-client-clip"},
         "local DP": {"dp.mode": "local"}, "DP-SGD": {"dp.sgd": True, "dp.delta": 1e-3}}
TEXT = "".join(f"Sentence {i} on the device says hello to friend {i % 7}. " for i in range(120))


def main() -> int:
    missing = [tool for tool in ("flower-supernode", "flower-superexec") if not (Path(sys.executable).parent / tool).exists()]
    if missing:
        print(f"not installed next to {sys.executable}: {', '.join(missing)} (pip install -r requirements-device.txt)")
        return 1
    try:
        from flwr.app import ArrayRecord, ConfigRecord, Context, Message, Metadata, RecordDict
        from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

        from client_app.app import app
        from task.config import Config
        from task.model import build_model
    except ImportError as e:
        print(f"the ClientApp cannot be imported on this device: {e}")
        return 1

    folder = Path(tempfile.mkdtemp(prefix="fednextword-check-"))
    (folder / "text.txt").write_text(TEXT)
    failures = []
    try:
        for name, keys in MODES.items():
            cfg = Config.from_run_config({**SMALL, **keys})
            context = Context(run_id=1, node_id=1, node_config={"data-path": str(folder)}, state=RecordDict(),
                              run_config=cfg.to_run_config())
            weights = ArrayRecord(build_model(cfg.model).get_weights())
            for kind in ("train", "evaluate"):
                metadata = Metadata(run_id=1, message_id=f"{name}-{kind}", src_node_id=0, dst_node_id=1,
                                    reply_to_message_id="", group_id="1", created_at=time.time(), ttl=600,
                                    message_type=kind)
                # What the server sends: the round, and the clipping norm when devices clip.
                config = ConfigRecord({"server-round": 1, KEY_CLIPPING_NORM: cfg.dp.clipping_norm})
                content = RecordDict({"arrays": weights, "config": config})
                reply = app(Message(content=content, metadata=metadata), context)
                status = f"error {reply.error.code}: {reply.error.reason}" if reply.has_error() else "ok"
                print(f"{name:>24} {kind:>8}: {status}")
                if reply.has_error():
                    failures.append(f"{name} {kind}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print("This device can take part in runs." if not failures else f"Failed: {', '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
