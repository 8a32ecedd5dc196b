"""The core stands alone: on a copy of the tree with every opt-in feature folder (features/) and
its run-config group deleted, the core's tests pass and the default run trains, loading neither
a feature nor the privacy code."""

import json
import subprocess
import sys
from pathlib import Path

from tests.fork_copy import strip_group, tree_copy

ROOT = Path(__file__).resolve().parents[2]
FEATURE_GROUPS = ("secagg", "discovery", "participation", "transfer", "audit", "warm-start", "int8")

# The default run's config (pyproject.toml, as Flower reads it) at the tests' small size, two rounds.
DEFAULT_RUN = """
import json, sys
from pathlib import Path
from scripts.local_superlink import app_run_config
from tests.helpers import SMALL_RC
from tests.inprocess import run_inprocess
rc = app_run_config(Path("."))
run = run_inprocess(Path(sys.argv[1]), 3, {**rc, **SMALL_RC, "num-server-rounds": 2})
private = ("dp_accounting", "task.privacy.ledger", "task.privacy.mechanisms", "server_app.privacy", "client_app.privacy")
print(json.dumps({"summary": run.summary, "rows": run.rows, "loaded": sorted(m for m in sys.modules if m.startswith("features")),
                  "private": sorted(m for m in sys.modules if m in private)}))
"""


def core_only_copy(dest: Path) -> Path:
    """The tree without features/ and tests/features/, and pyproject.toml without their groups."""
    tree_copy(dest, features=False)  # its sitecustomize keeps the original tree's features/ out of reach
    text = (ROOT / "pyproject.toml").read_text()
    for group in FEATURE_GROUPS:
        text = strip_group(text, group)
    text = text.replace('"features"]', "]").replace(', "features"', "")
    (dest / "pyproject.toml").write_text(text)
    assert "features" not in text.split("[tool.importlinter]")[0].split("[tool.flwr.app.config]")[1]
    return dest


def test_with_every_feature_folder_and_its_config_deleted_the_core_tests_pass_and_the_default_run_trains(tmp_path):
    copy = core_only_copy(tmp_path / "core")
    assert not (copy / "features").exists()
    probe = subprocess.run([sys.executable, "-c", "import features"], cwd=copy, capture_output=True, text=True,
                           env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(copy)})
    assert "No module named 'features'" in probe.stderr  # the original tree is out of reach
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(copy), "HOME": str(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "3"}
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "2", "-p", "no:cacheprovider", "tests/unit",
                            "--ignore", "tests/unit/test_architecture.py"],  # its contracts name features/
                           cwd=copy, env=env, capture_output=True, text=True, timeout=3600)
    assert tests.returncode == 0, tests.stdout[-4000:] + tests.stderr[-2000:]
    assert " passed" in tests.stdout.splitlines()[-1] and "skipped" not in tests.stdout.splitlines()[-1]
    out = subprocess.run([sys.executable, "-c", DEFAULT_RUN, str(tmp_path / "runs")], cwd=copy, env=env,
                         capture_output=True, text=True, timeout=3600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    summary, rows = result["summary"], result["rows"]
    assert result["loaded"] == []
    assert result["private"] == []  # without DP the run never loads the privacy code (nor dp-accounting)
    assert summary["rounds"] == 2 and not summary["stopped_early"]
    assert summary["litert_check"]["float32"]["fit_to_ship"]
    assert rows[-1]["server_loss"] < rows[0]["server_loss"]  # it learned
    assert all(r.get("train_replied") == 3 for r in rows[1:])
