#!/usr/bin/env bash
# Set up, then run the tests. No argument: the whole suite (what CI runs). --fast: the core unit
# tests only (tests/unit). Other arguments go to pytest as they are.
# Three pytest-xdist workers: one runs the end-to-end tests one after another (each starts real
# Flower processes: never two at a time), the other two everything else.
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
# tests/e2e first, so that its worker starts on them at once; the 15 slowest tests at the end
exec .venv/bin/python -m pytest -q -n 3 --dist loadgroup --durations=15 tests/e2e tests/unit tests/integration tests/features
