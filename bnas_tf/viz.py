"""Cell diagrams as PNG files, drawn with matplotlib.

The picture follows DARTS's ``visualize.py`` (graphviz, left to right): the
two cell inputs c_{k-2} and c_{k-1} on the left, the intermediate nodes 0..3
in columns by depth, the output c_{k} on the right, every edge labelled with
its operation. Graphviz is not needed: nodes are placed in columns by
longest path from the inputs (as graphviz's ``dot`` ranks them), edges bend
to miss other nodes, and each label sits on its edge, in the edge's colour
(one colour per operation), at a spot that overlaps no node or other label.

Only matplotlib's Agg canvas is used (no pyplot, no global backend change),
so this works on headless machines and inside notebooks alike.
"""

import io
import os

import numpy as np
from absl import logging

from bnas_tf import genotypes as genotypes_lib

# Colours of DARTS's diagrams (graphviz names darkseagreen2, lightblue,
# palegoldenrod).
_INPUT_COLOR = "#b4eeb4"
_NODE_COLOR = "#add8e6"
_OUTPUT_COLOR = "#eee8aa"

# Layout in data units; one data unit is _INCHES inches on the page.
_COLUMN_GAP = 3.6
_ROW_GAP = 1.5
_NODE_W = 0.95
_NODE_H = 0.55
_INCHES = 1.0
_DPI = 150
_FONT_SIZE = 11

# Where along an edge (0 = source, 1 = destination) a label may sit, in order
# of preference.
_LABEL_POSITIONS = (0.5, 0.45, 0.55, 0.4, 0.6, 0.35, 0.65, 0.3, 0.7, 0.25, 0.75, 0.2, 0.8)

_INPUT_NAMES = ("c_{k-2}", "c_{k-1}")
_OUTPUT_NAME = "c_{k}"


def _node_name(index):
    """Cell node index (0, 1 inputs; 2.. intermediate) -> displayed name."""
    if index < 2:
        return _INPUT_NAMES[index]
    return str(index - 2)


def _layout(edges):
    """Returns {node: (x, y)} for cell nodes 0..STEPS+1 and "out".

    Inputs have rank 0; an intermediate node is one rank right of its
    deepest input; the output is right of every intermediate node. Within a
    rank, nodes are ordered top to bottom by the mean height of their inputs
    (the barycenter heuristic, which removes most crossings).
    """
    steps = len(edges) // genotypes_lib.INPUTS_PER_NODE
    inputs = {j + 2: [node for _, node in edges[2 * j : 2 * j + 2]] for j in range(steps)}
    rank = {0: 0, 1: 0}
    for node in sorted(inputs):
        rank[node] = 1 + max(rank[src] for src in inputs[node])
    rank["out"] = 1 + max(rank[node] for node in inputs)
    inputs["out"] = sorted(inputs)
    positions = {}
    for r in range(rank["out"] + 1):
        nodes = [node for node, nr in rank.items() if nr == r]
        if r > 0:
            nodes.sort(key=lambda n: -np.mean([positions[src][1] for src in inputs[n]]))
        for i, node in enumerate(nodes):
            positions[node] = (r * _COLUMN_GAP, ((len(nodes) - 1) / 2 - i) * _ROW_GAP)
    return positions


def _arc_points(p0, p1, rad, t):
    """Points at parameters `t` of matplotlib's arc3 curve from p0 to p1, [len(t), 2].

    As matplotlib's arc3 connection style, the curve is a quadratic Bezier
    whose control point is the chord midpoint moved by rad times the chord
    turned by -90 degrees.
    """
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    d = p1 - p0
    c = (p0 + p1) / 2 + rad * np.array([d[1], -d[0]])
    t = np.asarray(t, float)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * c + t**2 * p1


