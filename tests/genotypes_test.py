"""Tests of bnas_tf.genotypes: the search space as data.

Published genotypes are checked against the text of the reference
repositories' genotypes.py; `derive` against a hand-worked example.
"""

import dataclasses
import json
import math
import pathlib

import numpy as np
import pytest

from bnas_tf import genotypes
from bnas_tf.errors import BnasError
from bnas_tf.errors import ConfigError
from bnas_tf.errors import GenotypeError
from bnas_tf.genotypes import Genotype

NAN = math.nan
NEG_INF = -math.inf

# The lines of the reference repositories, verbatim (facts, not code):
# quark0/darts cnn/genotypes.py, yuhuixu1993/PC-DARTS genotypes.py,
# chenxin061/pdarts genotypes.py.
REFERENCE_TEXT = {
    "DARTS_V1": "DARTS_V1 = Genotype(normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 0), ('sep_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 0), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('avg_pool_3x3', 0)], reduce_concat=[2, 3, 4, 5])",  # noqa: E501
    "DARTS_V2": "DARTS_V2 = Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])",  # noqa: E501
    "PC_DARTS": "PC_DARTS_cifar = Genotype(normal=[('sep_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 0), ('dil_conv_3x3', 1), ('sep_conv_5x5', 0), ('sep_conv_3x3', 1), ('avg_pool_3x3', 0), ('dil_conv_3x3', 1)], normal_concat=range(2, 6), reduce=[('sep_conv_5x5', 1), ('max_pool_3x3', 0), ('sep_conv_5x5', 1), ('sep_conv_5x5', 2), ('sep_conv_3x3', 0), ('sep_conv_3x3', 3), ('sep_conv_3x3', 1), ('sep_conv_3x3', 2)], reduce_concat=range(2, 6))",  # noqa: E501
    "PC_DARTS_IMAGENET": "PC_DARTS_image = Genotype(normal=[('skip_connect', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 0), ('skip_connect', 1), ('sep_conv_3x3', 1), ('sep_conv_3x3', 3), ('sep_conv_3x3', 1), ('dil_conv_5x5', 4)], normal_concat=range(2, 6), reduce=[('sep_conv_3x3', 0), ('skip_connect', 1), ('dil_conv_5x5', 2), ('max_pool_3x3', 1), ('sep_conv_3x3', 2), ('sep_conv_3x3', 1), ('sep_conv_5x5', 0), ('sep_conv_3x3', 3)], reduce_concat=range(2, 6))",  # noqa: E501
    "PDARTS": "PDARTS = Genotype(normal=[('skip_connect', 0), ('dil_conv_3x3', 1), ('skip_connect', 0),('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('sep_conv_3x3', 3), ('sep_conv_3x3',0), ('dil_conv_5x5', 4)], normal_concat=range(2, 6), reduce=[('avg_pool_3x3', 0), ('sep_conv_5x5', 1), ('sep_conv_3x3', 0), ('dil_conv_5x5', 2), ('max_pool_3x3', 0), ('dil_conv_3x3', 1), ('dil_conv_3x3', 1), ('dil_conv_5x5', 3)], reduce_concat=range(2, 6))",  # noqa: E501
}

NAMES = sorted(genotypes.PUBLISHED)

GOOD_NORMAL = [
    ["sep_conv_3x3", 0], ["sep_conv_3x3", 1],
    ["skip_connect", 0], ["sep_conv_3x3", 2],
    ["max_pool_3x3", 1], ["dil_conv_3x3", 3],
    ["avg_pool_3x3", 4], ["sep_conv_5x5", 0],
]


def good_config(**overrides):
    config = {
        "normal": [list(pair) for pair in GOOD_NORMAL],
        "normal_concat": [2, 3, 4, 5],
        "reduce": [list(pair) for pair in GOOD_NORMAL],
        "reduce_concat": [2, 3, 4, 5],
    }
    config.update(overrides)
    return config


def with_edge(index, pair):
    edges = [list(p) for p in GOOD_NORMAL]
    edges[index] = pair
    return edges


# --- The search space ---------------------------------------------------------


def test_primitives_are_the_darts_eight_in_order():
    assert genotypes.PRIMITIVES == (
        "none",
        "max_pool_3x3",
        "avg_pool_3x3",
        "skip_connect",
        "sep_conv_3x3",
        "sep_conv_5x5",
        "dil_conv_3x3",
        "dil_conv_5x5",
    )


