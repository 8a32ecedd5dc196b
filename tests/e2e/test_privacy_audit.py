"""The privacy audit end to end on a tiny run: a real `flwr run .` with planted canaries, then a
well-formed table, JSON and plot."""

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import SMALL_RUN

ROOT = Path(__file__).resolve().parents[2]


def test_the_audit_runs_a_federation_with_canaries_and_reports_exposure_and_membership(tmp_path):
    out = subprocess.run([sys.executable, "scripts/tools/privacy_audit.py", "--modes", "none", "--devices", "3",
                          "--rounds", "2", "--canaries", "1:20", "--out-dir", str(tmp_path), "--ports", "39691", "39693",
                          "--run-config", f"{SMALL_RUN} data.sentences-per-device=60 server-eval-devices=0"],
                         cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "| exposure k=1 r=20 | exposure, never inserted | user AUC |" in out.stdout
    (audit,) = json.loads((tmp_path / "audit.json").read_text())
    assert audit["mode"] == "none" and audit["round"] == 2
    assert [(c["devices"], c["repeats"]) for c in audit["canaries"]] == [(1, 20), (0, 0)]
    assert all(0 <= c["exposure"] <= 13.3 and 1 <= c["rank"] <= 10_000 for c in audit["canaries"])
    assert 0 <= audit["user_level"]["auc"] <= 1 and audit["user_level"]["members"] == 3
    assert 0 <= audit["sample_level"]["auc"] <= 1
    assert (tmp_path / "audit.png").read_bytes()[:4] == b"\x89PNG"
