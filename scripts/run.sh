#!/usr/bin/env bash
# The main job: set up, then run a real federated training with `flwr run .` on the built-in
# data (10 simulated devices by default), check that the run completed, and print the results.
# Arguments go to scripts/run_simulation.py (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/run_simulation.py "$@"