def test_edges_are_the_fourteen_darts_edges_in_order():
    assert genotypes.STEPS == 4
    assert genotypes.NUM_EDGES == 14
    assert genotypes.CELL_TYPES == ("normal", "reduce")
    assert genotypes.EDGES == (
        (0, 2), (1, 2),
        (0, 3), (1, 3), (2, 3),
        (0, 4), (1, 4), (2, 4), (3, 4),
        (0, 5), (1, 5), (2, 5), (3, 5), (4, 5),
    )  # fmt: skip


# --- Published genotypes ---------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_published_genotype_matches_reference_text(name):
    assert genotypes.get(name) == Genotype.from_string(REFERENCE_TEXT[name])


def test_published_names_and_aliases():
    assert NAMES == ["DARTS_V1", "DARTS_V2", "PC_DARTS", "PC_DARTS_IMAGENET", "PDARTS"]
    assert genotypes.get("darts_v2") is genotypes.DARTS_V2
    assert genotypes.get("Pc_Darts_ImageNet") is genotypes.PC_DARTS_IMAGENET
    assert genotypes.get("DARTS") is genotypes.DARTS_V2  # as in quark0/darts
    assert genotypes.get("pc_darts_cifar") is genotypes.PC_DARTS
    assert genotypes.get("PC_DARTS_image") is genotypes.PC_DARTS_IMAGENET
    # The CIFAR and ImageNet PC-DARTS cells differ: node 0 of the normal cell.
    assert genotypes.PC_DARTS.normal[0] == ("sep_conv_3x3", 1)
    assert genotypes.PC_DARTS_IMAGENET.normal[0] == ("skip_connect", 1)


def test_get_unknown_name_lists_the_names():
    with pytest.raises(GenotypeError, match=r"Unknown genotype name 'DARTS_V3'") as info:
        genotypes.get("DARTS_V3")
    for name in NAMES:
        assert name in str(info.value)
    with pytest.raises(GenotypeError, match="Unknown genotype name 3"):
        genotypes.get(3)


@pytest.mark.parametrize("name", NAMES)
def test_json_round_trip(name):
    genotype = genotypes.get(name)
    text = genotype.to_json()
    assert Genotype.from_json(text) == genotype
    assert Genotype.from_json(genotype.to_json(indent=2)) == genotype
    assert Genotype.from_dict(json.loads(text)) == genotype


@pytest.mark.parametrize("name", NAMES)
def test_string_round_trip(name):
    genotype = genotypes.get(name)
    assert Genotype.from_string(str(genotype)) == genotype
    assert Genotype.from_string(repr(genotype)) == genotype


def test_to_json_format():
    expected = (
        '{"normal": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1], ["sep_conv_3x3", 0], '
        '["sep_conv_3x3", 1], ["sep_conv_3x3", 1], ["skip_connect", 0], '
        '["skip_connect", 0], ["dil_conv_3x3", 2]], "normal_concat": [2, 3, 4, 5], '
        '"reduce": [["max_pool_3x3", 0], ["max_pool_3x3", 1], ["skip_connect", 2], '
        '["max_pool_3x3", 1], ["max_pool_3x3", 0], ["skip_connect", 2], '
        '["skip_connect", 2], ["max_pool_3x3", 1]], "reduce_concat": [2, 3, 4, 5]}'
    )
    assert genotypes.DARTS_V2.to_json() == expected


def test_str_is_the_darts_form():
    assert str(genotypes.DARTS_V2) == (
        "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), "
        "('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), "
        "('dil_conv_3x3', 2)], normal_concat=range(2, 6), reduce=[('max_pool_3x3', 0), "
        "('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
        "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], "
        "reduce_concat=range(2, 6))"
    )
    sparse = Genotype.from_dict(good_config(normal_concat=[5, 2]))
    assert "normal_concat=[5, 2]" in str(sparse)
    assert Genotype.from_string(str(sparse)) == sparse


# --- The Genotype value --------------------------------------------------------


