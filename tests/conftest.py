import os
import time

import psutil
import pytest


@pytest.fixture(autouse=True)
def shard_cache(tmp_path_factory, monkeypatch):
    """Dealt corpora go to a fresh cache per test, never the user's ~/.cache."""
    root = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("FEDNEXTWORD_CACHE", str(root))
    return root / "shards"


def _started_here(base: str) -> list[psutil.Process]:
    """Processes that belong to this session: their command line or environment names its temp
    folder (every FLWR_HOME, deployment and cache of the tests lives there)."""
    mine = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.pid in mine:
            continue
        try:
            text = " ".join(proc.info["cmdline"] or []) + " " + " ".join(proc.environ().values())
        except psutil.Error:
            continue
        if base in text:
            found.append(proc)
    return found


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind(tmp_path_factory):
    """Every SuperLink, SuperNode, gateway, simulation and ClientApp a test starts is stopped."""
    base = str(tmp_path_factory.getbasetemp()) + os.sep  # "pytest-8/", never a prefix of "pytest-81"
    yield
    deadline = time.monotonic() + 30
    while (left := _started_here(base)) and time.monotonic() < deadline:
        time.sleep(1)
    if left:
        names = [f"{p.pid}: {' '.join(p.cmdline())[:150]}" for p in left if p.is_running()]
        for proc in left:
            proc.kill()
        pytest.fail("processes started by the tests were left running:\n" + "\n".join(names), pytrace=False)