def _clipped_arc(p0, p1, rad, gap=0.04):
    """The arc3 curve from node p0 to node p1, cut where it leaves / enters the boxes.

    Returns a matplotlib Path (one quadratic Bezier). Clipping here, rather
    than with FancyArrowPatch's patchA / patchB, is exact and much faster.
    """
    from matplotlib.path import Path

    t = np.linspace(0.0, 1.0, 401)
    points = _arc_points(p0, p1, rad, t)
    half = np.array([_NODE_W / 2 + gap, _NODE_H / 2 + gap])
    in_src = np.all(np.abs(points - np.asarray(p0, float)) <= half, axis=1)
    in_dst = np.all(np.abs(points - np.asarray(p1, float)) <= half, axis=1)
    t0 = t[np.flatnonzero(in_src)[-1]] if in_src.any() else 0.0
    t1 = t[np.flatnonzero(in_dst)[0]] if in_dst.any() else 1.0
    # The sub-curve [t0, t1] of a quadratic Bezier is again one: its control
    # point is the blossom B(t0, t1).
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    d = p1 - p0
    c = (p0 + p1) / 2 + rad * np.array([d[1], -d[0]])
    control = (1 - t0) * (1 - t1) * p0 + ((1 - t0) * t1 + t0 * (1 - t1)) * c + t0 * t1 * p1
    start, end = _arc_points(p0, p1, rad, [t0, t1])
    return Path([start, control, end], [Path.MOVETO, Path.CURVE3, Path.CURVE3])


