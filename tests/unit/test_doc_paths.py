"""Every test the documentation and the code's docstrings and comments name exists: each
`tests/...` path (a file or folder, with `::test_name` the test in that file), and each test named
by itself in a document (a `test_...` word in a .md file, or on a .py line naming a tests/ path).
A test renamed or moved leaves no stale pointer behind.

On a copy of the tree without features/ (tests/integration/test_core_alone.py), tests/features/
goes with it: pointers into it, and names found nowhere else, are not checked there."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("docs", "features", "scripts", "task", "server_app", "client_app")
SUFFIXES = {".md", ".py", ".sh", ".toml", ".txt", ".yml", ".yaml"}
PATH = re.compile(r"(?<![\w/.-])tests/[\w./<>*-]*[\w>*/](?:::\w+)?")
NAME = re.compile(r"(?<![\w/.:-])test_\w+(?!\w|\.py)")  # not a file name, not the tail of a path


def _scanned(root: Path) -> list[Path]:
    files = [root / name for name in ("README.md", "pyproject.toml") if (root / name).is_file()]
    for folder in SCANNED:
        files += sorted(p for p in (root / folder).rglob("*")
                        if p.suffix in SUFFIXES and p.is_file() and "__pycache__" not in p.parts)
    return files


def _defined_tests(root: Path) -> set[str]:
    return {m[1] for t in (root / "tests").rglob("*.py")
            for m in re.finditer(r"^\s*(?:async\s+)?def (test_\w+)", t.read_text(errors="replace"), re.M)}


def stale_references(root: Path) -> list[str]:
    """'file:line: reference' for each test path or test name that does not exist under `root`."""
    features_gone = not (root / "features").is_dir()
    defined = _defined_tests(root)
    stale = []
    for file in _scanned(root):
        for number, line in enumerate(file.read_text(errors="replace").splitlines(), 1):
            where = f"{file.relative_to(root)}:{number}"
            paths = list(PATH.finditer(line))
            for match in paths:
                path, _, test = match[0].partition("::")
                path = path.rstrip(".")
                if "<" in path or "*" in path or (features_gone and path.startswith("tests/features")):
                    continue  # a pattern (tests/features/<name>/), or a feature's tests on a core-only copy
                target = root / path
                if not target.exists() or (test and not re.search(rf"def {test}\b", target.read_text())):
                    stale.append(f"{where}: {match[0]}")
            if file.suffix == ".md" or paths:  # in code, only a name beside a tests/ path is a test's name
                stripped = PATH.sub("", line)
                stale += [f"{where}: {m[0]}" for m in NAME.finditer(stripped)
                          if m[0] not in defined and not features_gone]
    return stale


def test_every_test_the_docs_and_docstrings_name_exists():
    assert stale_references(ROOT) == []


def test_a_stale_test_path_or_name_is_reported(tmp_path):
    (tmp_path / "tests" / "unit").mkdir(parents=True)
    (tmp_path / "features").mkdir()
    (tmp_path / "tests" / "unit" / "test_here.py").write_text("def test_present():\n    pass\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "topic.md").write_text(
        "Checked by `tests/unit/test_here.py::test_present` and `tests/unit/test_gone.py`.\n"
        "Also `tests/unit/test_here.py::test_renamed`, and `test_present` and `test_missing` alone;\n"
        "per feature: tests/features/<name>/.\n")
    (tmp_path / "task").mkdir()
    (tmp_path / "task" / "code.py").write_text(
        '"""Its tests: tests/unit/test_here.py, test_vanished."""\ntest_x = 1  # a variable, not a test\n')
    assert stale_references(tmp_path) == [
        "docs/topic.md:1: tests/unit/test_gone.py",
        "docs/topic.md:2: tests/unit/test_here.py::test_renamed",
        "docs/topic.md:2: test_missing",
        "task/code.py:1: test_vanished",
    ]
