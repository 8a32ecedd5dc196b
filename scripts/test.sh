#!/usr/bin/env bash
# Set up, then run the tests. No argument: the whole suite (what CI runs). --fast: the core unit
# tests only (tests/unit). Other arguments go to pytest as they are.
# The tests without Flower processes run on two workers (pytest-xdist); the end-to-end tests run one
# at a time (each starts real Flower processes).
#   tests/unit          the core, no Flower processes
#   tests/integration   whole runs of the core in this process (tests/inprocess.py)
#   tests/features      each opt-in feature: its unit tests and its whole runs
#   tests/e2e           real `flwr run .`, a real TLS deployment, a device install
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [[ "${1:-}" == "--fast" ]]; then
    shift
    exec .venv/bin/python -m pytest -q -n 2 --durations=10 tests/unit "$@"
fi
if [[ $# -gt 0 ]]; then
    exec .venv/bin/python -m pytest -q "$@"
fi
status=0  # both parts run; the suite fails if either does
.venv/bin/python -m pytest -q -n 2 --durations=10 tests/unit tests/integration tests/features || status=$?
.venv/bin/python -m pytest -q --durations=10 tests/e2e || status=$?  # the 10 slowest at the end
exit "$status"
