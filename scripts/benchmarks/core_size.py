"""How big the template is to a forker: lines in the core and in the opt-in features, what the
default apps load (on import, the issue's measure, and in a whole default run), run-config keys,
and the length of the ServerApp's main.

    .venv/bin/python scripts/benchmarks/core_size.py

The core is task/, client_app/ and server_app/; the opt-in features are the folders of
features/ (the import contract in pyproject.toml keeps the core from importing them). Lines are
physical lines of .py files, as `wc -l` counts them.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("task", "client_app", "server_app")  # the core
FEATURES = ROOT / "features"
GOALS = {"default_apps_load": 3000, "main_lines": 40, "flat_keys": 25}  # issue 33


def lines(path: Path) -> int:
    return len(path.read_text().splitlines())


def loaded_by_default_apps() -> tuple[int, int]:
    """Project lines and modules Python loads for `import server_app.app, client_app.app`."""
    code = ("import json, sys; import server_app.app, client_app.app; "
            f"print(json.dumps([m.__file__ for m in list(sys.modules.values()) "
            f"if getattr(m, '__file__', None) and m.__file__.startswith({str(ROOT)!r})]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"})
    files = [Path(f) for f in json.loads(out.stdout.splitlines()[-1])
             if f.endswith(".py") and Path(f).relative_to(ROOT).parts[0] in (*PACKAGES, FEATURES.name)]
    return sum(lines(f) for f in files), len(files)


# A default run (pyproject.toml's run config at the tests' small size, two rounds, three devices)
# with both apps in one process (tests/inprocess.py); prints the project files it loaded.
DEFAULT_RUN = """
import json, sys, tempfile
from pathlib import Path
from scripts.local_superlink import app_run_config
from tests.helpers import SMALL_RC
from tests.inprocess import run_inprocess
rc = app_run_config(Path("."))
run_inprocess(Path(tempfile.mkdtemp()), 3, {**rc, **SMALL_RC, "num-server-rounds": 2})
print(json.dumps([m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)]))
"""


def loaded_by_a_default_run() -> tuple[int, int]:
    """Project lines and modules a whole default run loads: also what the apps import only while
    they run (TensorFlow's modules on the device, the export, the features pyproject.toml turns on)."""
    out = subprocess.run([sys.executable, "-c", DEFAULT_RUN], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3",
                              "HOME": tempfile.gettempdir()})
    files = [Path(f) for f in json.loads(out.stdout.splitlines()[-1]) if f.startswith(str(ROOT)) and f.endswith(".py")
             and Path(f).relative_to(ROOT).parts[0] in (*PACKAGES, FEATURES.name)]
    return sum(lines(f) for f in files), len(files)


def main_lines() -> int:
    tree = ast.parse((ROOT / "server_app" / "app.py").read_text())
    (main,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main"]
    return main.end_lineno - main.lineno + 1 + len(main.decorator_list)


def keys() -> tuple[int, dict[str, int]]:
    from scripts.local_superlink import app_run_config

    config = app_run_config(ROOT)
    groups: dict[str, int] = {}
    for key in config:
        if "." in key:
            groups[key.split(".")[0]] = groups.get(key.split(".")[0], 0) + 1
    return sum(1 for k in config if "." not in k), groups


def main() -> int:
    core = sum(lines(p) for package in PACKAGES for p in (ROOT / package).rglob("*.py"))
    per_feature = {d.name: sum(lines(p) for p in d.rglob("*.py")) for d in sorted(FEATURES.iterdir()) if d.is_dir()
                   and (d / "__init__.py").exists()}
    scripts = sum(lines(p) for p in (ROOT / "scripts").rglob("*.py"))
    biggest = max((ROOT / "scripts").rglob("*.py"), key=lines)
    loaded, modules = loaded_by_default_apps()
    ran, ran_modules = loaded_by_a_default_run()
    flat, groups = keys()
    rows = [("core: task/ + client_app/ + server_app/", f"{core:,}", ""),
            ("opt-in features: features/", f"{sum(per_feature.values()):,} ("
             + ", ".join(f"{name} {n}" for name, n in per_feature.items()) + ")", ""),
            ("loaded by the default apps (`import server_app.app, client_app.app`)", f"{loaded:,} in {modules} modules",
             f"goal <= {GOALS['default_apps_load']:,}"),
            ("loaded by a whole default run (pyproject.toml's config, both apps in one process)",
             f"{ran:,} in {ran_modules} modules", ""),
            ("scripts/ (largest file)", f"{scripts:,} ({biggest.relative_to(ROOT)}: {lines(biggest)})", "no file > 250"),
            ("run-config keys: flat / in groups", f"{flat} / {sum(groups.values())} "
             f"({', '.join(f'{g} {n}' for g, n in groups.items())})", f"flat <= {GOALS['flat_keys']}"),
            ("ServerApp main (lines with its decorator)", str(main_lines()), f"goal <= {GOALS['main_lines']}"),
            ("README lines", str(lines(ROOT / "README.md")), "goal <= 250")]
    print("| measure | now | goal |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
