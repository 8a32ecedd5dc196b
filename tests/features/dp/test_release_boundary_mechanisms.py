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
