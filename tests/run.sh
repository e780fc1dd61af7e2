#!/usr/bin/env bash
# Sets everything up in .venv and runs the whole test suite (the README's test command).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements-test.txt
.venv/bin/python -m pip install -q --no-deps -e .
export CUDA_VISIBLE_DEVICES="" TF_CPP_MIN_LOG_LEVEL=2
# The longest files first, so that each starts at once on its own worker: named one by
# one (pytest would otherwise collect a directory in name order), and xdist told to keep
# that order (by default it reorders files by their number of tests, which put the two
# longest files last and left one worker idle for minutes).
first="tests/launch_test.py tests/distribute_test.py tests/resume_test.py tests/cli_test.py"
rest=$(ls tests/*_test.py | grep -v -e launch_test.py -e resume_test.py -e distribute_test.py -e cli_test.py)
.venv/bin/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile --no-loadscope-reorder $first $rest "$@"
