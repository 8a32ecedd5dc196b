#!/usr/bin/env bash
# Install everything into ./.venv from the committed lock file. Needs only Python 3.11 and pip.
# Idempotent: under a second when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if ! "$PY" -m uv --version >/dev/null 2>&1; then
    "$PY" -m pip install --quiet --disable-pip-version-check "uv==0.13.8"
fi
"$PY" -m uv sync --frozen --quiet --python "$PY"
