#!/usr/bin/env bash
# Set up, then run the tests. No argument: the whole suite (what CI runs). --fast: the core unit
# tests only (tests/unit). Other arguments go to pytest as they are.
# The end-to-end tests run one after another (each starts real Flower processes: never two at a
# time) while two pytest-xdist workers run everything else beside them; the e2e log follows.
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
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
.venv/bin/python -m pytest -q --durations=10 --basetemp="$scratch/e2e" tests/e2e >"$scratch/e2e.log" 2>&1 &
e2e=$!
status=0
.venv/bin/python -m pytest -q -n 2 --durations=10 --basetemp="$scratch/rest" tests/unit tests/integration tests/features \
    || status=$?
wait "$e2e" || status=$?
echo "---------------- tests/e2e ----------------"
cat "$scratch/e2e.log"
exit "$status"
