#!/usr/bin/env bash
# Set up, then run the tests. No argument: the whole suite (what CI runs: tests/unit and the
# end-to-end `flwr run .` and deployment tests in tests/e2e, ~30 min on 2 cores).
# --fast: the unit tests only (tests/unit, a few minutes). Other arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [[ "${1:-}" == "--fast" ]]; then
    shift
    exec .venv/bin/python -m pytest -q --durations=10 tests/unit "$@"
fi
exec .venv/bin/python -m pytest -q --durations=15 "$@"  # the 15 slowest tests at the end
