"""One way to write a file a reader may open at any moment (a dashboard, a resumed run)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_write(path: Path, mode: str = "w") -> Iterator:
    """Write to a temporary file beside `path`, flush it to disk, then rename it over `path`:
    a reader sees the old file or the new one, never half of one, even if the writer dies."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, mode) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