def test_genotype_is_frozen_hashable_and_normalised():
    genotype = Genotype(normal=GOOD_NORMAL, reduce=tuple(map(tuple, GOOD_NORMAL)))
    assert genotype.normal_concat == (2, 3, 4, 5)  # the default
    assert genotype.normal == genotype.reduce
    assert genotype.normal[1] == ("sep_conv_3x3", 1)
    assert isinstance(genotype.normal, tuple) and isinstance(genotype.normal[0], tuple)
    assert hash(genotype) == hash(Genotype.from_json(genotype.to_json()))
    numpy_nodes = [(op, np.int64(node)) for op, node in GOOD_NORMAL]
    assert Genotype(normal=numpy_nodes, reduce=GOOD_NORMAL) == genotype
    assert type(Genotype(normal=numpy_nodes, reduce=GOOD_NORMAL).normal[0][1]) is int
    with pytest.raises(dataclasses.FrozenInstanceError):
        genotype.normal = ()
    assert genotype.cell("reduce") == (genotype.reduce, (2, 3, 4, 5))
    with pytest.raises(ConfigError, match=r"Received: cell_type='reduction'"):
        genotype.cell("reduction")


def test_errors_are_user_errors():
    assert issubclass(GenotypeError, BnasError)
    assert issubclass(GenotypeError, ValueError)


# --- Validation: one message per problem -----------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {"normal": with_edge(3, ["conv_7x7", 1])},
            r"`normal` edge 3 \(input of intermediate node 1\) uses unknown operation "
            r"'conv_7x7'\. Valid operations: max_pool_3x3, avg_pool_3x3, skip_connect, "
            r"sep_conv_3x3, sep_conv_5x5, dil_conv_3x3, dil_conv_5x5\.",
        ),
        (
            {"reduce": with_edge(6, ["none", 0])},
            r"`reduce` edge 6 \(input of intermediate node 3\) uses 'none': a derived "
            r"genotype cannot keep a 'none' edge",
        ),
        (
            {"normal": with_edge(2, ["skip_connect", 3])},
            r"`normal` edge 2 \(input of intermediate node 1\) takes input node 3, which is "
            r"out of range: intermediate node 1 \(0-based, of 4\) may take inputs 0\.\.2",
        ),
        (
            {"normal": with_edge(0, ["skip_connect", -1])},
            r"`normal` edge 0 \(input of intermediate node 0\) takes input node -1, which is "
            r"out of range: intermediate node 0 \(0-based, of 4\) may take inputs 0\.\.1",
        ),
        (
            {"normal": GOOD_NORMAL[:7]},
            r"`normal` has 7 edges; a cell needs exactly 8 \(2 inputs for each of its 4 "
            r"intermediate nodes",
        ),
        (
            {"reduce": GOOD_NORMAL + [["skip_connect", 0]]},
            r"`reduce` has 9 edges; a cell needs exactly 8",
        ),
        (
            {"normal_concat": []},
            r"`normal_concat` is empty: the cell output needs at least one intermediate node",
        ),
        (
            {"reduce_concat": [4, 5, 6]},
            r"`reduce_concat` contains node 6, which is out of range: only intermediate "
            r"nodes 2\.\.5 can be concatenated\. Received: reduce_concat=\[4, 5, 6\]",
        ),
        (
            {"normal_concat": [1, 2]},
            r"`normal_concat` contains node 1, which is out of range",
        ),
        (
            {"normal_concat": [2, 3, 3]},
            r"`normal_concat` lists a node more than once",
        ),
        (
            {"normal": "sep_conv_3x3"},
            r"Genotype `normal` must be a list of \[operation, input_node\] pairs",
        ),
        (
            {"normal": with_edge(4, ["skip_connect", 0, 1])},
            r"Genotype `normal` edge 4 must be an \[operation, input_node\] pair",
        ),
        (
            {"normal": with_edge(4, [3, 0])},
            r"Genotype `normal` edge 4: the operation must be a string",
        ),
        (
            {"normal": with_edge(5, ["skip_connect", 1.0])},
            r"Genotype `normal` edge 5 input node must be an integer node index\. "
            r"Received: 1\.0 \(type float\)",
        ),
        (
            {"normal": with_edge(5, ["skip_connect", True])},
            r"edge 5 input node must be an integer node index\. Received: True \(type bool\)",
        ),
        (
            {"normal_concat": "2345"},
            r"Genotype `normal_concat` must be a list of intermediate node indices",
        ),
        (
            {"reduce_concat": [2, "3"]},
            r"Genotype `reduce_concat` entry 1 must be an integer node index",
        ),
    ],
)
def test_invalid_genotype_is_rejected_with_its_own_message(overrides, message):
    with pytest.raises(GenotypeError, match=message):
        Genotype.from_dict(good_config(**overrides))
    # The same through JSON text.
    with pytest.raises(GenotypeError, match=message):
        Genotype.from_json(json.dumps(good_config(**overrides)))


