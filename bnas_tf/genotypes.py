"""The search space as data: operations, cell edges, genotypes.

A cell has two input nodes (0 = c_{k-2}, 1 = c_{k-1}, the outputs of the two
previous cells), ``STEPS`` = 4 intermediate nodes (2..5) and an output node
that concatenates the intermediate nodes listed in ``*_concat``. During the
search every edge (src, dst), src < dst, carries all of ``PRIMITIVES``; a
derived *genotype* keeps two incoming edges per intermediate node, each with
one operation:

    Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ...],
             normal_concat=range(2, 6), reduce=[...], reduce_concat=range(2, 6))

``normal[2 * j]`` and ``normal[2 * j + 1]`` are the two inputs of intermediate
node j (0-based, i.e. cell node j + 2); the integer is the input node index.

This module is pure Python + NumPy (no TensorFlow), so it can be imported by
the launcher, the oracle and the tests at no cost.

Genotypes are stored as JSON (``Genotype.to_json`` / ``Genotype.from_json``)
and also read in the ``Genotype(...)`` form that DARTS and PC-DARTS print in
their logs (``Genotype.from_string``; parsed with a whitelist, never
``eval``-ed).
"""

import ast
import dataclasses
import json
import os
import types

import numpy as np

from bnas_tf.errors import GenotypeError
from bnas_tf.errors import bad_value

# The eight candidate operations, in the DARTS order (index k of an edge's
# architecture weights is PRIMITIVES[k]).
PRIMITIVES = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)

# Intermediate nodes per cell.
STEPS = 4

# The (src, dst) edges of a cell in the DARTS order: for intermediate node i
# (cell node dst = i + 2), one edge from every earlier node src = 0..i+1.
EDGES = tuple((src, i + 2) for i in range(STEPS) for src in range(i + 2))
NUM_EDGES = len(EDGES)  # 14
assert NUM_EDGES == 14

CELL_TYPES = ("normal", "reduce")

# Edges a derived cell keeps per intermediate node, and in all.
INPUTS_PER_NODE = 2
NUM_KEPT_EDGES = INPUTS_PER_NODE * STEPS  # 8

DEFAULT_CONCAT = tuple(range(2, STEPS + 2))  # (2, 3, 4, 5)

_FIELDS = ("normal", "normal_concat", "reduce", "reduce_concat")


def _valid_ops_text():
    return ", ".join(op for op in PRIMITIVES if op != "none")


def _short(value, limit=200):
    """repr(value), cut to `limit` characters for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _as_int(value, what):
    """Returns `value` as a Python int, or raises GenotypeError naming `what`."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise GenotypeError(
            f"{what} must be an integer node index. Received: {_short(value)} "
            f"(type {type(value).__name__})."
        )
    return int(value)


def _coerce_edges(value, field):
    """Turns a list of (op, input) pairs into a tuple of (str, int) tuples."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise GenotypeError(
            f"Genotype `{field}` must be a list of [operation, input_node] pairs, "
            f"e.g. [['sep_conv_3x3', 0], ['skip_connect', 1], ...]. "
            f"Received: {field}={_short(value)} (type {type(value).__name__})."
        )
    edges = []
    for e, pair in enumerate(value):
        if isinstance(pair, (str, bytes)) or not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise GenotypeError(
                f"Genotype `{field}` edge {e} must be an [operation, input_node] pair, "
                f"e.g. ['sep_conv_3x3', 0]. Received: {_short(pair)}."
            )
        op, node = pair
        if not isinstance(op, str):
            raise GenotypeError(
                f"Genotype `{field}` edge {e}: the operation must be a string naming one "
                f"of: {_valid_ops_text()}. Received: {_short(op)} (type {type(op).__name__})."
            )
        edges.append((op, _as_int(node, f"Genotype `{field}` edge {e} input node")))
    return tuple(edges)


def _coerce_concat(value, field):
    """Turns a list / tuple / range of node indices into a tuple of ints."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, range)):
        raise GenotypeError(
            f"Genotype `{field}` must be a list of intermediate node indices, e.g. "
            f"[2, 3, 4, 5]. Received: {field}={_short(value)} (type {type(value).__name__})."
        )
    return tuple(_as_int(v, f"Genotype `{field}` entry {i}") for i, v in enumerate(value))


def _format_concat(concat):
    """DARTS prints a contiguous concat as range(a, b); others as a list."""
    if len(concat) > 1 and list(concat) == list(range(concat[0], concat[-1] + 1)):
        return f"range({concat[0]}, {concat[-1] + 1})"
    return repr(list(concat))


