"""Times the public PyTorch PC-DARTS search step on CPU: the reference of `python -m bnas_tf.bench`.

Not imported by bnas_tf (bnas_tf never imports torch): `bench --torch_reference=DIR`
runs this file with `--torch_python` and `--pcdarts_dir DIR`, where DIR is a
checkout of https://github.com/yuhuixu1993/PC-DARTS (its `model_search.py`
and `architect.py`), and reads the JSON object on its last stdout line.

One step = train_search.py's first-order step: architect.step(..., unrolled=False)
(Adam on alphas/betas from the loss of a second batch) then the weight step
(zero_grad, forward, backward, clip_grad_norm 5, SGD momentum 0.9, wd 3e-4).
`.cuda()` calls are dropped (Tensor.cuda / Module.cuda become identities).

Usage: python bench_torch.py --pcdarts_dir DIR --batches 32,64 --warmup 2 --steps 5 --repeats 3 --threads 2
Prints one JSON object on the last line.
"""

import argparse
import json
import os
import resource
import sys
import time
import types

import numpy as np
import torch
import torch.nn as nn

torch.Tensor.cuda = lambda self, *a, **k: self
nn.Module.cuda = lambda self, *a, **k: self


def peak_rss_mb():
    """Peak resident set of this process: VmHWM (ru_maxrss can carry the parent's peak across exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--pcdarts_dir", required=True, help="checkout of yuhuixu1993/PC-DARTS")
    p.add_argument("--batches", default="32,64")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--image_size", type=int, default=32)
    a = p.parse_args()
    sys.path.insert(0, os.path.abspath(a.pcdarts_dir))
    from architect import Architect
    from model_search import Network
    torch.set_num_threads(a.threads)
    torch.manual_seed(2)
    results = {}
    for batch in [int(b) for b in a.batches.split(",")]:
        criterion = nn.CrossEntropyLoss()
        model = Network(a.channels, 10, a.layers, criterion)
        args = types.SimpleNamespace(momentum=0.9, weight_decay=3e-4, arch_learning_rate=6e-4, arch_weight_decay=1e-3)
        optimizer = torch.optim.SGD(model.parameters(), 0.1, momentum=0.9, weight_decay=3e-4)
        architect = Architect(model, args)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(batch, 3, a.image_size, a.image_size, generator=g)
        y = torch.randint(0, 10, (batch,), generator=g)
        xs = torch.randn(batch, 3, a.image_size, a.image_size, generator=g)
        ys = torch.randint(0, 10, (batch,), generator=g)
        model.train()

        def step():
            architect.step(x, y, xs, ys, 0.1, optimizer, unrolled=False)
            optimizer.zero_grad()
            logits = model(x)
            loss = criterion(logits, y)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            return float(loss)

        for _ in range(a.warmup):
            step()
        times = []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            for _ in range(a.steps):
                step()
            times.append((time.perf_counter() - t0) / a.steps)
        med = float(np.median(times))
        results[str(batch)] = {
            "step_s": med,
            "step_s_all": times,
            "images_per_s": batch / med,
            "peak_rss_mb_after": peak_rss_mb(),
        }
        print(f"torch batch {batch}: {med:.3f} s/step, {batch / med:.1f} images/s, "
              f"peak RSS {peak_rss_mb():.0f} MB", file=sys.stderr, flush=True)
        del model, architect, optimizer
    out = {
        "torch_version": torch.__version__,
        "threads": a.threads,
        "config": {"layers": a.layers, "init_channels": a.channels, "partial_channels": 4,
                   "reduction_cells": "DARTS rule", "image_size": a.image_size, "warmup_steps": a.warmup,
                   "steps_per_repeat": a.steps, "repeats": a.repeats},
        "results": results,
        "peak_rss_mb": peak_rss_mb(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
