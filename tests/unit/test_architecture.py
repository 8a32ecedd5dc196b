"""The architecture holds: task/ has no Flower in it, the two apps share only task/, and the core
reaches no opt-in feature except through the listed lines (pyproject.toml, [tool.importlinter]).
Checked with import-linter, and shown to catch a planted violation."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(where: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--no-cache"], cwd=where, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(where)})


def test_every_import_contract_is_kept():
    out = lint(ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Contracts: 3 kept, 0 broken." in out.stdout


def test_a_core_module_that_reaches_a_feature_breaks_the_contract(tmp_path):
    for name in ("task", "client_app", "server_app", "features"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "*.json"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    train = tmp_path / "task" / "train.py"
    train.write_text(train.read_text() + "\nfrom features.dp_mechanisms import planning  # noqa\n")
    out = lint(tmp_path)
    assert out.returncode != 0 and "the core never imports an opt-in feature BROKEN" in out.stdout, out.stdout[-3000:]
    assert "task.train -> features.dp_mechanisms.planning" in out.stdout
