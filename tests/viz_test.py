"""Tests of bnas_tf.viz: cell diagrams written as PNG files."""

import struct

import numpy as np
import pytest

from bnas_tf import genotypes
from bnas_tf import viz
from bnas_tf.errors import ConfigError
from bnas_tf.errors import GenotypeError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    """(width, height) from a PNG's IHDR chunk, after checking the signature."""
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def test_plot_genotype_writes_both_cells(tmp_path):
    directory = tmp_path / "new" / "dir"  # created if missing
    paths = viz.plot_genotype(genotypes.DARTS_V2, directory)
    assert paths == {
        "normal": str(directory / "normal.png"),
        "reduce": str(directory / "reduce.png"),
    }
    for path in paths.values():
        width, height = png_size(path)
        assert width > height > 300  # laid out left to right
        assert (directory / path.rsplit("/", 1)[1]).stat().st_size > 20_000


def test_plot_cell_of_a_published_genotype_by_name(tmp_path):
    path = tmp_path / "pc_darts_reduce.png"
    assert viz.plot_cell("pc_darts", "reduce", path, title="PC-DARTS reduction") == str(path)
    assert png_size(path)[0] > 1000
    assert path.stat().st_size > 20_000


def test_plot_cell_handles_repeated_inputs_and_partial_concat(tmp_path):
    # Node 0 takes c_{k-1} twice; node 3 takes node 2; only nodes 4, 5 are concatenated.
    genotype = genotypes.Genotype(
        normal=[
            ("sep_conv_3x3", 1), ("dil_conv_5x5", 1),
            ("skip_connect", 2), ("avg_pool_3x3", 0),
            ("max_pool_3x3", 3), ("sep_conv_5x5", 2),
            ("dil_conv_3x3", 4), ("sep_conv_3x3", 0),
        ],
        normal_concat=[4, 5],
        reduce=genotypes.DARTS_V1.reduce,
    )  # fmt: skip
    path = viz.plot_cell(genotype, "normal", tmp_path / "normal.png", title="")
    assert png_size(path)[0] > 1000


def test_plot_cell_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"Received: cell_type='reduction'"):
        viz.plot_cell(genotypes.DARTS_V2, "reduction", tmp_path / "x.png")
    with pytest.raises(GenotypeError, match=r"Cannot load genotype 'DARTS_V9'"):
        viz.plot_cell("DARTS_V9", "normal", tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_layout_ranks_nodes_by_longest_path():
    # DARTS_V2 normal: nodes 0, 1, 2 read only the cell inputs; node 3 reads node 0.
    positions = viz._layout(genotypes.DARTS_V2.normal)
    columns = {node: round(x / viz._COLUMN_GAP) for node, (x, _) in positions.items()}
    assert columns == {0: 0, 1: 0, 2: 1, 3: 1, 4: 1, 5: 2, "out": 3}
    assert positions[0][1] > positions[1][1]  # c_{k-2} above c_{k-1}


def test_arc_points_follow_matplotlib_arc3():
    # A straight edge; and rad 0.5 on the chord (0, 0) -> (2, 0): the control
    # point is (1, 0) + 0.5 * (0, -2) = (1, -1), so the midpoint is (1, -0.5).
    straight = viz._arc_points((0, 0), (2, 2), 0.0, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(straight, [[0, 0], [1, 1], [2, 2]])
    np.testing.assert_allclose(viz._arc_points((0, 0), (2, 0), 0.5, [0.5]), [[1, -0.5]])
    assert viz._arc_angle((0, 0), (2, 2), 0.0, 0.3) == pytest.approx(45.0)
    assert viz._arc_angle((2, 2), (0, 0), 0.0, 0.3) == pytest.approx(45.0)  # kept upright


def test_count_overlaps():
    square = viz._rotated_corners((0, 0), 2, 2, 0)
    near = viz._rotated_corners((2.2, 0), 2, 2, 45)  # a diamond reaching x = 2.2 - 1.414
    far = viz._rotated_corners((2.5, 0), 2, 2, 45)  # reaching x = 1.086
    inside = viz._rotated_corners((0.1, 0.1), 0.5, 0.5, 30)
    assert viz._count_overlaps(square, [near, far, inside]) == 2
    assert viz._count_overlaps(square, []) == 0
    # Axis-aligned boxes would overlap here; the turned rectangles do not.
    bar = viz._rotated_corners((0, 0), 4, 0.2, 45)
    dot = viz._rotated_corners((1.2, -0.9), 0.2, 0.2, 0)
    assert viz._count_overlaps(bar, [dot]) == 0
    assert viz._count_overlaps(bar, [viz._rotated_corners((1, 1), 0.2, 0.2, 0)]) == 1
