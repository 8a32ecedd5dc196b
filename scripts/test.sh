#!/usr/bin/env bash
# Set up, then run the whole test suite (unit, ClientApp, and an end-to-end `flwr run .`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q --durations=15 "$@"  # the 15 slowest tests at the end
