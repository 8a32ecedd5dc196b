"""The names at each extension point, read from the one place each is listed.

Each extension point is one dict in the module that implements it:

| run-config key       | listed in (one line per entry)         |
|----------------------|----------------------------------------|
| model.architecture   | task/model.py `ARCHITECTURES`          |
| server-optimizer     | server_app/strategy.py `STRATEGIES`    |
| data.source          | task/data/partition.py `SOURCES`       |
| data.partitioner     | task/data/partition.py `PARTITIONERS`  |

The config check needs the names before anything runs, on a machine that may lack TensorFlow or
Flower's server side (a device, `scripts/run.sh`'s check), so the names are read from the
module's source (its literal keys), not by importing it.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCHITECTURES = ("task/model.py", "ARCHITECTURES")
STRATEGIES = ("server_app/strategy.py", "STRATEGIES")
STATEFUL_STRATEGIES = ("server_app/strategy.py", "STATEFUL")
SOURCES = ("task/data/partition.py", "SOURCES")
PARTITIONERS = ("task/data/partition.py", "PARTITIONERS")


@lru_cache(maxsize=None)
def names(where: tuple[str, str]) -> tuple[str, ...] | None:
    """The string keys of the dict (or items of the tuple) assigned to `name` in `path`; None when
    that file is not in this copy (the server's strategies on a device)."""
    path, name = where
    file = ROOT / path
    if not file.exists():
        return None
    for node in ast.parse(file.read_text(), str(file)).body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if isinstance(target, ast.Name) and target.id == name and node.value is not None:
            items = node.value.keys if isinstance(node.value, ast.Dict) else getattr(node.value, "elts", None)
            if items is None or not all(isinstance(k, ast.Constant) and isinstance(k.value, str) for k in items):
                raise TypeError(f"{path}: {name} must be a dict with string keys or a tuple of strings")
            return tuple(k.value for k in items)
    raise LookupError(f"{path} has no {name} (the registry task/registry.py reads)")
