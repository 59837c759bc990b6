"""Layered drawings of small directed graphs: one layout, drawn by matplotlib or as plain SVG.

A graph is a list of [`GraphNode`][block4.graph_drawing.GraphNode]s and ``(from_key, to_key)``
edges in the direction data flows. [`layout`][block4.graph_drawing.layout] places it from left
(inputs) to right (outputs): a column per node by the longest path from the inputs, rows by a
tidy-tree layout grown back from the outputs, so the main chain of a computation is a straight
line and side inputs branch off it. A graph too long for the page (``max_width``) wraps into
bands read top to bottom, like lines of text. [`draw_graph`][block4.graph_drawing.draw_graph] draws that
layout with matplotlib (the course figures); [`graph_svg`][block4.graph_drawing.graph_svg]
writes it as SVG in pure Python (the live cells, in the browser on Pyodide). Only the standard
library is imported here; matplotlib only inside the matplotlib functions.

Examples:
    >>> from block4.graph_drawing import GraphNode, graph_svg
    >>> nodes = [GraphNode("x", title="x", value="2"), GraphNode("f", kind="op", title="exp"),
    ...          GraphNode("y", title="y", value="7.389")]
    >>> svg = graph_svg(nodes, [("x", "f"), ("f", "y")])
    >>> svg.startswith("<svg") and ">7.389</text>" in svg
    True
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape

if TYPE_CHECKING:  # matplotlib is imported only when a graph is drawn with it
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "GraphNode",
    "Layout",
    "layout",
    "value_graph",
    "draw_graph",
    "graph_svg",
    "COLOURS",
    "PAGE_WIDTH",
]

#: The colours of a drawing. ``forward`` and ``backward`` are the course's roles (the same as
#: ``block4.style.ROLE``); the neutral greys are mirrored by the dark variant of a figure.
COLOURS = {
    "forward": "#0072B2",
    "backward": "#D55E00",
    "text": "#222222",
    "note": "#707070",
    "line": "#555555",
    "op_fill": "#ececec",
}
#: Font sizes in points: value boxes, op nodes, edge labels, the title of an SVG drawing.
#: 9 pt is the smallest text that stays readable when a figure is shown at page width.
VALUE_SIZE, OP_SIZE, LABEL_SIZE, TITLE_SIZE = 9.0, 10.0, 9.0, 11.0
LINE_HEIGHT = 0.21  # layout units between two text lines of a value box
OP_RADIUS = 0.25  # layout units; an op whose text fits is a circle of this radius
MAX_NODES = 400
#: The widest figure, in inches, that a page shows at its natural size: the content column is
#: 688 CSS px (7.2 in) in a 1280-px window; pass it as ``max_width`` to wrap long graphs.
PAGE_WIDTH = 6.9
MARGIN = 0.05  # layout units around the drawing
BAND_GAP = 0.7  # layout units between two bands of a wrapped drawing; the return line runs here
RETURN_OFFSET = 0.2  # layout units the return line keeps from a band's first and last column


@dataclass
class GraphNode:
    """One node of a graph drawn by [`draw_graph`][block4.graph_drawing.draw_graph].

    Attributes:
        key: a unique, hashable id used by the edges.
        kind: ``"op"`` (drawn as a circle or pill holding ``title``) or ``"value"`` (a box
            with ``title`` and, below it, ``value`` and ``grad`` lines).
        title: the op symbol, or the name of a value (may be empty).
        value: the forward value as text, drawn in the forward colour (values only).
        grad: the gradient as text (e.g. ``"grad -4"``), drawn in the backward colour.
        note: an extra grey line (a shape, a parameter count, ...).
    """

    key: Any
    kind: str = "value"
    title: str = ""
    value: str | None = None
    grad: str | None = None
    note: str | None = None

    def lines(self) -> list[tuple[str, str, str]]:
        """The text lines of a value box: ``(text, colour role, font weight)``, top to bottom."""
        rest = [(self.value, "forward"), (self.grad, "backward"), (self.note or None, "note")]
        lines = [(self.title, "text", "bold")] if self.title else []
        return lines + [(text, role, "normal") for text, role in rest if text is not None]


@dataclass
class Layout:
    """Where everything goes, in layout units (one row = 1; ``y`` grows upwards).

    Attributes:
        nodes: the nodes, in the order given.
        edges: the edges, in the order given (a repeated edge is drawn as bent arrows).
        x, y: the centre of each node, by key.
        size: ``(width, height)`` of each node, by key.
        bounds: ``(left, right, bottom, top)`` of the whole drawing.
        edge_labels: text written along some edges, by edge.
        scale: inches per layout unit the text sizes were measured for.
        routes: the polyline, as points, of each edge from the end of one band of a wrapped
            drawing to the start of the next (it leaves to the right, runs back left in the
            gap between the bands and enters from the left); every other edge is one arrow.
    """

    nodes: list[GraphNode]
    edges: list[tuple[Any, Any]]
    x: dict[Any, float]
    y: dict[Any, float]
    size: dict[Any, tuple[float, float]]
    bounds: tuple[float, float, float, float]
    edge_labels: dict[tuple[Any, Any], str] = field(default_factory=dict)
    scale: float = 0.8
    routes: dict[tuple[Any, Any], list[tuple[float, float]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._kind = {n.key: n.kind for n in self.nodes}

    def is_circle(self, key: Any) -> bool:
        """Whether ``key`` is an op drawn as a circle (its text fits in one)."""
        w, h = self.size[key]
        return self._kind[key] == "op" and w <= 2 * OP_RADIUS and h <= 2 * OP_RADIUS

    def port(self, key: Any, side: float) -> tuple[float, float]:
        """Where an edge leaves (``side=+1``) or enters (``side=-1``) a node."""
        half = OP_RADIUS if self.is_circle(key) else self.size[key][0] / 2
        return self.x[key] + side * half, self.y[key]

    def label_anchor(self, a: Any, b: Any) -> tuple[float, float]:
        """Where the label of edge ``(a, b)`` sits: the bottom centre of its text, just above
        the middle of the arrow (or of the return line of a routed edge)."""
        if (a, b) in self.routes:
            (x1, y1), (x2, _) = self.routes[(a, b)][2:4]
            return (x1 + x2) / 2, y1 + 0.05
        (xa, ya), (xb, yb) = self.port(a, +1), self.port(b, -1)
        return (xa + xb) / 2, (ya + yb) / 2 + 0.05

    def arrows(self) -> list[tuple[Any, Any, float, int]]:
        """Each edge drawn as one arrow, with its bend (``x * x``: two arrows bent apart) and
        its copy index; the edges in ``routes`` are not among them."""
        multiplicity = Counter(self.edges)
        drawn: Counter[tuple[Any, Any]] = Counter()
        result = []
        for a, b in self.edges:
            if (a, b) in self.routes:
                continue
            i, n = drawn[(a, b)], multiplicity[(a, b)]
            drawn[(a, b)] += 1
            result.append((a, b, 0.3 * (i - (n - 1) / 2), i))
        return result


#: How each operation of a scalar graph is written in its op node (``**n`` becomes ``^n``).
OP_SYMBOLS = {"+": "+", "-": "−", "*": "×", "/": "÷", "neg": "−x", "sigmoid": "σ", "relu": "ReLU"}


def value_graph(
    values: Sequence[Any],
    edges: Sequence[tuple[Any, Any]],
    *,
    show_grad: bool = True,
    fmt: str = "{:.4g}",
    grad_prefix: str = "grad ",
) -> tuple[list[GraphNode], list[tuple[Any, Any]]]:
    """Nodes and edges to draw for a scalar graph such as ``block4.autograd.trace`` returns:
    a box per value (``label``, ``data``, ``grad``), an op node before each result of an ``op``.

    Args:
        values: objects with ``data``, ``grad``, ``label`` and ``op`` (a ``Value``, say).
        edges: ``(input, output)`` pairs of those objects, one per operand.
        show_grad: write the gradients.
        fmt: format of the numbers.
        grad_prefix: written before each gradient (``""`` makes wide graphs narrower; the
            colour still tells gradients from values).
    """

    def text(x: float) -> str:
        t = fmt.format(x)
        return "0" if t in ("-0", "-0.0") else t

    nodes: list[GraphNode] = []
    drawn_edges: list[tuple[Any, Any]] = []
    for v in values:
        grad = grad_prefix + text(v.grad) if show_grad else None
        nodes.append(GraphNode(id(v), "value", v.label, text(v.data), grad))
        if v.op:
            symbol = OP_SYMBOLS.get(v.op, v.op.replace("**", "^"))
            nodes.append(GraphNode(("op", id(v)), "op", symbol))
            drawn_edges.append((("op", id(v)), id(v)))
    return nodes, drawn_edges + [(id(a), ("op", id(b))) for a, b in edges]


def layout(
    nodes: Iterable[GraphNode],
    edges: Iterable[tuple[Any, Any]],
    *,
    scale: float = 0.8,
    edge_labels: dict[tuple[Any, Any], str] | None = None,
    max_width: float | None = None,
) -> Layout:
    """Place a small directed acyclic graph in columns from left to right.

    Args:
        nodes: the nodes, see [`GraphNode`][block4.graph_drawing.GraphNode].
        edges: ``(from_key, to_key)`` pairs, in the direction data flows.
        scale: inches per layout unit; text is measured at this size.
        edge_labels: text written along some edges, by ``(from_key, to_key)``.
        max_width: the widest drawing allowed, in inches (as ``draw_graph`` makes it, margins
            included). A wider graph wraps into bands stacked top to bottom, in as few bands
            as fit and then as evenly as possible; a band ends only where a single edge leads
            on, which is drawn back to the start of the next band (see ``Layout.routes``).
            ``None``: one band, however wide.

    Raises:
        ValueError: for duplicate keys, an unknown node or kind, a label on no edge, a cycle,
            a ``max_width`` that is not a positive number or that no wrapping can meet.
    """
    nodes, edges = list(nodes), list(edges)
    edge_labels = dict(edge_labels or {})
    _check(nodes, edges, edge_labels)
    if max_width is not None and not (isinstance(max_width, (int, float)) and max_width > 0):
        raise ValueError(
            f"draw_graph: max_width must be a positive number of inches, not {max_width!r}"
        )
    keys = [n.key for n in nodes]
    col = _columns(keys, edges)
    row = _rows(keys, edges, col)
    unit = 1 / scale  # layout units per inch
    size = {n.key: _node_size(n, unit) for n in nodes}
    ncols = max(col.values()) + 1 if col else 1
    col_w = [0.0] * ncols
    for k in keys:
        col_w[col[k]] = max(col_w[col[k]], size[k][0])
    gap = [0.4] * ncols  # room for the arrows after each column, and for their labels
    for (a, b), text in edge_labels.items():
        if col[b] == col[a] + 1:
            gap[col[a]] = max(gap[col[a]], _text_width(text, LABEL_SIZE) * unit + 0.25)
    col_x = [0.0] * ncols
    for c in range(1, ncols):  # a column is as wide as its widest node
        col_x[c] = col_x[c - 1] + (col_w[c - 1] + col_w[c]) / 2 + gap[c - 1]
    left_of = [col_x[c] - col_w[c] / 2 for c in range(ncols)]
    right_of = [col_x[c] + col_w[c] / 2 for c in range(ncols)]
    bands = [(0, ncols - 1)]
    if max_width is not None and (right_of[-1] - left_of[0] + 2 * MARGIN) * scale + 0.1 > max_width:
        limit = (max_width - 0.1) / scale - 2 * MARGIN  # layout units a band may take
        bands = _bands(edges, col, left_of, right_of, limit, max_width)
    x = {k: col_x[col[k]] for k in keys}
    y = {k: -row[k] for k in keys}
    routes: dict[tuple[Any, Any], list[tuple[float, float]]] = {}
    if len(bands) > 1:
        x, y, routes = _wrap(bands, keys, edges, col, x, y, size, left_of, right_of)
    left = min((x[k] - size[k][0] / 2 for k in keys), default=0.0)
    right = max((x[k] + size[k][0] / 2 for k in keys), default=0.0)
    top = max((y[k] + size[k][1] / 2 for k in keys), default=0.45)
    bottom = min((y[k] - size[k][1] / 2 for k in keys), default=-0.45)
    for points in routes.values():
        left, right = min([left] + [p[0] for p in points]), max([right] + [p[0] for p in points])
    bounds = (left - MARGIN, right + MARGIN, bottom - MARGIN, top + MARGIN)
    plan = Layout(nodes, edges, x, y, size, bounds, edge_labels, scale)
    plan.routes = {
        (a, b): [plan.port(a, +1), *points, plan.port(b, -1)] for (a, b), points in routes.items()
    }
    return plan


def _bands(
    edges: list[tuple[Any, Any]],
    col: dict[Any, int],
    left_of: list[float],
    right_of: list[float],
    limit: float,
    max_width: float,
) -> list[tuple[int, int]]:
    """Column ranges ``(first, last)`` of the bands: fewest bands, then the narrowest widest one.

    A band may end after column ``c`` only if exactly one edge crosses from ``c`` to ``c + 1``
    (and none spans further): that edge becomes the return line to the next band.
    """
    ncols = len(left_of)
    crossing = Counter()
    breakable = [True] * ncols
    for a, b in edges:
        for c in range(col[a], col[b]):
            crossing[c] += 1
        if col[b] - col[a] > 1:
            for c in range(col[a], col[b]):
                breakable[c] = False
    breakable = [ok and crossing[c] == 1 for c, ok in enumerate(breakable)]

    def width(first: int, last: int) -> float:
        margins = RETURN_OFFSET * ((first > 0) + (last < ncols - 1))
        return right_of[last] - left_of[first] + margins

    # best[e]: (bands, widest band) of the best wrapping of columns 0..e that ends a band at e
    best: dict[int, tuple[int, float, int]] = {}  # e -> (bands, widest, first column of band)
    for last in range(ncols):
        if last < ncols - 1 and not breakable[last]:
            continue
        for first in range(last + 1):
            if first > 0 and first - 1 not in best:
                continue
            w = width(first, last)
            if w > limit:
                continue
            n, widest = (0, 0.0) if first == 0 else best[first - 1][:2]
            candidate = (n + 1, max(widest, w), first)
            if last not in best or candidate[:2] < best[last][:2]:
                best[last] = candidate
    if ncols - 1 not in best:
        raise ValueError(
            f"draw_graph: the graph cannot be wrapped into max_width={max_width:g} in: a band "
            "may end only where a single edge leads on; allow a wider drawing or shorter labels"
        )
    bands = []
    last = ncols - 1
    while last >= 0:
        first = best[last][2]
        bands.append((first, last))
        last = first - 1
    return bands[::-1]


def _wrap(
    bands: list[tuple[int, int]],
    keys: list[Any],
    edges: list[tuple[Any, Any]],
    col: dict[Any, int],
    x: dict[Any, float],
    y: dict[Any, float],
    size: dict[Any, tuple[float, float]],
    left_of: list[float],
    right_of: list[float],
) -> tuple[dict[Any, float], dict[Any, float], dict[tuple[Any, Any], list[tuple[float, float]]]]:
    """Move each band under the one before it, flush left, and route the edges between bands."""
    band_of = {c: i for i, (first, last) in enumerate(bands) for c in range(first, last + 1)}
    x, y = dict(x), dict(y)
    shift_y = 0.0
    previous_bottom = 0.0
    for i, (first, _) in enumerate(bands):
        members = [k for k in keys if band_of[col[k]] == i]
        shift_x = -left_of[first] + (RETURN_OFFSET if i > 0 else 0.0)
        top = max(y[k] + size[k][1] / 2 for k in members)
        if i > 0:
            shift_y = previous_bottom - BAND_GAP - top
        for k in members:
            x[k] += shift_x
            y[k] += shift_y
        previous_bottom = min(y[k] - size[k][1] / 2 for k in members)
    routes = {}
    for a, b in edges:
        i, j = band_of[col[a]], band_of[col[b]]
        if i == j:
            continue
        first_a, last_a = bands[i]
        band_right = right_of[last_a] - left_of[first_a] + (RETURN_OFFSET if i > 0 else 0.0)
        out_x = band_right + RETURN_OFFSET
        in_x = 0.0  # the left edge of band j's first column sits at RETURN_OFFSET
        lower = min(y[k] - size[k][1] / 2 for k in keys if band_of[col[k]] == i)
        back_y = lower - BAND_GAP / 2
        routes[(a, b)] = [(out_x, y[a]), (out_x, back_y), (in_x, back_y), (in_x, y[b])]
    return x, y, routes


def _check(
    nodes: list[GraphNode], edges: list[tuple[Any, Any]], edge_labels: dict[Any, str]
) -> None:
    by_key = {n.key for n in nodes}
    if len(by_key) != len(nodes):
        raise ValueError("draw_graph: node keys must be unique")
    for n in nodes:
        if n.kind not in ("op", "value"):
            raise ValueError(f"GraphNode kind {n.kind!r} is not supported; choose 'op' or 'value'")
    for a, b in edges:
        for k in (a, b):
            if k not in by_key:
                raise ValueError(f"draw_graph: edge ({a!r}, {b!r}) names an unknown node {k!r}")
    if len(nodes) > MAX_NODES:
        msg = f"(at most {MAX_NODES}); draw a smaller part of the graph"
        raise ValueError(
            f"draw_graph: {len(nodes)} nodes are too many to read in one drawing {msg}"
        )
    for edge in edge_labels:
        if edge not in edges:
            raise ValueError(f"draw_graph: edge_labels names {edge!r}, which is not an edge")


def _text_width(text: str, fontsize: float) -> float:
    """Rough width of ``text`` in inches (DejaVu Sans averages ~0.6 em per character)."""
    return 0.6 * fontsize / 72 * len(text)


def _node_size(n: GraphNode, unit: float) -> tuple[float, float]:
    if n.kind == "op":
        title_lines = n.title.split("\n")
        w = max(_text_width(t, OP_SIZE) for t in title_lines) * unit + 0.2
        h = 0.46 + 0.2 * (len(title_lines) - 1)
        return (2 * OP_RADIUS,) * 2 if w <= 2 * OP_RADIUS and h <= 2 * OP_RADIUS else (max(w, h), h)
    lines = n.lines()
    w = max((_text_width(t, VALUE_SIZE) for t, _, _ in lines), default=0.3) * unit
    return max(0.6, w + 0.2), 0.16 + LINE_HEIGHT * max(1, len(lines))


def _neighbours(
    keys: Sequence[Any], edges: Sequence[tuple[Any, Any]]
) -> tuple[dict[Any, list[Any]], dict[Any, list[Any]]]:
    preds: dict[Any, list[Any]] = {k: [] for k in keys}
    succs: dict[Any, list[Any]] = {k: [] for k in keys}
    for a, b in edges:
        preds[b].append(a)
        succs[a].append(b)
    return preds, succs


def _columns(keys: Sequence[Any], edges: Sequence[tuple[Any, Any]]) -> dict[Any, int]:
    """A column per node: longest path from the sources; each source sits just before its use."""
    preds, succs = _neighbours(keys, edges)
    col: dict[Any, int] = {}
    for k in _kahn(keys, preds, succs):
        col[k] = 1 + max((col[p] for p in preds[k]), default=-1)
    for k in keys:  # pull inputs and constants right, next to the op that consumes them
        if not preds[k] and succs[k]:
            col[k] = min(col[s] for s in succs[k]) - 1
    return col


def _kahn(
    keys: Sequence[Any], preds: dict[Any, list[Any]], succs: dict[Any, list[Any]]
) -> list[Any]:
    indegree = {k: len(preds[k]) for k in keys}
    ready = [k for k in keys if indegree[k] == 0]
    order: list[Any] = []
    while ready:
        k = ready.pop(0)
        order.append(k)
        for s in succs[k]:
            indegree[s] -= 1
            if indegree[s] == 0:
                ready.append(s)
    if len(order) != len(keys):
        raise ValueError("draw_graph needs an acyclic graph; the edges contain a cycle")
    return order


Contour = dict[int, tuple[float, float]]  # per column: the lowest and highest row used
Subtree = tuple[dict[Any, float], Contour, Any]  # rows by key, contour, anchor key


def _stack(parts: list[Subtree]) -> tuple[dict[Any, float], Contour, list[float]]:
    """Stack subtrees top to bottom as tightly as their column contours allow."""
    pos: dict[Any, float] = {}
    contour: Contour = {}
    anchors: list[float] = []
    for sub_pos, sub_contour, anchor in parts:
        offset = 0.0
        if contour:
            gaps = [contour[c][1] - sub_contour[c][0] + 1.0 for c in sub_contour if c in contour]
            offset = max(gaps + [anchors[-1] + 1.0 - sub_pos[anchor]])
        for k, v in sub_pos.items():
            pos[k] = v + offset
        for c, (lo, hi) in sub_contour.items():
            old = contour.get(c)
            lo, hi = lo + offset, hi + offset
            contour[c] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))
        anchors.append(sub_pos[anchor] + offset)
    return pos, contour, anchors


def _rows(
    keys: Sequence[Any], edges: Sequence[tuple[Any, Any]], col: dict[Any, int]
) -> dict[Any, float]:
    """Rows (downwards) by a tidy-tree layout grown back from the outputs.

    Each node's inputs are stacked as compactly as their column contours allow, and a node
    sits level with its largest input subtree, so the main chain of a computation is a
    straight line and side inputs (weights, constants) branch off it. A node used twice is
    placed once, at its first use; its other uses are just longer edges.
    """
    preds: dict[Any, list[Any]] = {k: [] for k in keys}
    has_succ: set[Any] = set()
    for a, b in edges:
        if a not in preds[b]:
            preds[b].append(a)
        has_succ.add(a)
    placed: set[Any] = set()

    def subtree(k: Any) -> Subtree:
        placed.add(k)
        parts = [subtree(child) for child in preds[k] if child not in placed]
        if not parts:
            return {k: 0.0}, {col[k]: (0.0, 0.0)}, k
        pos, contour, anchors = _stack(parts)
        sizes = [len(p) for p, _, _ in parts]
        biggest = max(sizes)
        if sizes.count(biggest) == 1 and len(parts) > 1:
            y = anchors[sizes.index(biggest)]  # stay level with the main chain
        else:
            y = (anchors[0] + anchors[-1]) / 2
        pos = {key: v - y for key, v in pos.items()}
        contour = {c: (lo - y, hi - y) for c, (lo, hi) in contour.items()}
        pos[k] = 0.0
        contour[col[k]] = (0.0, 0.0)
        return pos, contour, k

    pos, _, _ = _stack([subtree(r) for r in keys if r not in has_succ])
    columns: dict[int, list[Any]] = {}  # every node reaches an output; guard overlaps anyway
    for k in keys:
        columns.setdefault(col[k], []).append(k)
    for members in columns.values():
        members.sort(key=lambda k: pos[k])
        for prev, k in zip(members, members[1:], strict=False):
            pos[k] = max(pos[k], pos[prev] + 1.0)
    return pos


# ===================================================================== matplotlib


def draw_graph(
    nodes: Iterable[GraphNode],
    edges: Iterable[tuple[Any, Any]],
    *,
    title: str | None = None,
    ax: Axes | None = None,
    scale: float = 0.8,
    edge_labels: dict[tuple[Any, Any], str] | None = None,
    max_width: float | None = None,
) -> Figure:
    """Draw a small directed acyclic graph in layers from left to right, with matplotlib.

    Used by ``block4.autograd.draw`` for ``Value`` graphs and by the course figures for graphs
    captured from PyTorch (``torch.fx``). Op nodes are grey circles (or pills for long
    names); value nodes are boxes showing the name, the forward value in the course's
    ``forward`` colour and the gradient in its ``backward`` colour.

    Args:
        nodes: the nodes, see [`GraphNode`][block4.graph_drawing.GraphNode].
        edges: ``(from_key, to_key)`` pairs, in the direction data flows.
        title: an optional title.
        ax: draw into these axes instead of a new figure (their aspect is set to equal).
        scale: inches per layout unit (one row) when a new figure is made.
        edge_labels: text written along some edges, by ``(from_key, to_key)``, in the
            forward colour: the tensor an edge carries (its shape, say) when the graph has
            no value node for it.
        max_width: the widest figure allowed, in inches; a longer graph wraps into bands
            (see [`layout`][block4.graph_drawing.layout]). ``None``: one band.

    Returns:
        The matplotlib Figure.

    Raises:
        ValueError: as [`layout`][block4.graph_drawing.layout] does.
    """
    import matplotlib.pyplot as plt

    from block4.style import context

    plan = layout(nodes, edges, scale=scale, edge_labels=edge_labels, max_width=max_width)
    left, right, bottom, top = plan.bounds
    with context():
        given_ax = ax is not None
        if ax is None:
            height = (top - bottom) * scale + (0.35 if title else 0.1)
            fig, ax = plt.subplots(
                figsize=((right - left) * scale + 0.1, height), layout="constrained"
            )
        else:
            fig = ax.figure
        ax.set(xlim=(left, right), ylim=(bottom, top), aspect="equal")
        ax.set_axis_off()
        if title:
            ax.set_title(title)
        # In axes smaller than the graph's natural size, shrink the text with the drawing.
        shrink = min(1.0, _fit(ax, right - left, top - bottom) / scale) if given_ax else 1.0
        for n in plan.nodes:
            _draw_node(ax, plan, n, shrink)
        _draw_edges(ax, plan, shrink)
    return fig


def _draw_node(ax: Axes, plan: Layout, n: GraphNode, shrink: float) -> None:
    from matplotlib.patches import Circle, FancyBboxPatch

    x, y = plan.x[n.key], plan.y[n.key]
    w, h = plan.size[n.key]
    if n.kind == "op":
        look = {"facecolor": COLOURS["op_fill"], "edgecolor": COLOURS["line"], "lw": 1.1}
        pad = OP_RADIUS - 0.02  # a pill's rounding
        box = ((x - w / 2 + pad, y - h / 2 + pad), w - 2 * pad, h - 2 * pad)
        circle = plan.is_circle(n.key)
        ax.add_patch(
            Circle((x, y), OP_RADIUS, **look)
            if circle
            else FancyBboxPatch(*box, boxstyle=f"round,pad={pad}", **look)
        )
        size = OP_SIZE * shrink
        ax.text(x, y, n.title, ha="center", va="center", color=COLOURS["text"], fontsize=size)
        return
    look = {"facecolor": "none", "edgecolor": COLOURS["forward"], "lw": 1.1}
    rounded = "round,pad=0,rounding_size=0.08"
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle=rounded, **look))
    lines = n.lines()
    first = y + LINE_HEIGHT * (len(lines) - 1) / 2
    for i, (text, role, weight) in enumerate(lines):
        ax.text(
            x,
            first - LINE_HEIGHT * i,
            text,
            ha="center",
            va="center_baseline",
            color=COLOURS[role],
            fontsize=VALUE_SIZE * shrink,
            fontweight=weight,
        )


def _draw_edges(ax: Axes, plan: Layout, shrink: float) -> None:
    from matplotlib.patches import FancyArrowPatch
    from matplotlib.path import Path

    line = COLOURS["line"]
    look = dict(arrowstyle="-|>", mutation_scale=9, color=line, lw=1.0, shrinkA=1, shrinkB=1)
    label_look = dict(ha="center", va="bottom", color=COLOURS["forward"])
    labelled = []
    for a, b, bend, copy in plan.arrows():
        (xa, ya), (xb, yb) = plan.port(a, +1), plan.port(b, -1)
        bent = f"arc3,rad={bend:.3f}"
        ax.add_patch(FancyArrowPatch((xa, ya), (xb, yb), connectionstyle=bent, **look))
        if copy == 0:
            labelled.append((a, b))
    for points in plan.routes.values():
        ax.add_patch(FancyArrowPatch(path=Path(points), joinstyle="round", **look))
    for a, b in [*labelled, *plan.routes]:
        if (a, b) in plan.edge_labels:
            text, size = plan.edge_labels[(a, b)], LABEL_SIZE * shrink
            ax.text(*plan.label_anchor(a, b), text, fontsize=size, **label_look)


def _fit(ax: Axes, width: float, height: float) -> float:
    """Inches per layout unit that ``ax`` offers a drawing of ``width`` x ``height`` units."""
    root = ax.figure.figure  # the top-level Figure, also for axes inside a SubFigure
    engine = root.get_layout_engine()
    if engine is not None:
        engine.execute(root)  # place the axes where the final figure will have them
    box = ax.get_window_extent()
    return min(box.width / width, box.height / height) / root.dpi


# ===================================================================== SVG


def graph_svg(
    nodes: Iterable[GraphNode],
    edges: Iterable[tuple[Any, Any]],
    *,
    title: str | None = None,
    scale: float = 0.8,
    edge_labels: dict[tuple[Any, Any], str] | None = None,
    max_width: float | None = None,
) -> str:
    """The drawing of [`draw_graph`][block4.graph_drawing.draw_graph] as an SVG string.

    Pure Python (no matplotlib), from the same [`layout`][block4.graph_drawing.layout], at the
    size matplotlib would draw it (one user unit = 1 pt). Every element carries a class
    (``op``, ``box``, ``edge``, ``text``, ``forward``, ``backward``, ``note``) so a page's
    stylesheet can recolour it (a dark theme, say); the colours written in are ``COLOURS``.

    Args:
        nodes: the nodes, see [`GraphNode`][block4.graph_drawing.GraphNode].
        edges: ``(from_key, to_key)`` pairs, in the direction data flows.
        title: an optional title above the graph.
        scale: inches per layout unit, as for ``draw_graph``.
        edge_labels: text written along some edges, as for ``draw_graph``.
        max_width: the widest drawing allowed, in inches, as for ``draw_graph``.

    Returns:
        A standalone ``<svg>`` element (no XML declaration), ready to put into a page.
    """
    plan = layout(nodes, edges, scale=scale, edge_labels=edge_labels, max_width=max_width)
    left, right, bottom, top = plan.bounds
    k = scale * 72  # points per layout unit
    head = 0.35 * 72 if title else 0.0
    width, height = (right - left) * k, (top - bottom) * k + head

    def at(x: float, y: float) -> tuple[float, float]:
        return (x - left) * k, (top - y) * k + head

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="block4-graph" '
        f'width="{width:.1f}pt" height="{height:.1f}pt" viewBox="0 0 {width:.1f} {height:.1f}" '
        f'font-family="DejaVu Sans, Verdana, Arial, sans-serif" role="img">',
        '<defs><marker id="block4-arrow" viewBox="0 0 8 6" refX="8" refY="3" '
        'markerWidth="8" markerHeight="6" markerUnits="userSpaceOnUse" orient="auto">'
        f'<path class="head" d="M0,0 L8,3 L0,6 z" fill="{COLOURS["line"]}"/></marker></defs>',
    ]
    if title:
        parts.append(_svg_text(width / 2, head / 2, title, "text", TITLE_SIZE, "normal"))
    parts += _svg_edges(plan, at, k)
    for n in plan.nodes:
        parts += _svg_node(plan, n, at, k)
    parts.append("</svg>")
    return "\n".join(parts)


def _svg_text(x: float, y: float, text: str, role: str, size: float, weight: str) -> str:
    bold = ' font-weight="bold"' if weight == "bold" else ""
    return (
        f'<text class="{role}" x="{x:.2f}" y="{y:.2f}" font-size="{size:g}"{bold} '
        f'text-anchor="middle" dominant-baseline="central" fill="{COLOURS[role]}">'
        f"{escape(text)}</text>"
    )


def _svg_node(plan: Layout, n: GraphNode, at: Any, k: float) -> list[str]:
    x, y = at(plan.x[n.key], plan.y[n.key])
    w, h = (v * k for v in plan.size[n.key])
    if n.kind == "op":
        fill, line = COLOURS["op_fill"], COLOURS["line"]
        if plan.is_circle(n.key):
            shape = f'<circle class="op" cx="{x:.2f}" cy="{y:.2f}" r="{OP_RADIUS * k:.2f}"'
        else:
            shape = (
                f'<rect class="op" x="{x - w / 2:.2f}" y="{y - h / 2:.2f}" width="{w:.2f}" '
                f'height="{h:.2f}" rx="{(OP_RADIUS - 0.02) * k:.2f}"'
            )
        lines = n.title.split("\n")
        texts = [
            _svg_text(x, y + (i - (len(lines) - 1) / 2) * 1.2 * OP_SIZE, t, "text", OP_SIZE, "")
            for i, t in enumerate(lines)
        ]
        shape += f' fill="{fill}" stroke="{line}" stroke-width="1.1"/>'
        return ['<g class="node op-node">', shape, *texts, "</g>"]
    box = (
        f'<rect class="box" x="{x - w / 2:.2f}" y="{y - h / 2:.2f}" width="{w:.2f}" '
        f'height="{h:.2f}" rx="{0.08 * k:.2f}" fill="none" stroke="{COLOURS["forward"]}" '
        'stroke-width="1.1"/>'
    )
    lines = n.lines()
    first = y - LINE_HEIGHT * k * (len(lines) - 1) / 2
    texts = [
        _svg_text(x, first + LINE_HEIGHT * k * i, text, role, VALUE_SIZE, weight)
        for i, (text, role, weight) in enumerate(lines)
    ]
    return ['<g class="node value-node">', box, *texts, "</g>"]


def _svg_edges(plan: Layout, at: Any, k: float) -> list[str]:
    def path(d: str) -> str:
        return (
            f'<path class="edge" d="{d}" fill="none" stroke="{COLOURS["line"]}" '
            'stroke-width="1" stroke-linejoin="round" marker-end="url(#block4-arrow)"/>'
        )

    parts, labelled = [], []
    for a, b, bend, copy in plan.arrows():
        (xa, ya), (xb, yb) = plan.port(a, +1), plan.port(b, -1)
        # matplotlib's arc3: the control point sits off the midpoint by bend x the chord
        cx, cy = (xa + xb) / 2 + bend * (yb - ya), (ya + yb) / 2 - bend * (xb - xa)
        (sx, sy), (qx, qy), (ex, ey) = at(xa, ya), at(cx, cy), at(xb, yb)
        parts.append(path(f"M{sx:.2f},{sy:.2f} Q{qx:.2f},{qy:.2f} {ex:.2f},{ey:.2f}"))
        if copy == 0:
            labelled.append((a, b))
    for points in plan.routes.values():
        corners = [at(*p) for p in points]
        parts.append(path("M" + " L".join(f"{px:.2f},{py:.2f}" for px, py in corners)))
    for a, b in [*labelled, *plan.routes]:
        if (a, b) in plan.edge_labels:
            lx, ly = at(*plan.label_anchor(a, b))
            text = plan.edge_labels[(a, b)]
            parts.append(_svg_text(lx, ly - LABEL_SIZE / 2, text, "forward", LABEL_SIZE, ""))
    return parts