def test_good_config_is_valid():
    genotype = Genotype.from_dict(good_config())
    assert genotype.normal[7] == ("sep_conv_5x5", 0)


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"normal": [["sep_conv_3x3", 0]', r"Malformed genotype JSON: .* at line 1, column"),
        ("", r"Malformed genotype JSON: Expecting value at line 1, column 1"),
        ("[1, 2]", r"A genotype must be a JSON object with keys"),
        (
            json.dumps({"normal": GOOD_NORMAL}),
            r"The genotype is missing key\(s\) \['reduce'\]",
        ),
        (
            json.dumps(good_config(normale=GOOD_NORMAL)),
            r"Unknown genotype key\(s\) \['normale'\]; the valid keys are",
        ),
    ],
)
def test_bad_json_is_rejected_with_its_own_message(text, message):
    with pytest.raises(GenotypeError, match=message):
        Genotype.from_json(text)


def test_from_json_rejects_non_text():
    with pytest.raises(GenotypeError, match=r"from_json expects JSON text.*from_dict"):
        Genotype.from_json(good_config())


def test_json_concat_keys_default():
    config = good_config()
    del config["normal_concat"], config["reduce_concat"]
    genotype = Genotype.from_json(json.dumps(config))
    assert genotype.normal_concat == genotype.reduce_concat == (2, 3, 4, 5)


# --- DARTS-style strings ----------------------------------------------------------


def test_from_string_accepts_darts_variants():
    pairs = ", ".join(f"('{op}', {node})" for op, node in GOOD_NORMAL)
    expected = Genotype.from_dict(good_config())
    keyword = f"Genotype(normal=[{pairs}], normal_concat=range(2, 6), reduce=({pairs}), reduce_concat=[2, 3, 4, 5])"  # noqa: E501
    assert Genotype.from_string(keyword) == expected
    assert Genotype.from_string(f"  genotype = {keyword}\n") == expected
    positional = f"Genotype([{pairs}], range(2, 6), [{pairs}], range(2, 6))"
    assert Genotype.from_string(positional) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "Genotype(normal=__import__('os').system('true'), reduce=[])",
            r"may only contain lists, tuples, strings, integers and range\(a, b\); found "
            r"`__import__\('os'\)\.system\('true'\)`",
        ),
        ("Genotype(normal=[('sep_conv_3x3', x)], reduce=[])", r"found `x` \(line 1, column 35\)"),
        ("Genotype(normal=[1 + 1], reduce=[])", r"found `1 \+ 1`"),
        ("Genotype(normal=[True], reduce=[])", r"found `True`"),
        ("Genotype(normal=[], normal_concat=list(range(2, 6)), reduce=[])", r"found `list\("),
        ("Genotype(normal=[], normal_concat=range(2, 6, 1), reduce=[])", r"found `range\(2, 6, 1\)`"),
        ("Genotype(normal=[], normal_concat=range(0, 10 ** 9), reduce=[])", r"found `10 \*\* 9`"),
        ("Genotype(normal=[], normal_concat=range(0, 100000), reduce=[])", r"is too long"),
        ("Genotype(normal=[('sep_conv_3x3', 0)", r"not valid syntax"),
        ("os.system('true')", r"must be a single call Genotype\("),
        ("Genotype(**config)", r"`\*\*` arguments are not allowed"),
        ("Genotype([], [], [], [], [])", r"takes at most 4 arguments"),
        ("Genotype([], normal=[], reduce=[])", r"argument `normal` is given twice"),
        ("Genotype(normal=[], reduce=[], colour=[])", r"Unknown genotype key\(s\) \['colour'\]"),
        ("Genotype(normal=[], reduce=[])", r"`normal` has 0 edges; a cell needs exactly 8"),
    ],
)
def test_from_string_rejects_anything_but_literals(text, message):
    with pytest.raises(GenotypeError, match=message):
        Genotype.from_string(text)


