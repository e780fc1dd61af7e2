"""`python -m bnas_tf.bench`: a --quick --json run in a subprocess, and its pure helpers.

The subprocess runs the three step sections at tiny sizes (a 2-cell supernet,
batch 4; tracing dominates its time), `abandon` in a spawned process of its
own; the other sections share their code paths with the search and export
tests and take minutes even when tiny.
"""

import json
import math
import os
import subprocess
import sys

import pytest

from bnas_tf import bench


def _finite_positive(value):
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_quick_json_run():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, "-m", "bnas_tf.bench", "--quick", "--json", "--sections=supernet,subnet,abandon"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stdout[-2000:]  # one JSON object, nothing else on stdout
    results = json.loads(lines[0])
    for key in ("supernet_images_per_s", "subnet_images_per_s", "peak_rss_mb", "supernet_step_s", "subnet_step_s"):
        assert _finite_positive(results[key]), (key, results[key])
    assert results["preset"] == "quick"
    assert results["sections"] == ["supernet", "subnet", "abandon"]
    settings = [(row["setting"], row["batch"]) for row in results["supernet"]]
    assert settings == [("pcdarts", 4), ("bnas", 4)]
    for row in results["supernet"] + [results["subnet"]]:
        for key in ("step_s", "images_per_s", "warmup_s"):
            assert _finite_positive(row[key]), (key, row)
        assert len(row["step_s_all"]) == 2  # quick: two timings, the median reported
    assert results["supernet"][0]["config"]["binarization"] == "none"
    assert results["supernet"][1]["config"]["binarization"] == "pcnn"
    assert results["supernet_images_per_s"] == results["supernet"][0]["images_per_s"]
    assert all(_finite_positive(row["peak_rss_mb_after"]) for row in results["supernet"])
    assert results["peak_rss_mb"] == max(row["peak_rss_mb_after"] for row in results["supernet"])
    # Each supernet in a process of its own, the single path in the first one's.
    pids = [row["pid"] for row in results["supernet"]]
    assert len(set(pids + [results["pid"]])) == len(pids) + 1
    assert results["subnet"]["pid"] == pids[0]
    assert results["machine"]["usable_cpus"] >= 1
    (target,) = [t for t in results["targets"] if t["target"].startswith("single-path")]
    assert target["met"] in (True, False) and _finite_positive(target["value"])
    # Abandoning, measured in the spawned process: every K, nested as a search narrows them.
    assert results["abandon"]["process"] == "its own (spawned)"
    assert [row["k"] for row in results["abandon"]["rows"]] == list(bench.ABANDON_KS)
    assert all(_finite_positive(row["step_s"]) for row in results["abandon"]["rows"])
    assert results["abandon"]["repeats"] == 2 and all(len(row["step_s_all"]) == 2 for row in results["abandon"]["rows"])
    (target,) = [t for t in results["targets"] if t["target"].startswith("supernet step time K=2")]
    rows = {row["k"]: row["step_s"] for row in results["abandon"]["rows"]}
    assert target["value"] == pytest.approx(rows[2] / rows[8])


_FAKE_TORCH = """
import json, os, resource, sys
batch = sys.argv[sys.argv.index("--batches") + 1]
assert "," not in batch, "one batch per process"
peak = 1000.0 + int(batch)
print("torch batch", batch, file=sys.stderr)
print(json.dumps({"torch_version": "0.test", "results": {batch: {"step_s": 1.0, "images_per_s": float(batch),
                  "peak_rss_mb_after": peak, "pid": os.getpid()}}, "peak_rss_mb": peak}))
"""