def _check_cell_type(cell_type):
    if cell_type not in CELL_TYPES:
        raise bad_value("cell_type", cell_type, f"one of {CELL_TYPES}")
    return cell_type


@dataclasses.dataclass(frozen=True, kw_only=True, repr=False)
class Genotype:
    """A derived architecture: the normal and the reduction cell.

    Construct with keywords; lists, tuples and ranges are accepted and stored
    as tuples (so genotypes compare equal and are hashable). The genotype is
    validated on construction and raises `GenotypeError` when invalid.

    Attributes:
        normal: 8 ``(op, input_node)`` pairs, two per intermediate node.
        normal_concat: intermediate nodes (2..5) concatenated into the output.
        reduce: like `normal`, for the reduction cell.
        reduce_concat: like `normal_concat`, for the reduction cell.
    """

    normal: tuple
    normal_concat: tuple = DEFAULT_CONCAT
    reduce: tuple
    reduce_concat: tuple = DEFAULT_CONCAT

    def __post_init__(self):
        for field in CELL_TYPES:
            object.__setattr__(self, field, _coerce_edges(getattr(self, field), field))
            concat = f"{field}_concat"
            object.__setattr__(self, concat, _coerce_concat(getattr(self, concat), concat))
        self.validate()

    def validate(self):
        """Checks the genotype; raises `GenotypeError` with what to fix."""
        for field in CELL_TYPES:
            edges = getattr(self, field)
            if len(edges) != NUM_KEPT_EDGES:
                raise GenotypeError(
                    f"Genotype `{field}` has {len(edges)} edges; a cell needs exactly "
                    f"{NUM_KEPT_EDGES} ({INPUTS_PER_NODE} inputs for each of its {STEPS} "
                    f"intermediate nodes, in node order). Received: {field}={_short(list(edges))}."
                )
            for e, (op, node) in enumerate(edges):
                j = e // INPUTS_PER_NODE
                where = f"Genotype `{field}` edge {e} (input of intermediate node {j})"
                if op == "none":
                    raise GenotypeError(
                        f"{where} uses 'none': a derived genotype cannot keep a 'none' "
                        f"edge. Choose one of: {_valid_ops_text()}."
                    )
                if op not in PRIMITIVES:
                    raise GenotypeError(
                        f"{where} uses unknown operation {op!r}. Valid operations: "
                        f"{_valid_ops_text()}."
                    )
                if not 0 <= node <= j + 1:
                    raise GenotypeError(
                        f"{where} takes input node {node}, which is out of range: "
                        f"intermediate node {j} (0-based, of {STEPS}) may take inputs "
                        f"0..{j + 1} (0 = c_{{k-2}}, 1 = c_{{k-1}}, n >= 2 = intermediate "
                        f"node n - 2)."
                    )
            concat_field = f"{field}_concat"
            concat = getattr(self, concat_field)
            if not concat:
                raise GenotypeError(
                    f"Genotype `{concat_field}` is empty: the cell output needs at least "
                    f"one intermediate node, usually {list(DEFAULT_CONCAT)}."
                )
            for node in concat:
                if not 2 <= node <= STEPS + 1:
                    raise GenotypeError(
                        f"Genotype `{concat_field}` contains node {node}, which is out of "
                        f"range: only intermediate nodes 2..{STEPS + 1} can be concatenated. "
                        f"Received: {concat_field}={list(concat)}."
                    )
            if len(set(concat)) != len(concat):
                raise GenotypeError(
                    f"Genotype `{concat_field}` lists a node more than once; list each "
                    f"node once. Received: {concat_field}={list(concat)}."
                )

    def cell(self, cell_type):
        """Returns ``(edges, concat)`` of the "normal" or "reduce" cell."""
        _check_cell_type(cell_type)
        return getattr(self, cell_type), getattr(self, f"{cell_type}_concat")

    # Serialisation --------------------------------------------------------

    def to_dict(self):
        """Returns a JSON-ready dict: lists of ``[op, node]`` pairs and ints."""
        out = {}
        for field in CELL_TYPES:
            out[field] = [[op, node] for op, node in getattr(self, field)]
            out[f"{field}_concat"] = list(getattr(self, f"{field}_concat"))
        return out

    @classmethod
    def from_dict(cls, config):
        """Builds a Genotype from the dict `to_dict` returns.

        `normal` and `reduce` are required; the concat keys default to
        ``[2, 3, 4, 5]``; other keys are rejected (they are usually typos).
        """
        if not isinstance(config, dict):
            raise GenotypeError(
                "A genotype must be a JSON object with keys "
                f"{list(_FIELDS)}. Received: {_short(config)} (type {type(config).__name__})."
            )
        unknown = sorted(set(config) - set(_FIELDS), key=str)
        if unknown:
            raise GenotypeError(
                f"Unknown genotype key(s) {unknown}; the valid keys are {list(_FIELDS)}."
            )
        missing = [field for field in CELL_TYPES if field not in config]
        if missing:
            raise GenotypeError(
                f"The genotype is missing key(s) {missing}; it needs {list(CELL_TYPES)} "
                f"(and optionally {[f'{c}_concat' for c in CELL_TYPES]}). "
                f"Received keys: {sorted(config, key=str)}."
            )
        return cls(**config)

    def to_json(self, indent=None):
        """Returns the genotype as JSON text (see `to_dict`)."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text):
        """Parses JSON text written by `to_json`; raises `GenotypeError`."""
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        if not isinstance(text, str):
            raise GenotypeError(
                f"Genotype.from_json expects JSON text. Received: {_short(text)} "
                f"(type {type(text).__name__}); for a dict use Genotype.from_dict."
            )
        try:
            config = json.loads(text)
        except json.JSONDecodeError as e:
            raise GenotypeError(
                f"Malformed genotype JSON: {e.msg} at line {e.lineno}, column {e.colno}. "
                f'Expected e.g. {{"normal": [["sep_conv_3x3", 0], ...], '
                f'"normal_concat": [2, 3, 4, 5], "reduce": [...], "reduce_concat": [...]}}. '
                f"Received: {_short(text)}."
            ) from None
        return cls.from_dict(config)

    @classmethod
    def from_string(cls, text):
        """Parses the DARTS form ``Genotype(normal=[('sep_conv_3x3', 1), ...], ...)``.

        The text is parsed with `ast` and only lists, tuples, strings,
        integers and ``range(a, b)`` are accepted as values, so it is safe on
        untrusted input. A leading ``name = `` (as in DARTS's logs and
        genotypes.py) is allowed. Positional arguments follow the field order
        normal, normal_concat, reduce, reduce_concat.
        """
        if not isinstance(text, str):
            raise GenotypeError(
                f"Genotype.from_string expects a string like \"Genotype(normal=[...], "
                f"normal_concat=range(2, 6), reduce=[...], reduce_concat=range(2, 6))\". "
                f"Received: {_short(text)} (type {type(text).__name__})."
            )
        source = text.strip()
        try:
            module = ast.parse(source, mode="exec")
        except SyntaxError as e:
            raise GenotypeError(
                f"The genotype string is not valid syntax ({e.msg}, line {e.lineno}, column "
                f"{e.offset}). Expected \"Genotype(normal=[('sep_conv_3x3', 0), ...], "
                f"normal_concat=range(2, 6), reduce=[...], reduce_concat=range(2, 6))\". "
                f"Received: {_short(text)}."
            ) from None
        node = None
        if len(module.body) == 1:
            stmt = module.body[0]
            if isinstance(stmt, ast.Expr):
                node = stmt.value
            elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                node = stmt.value
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "Genotype"
        ):
            raise GenotypeError(
                "The genotype string must be a single call Genotype(normal=..., "
                f"normal_concat=..., reduce=..., reduce_concat=...). Received: {_short(text)}."
            )
        if len(node.args) > len(_FIELDS):
            raise GenotypeError(
                f"Genotype(...) takes at most {len(_FIELDS)} arguments {list(_FIELDS)}; "
                f"got {len(node.args)} positional. Received: {_short(text)}."
            )
        config = {}
        for field, arg in zip(_FIELDS, node.args):
            config[field] = _literal(arg, source)
        for keyword in node.keywords:
            if keyword.arg is None:
                raise GenotypeError(
                    "`**` arguments are not allowed in a genotype string. "
                    f"Received: {_short(text)}."
                )
            if keyword.arg in config:
                raise GenotypeError(
                    f"Genotype argument `{keyword.arg}` is given twice. Received: {_short(text)}."
                )
            config[keyword.arg] = _literal(keyword.value, source)
        return cls.from_dict(config)

    def __str__(self):
        """The DARTS form, readable by `from_string`."""
        parts = []
        for field in CELL_TYPES:
            parts.append(f"{field}={list(getattr(self, field))!r}")
            parts.append(f"{field}_concat={_format_concat(getattr(self, f'{field}_concat'))}")
        return f"Genotype({', '.join(parts)})"

    __repr__ = __str__


def _literal(node, source):
    """Evaluates a whitelisted AST node: lists, tuples, str, int, range(a, b)."""
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(elt, source) for elt in node.elts]
    if isinstance(node, ast.Constant) and type(node.value) in (str, int):
        return node.value
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, ast.USub)
        and isinstance(node.operand, ast.Constant)
        and type(node.operand.value) is int
    ):
        return -node.operand.value
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "range"
        and 1 <= len(node.args) <= 2
        and not node.keywords
    ):
        bounds = [_literal(arg, source) for arg in node.args]
        if all(type(b) is int for b in bounds):
            if len(range(*bounds)) > 1000:
                raise GenotypeError(
                    f"range{tuple(bounds)} in a genotype string is too long; cell nodes "
                    f"are 0..{STEPS + 1}."
                )
            return list(range(*bounds))
    segment = ast.get_source_segment(source, node) or type(node).__name__
    if len(segment) > 80:
        segment = segment[:77] + "..."
    raise GenotypeError(
        f"The genotype string may only contain lists, tuples, strings, integers and "
        f"range(a, b); found `{segment}` (line {node.lineno}, column "
        f"{node.col_offset + 1}). Write the value out literally."
    )


# Published genotypes ---------------------------------------------------------
# Values transcribed from the reference implementations (facts, not code):
# - DARTS_V1, DARTS_V2: quark0/darts, cnn/genotypes.py (commit f276dd3).
#   DARTS_V2 is the second-order CIFAR-10 cell; DARTS there aliases DARTS_V2.
# - PC_DARTS (CIFAR-10), PC_DARTS_IMAGENET: yuhuixu1993/PC-DARTS, genotypes.py
#   (commit b74702f), there named PC_DARTS_cifar and PC_DARTS_image.
# - PDARTS: chenxin061/pdarts, genotypes.py (commit b880e87).

DARTS_V1 = Genotype(
    normal=[
        ("sep_conv_3x3", 1), ("sep_conv_3x3", 0),
        ("skip_connect", 0), ("sep_conv_3x3", 1),
        ("skip_connect", 0), ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 0), ("skip_connect", 2),
    ],
    normal_concat=[2, 3, 4, 5],
    reduce=[
        ("max_pool_3x3", 0), ("max_pool_3x3", 1),
        ("skip_connect", 2), ("max_pool_3x3", 0),
        ("max_pool_3x3", 0), ("skip_connect", 2),
        ("skip_connect", 2), ("avg_pool_3x3", 0),
    ],
    reduce_concat=[2, 3, 4, 5],
)

DARTS_V2 = Genotype(
    normal=[
        ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 1), ("skip_connect", 0),
        ("skip_connect", 0), ("dil_conv_3x3", 2),
    ],
    normal_concat=[2, 3, 4, 5],
    reduce=[
        ("max_pool_3x3", 0), ("max_pool_3x3", 1),
        ("skip_connect", 2), ("max_pool_3x3", 1),
        ("max_pool_3x3", 0), ("skip_connect", 2),
        ("skip_connect", 2), ("max_pool_3x3", 1),
    ],
    reduce_concat=[2, 3, 4, 5],
)

PC_DARTS = Genotype(
    normal=[
        ("sep_conv_3x3", 1), ("skip_connect", 0),
        ("sep_conv_3x3", 0), ("dil_conv_3x3", 1),
        ("sep_conv_5x5", 0), ("sep_conv_3x3", 1),
        ("avg_pool_3x3", 0), ("dil_conv_3x3", 1),
    ],
    normal_concat=range(2, 6),
    reduce=[
        ("sep_conv_5x5", 1), ("max_pool_3x3", 0),
        ("sep_conv_5x5", 1), ("sep_conv_5x5", 2),
        ("sep_conv_3x3", 0), ("sep_conv_3x3", 3),
        ("sep_conv_3x3", 1), ("sep_conv_3x3", 2),
    ],
    reduce_concat=range(2, 6),
)

PC_DARTS_IMAGENET = Genotype(
    normal=[
        ("skip_connect", 1), ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 0), ("skip_connect", 1),
        ("sep_conv_3x3", 1), ("sep_conv_3x3", 3),
        ("sep_conv_3x3", 1), ("dil_conv_5x5", 4),
    ],
    normal_concat=range(2, 6),
    reduce=[
        ("sep_conv_3x3", 0), ("skip_connect", 1),
        ("dil_conv_5x5", 2), ("max_pool_3x3", 1),
        ("sep_conv_3x3", 2), ("sep_conv_3x3", 1),
        ("sep_conv_5x5", 0), ("sep_conv_3x3", 3),
    ],
    reduce_concat=range(2, 6),
)

PDARTS = Genotype(
    normal=[
        ("skip_connect", 0), ("dil_conv_3x3", 1),
        ("skip_connect", 0), ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 1), ("sep_conv_3x3", 3),
        ("sep_conv_3x3", 0), ("dil_conv_5x5", 4),
    ],
    normal_concat=range(2, 6),
    reduce=[
        ("avg_pool_3x3", 0), ("sep_conv_5x5", 1),
        ("sep_conv_3x3", 0), ("dil_conv_5x5", 2),
        ("max_pool_3x3", 0), ("dil_conv_3x3", 1),
        ("dil_conv_3x3", 1), ("dil_conv_5x5", 3),
    ],
    reduce_concat=range(2, 6),
)

# Canonical name -> genotype (read-only).
PUBLISHED = types.MappingProxyType(
    {
        "DARTS_V1": DARTS_V1,
        "DARTS_V2": DARTS_V2,
        "PC_DARTS": PC_DARTS,
        "PC_DARTS_IMAGENET": PC_DARTS_IMAGENET,
        "PDARTS": PDARTS,
    }
)

# Other names the reference repositories use -> canonical name.
ALIASES = types.MappingProxyType(
    {
        "DARTS": "DARTS_V2",
        "PCDARTS": "PC_DARTS",
        "PC_DARTS_CIFAR": "PC_DARTS",
        "PC_DARTS_IMAGE": "PC_DARTS_IMAGENET",
    }
)


def _lookup(name):
    """Returns the published genotype called `name` (any case), or None."""
    key = name.strip().upper()
    key = ALIASES.get(key, key)
    return PUBLISHED.get(key)


def _names_text():
    aliases = ", ".join(f"{a} (= {c})" for a, c in ALIASES.items())
    return f"{', '.join(PUBLISHED)}; aliases: {aliases}"


def get(name):
    """Returns a published genotype by name (case-insensitive).

    Args:
        name: one of `PUBLISHED` (DARTS_V1, DARTS_V2, PC_DARTS,
            PC_DARTS_IMAGENET, PDARTS) or an alias in `ALIASES`.

    Raises:
        GenotypeError: the name is unknown; the message lists the names.
    """
    genotype = _lookup(name) if isinstance(name, str) else None
    if genotype is None:
        raise GenotypeError(
            f"Unknown genotype name {name!r}. Published genotypes: {_names_text()}."
        )
    return genotype


def load(path_or_name):
    """Returns a genotype from a published name, a file, or inline text.

    Tried in this order:
      1. a `Genotype` is returned as is;
      2. a published name (case-insensitive, see `get`);
      3. a path to a file holding JSON (``to_json``) or the DARTS
         ``Genotype(...)`` form (``from_string``);
      4. the text itself, when it starts with ``{`` or ``Genotype(``.

    Raises:
        GenotypeError: nothing matched (the message says what was tried) or
            the file / text holds an invalid genotype.
    """
    if isinstance(path_or_name, Genotype):
        return path_or_name
    if isinstance(path_or_name, os.PathLike):
        path_or_name = os.fspath(path_or_name)
    if not isinstance(path_or_name, str):
        raise GenotypeError(
            "`load` expects a published genotype name or a file path. "
            f"Received: {_short(path_or_name)} (type {type(path_or_name).__name__})."
        )
    genotype = _lookup(path_or_name)
    if genotype is not None:
        return genotype
    if os.path.isfile(path_or_name):
        try:
            with open(path_or_name, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise GenotypeError(f"Cannot read genotype file {path_or_name!r}: {e}") from None
        try:
            return _parse_text(text)
        except GenotypeError as e:
            raise GenotypeError(f"Invalid genotype in file {path_or_name!r}: {e}") from None
    stripped = path_or_name.strip()
    if stripped.startswith("{") or stripped.startswith("Genotype("):
        return _parse_text(stripped)
    where = (
        "a directory, not a file"
        if os.path.isdir(path_or_name)
        else f"no such file (looked for {os.path.abspath(path_or_name)!r})"
    )
    raise GenotypeError(
        f"Cannot load genotype {path_or_name!r}: it is not a published name "
        f"({_names_text()}) and, as a path, {where}. Give a published name, a .json "
        "file written by Genotype.to_json, or a file holding a DARTS-style "
        "Genotype(...) string."
    )


def _parse_text(text):
    """JSON if the text looks like an object, else the DARTS form."""
    if text.lstrip().startswith("{"):
        return Genotype.from_json(text)
    return Genotype.from_string(text)


# Derivation ----------------------------------------------------------------


def _derive_cell(weights, primitives, field):
    """The kept (op, input) pairs of one cell; see `derive`."""
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (NUM_EDGES, len(primitives)):
        raise GenotypeError(
            f"`{field}` must have shape [{NUM_EDGES}, {len(primitives)}] (edges x operations). "
            f"Received: shape {list(weights.shape)}."
        )
    # Abandoned operations (NaN or -inf) and 'none' can never be chosen.
    usable = ~np.isnan(weights) & (weights != -np.inf)
    usable &= np.array([op != "none" for op in primitives])[None, :]
    masked = np.where(usable, weights, -np.inf)
    best_op = np.argmax(masked, axis=1)  # first maximum: ties -> lower op index
    strength = masked[np.arange(NUM_EDGES), best_op]
    keepable = usable.any(axis=1)

    gene = []
    start = 0
    for j in range(STEPS):
        n = j + 2
        candidates = [src for src in range(n) if keepable[start + src]]
        if len(candidates) < INPUTS_PER_NODE:
            raise GenotypeError(
                f"Cannot derive `{field}`: intermediate node {j} has {len(candidates)} "
                f"incoming edge(s) with a usable non-'none' operation, but needs "
                f"{INPUTS_PER_NODE}. Do not abandon every non-'none' operation of its edges "
                f"{[EDGES[start + src] for src in range(n)]}."
            )
        # Strongest first; Python's sort is stable, so ties keep the lower source.
        kept = sorted(candidates, key=lambda src: -strength[start + src])[:INPUTS_PER_NODE]
        for src in kept:
            gene.append((primitives[best_op[start + src]], src))
        start += n
    return gene


def random_genotype(rng):
    """A genotype drawn uniformly from the space the search derives from: for each
    intermediate node of each cell, two distinct earlier nodes, each edge with an
    operation drawn uniformly from PRIMITIVES without ``none`` (a derived cell never
    keeps ``none``). `rng`: a `numpy.random.Generator`. The random baseline of the
    search-quality experiment (`bnas_tf.quality`), as DARTS's random search draws it."""
    ops = [p for p in PRIMITIVES if p != "none"]
    cells = {}
    for cell_type in CELL_TYPES:
        edges = []
        for j in range(2, STEPS + 2):
            for node in sorted(rng.choice(j, size=INPUTS_PER_NODE, replace=False)):
                edges.append((ops[int(rng.integers(len(ops)))], int(node)))
        cells[cell_type] = edges
    return Genotype(**cells)


def derive(weights_normal, weights_reduce, *, primitives=PRIMITIVES):
    """Derives a genotype from per-edge operation weights (DARTS's rule).

    For every intermediate node, the two incoming edges whose strongest
    non-'none' operation has the largest weight are kept, each with that
    operation; the stronger edge is listed first. Ties go to the lower index
    (the lower operation index within an edge, the lower source node between
    edges). Entries that are NaN or -inf (abandoned operations) are ignored;
    an edge with no usable non-'none' operation is never kept.

    Args:
        weights_normal: array-like [14, len(primitives)], the weights of the
            normal cell's edges in `EDGES` order (softmax(alpha) times the
            edge normalisation weight beta).
        weights_reduce: the same for the reduction cell.
        primitives: the operation name of each column.

    Returns:
        A `Genotype` with concat (2, 3, 4, 5).

    Raises:
        GenotypeError: a wrong shape, or a node with fewer than two usable
            incoming edges.
    """
    primitives = tuple(primitives)
    return Genotype(
        normal=_derive_cell(weights_normal, primitives, "weights_normal"),
        normal_concat=DEFAULT_CONCAT,
        reduce=_derive_cell(weights_reduce, primitives, "weights_reduce"),
        reduce_concat=DEFAULT_CONCAT,
    )