def test_from_string_rejects_non_string():
    with pytest.raises(GenotypeError, match=r"from_string expects a string"):
        Genotype.from_string(b"Genotype()")


# --- load ------------------------------------------------------------------------


def test_load_name_file_and_text(tmp_path):
    assert genotypes.load("pdarts") is genotypes.PDARTS
    assert genotypes.load(genotypes.PDARTS) is genotypes.PDARTS

    json_file = tmp_path / "genotype.json"
    json_file.write_text(genotypes.PC_DARTS.to_json(indent=2))
    assert genotypes.load(str(json_file)) == genotypes.PC_DARTS
    assert genotypes.load(json_file) == genotypes.PC_DARTS  # a pathlib.Path

    darts_file = tmp_path / "genotype.txt"
    darts_file.write_text(REFERENCE_TEXT["DARTS_V1"] + "\n")
    assert genotypes.load(str(darts_file)) == genotypes.DARTS_V1

    assert genotypes.load(genotypes.DARTS_V1.to_json()) == genotypes.DARTS_V1
    assert genotypes.load(str(genotypes.DARTS_V1)) == genotypes.DARTS_V1


def test_load_says_what_was_tried(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(GenotypeError) as info:
        genotypes.load(str(missing))
    text = str(info.value)
    assert "it is not a published name (DARTS_V1, DARTS_V2," in text
    assert f"no such file (looked for {str(missing)!r})" in text
    assert "Give a published name, a .json file" in text

    with pytest.raises(GenotypeError, match=r"as a path, a directory, not a file"):
        genotypes.load(str(tmp_path))

    bad = tmp_path / "bad.json"
    bad.write_text('{"normal": [')
    with pytest.raises(GenotypeError, match=r"Invalid genotype in file .*bad\.json.*Malformed"):
        genotypes.load(str(bad))

    with pytest.raises(GenotypeError, match=r"`load` expects a published genotype name"):
        genotypes.load(42)


# --- derive ----------------------------------------------------------------------

# Column order: none, max_pool_3x3, avg_pool_3x3, skip_connect, sep_conv_3x3,
#               sep_conv_5x5, dil_conv_3x3, dil_conv_5x5.
#
# Normal cell, every entry 0.01 unless given:
#   node 0: row 0 (0->2) none .9 (ignored), skip .2, sep3 .3  -> sep_conv_3x3, .3
#           row 1 (1->2) max .5                               -> max_pool_3x3, .5
#           keep both, stronger first: (max_pool_3x3, 1), (sep_conv_3x3, 0)
#   node 1: row 2 (0->3) dil3 .4, dil5 .4 (tie -> lower op)   -> dil_conv_3x3, .4
#           row 3 (1->3) none 1.0, every other op NaN         -> cannot be kept
#           row 4 (2->3) avg .1                               -> avg_pool_3x3, .1
#           keep rows 2, 4: (dil_conv_3x3, 0), (avg_pool_3x3, 2)
#   node 2: row 5 (0->4) skip .25; row 6 (1->4) sep5 .25; row 7 (2->4) sep3 -inf,
#           max .2; row 8 (3->4) sep3 .25. Three-way tie at .25 -> lower sources 0, 1:
#           (skip_connect, 0), (sep_conv_5x5, 1)
#   node 3: row 9 (0->5) all .01 (tie -> max_pool_3x3, .01); row 10 (1->5) dil5 .6;
#           row 11 (2->5) sep3 .05; row 12 (3->5) none .99 (ignored, .01 left);
#           row 13 (4->5) skip .7 -> (skip_connect, 4), (dil_conv_5x5, 1)
NONE, MAX, AVG, SKIP, SEP3, SEP5, DIL3, DIL5 = range(8)


def hand_normal_weights():
    w = np.full((14, 8), 0.01)
    w[0, [NONE, SKIP, SEP3]] = [0.9, 0.2, 0.3]
    w[1, MAX] = 0.5
    w[2, [DIL3, DIL5]] = [0.4, 0.4]
    w[3] = NAN
    w[3, NONE] = 1.0
    w[4, AVG] = 0.1
    w[5, SKIP] = 0.25
    w[6, SEP5] = 0.25
    w[7, SEP3] = NEG_INF
    w[7, MAX] = 0.2
    w[8, SEP3] = 0.25
    w[10, DIL5] = 0.6
    w[11, SEP3] = 0.05
    w[12, NONE] = 0.99
    w[13, SKIP] = 0.7
    return w


HAND_NORMAL = (
    ("max_pool_3x3", 1), ("sep_conv_3x3", 0),
    ("dil_conv_3x3", 0), ("avg_pool_3x3", 2),
    ("skip_connect", 0), ("sep_conv_5x5", 1),
    ("skip_connect", 4), ("dil_conv_5x5", 1),
)  # fmt: skip

# Reduction cell at the end of BNAS's reduction: one operation left per edge,
# the abandoned ones NaN or -inf.
#   node 0: r0 sep5 .2, r1 max .3                  -> (max_pool_3x3, 1), (sep_conv_5x5, 0)
#   node 1: r2 none .9 (not keepable), r3 avg .1, r4 dil3 .15
#                                                  -> (dil_conv_3x3, 2), (avg_pool_3x3, 1)
#   node 2: r5 skip .3, r6 none .5, r7 sep3 .1, r8 sep5 .4
#                                                  -> (sep_conv_5x5, 3), (skip_connect, 0)
#   node 3: r9 max .05, r10 dil5 .2, r11 avg .25, r12 none .9, r13 sep3 .22
#                                                  -> (avg_pool_3x3, 2), (sep_conv_3x3, 4)
REDUCE_SURVIVORS = [
    (SEP5, 0.2), (MAX, 0.3),
    (NONE, 0.9), (AVG, 0.1), (DIL3, 0.15),
    (SKIP, 0.3), (NONE, 0.5), (SEP3, 0.1), (SEP5, 0.4),
    (MAX, 0.05), (DIL5, 0.2), (AVG, 0.25), (NONE, 0.9), (SEP3, 0.22),
]  # fmt: skip
HAND_REDUCE = (
    ("max_pool_3x3", 1), ("sep_conv_5x5", 0),
    ("dil_conv_3x3", 2), ("avg_pool_3x3", 1),
    ("sep_conv_5x5", 3), ("skip_connect", 0),
    ("avg_pool_3x3", 2), ("sep_conv_3x3", 4),
)  # fmt: skip


def hand_reduce_weights():
    w = np.full((14, 8), NAN)
    w[::2] = NEG_INF  # even rows abandon with -inf, odd rows with NaN
    for row, (op, value) in enumerate(REDUCE_SURVIVORS):
        w[row, op] = value
    return w


def test_derive_matches_hand_worked_example():
    genotype = genotypes.derive(hand_normal_weights(), hand_reduce_weights())
    assert genotype.normal == HAND_NORMAL
    assert genotype.reduce == HAND_REDUCE
    assert genotype.normal_concat == genotype.reduce_concat == (2, 3, 4, 5)


def test_derive_accepts_lists_and_other_primitive_orders():
    # Columns reversed: the same weights must give the same genotype.
    primitives = genotypes.PRIMITIVES[::-1]
    genotype = genotypes.derive(
        hand_normal_weights()[:, ::-1].tolist(),
        hand_reduce_weights()[:, ::-1],
        primitives=primitives,
    )
    assert genotype.reduce == HAND_REDUCE
    # Only the tie on row 2 flips: dil_conv_5x5 is now the lower column.
    assert genotype.normal == (HAND_NORMAL[:2] + (("dil_conv_5x5", 0),) + HAND_NORMAL[3:])


def test_derive_rejects_bad_shapes_and_unbuildable_nodes():
    with pytest.raises(GenotypeError, match=r"`weights_normal` must have shape \[14, 8\].*\[14, 7\]"):
        genotypes.derive(np.zeros((14, 7)), np.zeros((14, 8)))
    w = hand_reduce_weights()
    w[0] = NAN
    w[0, NONE] = 1.0  # node 0 is left with a single usable edge
    with pytest.raises(
        GenotypeError,
        match=r"Cannot derive `weights_reduce`: intermediate node 0 has 1 incoming edge\(s\) "
        r"with a usable non-'none' operation, but needs 2",
    ):
        genotypes.derive(hand_normal_weights(), w)
