"""Any one opt-in feature deletes as the README's checklist says ("Fork it"): on a copy of the tree,
delete its folder, its tests' folder, its run-config table and its import-linter lines; then the
config of pyproject.toml still loads and refuses the feature's keys as unknown, `lint-imports`
passes, and (for the features the default run uses) a short default run completes. What else
still imports it (tools, another feature's tests) is exactly what the README lists.
tests/integration/test_core_alone.py deletes them all at once and runs the core's unit tests."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.fork_copy import ROOT, delete_feature, env, tree_copy

FEATURES = sorted(p.name for p in (ROOT / "features").iterdir() if (p / "__init__.py").exists())
# The features the default run (pyproject.toml) uses: deleting one changes what that run does, so
# a short run checks it. Deleting an unused one changes nothing a run reaches (its switch reads
# "off" as it did); the run with every feature deleted is tests/integration/test_core_alone.py's.
DEFAULT_RUN_USES = {"int8", "participation"}
# What still imports a feature once the checklist is done: the README's "Left behind" list.
LEFT_BEHIND = {
    "audit": {"scripts/tools/privacy_audit.py"},
    "discovery": {"scripts/deployment/check_fresh_noise.py", "tests/features/dp/test_fresh_noise_sources.py"},
    "dp_mechanisms": {"scripts/deployment/check_fresh_noise.py", "scripts/benchmarks/benchmark_dpsgd.py"},
    "int8": {"scripts/tools/export_litert.py", "scripts/benchmarks/benchmark_litert.py"},
    "participation": {"scripts/deployment/processes.py", "scripts/benchmarks/participation_table.py"},
    "secagg": {"scripts/deployment/check_fresh_noise.py"},
    "transfer": set(),
    "warm_start": {"tests/features/discovery/test_vocab_growth.py"},
}
CORE = ("task", "client_app", "server_app")

CHECK = r"""
import json, sys
from pathlib import Path
from scripts.local_superlink import app_run_config
from task.config import MECHANISM_MODES, Config, ConfigError
out, given, run = Path(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3] == "1"
rc = app_run_config(Path("."))
Config.from_run_config(rc)  # pyproject.toml's config, without the feature's table
found = {"loads": True}
def outcome(changes):
    try:
        Config.from_run_config({**rc, **changes})
        return "accepted"
    except Exception as e:
        return f"{type(e).__name__}: {e}"[:300]
found["deleted_keys"] = {key: outcome({key: value}) for key, value in given.items()}
found["mechanisms"] = {mode: outcome({"dp.mode": mode}) for mode in MECHANISM_MODES}
found["mechanisms"]["dp.sgd"] = outcome({"dp.sgd": True})
if run:
    from tests.helpers import SMALL_RC
    from tests.inprocess import run_inprocess
    result = run_inprocess(out, 2, {**rc, **SMALL_RC, "num-server-rounds": 1, "server-eval-devices": 0})
    found["run"] = {"rounds": result.summary["rounds"], "stopped_early": result.summary["stopped_early"],
                    "replied": result.rows[-1].get("train_replied"),
                    "loaded": sorted({m.split(".")[1] for m in sys.modules if m.startswith("features.")})}
print(json.dumps(found))
"""

_RESULTS: dict[str, dict] = {}


def importers(copy: Path, name: str) -> dict[str, set[str]]:
    """The copy's Python files (outside features/) that import features.<name>, core and other."""
    found: dict[str, set[str]] = {"core": set(), "other": set()}
    module = f"features.{name}"
    for file in copy.rglob("*.py"):
        rel = file.relative_to(copy)
        if rel.parts[0] == "features" or "__pycache__" in rel.parts:
            continue
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or "", *(f"{node.module}.{a.name}" for a in node.names)]
                     if isinstance(node, ast.ImportFrom) else [])
            if any(n == module or n.startswith(module + ".") for n in names):
                found["core" if rel.parts[0] in CORE else "other"].add(str(rel))
    return found


def deleted(name: str, tmp_path_factory) -> dict:
    """Delete `name` from a fresh copy (once per feature) and check the copy: what was found."""
    if name in _RESULTS:
        return _RESULTS[name]
    tmp = tmp_path_factory.mktemp(name)
    copy = tree_copy(tmp / "copy")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    what = delete_feature(copy, name)
    given = {f"{what['group']}.{key}": value
             for key, value in pyproject["tool"]["flwr"]["app"]["config"].get(what["group"] or "", {}).items()}
    lint = subprocess.run([str(Path(sys.executable).parent / "lint-imports")], cwd=copy, env=env(copy, tmp),
                          capture_output=True, text=True, timeout=600)
    check = subprocess.run([sys.executable, "-c", CHECK, str(tmp / "runs"), json.dumps(given),
                            "1" if name in DEFAULT_RUN_USES else "0"], cwd=copy, env=env(copy, tmp),
                           capture_output=True, text=True, timeout=1800)
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-5000:]
    _RESULTS[name] = {"what": what, "given": given, "lint": lint, "importers": importers(copy, name),
                      **json.loads(check.stdout.strip().splitlines()[-1])}
    return _RESULTS[name]


@pytest.mark.parametrize("name", FEATURES)
def test_deleting_one_feature_as_the_readme_says_leaves_a_working_template(name, tmp_path_factory):
    found = deleted(name, tmp_path_factory)
    what = found["what"]
    assert found["lint"].returncode == 0, found["lint"].stdout[-3000:] + found["lint"].stderr[-2000:]
    assert found["importers"]["other"] == LEFT_BEHIND[name]  # the README's "Left behind" list
    assert found["loads"]
    if what["group"]:
        assert found["given"], f"pyproject.toml has no [tool.flwr.app.config.{what['group']}]"
        for key, outcome in found["deleted_keys"].items():
            assert outcome.startswith("ConfigError: unknown run-config key"), (key, outcome)
    else:  # dp_mechanisms: its keys are dp.* keys the core's ledger reads; they stay valid
        assert name == "dp_mechanisms" and found["deleted_keys"] == {}
    if name in DEFAULT_RUN_USES:
        run = found["run"]
        assert run["rounds"] == 1 and not run["stopped_early"] and run["replied"] == 2
        assert name not in run["loaded"]


def test_without_dp_mechanisms_its_modes_are_refused_by_name(tmp_path_factory):
    found = deleted("dp_mechanisms", tmp_path_factory)
    assert all(outcome.startswith("ConfigError:") and "features/dp_mechanisms/ is deleted" in outcome
               for outcome in found["mechanisms"].values()), found["mechanisms"]
