"""bnas_tf.quality: random genotypes, the summary table, the command end to end."""

import collections
import json
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bnas_tf import genotypes as gt  # noqa: E402
from bnas_tf import quality  # noqa: E402


def test_random_genotypes_cover_the_space_uniformly():
    rng = np.random.default_rng(0)
    draws = [gt.random_genotype(rng) for _ in range(400)]
    ops, inputs = collections.Counter(), collections.Counter()
    for genotype in draws:
        for cell_type in gt.CELL_TYPES:
            edges, concat = genotype.cell(cell_type)
            assert list(concat) == [2, 3, 4, 5]
            for j in range(4):
                (_, a), (_, b) = edges[2 * j : 2 * j + 2]
                assert a < b < j + 2  # two distinct earlier nodes
                inputs[(j, a)] += 1
                inputs[(j, b)] += 1
            ops.update(op for op, _ in edges)
    assert "none" not in ops and set(ops) == set(gt.PRIMITIVES) - {"none"}
    expected = 400 * 16 / 7
    assert all(abs(n - expected) < 5 * np.sqrt(expected) for n in ops.values()), ops
    # Node j picks 2 of its j + 2 inputs: each input with probability 2 / (j + 2).
    for (j, _), n in inputs.items():
        mean = 800 * 2 / (j + 2)
        assert abs(n - mean) < 5 * np.sqrt(mean), (j, n)
    assert len({json.dumps(g.to_dict()) for g in draws}) == len(draws)


def test_summary_means_and_spreads():
    runs = [{"precision": "w1a32", "genotype": g, "seed": s, "test_accuracy": a}
            for g, accs in (("bnas", [0.9, 0.8]), ("random 1", [0.5, 0.7]), ("random 2", [0.3, 0.5]))
            for s, a in enumerate(accs)]
    rows = quality.summarize({"runs": runs})
    by_label = {label: (mean, std, n) for _, label, mean, std, n in rows}
    assert by_label["bnas"] == pytest.approx((0.85, 0.05, 2))
    assert by_label["random (all)"] == pytest.approx((0.5, np.std([0.5, 0.7, 0.3, 0.5]), 4))


@pytest.mark.parametrize("argv, message", [
    ([], "name at least one genotype"),
    (["--w1a32=DARTS_V2"], "LABEL:GENOTYPE"),
    (["--w1a32=a:DARTS_V2", "--seeds=x"], "--seeds"),
    (["--w1a32=a:DARTS_V2", "--epochs=0"], "--epochs"),
])
def test_bad_arguments_give_one_message(argv, message, capsys):
    with pytest.raises(SystemExit):
        quality.parse_args(argv)
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_the_command_trains_and_writes_the_readme_table(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"x\n{quality.README_BEGIN}\nold\n{quality.README_END}\ny\n")
    out = tmp_path / "q.json"
    argv = ["--w1a32=darts:DARTS_V2", "--random=1", "--seeds=0", "--epochs=1", "--layers=3", "--init_channels=4",
            "--output", str(out), f"--readme={readme}"]
    assert quality.main(argv) == 0
    results = json.loads(out.read_text())
    assert [(r["genotype"], r["seed"]) for r in results["runs"]] == [("darts", 0), ("random 1", 0)]
    assert all(0.0 <= r["test_accuracy"] <= 1.0 for r in results["runs"])
    text = readme.read_text()
    assert text.startswith("x\n") and text.endswith("y\n") and "old" not in text
    assert "| W1A32 | darts |" in text and "| W1A32 | random (all) |" in text
    assert ("python -m bnas_tf.quality --w1a32=darts:DARTS_V2 --random=1 --seeds=0 --epochs=1 --layers=3 "
            "--init_channels=4`") in text