def _arc_angle(p0, p1, rad, t):
    """Direction of the arc3 curve at parameter t, in degrees within (-90, 90]."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    d = p1 - p0
    c = (p0 + p1) / 2 + rad * np.array([d[1], -d[0]])
    tangent = 2 * (1 - t) * (c - p0) + 2 * t * (p1 - c)
    angle = np.degrees(np.arctan2(tangent[1], tangent[0]))
    if angle > 90:
        angle -= 180
    elif angle <= -90:
        angle += 180
    return float(angle)


def _route(edge_list, positions):
    """Chooses a curvature (arc3 rad) for every (src, dst) in `edge_list`.

    Each edge takes, in order, the candidate curvature that crosses the
    fewest other nodes, then runs along the fewest already routed edges,
    then bends least. Repeated (src, dst) pairs get different curvatures.
    """
    t = np.linspace(0.12, 0.88, 48)
    half = np.array([_NODE_W / 2 + 0.12, _NODE_H / 2 + 0.12])
    routed = []
    rads = []
    for src, dst in edge_list:
        others = np.array([p for n, p in positions.items() if n not in (src, dst)])
        used = [r for (s, d), r in zip(edge_list, rads) if (s, d) == (src, dst)]
        best = None
        for rad in _RADS:
            if any(abs(rad - r) < 0.2 for r in used):
                continue
            points = _arc_points(positions[src], positions[dst], rad, t)
            hits = np.all(np.abs(points[:, None, :] - others[None, :, :]) < half, axis=2).sum()
            near = 0
            for other in routed:
                dist = np.linalg.norm(points[:, None, :] - other[None, :, :], axis=2).min(axis=1)
                near += int((dist < 0.12).sum())
            cost = (hits, near + 40 * abs(rad))
            if best is None or cost < best[0]:
                best = (cost, rad, points)
        routed.append(best[2])
        rads.append(best[1])
    return rads


# Candidate edge curvatures, least bent first.
_RADS = (0.0, 0.12, -0.12, 0.24, -0.24, 0.36, -0.36, 0.5, -0.5)

# One colour per operation (a colour-blind-safe palette), so that an edge and
# its label are matched by colour as well as by position.
_OP_COLORS = {
    "max_pool_3x3": "#0072b2",
    "avg_pool_3x3": "#56b4e9",
    "skip_connect": "#555555",
    "sep_conv_3x3": "#d55e00",
    "sep_conv_5x5": "#e69f00",
    "dil_conv_3x3": "#009e73",
    "dil_conv_5x5": "#cc79a7",
}


def _corners(box):
    """The 4 corners of a display-space Bbox, [4, 2]."""
    return np.array([[box.x0, box.y0], [box.x1, box.y0], [box.x1, box.y1], [box.x0, box.y1]])


def _rotated_corners(center, width, height, degrees):
    """The 4 corners of a width x height rectangle turned by `degrees`, [4, 2]."""
    a = np.radians(degrees)
    rotation = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    half = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * [width / 2, height / 2]
    return np.asarray(center) + half @ rotation.T


def _count_overlaps(rect, others):
    """How many of the rectangles `others` ([n, 4, 2]) overlap `rect` ([4, 2]).

    Rectangles are given by their corners in order and may be turned; the
    test is the separating axis theorem, vectorised over `others`.
    """
    others = np.asarray(others, float).reshape(-1, 4, 2)
    if not len(others):
        return 0
    rect = np.asarray(rect, float)
    # Two edge directions per rectangle; their normals are the candidate axes.
    own = np.stack([rect[1] - rect[0], rect[2] - rect[1]])  # [2, 2]
    theirs = np.stack([others[:, 1] - others[:, 0], others[:, 2] - others[:, 1]], axis=1)
    axes = np.concatenate([np.broadcast_to(own, theirs.shape), theirs], axis=1)  # [n, 4, 2]
    axes = axes[..., ::-1] * [1, -1]
    a = np.einsum("pk,nak->nap", rect, axes)
    b = np.einsum("npk,nak->nap", others, axes)
    separated = (a.max(-1) <= b.min(-1)) | (b.max(-1) <= a.min(-1))
    return int(np.sum(~separated.any(axis=1)))


def _render(edges, concat, title):
    """Draws one cell; returns a matplotlib Figure with an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch
    from matplotlib.patches import FancyBboxPatch

    positions = _layout(edges)
    ops = [(op, src, e // 2 + 2) for e, (op, src) in enumerate(edges)]
    ops += [(None, node, "out") for node in concat]
    rads = _route([(src, dst) for _, src, dst in ops], positions)

    # The drawing extent: nodes and the routed curves.
    curves = [
        _arc_points(positions[src], positions[dst], rad, np.linspace(0, 1, 33))
        for (_, src, dst), rad in zip(ops, rads)
    ]
    points = np.concatenate(curves + [np.array(list(positions.values()))])
    margin = 0.75
    x_min, x_max = points[:, 0].min() - _NODE_W / 2 - 0.3, points[:, 0].max() + _NODE_W / 2 + 0.3
    y_min, y_max = points[:, 1].min() - margin, points[:, 1].max() + margin
    width, height = (x_max - x_min) * _INCHES, (y_max - y_min) * _INCHES
    title_h = 0.5 if title else 0.0

    figure = Figure(figsize=(width, height + title_h), dpi=_DPI)
    canvas = FigureCanvasAgg(figure)
    ax = figure.add_axes((0, 0, 1, height / (height + title_h)))
    ax.set_xlim(x_min, x_max)
    ax.set_ylim(y_min, y_max)
    ax.set_aspect("equal")
    ax.axis("off")
    if title:
        figure.suptitle(title, fontsize=_FONT_SIZE + 3, y=1 - 0.12 / (height + title_h), va="top")

    patches = {}

    def add_node(key, label, color):
        x, y = positions[key]
        box = FancyBboxPatch(
            (x - _NODE_W / 2, y - _NODE_H / 2),
            _NODE_W,
            _NODE_H,
            boxstyle="round,pad=0,rounding_size=0.12",
            facecolor=color,
            edgecolor="black",
            linewidth=1.6,
            zorder=3,
        )
        ax.add_patch(box)
        patches[key] = box
        ax.text(x, y, label, ha="center", va="center", fontsize=_FONT_SIZE + 2, zorder=4)

    for i in range(2):
        add_node(i, f"${_INPUT_NAMES[i]}$", _INPUT_COLOR)
    for j in range(len(edges) // 2):
        add_node(j + 2, _node_name(j + 2), _NODE_COLOR)
    add_node("out", f"${_OUTPUT_NAME}$", _OUTPUT_COLOR)

    for (op, src, dst), rad in zip(ops, rads):
        ax.add_patch(
            FancyArrowPatch(
                path=_clipped_arc(positions[src], positions[dst], rad),
                arrowstyle="-|>,head_length=0.5,head_width=0.25",
                mutation_scale=14,
                color="#999999" if op is None else _OP_COLORS.get(op, "black"),
                linewidth=1.3 if op is None else 1.8,
                zorder=1,
            )
        )

    # Labels sit on their edge, turned along it. Each candidate spot (see
    # _LABEL_POSITIONS, first on the edge, then beside it) costs, in order of
    # weight: overlapping a node or a label placed before, crossing another
    # edge, lying far from the preferred spot. Labels with the fewest spots
    # free of nodes are placed first.
    renderer = canvas.get_renderer()
    taken = [_corners(patch.get_window_extent(renderer)) for patch in patches.values()]
    samples = [
        ax.transData.transform(
            _arc_points(positions[src], positions[dst], rad, np.linspace(0.02, 0.98, 80))
        )
        for (_, src, dst), rad in zip(ops, rads)
    ]
    pad = 2.5  # pixels around a label's text
    labels = []
    for k, ((op, src, dst), rad) in enumerate(zip(ops, rads)):
        if op is None:
            continue
        text = ax.text(
            0,
            0,
            op,
            ha="center",
            va="center",
            rotation_mode="anchor",
            fontsize=_FONT_SIZE,
            color=_OP_COLORS.get(op, "black"),
            zorder=5,
            bbox=dict(boxstyle="round,pad=0.12", facecolor="white", edgecolor="none", alpha=0.95),
        )
        size = text.get_window_extent(renderer)
        w, h = size.width + 2 * pad, size.height + 2 * pad
        others = np.concatenate([pts for i, pts in enumerate(samples) if i != k])
        spots = []
        for side in (0.0, 1.0, -1.0):
            for t in _LABEL_POSITIONS:
                center = ax.transData.transform(
                    _arc_points(positions[src], positions[dst], rad, [t])[0]
                )
                angle = _arc_angle(positions[src], positions[dst], rad, t)
                a = np.radians(angle)
                center = center + side * (h / 2 + 1.5) * np.array([-np.sin(a), np.cos(a)])
                # Other edges' samples in the label's own frame.
                turn = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
                local = np.abs((others - center) @ turn)
                crossed = int(np.sum((local[:, 0] < w / 2) & (local[:, 1] < h / 2)))
                spots.append((center, angle, _rotated_corners(center, w, h, angle), crossed))
        free = sum(not _count_overlaps(c, taken) for _, _, c, _ in spots)
        labels.append((free, k, text, spots))
    for _, k, text, spots in sorted(labels, key=lambda item: item[:2]):
        best = None
        for index, (center, angle, corners, crossed) in enumerate(spots):
            clashes = _count_overlaps(corners, taken)
            cost = 100 * clashes + crossed + 0.3 * index
            if best is None or cost < best[0]:
                best = (cost, clashes, center, angle, corners)
        _, clashes, center, angle, corners = best
        if clashes:
            logging.debug(
                "Label %r of edge %d overlaps %d node(s) or label(s).", ops[k][0], k, clashes
            )
        text.set_position(ax.transData.inverted().transform(center))
        text.set_rotation(angle)
        taken.append(corners)
    return figure


def plot_cell(genotype, cell_type, path, title=None):
    """Writes a PNG diagram of one cell of a genotype.

    Args:
        genotype: a `genotypes.Genotype`, or anything `genotypes.load` takes
            (a published name, a .json file, a DARTS-style string).
        cell_type: "normal" or "reduce".
        path: the PNG file to write; its directory must exist.
        title: text above the diagram; default "normal cell" or
            "reduction cell"; "" for none.

    Returns:
        `path`.

    Raises:
        ConfigError: `cell_type` is not "normal" or "reduce".
        GenotypeError: `genotype` cannot be loaded.
    """
    png = cell_png(genotype, cell_type, title)  # errors before the file is opened
    path = os.fspath(path)
    with open(path, "wb") as f:
        f.write(png)
    logging.info("Wrote the %s cell diagram to %s.", cell_type, path)
    return path


def cell_png(genotype, cell_type, title=None):
    """The PNG bytes of `plot_cell`'s diagram (for TensorBoard, or any file system)."""
    genotype = genotypes_lib.load(genotype)
    edges, concat = genotype.cell(cell_type)  # ConfigError for a bad cell_type
    if title is None:
        title = "normal cell" if cell_type == "normal" else "reduction cell"
    buffer = io.BytesIO()
    _render(edges, concat, title).savefig(buffer, format="png", dpi=_DPI, facecolor="white")
    return buffer.getvalue()


def heatmap_png(values, row_labels, col_labels, title):
    """A PNG heat map of ``values`` [rows, cols] (NaN left blank), each cell annotated."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    values = np.asarray(values, dtype=np.float64)
    figure = Figure(figsize=(1.0 + 0.9 * values.shape[1], 0.8 + 0.32 * values.shape[0]), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot(1, 1, 1)
    ax.imshow(np.ma.masked_invalid(values), cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(col_labels)), col_labels, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(row_labels)), row_labels, fontsize=7)
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="white" if v < np.nanmax(values) * 0.6
                    else "black")
    ax.set_title(title, fontsize=9)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", facecolor="white")
    return buffer.getvalue()


def plot_genotype(genotype, directory):
    """Writes ``normal.png`` and ``reduce.png`` for a genotype.

    Args:
        genotype: a `genotypes.Genotype`, or anything `genotypes.load` takes.
        directory: where to write; created if missing.

    Returns:
        A dict {"normal": path, "reduce": path}.
    """
    genotype = genotypes_lib.load(genotype)
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    return {
        cell_type: plot_cell(genotype, cell_type, os.path.join(directory, f"{cell_type}.png"))
        for cell_type in genotypes_lib.CELL_TYPES
    }
