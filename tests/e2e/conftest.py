"""End-to-end tests start real Flower processes: one private local SuperLink for the whole session
(its own FLWR_HOME and ports, never a SuperLink the user may be running), stopped at the end."""

import pytest

from scripts.local_flower import private_flower


@pytest.fixture(scope="session")
def flower(tmp_path_factory):
    with private_flower(tmp_path_factory.mktemp("flwr-home"), 39191, 39193, must_stop=True) as env:
        yield env

