import pytest


@pytest.fixture(autouse=True)
def shard_cache(tmp_path_factory, monkeypatch):
    """Dealt corpora go to a fresh cache per test, never the user's ~/.cache."""
    root = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("FEDNEXTWORD_CACHE", str(root))
    return root / "shards"
