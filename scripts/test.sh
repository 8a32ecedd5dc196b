#!/usr/bin/env bash
# Set up, then run the tests. No argument: the whole suite (what CI runs). --fast: the core unit
# tests only (tests/unit). Other arguments go to pytest.
#   tests/unit          the core, no Flower processes
#   tests/integration   whole runs of the core in this process (tests/inprocess.py)
#   tests/features      each opt-in feature: its unit tests and its whole runs
#   tests/e2e           real `flwr run .`, a real TLS deployment, a device install
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [[ "${1:-}" == "--fast" ]]; then
    shift
    exec .venv/bin/python -m pytest -q --durations=10 tests/unit "$@"
fi
exec .venv/bin/python -m pytest -q --durations=15 "$@"  # the 15 slowest tests at the end
