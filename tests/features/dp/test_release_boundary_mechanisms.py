"""The release boundary (task/releases.py) under the DP mechanisms of features/dp_mechanisms/ and
for TrieHH's query (features/discovery/): the core modes are in tests/unit/test_release_boundary.py."""

import pytest

from task.config import MECHANISM_MODES
from tests.unit.test_release_boundary import assert_only_declared_values, assert_training_text_moves_only_covered_values


@pytest.mark.parametrize("mode", MECHANISM_MODES)
def test_every_reply_under_every_mechanism_carries_only_declared_values(mode):
    assert_only_declared_values(mode, kinds=("train", "evaluate", "query"))


def test_under_local_dp_changing_only_the_training_text_changes_only_covered_values(tmp_path):
    assert_training_text_moves_only_covered_values(tmp_path, "local")


@pytest.mark.parametrize("mode, sgd, changes", [
    ("none", True, {}),  # DP-SGD alone
    ("central-client-clip", True, {}),
    ("central-client-clip", False, {"participation.availability": "always"}),  # the cost mod (withheld under DP)
    ("none", False, {"participation.availability": "always"}),
    ("central-client-clip", False, {"transfer.dtype": "float16"}),
    ("local", False, {"transfer.dtype": "int8"}),
])
def test_every_features_path_carries_only_declared_values(mode, sgd, changes):
    """Review I2: the boundary tests covered the core path only."""
    assert_only_declared_values(mode, sgd=sgd, keys=changes)
