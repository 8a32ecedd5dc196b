"""A copy of the tree to change as a forker would (tests/integration/test_fork_table.py,
test_delete_one_feature.py, test_core_alone.py), and the README's fork table those tests check.

The venv installs this project editable (a .pth naming the original tree): a copy's
`sitecustomize.py` drops that path, so no process of the copy can quietly import a file from the
original tree (a deleted feature, an unchanged model). Run the copy's processes with `env(copy)`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TREE = ("task", "client_app", "server_app", "features", "tests", "scripts", "docs")
FILES = ("README.md", "pyproject.toml", "requirements-device.txt", ".gitignore")
GIT = ["git", "-c", "user.name=fork", "-c", "user.email=fork@example.invalid", "-c", "commit.gpgsign=false"]


def tree_copy(dest: Path, *, features: bool = True, git: bool = False) -> Path:
    """The project's source tree at `dest` (without features/ and tests/features/ if not `features`);
    with `git`, a repository whose first commit is the copy, so `changed_files` lists a change."""
    for name in TREE:
        if name == "features" and not features:
            continue
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns(
            "__pycache__", *(() if features else ("features",))))
    for name in FILES:
        shutil.copy(ROOT / name, dest)
    (dest / "sitecustomize.py").write_text(f"import sys\nsys.path[:] = [p for p in sys.path if p != {str(ROOT)!r}]\n")
    subprocess.run(["git", "init", "-q", str(dest)], check=True)  # tests of what git ignores need a repository
    if git:
        commit(dest, "the tree as shipped")
    return dest


def commit(copy: Path, message: str) -> None:
    subprocess.run(["git", "add", "-A"], cwd=copy, check=True)
    subprocess.run([*GIT, "commit", "-q", "--allow-empty", "-m", message], cwd=copy, check=True)


def changed_files(copy: Path) -> set[str]:
    """Every file changed, added or deleted since the last commit (what `git status` lists)."""
    out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=copy, check=True,
                         capture_output=True, text=True).stdout
    return {line[3:].strip() for line in out.splitlines() if line.strip()}


def env(copy: Path, home: Path) -> dict[str, str]:
    """The environment of a copy's processes: its own tree first, nothing of the user's."""
    return {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "PYTHONPATH": str(copy), "HOME": str(home),
            "TF_CPP_MIN_LOG_LEVEL": "3", "FEDNEXTWORD_CACHE": str(home / "cache")}


def edit(path: Path, old: str, new: str) -> None:
    """Replace the one occurrence of `old` (a forker's edit at a named place)."""
    text = path.read_text()
    assert text.count(old) == 1, f"{path}: {old!r} occurs {text.count(old)} times"
    path.write_text(text.replace(old, new))


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


# --- the README's fork table -------------------------------------------------------------------
SECTION = "## Fork it: where to change what"
PATH = re.compile(r"`([\w.-]+(?:/[\w.<>-]+)*(?:\.(?:py|toml|json|md)|/))`")


def fork_table(readme: Path = ROOT / "README.md") -> dict[str, dict[str, str]]:
    """The table's rows by their first cell: {column header: cell}."""
    text = readme.read_text().split(SECTION, 1)[1].split("\n## ", 1)[0]
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        rows[cells[0]] = dict(zip(header, cells, strict=True))
    return rows


def row(table: dict[str, dict[str, str]], starts: str) -> dict[str, str]:
    found = [r for name, r in table.items() if name.startswith(starts)]
    assert len(found) == 1, f"the fork table has {len(found)} rows starting {starts!r}: {list(table)}"
    return found[0]


def files_named(cell: str) -> set[str]:
    """The file paths a table cell names (in backticks)."""
    return set(PATH.findall(cell))


# --- deleting one opt-in feature (the README's checklist under the table) ----------------------
def feature_group(copy: Path, name: str) -> str | None:
    """Its run-config group (GROUP in features/<name>/config.py), None if it has none."""
    found = re.search(r'^GROUP = "([^"]+)"', (copy / "features" / name / "config.py").read_text(), re.M)
    return found.group(1) if found else None


def feature_tests(copy: Path, name: str) -> Path:
    """Its tests' folder: tests/features/<name>/ (DP mechanisms: tests/features/dp/)."""
    folder = copy / "tests" / "features" / name
    return folder if folder.exists() else copy / "tests" / "features" / {"dp_mechanisms": "dp"}.get(name, name)


def strip_group(pyproject: str, group: str) -> str:
    """pyproject.toml without the `[tool.flwr.app.config.<group>]` table (up to the next table)."""
    text, found = re.subn(rf"\n\[tool\.flwr\.app\.config\.{re.escape(group)}\][^\n]*\n(?:(?!\[)[^\n]*\n)*", "\n",
                          pyproject)
    assert found == 1, group
    return text


def strip_ignored_imports(pyproject: str, name: str) -> tuple[str, list[str]]:
    """pyproject.toml without the import-linter `ignore_imports` lines that name features.<name>."""
    pattern = re.compile(rf'^\s*"[\w.]+ -> features\.{re.escape(name)}(?:\.[\w.]+)?",\n', re.M)
    return pattern.sub("", pyproject), [m.strip().strip('",') for m in pattern.findall(pyproject)]


def delete_feature(copy: Path, name: str) -> dict:
    """Delete one feature from a copy as the README's checklist says; what was deleted."""
    group, tests = feature_group(copy, name), feature_tests(copy, name)
    shutil.rmtree(copy / "features" / name)
    shutil.rmtree(tests)
    pyproject = (copy / "pyproject.toml").read_text()
    if group:
        pyproject = strip_group(pyproject, group)
    # import-linter's list names the composition roots, not features: nothing of it to delete
    _, lines = strip_ignored_imports(pyproject, name)
    (copy / "pyproject.toml").write_text(pyproject)
    return {"group": group, "tests": str(tests.relative_to(copy)), "ignore_imports": lines}
