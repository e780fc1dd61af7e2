"""Helpers of the command-line tests: run bnas_tf.launch, read its outputs."""

import json
import os
import subprocess
import sys

from bnas_tf import genotypes as gt

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = [sys.executable, "-m", "bnas_tf.launch"]
DEMO = LAUNCH + ["--flagfile=configs/demo.flags"]
ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
TIMEOUT = 2700  # generous: a 2-core machine shared with other work can be several times slower


def run(args, **kwargs):
    return subprocess.run(args, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=TIMEOUT, **kwargs)


def read_history(model_dir):
    with open(os.path.join(model_dir, "search_history.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def check_genotype(path):
    genotype = gt.load(str(path))  # validates: known ops, input ranges, 2 inputs per node
    for cell_type in gt.CELL_TYPES:
        edges, _ = genotype.cell(cell_type)
        assert all(op != "none" for op, _ in edges)
        assert len(edges) == 8
    return genotype
