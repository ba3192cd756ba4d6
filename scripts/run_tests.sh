#!/usr/bin/env bash
# Install sasnet_components with its test extras into ./.venv and run the test suite on CPU.
# Usage: bash scripts/run_tests.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/install.sh test
python -m pytest -q "$@"
