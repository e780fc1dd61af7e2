"""Benchmarks of the search and of exported networks: ``python -m bnas_tf.bench``.

Sections (``--sections``, comma separated; default all):

- ``supernet``: images/s of one search step of the supernet (one
  architecture step, Adam on alpha/beta, then one weight step, SGD; first
  order), at the PC-DARTS setting (8 cells, 16 channels, partial channels
  1/4, reduction cells by DARTS's rule, no binarization, 32x32 inputs,
  batches 32 and 64) and at the BNAS setting (6 cells, reduction cells at
  (1, 3), partial channels 1/2, PCNN binarization, batch 32).
- ``subnet``: the weight step of a sampled single-path architecture (one
  operation per edge drawn with a fixed seed among the operations other than
  ``none``), PC-DARTS setting, first batch size.
- ``abandon``: the supernet step with K = 8, 6, 4, 2 operations alive per
  edge (``Supernet.set_alive``; nested random subsets with a fixed seed, as
  abandoning leaves them: the K kept are a subset of the K + 2 before), in a
  process of its own, as a search runs; each row the median of 5 timings
  (its target is a ratio of two of them).
- ``search``: wall time of a whole search on the embedded ``digits`` data,
  BNAS (Algorithm 1) against plain PC-DARTS given the same number of epoch
  units (2 cells with the paper's 16 channels, K = 8, T = V = 1, L = 2;
  printed with the results). Each search runs in a process of its own.
- ``export``: a 1-bit evaluation network (binary weights and activations,
  PCNN) exported with `bnas_tf.export.export`: bytes of the float TFLite and
  of the Larq Compute Engine model, and single-image latency of each (median
  over repeats) in LCE's interpreter (``larq_compute_engine.testing``), one
  thread; the float model also in ``tf.lite.Interpreter`` (default
  delegates, XNNPACK).

Data is random (throughput does not depend on it) except in ``search``; the
step sections load no dataset, as the PyTorch reference loads none.
Steps run as in a search: the traced `Searcher` steps, with Grappler off
(`search_graph_options`). Warm-up steps (tracing included) are excluded;
each step figure is the median over ``--repeats`` timings of ``--steps``
steps. Each supernet configuration runs in a process of its own (spawned),
as a launched search does; its peak memory is that process's peak resident
set (VmHWM) after its steps, and the PyTorch reference runs each batch in a
process of its own too. ``peak_rss_mb`` is the largest of those peaks and
the bench process's own.

``--json`` prints the figures as one JSON object on stdout (everything else
goes to stderr). ``--quick`` shrinks every size for a smoke run (the tests).

PyTorch reference (optional; bnas_tf never imports torch):
``--torch_reference=DIR`` runs ``bnas_tf/bench_torch.py`` on DIR, a checkout
of yuhuixu1993/PC-DARTS, with ``--torch_python`` (an interpreter with torch;
default: this one); a file instead of a directory is run as the script. The
command, run once per batch B, is ``PYTHON SCRIPT [--pcdarts_dir DIR] --batches B --warmup W --steps S
--repeats R --threads T --layers 8 --channels 16``; each run prints one JSON object on the
last line of its stdout, of the form
``{"results": {"32": {"images_per_s": ..., "step_s": ...,
"peak_rss_mb_after": ...}, ...}, "peak_rss_mb": ...}``. Its figures go under
``torch_reference`` and into the target comparisons.

Examples::

    python -m bnas_tf.bench
    python -m bnas_tf.bench --quick --json
    python -m bnas_tf.bench --sections=supernet,subnet --json
    python -m bnas_tf.bench --torch_reference=/tmp/pcdarts_ref --torch_python=/tmp/torchvenv/bin/python
"""

import argparse
import contextlib
import dataclasses
import json
import multiprocessing
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

SECTIONS = ("supernet", "subnet", "abandon", "search", "export")
ABANDON_KS = (8, 6, 4, 2)


@dataclasses.dataclass
class BenchConfig:
    """Every size the benchmark uses; `full()` and `quick()` are the presets."""

    name: str
    # PC-DARTS setting.
    pcdarts_layers: int = 8
    pcdarts_channels: int = 16
    pcdarts_partial: int = 4
    pcdarts_reduction: tuple | None = None  # None: DARTS's rule (layers // 3, 2 * layers // 3)
    batches: tuple = (32, 64)
    # BNAS setting.
    bnas_layers: int = 6
    bnas_channels: int = 16
    bnas_reduction: tuple = (1, 3)
    bnas_partial: int = 2
    bnas_binarization: str = "pcnn"
    bnas_batch: int = 32
    # Timing.
    warmup: int = 2
    steps: int = 2
    repeats: int = 3
    # The abandoning rows give a ratio of two medians (K = 2 over K = 8): more timings.
    abandon_repeats: int = 5
    # Search (digits).
    # The paper's 16 channels. With 4 the digits epochs (11 steps) were so short that the
    # first calls of BNAS's new graphs, whose cost does not grow with the data, weighed as
    # much as its steps (BUILD.md, "The whole-search configuration").
    search_channels: int = 16
    search_layers: int = 2
    search_reduction: tuple = (1,)
    search_partial: int = 2
    search_batch: int = 64
    search_heldout: int = 256
    search_k: int = 8
    search_t: int = 1
    search_v: int = 1
    search_warmup: int = 2
    search_warmup_freeze: int = 1
    search_steps_per_epoch: int | None = None  # None: whole epochs of the digits split
    search_repeats: int = 1
    # Export.
    export_genotype: str = "PC_DARTS"
    export_layers: int = 20  # the paper's CIFAR evaluation network (20 cells, C=36)
    export_channels: int = 36
    export_repeats: int = 50

    @classmethod
    def full(cls):
        return cls(name="full")

    @classmethod
    def quick(cls):
        return cls(
            name="quick",
            pcdarts_layers=2,
            pcdarts_channels=8,
            pcdarts_partial=4,
            pcdarts_reduction=(1,),  # one normal cell, one reduction cell
            batches=(4,),
            bnas_layers=2,
            bnas_channels=4,
            bnas_reduction=(1,),
            bnas_partial=2,
            bnas_batch=4,
            warmup=1,
            steps=1,
            repeats=2,
            abandon_repeats=2,
            search_channels=4,
            search_layers=2,
            search_batch=16,
            search_heldout=32,
            search_k=3,
            search_warmup=1,
            search_warmup_freeze=0,
            search_steps_per_epoch=1,
            export_layers=3,
            export_channels=4,
            export_repeats=5,
        )


