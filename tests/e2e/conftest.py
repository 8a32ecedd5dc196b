"""End-to-end tests start real Flower processes: one private local SuperLink for the whole session
(its own FLWR_HOME and ports, never a SuperLink the user may be running), stopped at the end."""

import pytest

from scripts.local_flower import private_flower


@pytest.fixture(scope="session")
def flower(tmp_path_factory):
    with private_flower(tmp_path_factory.mktemp("flwr-home"), 39191, 39193, must_stop=True) as env:
        yield env


def pytest_collection_modifyitems(items):
    """Under pytest-xdist (scripts/test.sh), every end-to-end test goes to one worker, in order:
    one real Flower job at a time, while the other workers run the tests without Flower processes."""
    for item in items:
        if "e2e" in item.path.parts:
            item.add_marker(pytest.mark.xdist_group("e2e"))
