#!/usr/bin/env bash
# Install sasnet_components with its test extras into ./.venv and run the test suite on CPU.
# Usage: bash scripts/run_tests.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
# torch is pinned so that a CPU-only machine takes the CPU build; see README for GPU installs
python -m pip install --quiet "torch==2.13.0" -r requirements.txt -e ".[test]"
python -m pytest -q "$@"
