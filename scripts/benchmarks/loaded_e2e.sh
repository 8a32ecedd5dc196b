#!/usr/bin/env bash
# The end-to-end tests on a loaded machine: six `yes > /dev/null` busy loops leave the tests about a
# quarter of a 2-core machine (like one four times slower). Every wait in tests/e2e polls against
# a wide deadline, so they must pass here too. Usage: bash scripts/benchmarks/loaded_e2e.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup.sh
busy=()
trap 'kill "${busy[@]}" 2>/dev/null || true' EXIT
for _ in 1 2 3 4 5 6; do
    yes > /dev/null &
    busy+=($!)
done
.venv/bin/python -m pytest -q --durations=0 tests/e2e "$@"
