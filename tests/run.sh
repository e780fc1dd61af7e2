#!/usr/bin/env bash
# Sets everything up in .venv and runs the whole test suite (the README's test command).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements-test.txt
.venv/bin/python -m pip install -q --no-deps -e .
export CUDA_VISIBLE_DEVICES="" TF_CPP_MIN_LOG_LEVEL=2
# One TensorFlow thread per test process: the two workers (and the processes their tests
# start) then share the two cores instead of oversubscribing them (training tests: 107 s
# against 92 s).
export TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 OMP_NUM_THREADS=1
# The longest files first, so that each starts at once on its own worker: named one by
# one (pytest would otherwise collect a directory in name order), and xdist told to keep
# that order (by default it reorders files by their number of tests, which put the two
# longest files last and left one worker idle for minutes).
# The other long files follow, longest first, so that the short ones fill the end evenly.
first="tests/launch_test.py tests/distribute_test.py tests/resume_test.py tests/cli_test.py tests/search_test.py
       tests/fused_test.py tests/learning_test.py tests/face_train_test.py tests/bench_test.py tests/supernet_test.py
       tests/train_test.py"
rest=$(ls tests/*_test.py | grep -v -F "$(printf '%s\n' $first)")
.venv/bin/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile --no-loadscope-reorder $first $rest "$@"