def test_torch_reference_runs_each_batch_in_its_own_process(tmp_path):
    script = tmp_path / "fake_torch.py"
    script.write_text(_FAKE_TORCH)
    cfg = bench.BenchConfig.quick()
    cfg.batches = (8, 16)
    out = bench.run_torch_reference(str(script), sys.executable, cfg, threads=1)
    assert sorted(out["results"]) == ["16", "8"]
    assert out["results"]["16"]["peak_rss_mb_after"] == 1016.0
    assert out["results"]["8"]["pid"] != out["results"]["16"]["pid"]
    assert out["peak_rss_mb"] == 1016.0 and out["torch_version"] == "0.test"
    assert [cmd[cmd.index("--batches") + 1] for cmd in out["commands"]] == ["8", "16"]


def test_parse_args():
    args, cfg = bench.parse_args(["--quick", "--sections=export,supernet", "--batches=16,8", "--repeats=4"])
    assert args.sections == ["supernet", "export"]  # run in the fixed order
    assert cfg.name == "quick" and cfg.batches == (16, 8) and cfg.repeats == 4
    args, cfg = bench.parse_args([])
    assert args.sections == list(bench.SECTIONS)
    assert (cfg.pcdarts_layers, cfg.pcdarts_channels, cfg.pcdarts_partial, cfg.pcdarts_reduction) == (8, 16, 4, None)
    assert cfg.batches == (32, 64)
    assert (cfg.bnas_layers, cfg.bnas_reduction, cfg.bnas_partial, cfg.bnas_binarization) == (6, (1, 3), 2, "pcnn")
    assert (cfg.search_channels, cfg.search_k, cfg.search_t, cfg.search_v) == (16, 8, 1, 1)  # the paper's C, K, T, V
    for bad in (["--sections=supernet,gpu"], ["--batches=32,x"], ["--repeats=0"], ["--threads=-1"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


def test_nested_alive_keeps_subsets():
    from bnas_tf import genotypes as gt

    alive = bench.nested_alive(gt.PRIMITIVES, (8, 6, 4, 2))
    for t in gt.CELL_TYPES:
        for e in range(gt.NUM_EDGES):
            assert len(alive[8][t][e]) == 8
            for big, small in ((8, 6), (6, 4), (4, 2)):
                assert len(alive[small][t][e]) == small
                assert set(alive[small][t][e]) <= set(alive[big][t][e])
    assert alive == bench.nested_alive(gt.PRIMITIVES, (8, 6, 4, 2))  # seeded


def test_targets():
    results = {
        "supernet": [
            {"setting": "pcdarts", "batch": 32, "images_per_s": 10.0, "peak_rss_mb_after": 1000.0},
            {"setting": "bnas", "batch": 32, "images_per_s": 5.0, "peak_rss_mb_after": 1200.0},
        ],
        "supernet_step_s": 3.2,
        "subnet_step_s": 0.4,
        "subnet": {"step_s": 0.4},
        "abandon": {"rows": [{"k": 8, "step_s": 3.0}, {"k": 2, "step_s": 2.0}]},
        "search": {"bnas_over_pcdarts": 0.4},
        "export": {"lce_over_tflite_bytes": 0.5},
        "torch_reference": {"results": {"32": {"images_per_s": 4.0, "peak_rss_mb_after": 2000.0}}},
    }
    got = {t["target"]: (t["value"], t["met"]) for t in bench.targets(results)}
    assert got["supernet images/s / PyTorch, batch 32"] == (2.5, True)
    assert got["peak RSS, batch 32 / PyTorch"] == (0.5, True)
    assert got["single-path step time / supernet step time"] == (0.125, True)
    assert got["supernet step time K=2 / K=8"][1] is False
    assert got["BNAS / PC-DARTS search wall time, equal epochs"] == (0.4, True)
    assert got["LCE bytes / float TFLite bytes, 1-bit network"] == (0.5, False)
    del results["torch_reference"]
    got = {t["target"]: t["met"] for t in bench.targets(results)}
    assert got["supernet images/s / PyTorch, batch 32"] is None  # not measured without the reference


def test_readme_table_is_written_between_the_markers(tmp_path):
    results = {
        "preset": "full",
        "machine": {"cpu": "Test CPU", "usable_cpus": 2, "memory_gb": 24.0},
        "versions": {"tensorflow": "2.21.0", "keras": "3.15.1"},
        "threads": 2,
        "load_average_start": [0.5, 0.5, 0.5],
        "timing": {"repeats": 3, "steps_per_timing": 2, "warmup_steps": 2},
        "supernet": [{"setting": "pcdarts", "batch": 32, "images_per_s": 12.0, "step_s": 2.67, "config": {},
                      "peak_rss_mb_after": 1500.0}],
        "subnet": {"batch": 32, "images_per_s": 80.0, "step_s": 0.4},
        "torch_reference": {"torch_version": "2.13.0", "results": {"32": {"images_per_s": 6.0, "step_s": 5.33,
                                                                           "peak_rss_mb_after": 1800.0}}},
    }
    results["argv"] = ["--sections=supernet,subnet", "--batches=32", "--output", "/tmp/r.json"]  # the measuring run's
    results["search"] = {"config": {"cells": 2, "init_channels": 16, "batch": 64, "epoch_units_each": 28},
                         "bnas_wall_s": 234.4, "pcdarts_wall_s": 526.5, "bnas_loop_s": 231.3, "pcdarts_loop_s": 523.3,
                         "bnas_over_pcdarts": 0.445}
    results["supernet_step_s"], results["subnet_step_s"], results["peak_rss_mb"] = 2.67, 0.4, 1500.0
    results["targets"] = bench.targets(results)
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n{bench.README_BEGIN}\nold table\n{bench.README_END}\n\nAfter.\n")
    saved = tmp_path / "results.json"
    saved.write_text(json.dumps(results))
    assert bench.main(["--from_json", str(saved), f"--readme={readme}"]) == 0
    text = readme.read_text()
    assert "old table" not in text and text.startswith("# Title") and text.endswith("After.\n")
    assert "| supernet search step, PC-DARTS setting (8 cells, C=16, 1/4 channels, float), batch 32 | 12.0 images/s" in text
    assert "| 6.0 images/s (5.33 s) |" in text
    assert "| supernet images/s / PyTorch, batch 32 | >= 2 | 2.000 | met |" in text
    assert "Test CPU, 2 usable CPUs" in text
    # The regenerate line names the run that measured (less its output flags), not the --from_json one.
    assert f"Regenerate: `python -m bnas_tf.bench --sections=supernet,subnet --batches=32 --readme {readme}`" in text
    assert ("| whole search on digits (2 cells, C=16, batch 64), 28 epoch units each: BNAS / PC-DARTS | "
            "234 s / 526 s (search loop 231 s / 523 s) | - |") in text
    assert "| BNAS / PC-DARTS search wall time, equal epochs | <= 0.5 | 0.445 | met |" in text
    readme.write_text("no markers")
    with pytest.raises(SystemExit, match="no <!-- bench:begin -->"):
        bench.main(["--from_json", str(saved), f"--readme={readme}"])


def test_regenerate_command_drops_the_flags_that_only_choose_outputs():
    argv = ["--sections=search", "--output", "/tmp/a.json", "--json", "--from_json=/tmp/b.json",
            "--readme", "README.md", "--batches=32"]
    assert bench.regenerate_command(argv) == "python -m bnas_tf.bench --sections=search --readme README.md --batches=32"


def test_step_bench_loads_no_dataset(monkeypatch):
    # The PyTorch reference steps on random tensors; the measured process holds no dataset either.
    from bnas_tf import data as data_lib

    def no_data(*args, **kwargs):
        raise AssertionError("the step bench loaded the search splits")

    monkeypatch.setattr(data_lib, "search_splits", no_data)
    sb = bench._StepBench(layers=2, channels=4, reduction=(1,), partial=2, binarization="none", batch=2)
    try:
        assert sb.searcher.model.image_shape[:2] == (32, 32) and sb.xw.shape == (2, 32, 32, 3)
    finally:
        sb.close()