# ---- helpers ---------------------------------------------------------------------------------


def peak_rss_mb():
    """Peak resident set of this process in MB: VmHWM on Linux (ru_maxrss can carry a parent's
    peak across exec), else ru_maxrss (KiB on Linux, bytes on macOS)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0


def machine_info():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info = {"cpu": cpu, "logical_cpus": os.cpu_count(), "usable_cpus": usable, "python": platform.python_version()}
    try:
        info["memory_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return info


def load_average():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _median(values):
    return float(statistics.median(values))


def time_steps(step, warmup, steps, repeats):
    """Median seconds per step over `repeats` timings of `steps` steps, after `warmup` steps.

    Returns (median, every timing, seconds of the warm-up (tracing included)).
    """
    start = time.perf_counter()
    for _ in range(warmup):
        step()
    warmup_s = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        times.append((time.perf_counter() - start) / steps)
    return _median(times), times, warmup_s


def _log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# ---- supernet, single path, abandoning --------------------------------------------------------


class _SpecOnly:
    """The search's data as far as a `Searcher` fed its own tensors reads it: the dataset's spec.

    The PyTorch reference steps on random tensors without loading a dataset;
    so does the bench, which holding the digits splits would charge 26 MB to
    the measured peak that no step uses.
    """

    def __init__(self, spec):
        self.spec = spec


class _StepBench:
    """A `Searcher` for one supernet configuration, fed random data (no dataset loaded)."""

    def __init__(self, *, layers, channels, reduction, partial, binarization, batch, seed=0):
        import tensorflow as tf

        from bnas_tf import data as data_lib
        from bnas_tf.search.pcdarts import SearchConfig, Searcher

        self.batch = batch
        self._tmp = tempfile.TemporaryDirectory(prefix="bnas_bench_")
        config = SearchConfig(
            dataset="digits",  # 32x32x3, 10 classes: CIFAR-sized; only its spec is read
            seed=seed,
            init_channels=channels,
            layers=layers,
            reduction_cells=reduction,
            partial_channels=partial,
            binarization=binarization,
            batch_size=batch,
            trial_batch_size=batch,
            heldout_size=16,
        )
        self.searcher = Searcher(config, self._tmp.name, splits=_SpecOnly(data_lib.spec(config.dataset)))
        shape = (batch,) + tuple(self.searcher.model.image_shape)
        gen = tf.random.Generator.from_seed(seed)
        self.xw = gen.uniform(shape, -1.0, 1.0)
        self.yw = gen.uniform((batch,), 0, 10, dtype=tf.int32)
        self.xa = gen.uniform(shape, -1.0, 1.0)
        self.ya = gen.uniform((batch,), 0, 10, dtype=tf.int32)

    def search_step(self):
        fn = self.searcher.search_step_fn(True)
        return lambda: float(fn(self.xw, self.yw, self.xa, self.ya)[0])

    def trial_step(self, choice):
        fn = self.searcher.trial_step_fn(choice)
        return lambda: float(fn(self.xw, self.yw)[0])

    def close(self):
        self.searcher.writer.close()
        self._tmp.cleanup()


def _measure(step, cfg, batch, extra=None, repeats=None):
    step_s, all_s, warmup_s = time_steps(step, cfg.warmup, cfg.steps, repeats or cfg.repeats)
    out = {
        "batch": batch,
        "step_s": step_s,
        "step_s_all": all_s,
        "images_per_s": batch / step_s,
        "warmup_s": warmup_s,
    }
    out.update(extra or {})
    return out


def pcdarts_setting(cfg, batch):
    return dict(layers=cfg.pcdarts_layers, channels=cfg.pcdarts_channels, reduction=cfg.pcdarts_reduction,
                partial=cfg.pcdarts_partial, binarization="none", batch=batch)


def bnas_setting(cfg):
    return dict(layers=cfg.bnas_layers, channels=cfg.bnas_channels, reduction=cfg.bnas_reduction,
                partial=cfg.bnas_partial, binarization=cfg.bnas_binarization, batch=cfg.bnas_batch)


def _describe(setting):
    return {
        "cells": setting["layers"],
        "init_channels": setting["channels"],
        "reduction_cells": "DARTS rule (layers//3, 2*layers//3)" if setting["reduction"] is None
        else list(setting["reduction"]),
        "partial_channels": setting["partial"],
        "binarization": setting["binarization"],
        "batch": setting["batch"],
        "input": [32, 32, 3],
    }


def _set_threads(threads):
    """Intra- and inter-op threads of this process; only when --threads asks (0: TensorFlow's default)."""
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def _in_own_process(fn, *args):
    """fn(*args) in a fresh (spawned) Python process, its result returned: a section measured
    as a launched search runs, without what earlier sections left in this process (BUILD.md)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


@contextlib.contextmanager
def _process_bench(setting, threads):
    """In a spawned process: its threads set (`_set_threads`), a `_StepBench` of `setting`
    built and run as a search runs it (`search_graph_options`), closed afterwards."""
    from bnas_tf.search.pcdarts import search_graph_options

    _set_threads(threads)
    with search_graph_options():
        sb = _StepBench(**setting)
        try:
            yield sb
        finally:
            sb.close()


def _supernet_rows(cfg, label, setting, threads, subnet):
    """In this (fresh) process: the supernet step of `setting`, its row with the process's
    peak RSS after the steps, and, if `subnet`, then the single-path row on the same supernet."""
    with _process_bench(setting, threads) as sb:
        row = _measure(sb.search_step(), cfg, setting["batch"], {"setting": label, "config": _describe(setting)})
        row["peak_rss_mb_after"], row["pid"] = peak_rss_mb(), os.getpid()
        _log(f"  {row['step_s']:.3f} s/step, {row['images_per_s']:.1f} images/s, warm-up {row['warmup_s']:.1f} s, "
             f"peak RSS {row['peak_rss_mb_after']:.0f} MB")
        return row, _subnet_row(cfg, sb) if subnet else None


def bench_supernet(cfg, results, threads, subnet=False):
    """Supernet search steps, each configuration in a process of its own (spawned), as a launched
    search runs, so that each peak RSS is that of one supernet; with `subnet`, the process of
    the first PC-DARTS batch then measures the single path too (`bench_subnet`)."""
    rows = []
    settings = [("pcdarts", pcdarts_setting(cfg, b)) for b in cfg.batches] + [("bnas", bnas_setting(cfg))]
    for i, (label, setting) in enumerate(settings):
        _log(f"supernet {label} {_describe(setting)}")
        row, sub = _in_own_process(_supernet_rows, cfg, label, setting, threads, subnet and i == 0)
        rows.append(row)
        if sub is not None:
            _store_subnet(results, sub)
    results["supernet"] = rows
    first = rows[0]
    results["supernet_images_per_s"] = first["images_per_s"]
    results["supernet_step_s"] = first["step_s"]


def sample_choice(model, seed=0, exclude=("none",)):
    """One operation per edge and cell type (not from `exclude`), drawn with `seed`."""
    import numpy as np

    from bnas_tf import genotypes as gt

    rng = np.random.default_rng(seed)
    allowed = [p for p in model.primitives if p not in exclude]
    ops_by_type = {t: [str(rng.choice(allowed)) for _ in range(gt.NUM_EDGES)] for t in gt.CELL_TYPES}
    return ops_by_type, model.choice(ops_by_type)


def _subnet_row(cfg, sb):
    ops_by_type, choice = sample_choice(sb.searcher.model)
    _log(f"subnet (single path) batch {sb.batch}: {ops_by_type}")
    row = _measure(sb.trial_step(choice), cfg, sb.batch,
                   {"config": _describe(pcdarts_setting(cfg, sb.batch)), "ops": ops_by_type,
                    "step": "weight step only"})
    _log(f"  {row['step_s']:.3f} s/step, {row['images_per_s']:.1f} images/s")
    row["pid"] = os.getpid()
    return row


def _store_subnet(results, row):
    results["subnet"] = row
    results["subnet_images_per_s"] = row["images_per_s"]
    results["subnet_step_s"] = row["step_s"]


def _subnet_alone(cfg, threads):
    """In this (fresh) process: the single-path row on a new PC-DARTS-setting supernet."""
    with _process_bench(pcdarts_setting(cfg, cfg.batches[0]), threads) as sb:
        return _subnet_row(cfg, sb)


def bench_subnet(cfg, results, threads):
    """The single-path step, PC-DARTS setting, first batch; measured by `bench_supernet` when
    that section runs, else here in a process of its own."""
    if "subnet" not in results:
        _store_subnet(results, _in_own_process(_subnet_alone, cfg, threads))


def nested_alive(primitives, ks, seed=0):
    """{K: alive sets} with K ops per edge; each K's set is a subset of the larger K's."""
    import numpy as np

    from bnas_tf import genotypes as gt

    rng = np.random.default_rng(seed)
    orders = {t: [list(rng.permutation(len(primitives))) for _ in range(gt.NUM_EDGES)] for t in gt.CELL_TYPES}
    return {
        k: {t: [[primitives[i] for i in sorted(order[:k])] for order in orders[t]] for t in gt.CELL_TYPES}
        for k in ks
    }


def _abandon_rows(cfg, threads):
    """The supernet step at each K of ABANDON_KS, in this (fresh) process: one bench,
    its alive set narrowed in turn, as a search narrows it."""
    with _process_bench(pcdarts_setting(cfg, cfg.batches[0]), threads) as sb:
        model = sb.searcher.model
        ks = [k for k in ABANDON_KS if k <= len(model.primitives)]
        rows = []
        for k, alive in nested_alive(model.primitives, ks).items():
            model.set_alive(alive)
            row = _measure(sb.search_step(), cfg, sb.batch, {"k": k}, repeats=cfg.abandon_repeats)
            _log(f"abandon K={k}: {row['step_s']:.3f} s/step, {row['images_per_s']:.1f} images/s, "
                 f"warm-up (retrace) {row['warmup_s']:.1f} s")
            rows.append(row)
        return rows


def bench_abandon(cfg, results, threads):
    """K = 8 down to 2 in a process of its own (spawned), as a search runs: in the bench's
    process, after the batch-64 and BNAS-setting supernets, the K = 2 step measured 1.03 s
    against 0.91 s fresh, K = 8 1.99 against 1.95 s (BUILD.md)."""
    rows = _in_own_process(_abandon_rows, cfg, threads)
    results["abandon"] = {
        "config": _describe(pcdarts_setting(cfg, cfg.batches[0])),
        "rule": "K ops per edge: nested random subsets (seed 0) of the 8, as abandoning leaves them",
        "process": "its own (spawned)",
        "repeats": cfg.abandon_repeats,
        "rows": rows,
    }


# ---- whole search -------------------------------------------------------------------------------


def search_config(cfg, **overrides):
    from bnas_tf.search.pcdarts import SearchConfig

    config = SearchConfig(
        dataset="digits",
        init_channels=cfg.search_channels,
        layers=cfg.search_layers,
        reduction_cells=cfg.search_reduction,
        partial_channels=cfg.search_partial,
        binarization="pcnn",
        batch_size=cfg.search_batch,
        trial_batch_size=cfg.search_batch,
        heldout_size=cfg.search_heldout,
        steps_per_epoch=cfg.search_steps_per_epoch,
        k=cfg.search_k,
        t=cfg.search_t,
        v=cfg.search_v,
        warmup_epochs=cfg.search_warmup,
        warmup_freeze_epochs=cfg.search_warmup_freeze,
    )
    return dataclasses.replace(config, **overrides)


def _timed_search(name, config, threads):
    """Runs one whole search (`name`: "bnas" or "pcdarts") in this (fresh) process, with `threads`
    intra- and inter-op threads (0: TensorFlow's default); its seconds:
    wall, the search loop, of it the first calls of new graphs and the checkpoints, and the rest."""
    from bnas_tf.search import tuner
    from bnas_tf.search.pcdarts import run_pcdarts

    _set_threads(threads)  # as in the bench's own process: set only when --threads asks
    run = tuner.run_bnas if name == "bnas" else run_pcdarts
    with tempfile.TemporaryDirectory(prefix=f"bnas_bench_{name}_") as tmp:
        start = time.perf_counter()
        searcher, _, loop_s = run(config, tmp)
        wall = time.perf_counter() - start
        trace, checkpoint = searcher.seconds["trace"], searcher.seconds["checkpoint"]
        searcher.writer.close()
    return dict(wall=wall, loop=loop_s, trace=trace, checkpoint=checkpoint, steps=loop_s - trace - checkpoint)


def bench_search(cfg, results, threads):
    from bnas_tf.search import tuner

    bnas_cfg = search_config(cfg)
    units = tuner.total_units(bnas_cfg)
    pc_cfg = search_config(cfg, epochs=units, arch_freeze_epochs=cfg.search_warmup_freeze)
    described = {
        "dataset": "digits (embedded; 32x32x3, 10 classes)",
        "cells": cfg.search_layers,
        "init_channels": cfg.search_channels,
        "reduction_cells": list(cfg.search_reduction),
        "partial_channels": cfg.search_partial,
        "binarization": "pcnn",
        "batch": cfg.search_batch,
        "trial_batch": cfg.search_batch,
        "heldout": cfg.search_heldout,
        "steps_per_epoch_cap": cfg.search_steps_per_epoch,
        "bnas": {"K": cfg.search_k, "T": cfg.search_t, "V": cfg.search_v, "L": cfg.search_warmup,
                 "alpha_frozen_epochs": cfg.search_warmup_freeze},
        "pcdarts": {"epochs": units, "alpha_frozen_epochs": cfg.search_warmup_freeze},
        "epoch_units_each": units,
        "repeats": cfg.search_repeats,
    }
    _log(f"search: {described}")
    # Per run, in seconds: wall; the search loop; of it, the first calls of new graphs
    # (tracing, building the graph and that call's step) and the checkpoints; and the rest
    # of the loop, the part that grows with the epochs' length (at the bench's digits scale,
    # 11 steps an epoch, the others weigh as much).
    # Each search runs in a fresh process, as `python -m bnas_tf.launch` does: TensorFlow
    # instantiates every function a new graph calls again, at a cost that grows with all the
    # functions the process holds (BUILD.md), so graphs left by earlier sections could slow it.
    figures = ("wall", "loop", "trace", "checkpoint", "steps")
    times = {name: {f: [] for f in figures} for name in ("bnas", "pcdarts")}
    for _ in range(cfg.search_repeats):
        for name, config in (("pcdarts", pc_cfg), ("bnas", bnas_cfg)):
            run_times = _in_own_process(_timed_search, name, config, threads)
            for f in figures:
                times[name][f].append(run_times[f])
            _log(f"  {name} (own process): {run_times['wall']:.1f} s wall ({run_times['loop']:.1f} s in the search "
                 f"loop, of which {run_times['trace']:.1f} s first calls of new graphs and "
                 f"{run_times['checkpoint']:.1f} s checkpoints)")
    medians = {f"{name}_{f}_s": _median(times[name][f]) for name in times for f in figures}
    results["search"] = {
        "config": described,
        **medians,
        "bnas_wall_s_all": times["bnas"]["wall"],
        "pcdarts_wall_s_all": times["pcdarts"]["wall"],
        "bnas_over_pcdarts": medians["bnas_wall_s"] / medians["pcdarts_wall_s"],
        "bnas_over_pcdarts_steps": medians["bnas_steps_s"] / medians["pcdarts_steps_s"],
    }


# ---- export -----------------------------------------------------------------------------------


def _latency(run, repeats):
    for _ in range(3):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return _median(times)


def bench_export(cfg, results):
    import numpy as np
    import warnings

    import larq_compute_engine as lce_engine
    import tensorflow as tf

    from bnas_tf import export as export_lib
    from bnas_tf import network

    described = {
        "genotype": cfg.export_genotype,
        "cells": cfg.export_layers,
        "init_channels": cfg.export_channels,
        "binarization": "pcnn",
        "binary_activations": True,
        "auxiliary": False,
        "input": [32, 32, 3],
        "weights": "untrained (initial values); sizes and latency do not depend on them",
        "latency": f"batch 1, median of {cfg.export_repeats} runs after 3, one thread",
    }
    _log(f"export: {described}")
    model = network.build_network(
        cfg.export_genotype,
        num_classes=10,
        init_channels=cfg.export_channels,
        layers=cfg.export_layers,
        auxiliary=False,
        binarization="pcnn",
        binary_activations=True,
        input_shape=(32, 32, 3),
        seed=0,
    )
    x = np.random.default_rng(0).uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="bnas_bench_export_") as tmp:
        start = time.perf_counter()
        summary = export_lib.export(model, tmp, sample_inputs=x)["summary"]
        export_s = time.perf_counter() - start
        with open(os.path.join(tmp, export_lib.TFLITE_FILE), "rb") as f:
            tflite = f.read()
        with open(os.path.join(tmp, export_lib.LCE_FILE), "rb") as f:
            lce = f.read()
    latency = {}
    for name, flatbuffer in (("tflite", tflite), ("lce_tflite", lce)):
        interpreter = lce_engine.testing.Interpreter(flatbuffer, num_threads=1)
        latency[name] = _latency(lambda i=interpreter: i.predict(x), cfg.export_repeats)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*tf\.lite\.Interpreter is deprecated")
        tfl = tf.lite.Interpreter(model_content=tflite, num_threads=1)
    tfl.allocate_tensors()
    inp, out = tfl.get_input_details()[0]["index"], tfl.get_output_details()[0]["index"]

    def run_tfl():
        tfl.set_tensor(inp, x)
        tfl.invoke()
        return tfl.get_tensor(out)

    latency["tflite_xnnpack"] = _latency(run_tfl, cfg.export_repeats)
    results["export"] = {
        "config": described,
        "export_s": export_s,
        "tflite_bytes": len(tflite),
        "lce_tflite_bytes": len(lce),
        "lce_over_tflite_bytes": len(lce) / len(tflite),
        # Where the bytes go: parameters by precision and the ops of each model (bnas_tf.summary).
        "params": summary.get("params"),
        "params_1bit": summary.get("params_1bit"),
        "params_32bit": summary.get("params_32bit"),
        "packed_over_float_params": summary.get("memory_ratio"),
        "tflite_ops": summary.get("tflite_ops"),
        "lce_tflite_ops": summary.get("lce_tflite_ops"),
        "tflite_latency_ms": latency["tflite"] * 1e3,
        "lce_tflite_latency_ms": latency["lce_tflite"] * 1e3,
        "tflite_xnnpack_latency_ms": latency["tflite_xnnpack"] * 1e3,
        "latency_runtime": "larq_compute_engine.testing.Interpreter (reference x86 kernels, one thread) for both; "
                           "tflite_xnnpack: tf.lite.Interpreter with its default delegates, one thread",
    }
    _log(f"  float {len(tflite)} B, LCE {len(lce)} B (ratio {len(lce) / len(tflite):.3f}); latency float "
         f"{latency['tflite'] * 1e3:.2f} ms, LCE {latency['lce_tflite'] * 1e3:.2f} ms, "
         f"float XNNPACK {latency['tflite_xnnpack'] * 1e3:.2f} ms")


# ---- PyTorch reference and targets ---------------------------------------------------------------


def run_torch_reference(path, python, cfg, threads):
    """The PyTorch step at each batch, each batch in a process of its own, as bnas_tf's are;
    their JSON objects merged: {"results": {batch: ...}, "peak_rss_mb": the largest, ...}."""
    if os.path.isdir(path):  # a PC-DARTS checkout: run our step script on it
        if not os.path.isfile(os.path.join(path, "model_search.py")):
            raise SystemExit(f"--torch_reference: {path} is not a PC-DARTS checkout (no model_search.py)")
        base = [python, os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench_torch.py"),
                "--pcdarts_dir", path]
    elif os.path.isfile(path):
        base = [python, path]
    else:
        raise SystemExit(f"--torch_reference: no PC-DARTS checkout or script at {path}")
    merged = {"results": {}, "commands": []}
    for batch in cfg.batches:
        cmd = base + ["--batches", str(batch), "--warmup", str(cfg.warmup), "--steps", str(cfg.steps),
                      "--repeats", str(cfg.repeats), "--threads", str(threads),
                      "--layers", str(cfg.pcdarts_layers), "--channels", str(cfg.pcdarts_channels)]
        _log(f"torch reference: {' '.join(cmd)}")
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=sys.stderr, text=True, check=False)
        if proc.returncode:
            raise SystemExit(f"--torch_reference failed with exit status {proc.returncode}")
        lines = [line for line in proc.stdout.splitlines() if line.strip()]
        if not lines:
            raise SystemExit("--torch_reference printed nothing on stdout")
        out = json.loads(lines[-1])
        merged["commands"].append(cmd)
        merged["results"].update(out.pop("results", {}))
        merged["peak_rss_mb"] = max(merged.get("peak_rss_mb", 0.0), out.pop("peak_rss_mb", 0.0))
        merged.update(out)
    return merged


def targets(results):
    """Each target: the measured value, the bound, and whether it is met (None: not measured)."""
    rows = []

    def add(name, value, bound, op):
        met = None if value is None else (value >= bound if op == ">=" else value <= bound)
        rows.append({"target": name, "value": value, "bound": f"{op} {bound:g}", "met": met})

    torch = results.get("torch_reference", {}).get("results", {})
    for row in results.get("supernet", []):
        if row["setting"] != "pcdarts":
            continue
        ref = torch.get(str(row["batch"]))
        add(f"supernet images/s / PyTorch, batch {row['batch']}",
            row["images_per_s"] / ref["images_per_s"] if ref else None, 2.0, ">=")
        add(f"peak RSS, batch {row['batch']} / PyTorch",
            row["peak_rss_mb_after"] / ref["peak_rss_mb_after"] if ref else None, 1.0, "<=")
    if "subnet" in results and "supernet_step_s" in results:
        add("single-path step time / supernet step time", results["subnet_step_s"] / results["supernet_step_s"],
            0.25, "<=")
    abandon = {r["k"]: r["step_s"] for r in results.get("abandon", {}).get("rows", [])}
    if 2 in abandon and 8 in abandon:
        add("supernet step time K=2 / K=8", abandon[2] / abandon[8], 0.5, "<=")
    if "search" in results:
        add("BNAS / PC-DARTS search wall time, equal epochs", results["search"]["bnas_over_pcdarts"], 0.5, "<=")
    if "export" in results:
        add("LCE bytes / float TFLite bytes, 1-bit network", results["export"]["lce_over_tflite_bytes"], 0.125, "<=")
    return rows


# ---- CLI ------------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m bnas_tf.bench",
        description="Benchmarks: supernet and single-path search steps, abandoning, whole searches, "
                    "exported 1-bit networks.",
    )
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run (seconds, not minutes)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object on stdout")
    parser.add_argument("--batches", help="PC-DARTS-setting batch sizes, e.g. 32,64 (default: preset)")
    parser.add_argument("--warmup", type=int, help="warm-up steps excluded from timing (default: preset)")
    parser.add_argument("--steps", type=int, help="steps per timing (default: preset)")
    parser.add_argument("--repeats", type=int, help="timings per figure; the median is reported (default: preset)")
    parser.add_argument("--search_repeats", type=int, help="whole searches of each kind (default: preset)")
    parser.add_argument("--search_steps_per_epoch", type=int,
                        help="cap on the steps of each search epoch (default: preset; the full preset runs whole "
                             "epochs)")
    parser.add_argument("--threads", type=int, default=0,
                        help="TensorFlow intra- and inter-op threads, and the PyTorch reference's threads "
                             "(default 0: the usable CPUs)")
    parser.add_argument("--torch_reference", help="PyTorch PC-DARTS step script (or its directory); see the module doc")
    parser.add_argument("--torch_python", default=sys.executable, help="Python that runs --torch_reference")
    parser.add_argument("--output", help="also write the JSON object to this file")
    parser.add_argument("--readme", help="write the results table into this file (README.md), between "
                                         f"{README_BEGIN} and {README_END}")
    parser.add_argument("--from_json", help="format the results saved by --output instead of running")
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown or not sections:
        parser.error(f"--sections: expected a comma-separated subset of {','.join(SECTIONS)}; got {args.sections!r}")
    args.sections = [s for s in SECTIONS if s in sections]
    cfg = BenchConfig.quick() if args.quick else BenchConfig.full()
    if args.batches:
        try:
            cfg.batches = tuple(int(b) for b in args.batches.split(","))
        except ValueError:
            parser.error(f"--batches: expected comma-separated integers; got {args.batches!r}")
        if any(b < 1 for b in cfg.batches):
            parser.error(f"--batches: expected positive integers; got {args.batches!r}")
    for name in ("warmup", "steps", "repeats", "search_repeats", "search_steps_per_epoch"):
        value = getattr(args, name)
        if value is not None:
            if value < (0 if name == "warmup" else 1):
                parser.error(f"--{name}: too small: {value}")
            setattr(cfg, name, value)
    if args.threads < 0:
        parser.error(f"--threads: expected >= 0; got {args.threads}")
    return args, cfg


@contextlib.contextmanager
def _stdout_to_stderr():
    """Sends everything written to stdout (Python and C level) to stderr; yields the real stdout."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    real = os.fdopen(saved, "w")
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield real
    finally:
        sys.stdout.flush()
        real.flush()
        os.dup2(saved, 1)
        real.close()


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(type(value).__name__)


def run(args, cfg):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    import keras
    import tensorflow as tf

    threads = args.threads or machine_info()["usable_cpus"]
    _set_threads(args.threads)
    results = {
        "preset": cfg.name,
        "sections": args.sections,
        "machine": machine_info(),
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
        "threads": threads,
        "timing": {"warmup_steps": cfg.warmup, "steps_per_timing": cfg.steps, "repeats": cfg.repeats,
                   "figure": "median seconds per step over the repeats"},
        "load_average_start": load_average(),
        "pid": os.getpid(),
    }
    start = time.perf_counter()
    if "supernet" in args.sections:
        bench_supernet(cfg, results, args.threads, subnet="subnet" in args.sections)
    if "subnet" in args.sections:
        bench_subnet(cfg, results, args.threads)
    if "abandon" in args.sections:
        bench_abandon(cfg, results, args.threads)
    if "search" in args.sections:
        bench_search(cfg, results, args.threads)
    if "export" in args.sections:
        bench_export(cfg, results)
    # The largest peak of the processes that ran supernet steps, and of this one.
    results["peak_rss_mb"] = max([peak_rss_mb()] + [row["peak_rss_mb_after"] for row in results.get("supernet", [])])
    results["load_average_end"] = load_average()
    results["bench_s"] = time.perf_counter() - start
    if args.torch_reference:
        results["torch_reference"] = run_torch_reference(args.torch_reference, args.torch_python, cfg, threads)
    results["targets"] = targets(results)
    return results


def format_report(results):
    lines = [f"bnas_tf benchmarks ({results['preset']} preset): {results['machine']['cpu']}, "
             f"{results['machine']['usable_cpus']} usable CPUs, {results['threads']} threads, "
             f"TF {results['versions']['tensorflow']}, load average {results['load_average_start']}"]
    for row in results.get("supernet", []):
        lines.append(f"supernet step [{row['setting']}] {row['config']}: {row['images_per_s']:.1f} images/s "
                     f"({row['step_s']:.3f} s/step), peak RSS {row['peak_rss_mb_after']:.0f} MB (own process)")
    if "subnet" in results:
        row = results["subnet"]
        lines.append(f"single-path step (weights only), batch {row['batch']}: {row['images_per_s']:.1f} images/s "
                     f"({row['step_s']:.3f} s/step)")
    for row in results.get("abandon", {}).get("rows", []):
        lines.append(f"supernet step with K={row['k']} ops per edge: {row['step_s']:.3f} s/step "
                     f"({row['images_per_s']:.1f} images/s)")
    if "search" in results:
        s = results["search"]
        lines.append(f"whole search {s['config']}: BNAS {s['bnas_wall_s']:.1f} s, PC-DARTS {s['pcdarts_wall_s']:.1f} s "
                     f"(ratio {s['bnas_over_pcdarts']:.2f})")
    if "export" in results:
        e = results["export"]
        lines.append(f"export {e['config']}: float TFLite {e['tflite_bytes']} B, LCE {e['lce_tflite_bytes']} B "
                     f"(ratio {e['lce_over_tflite_bytes']:.3f}); latency float {e['tflite_latency_ms']:.2f} ms, "
                     f"LCE {e['lce_tflite_latency_ms']:.2f} ms, float XNNPACK {e['tflite_xnnpack_latency_ms']:.2f} ms")
    torch = results.get("torch_reference")
    if torch:
        for batch, row in torch.get("results", {}).items():
            lines.append(f"PyTorch PC-DARTS step, batch {batch}: {row['images_per_s']:.1f} images/s "
                         f"({row['step_s']:.3f} s/step), peak RSS {row['peak_rss_mb_after']:.0f} MB (own process)")
    lines.append(f"largest peak RSS: {results['peak_rss_mb']:.0f} MB")
    for t in results["targets"]:
        value = "n/a" if t["value"] is None else f"{t['value']:.3f}"
        met = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        lines.append(f"target {t['target']} {t['bound']}: {value} ({met})")
    return "\n".join(lines)


README_BEGIN = "<!-- bench:begin -->"
README_END = "<!-- bench:end -->"


def regenerate_command(argv):
    """The bench command line that reproduces the figures: `argv` less the flags that
    only choose where results go (--from_json, --output, --json)."""
    dropped = ("--from_json", "--output", "--json")
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in dropped:
            skip = "=" not in arg and name != "--json"
            continue
        kept.append(arg)
    return " ".join(["python -m bnas_tf.bench"] + kept)


def format_markdown(results, command):
    """The README's results table (Markdown) for `results`, produced by `command`."""
    m = results["machine"]
    torch = results.get("torch_reference", {}).get("results", {})
    out = [
        f"Machine: {m['cpu']}, {m['usable_cpus']} usable CPUs, {m.get('memory_gb', '?')} GB; "
        f"TensorFlow {results['versions']['tensorflow']}, Keras {results['versions']['keras']}"
        + (f"; PyTorch {results['torch_reference'].get('torch_version')}" if "torch_reference" in results else "")
        + f"; {results['threads']} threads; load average at start {results['load_average_start']}. "
        f"Figures are medians of {results['timing']['repeats']} timings of {results['timing']['steps_per_timing']} "
        f"steps after {results['timing']['warmup_steps']} warm-up steps.",
        "",
        f"Regenerate: `{command}`",
        "",
        "| Figure | bnas_tf | PyTorch PC-DARTS |",
        "|---|---|---|",
    ]
    for row in results.get("supernet", []):
        ref = torch.get(str(row["batch"])) if row["setting"] == "pcdarts" else None
        setting = ("PC-DARTS setting (8 cells, C=16, 1/4 channels, float)" if row["setting"] == "pcdarts"
                   else "BNAS setting (6 cells, C=16, 1/2 channels, PCNN)")
        out.append(f"| supernet search step, {setting}, batch {row['batch']} | {row['images_per_s']:.1f} images/s "
                   f"({row['step_s']:.2f} s) | " + (f"{ref['images_per_s']:.1f} images/s ({ref['step_s']:.2f} s)"
                                                    if ref else "-") + " |")
        if ref:
            out.append(f"| peak RSS, batch {row['batch']} (a process of its own) | {row['peak_rss_mb_after']:.0f} MB | "
                       f"{ref['peak_rss_mb_after']:.0f} MB |")
    if "subnet" in results:
        row = results["subnet"]
        out.append(f"| sampled single-path step, PC-DARTS setting, batch {row['batch']} | "
                   f"{row['images_per_s']:.1f} images/s ({row['step_s']:.2f} s) | - |")
    abandon = results.get("abandon", {})
    timings = f" (median of {abandon['repeats']} timings)" if "repeats" in abandon else ""
    for row in abandon.get("rows", []):
        out.append(f"| supernet step, K={row['k']} operations per edge{timings} | {row['step_s']:.2f} s | - |")
    if "search" in results:
        s = results["search"]
        c = s["config"]
        out.append(f"| whole search on digits ({c['cells']} cells, C={c['init_channels']}, batch {c['batch']}), "
                   f"{c['epoch_units_each']} epoch units each: BNAS / PC-DARTS | "
                   f"{s['bnas_wall_s']:.0f} s / {s['pcdarts_wall_s']:.0f} s (search loop {s['bnas_loop_s']:.0f} s / "
                   f"{s['pcdarts_loop_s']:.0f} s) | - |")
        if "bnas_trace_s" in s:
            out.append(f"| of the search loop: first calls of new graphs (trace + build + 1 step), BNAS / PC-DARTS | "
                       f"{s['bnas_trace_s']:.0f} s / {s['pcdarts_trace_s']:.0f} s | - |")
            out.append(f"| of the search loop: checkpoints, BNAS / PC-DARTS | "
                       f"{s['bnas_checkpoint_s']:.0f} s / {s['pcdarts_checkpoint_s']:.0f} s | - |")
            out.append(f"| of the search loop: the rest (steps, data, evaluation), BNAS / PC-DARTS | "
                       f"{s['bnas_steps_s']:.0f} s / {s['pcdarts_steps_s']:.0f} s "
                       f"(ratio {s['bnas_over_pcdarts_steps']:.2f}) | - |")
    if "export" in results:
        e = results["export"]
        out.append(f"| exported 1-bit network: float TFLite / LCE bytes | {e['tflite_bytes']:,} / "
                   f"{e['lce_tflite_bytes']:,} | - |")
        out.append(f"| single-image latency, float TFLite / LCE (1 thread) | {e['tflite_latency_ms']:.2f} ms / "
                   f"{e['lce_tflite_latency_ms']:.2f} ms | - |")
    out += ["", "| Target | Bound | Measured | |", "|---|---|---|---|"]
    for t in results["targets"]:
        value = "n/a" if t["value"] is None else f"{t['value']:.3f}"
        met = {True: "met", False: "**missed**", None: "not measured"}[t["met"]]
        out.append(f"| {t['target']} | {t['bound']} | {value} | {met} |")
    return "\n".join(out)


def update_readme(path, markdown, begin=README_BEGIN, end=README_END):
    """Replaces the text between the markers `begin` and `end` of `path` (by default the
    bench's) with `markdown`."""
    with open(path) as f:
        text = f.read()
    if begin not in text or end not in text:
        raise SystemExit(f"--readme: {path} has no {begin} ... {end} section to replace")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(path, "w") as f:
        f.write(head + begin + "\n" + markdown + "\n" + end + tail)


def main(argv=None):
    argv = list(argv if argv is not None else sys.argv[1:])
    args, cfg = parse_args(argv)
    with _stdout_to_stderr() as stdout:
        if args.from_json:
            with open(args.from_json) as f:
                results = json.load(f)
        else:
            results = run(args, cfg)
            results["argv"] = argv  # for the table's regenerate line, also when written --from_json
        text = json.dumps(results, default=_json_default, allow_nan=False)
        if args.output:
            with open(args.output, "w") as f:
                f.write(text + "\n")
        if args.readme:
            # The command that measured these results (saved with them), writing the table.
            measured = results.get("argv", argv)
            command = regenerate_command(measured)
            if "--readme" not in {a.split("=", 1)[0] for a in measured}:
                command += f" --readme {args.readme}"
            update_readme(args.readme, format_markdown(results, command))
        if args.json:
            stdout.write(text + "\n")
        else:
            stdout.write(format_report(results) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
