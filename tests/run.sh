#!/usr/bin/env bash
# Sets everything up in .venv and runs the whole test suite (the README's test command).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements-test.txt
.venv/bin/python -m pip install -q --no-deps -e .
export CUDA_VISIBLE_DEVICES="" TF_CPP_MIN_LOG_LEVEL=2
.venv/bin/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile tests "$@"
