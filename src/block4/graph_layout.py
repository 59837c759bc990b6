"""The layered layout of small directed graphs, shared by every renderer of
[`block4.graph_drawing`](graph_drawing.md) (in Python and in the browser).

[`layout`][block4.graph_drawing.layout] places a graph from left (inputs) to right (outputs): a
column per node by the longest path from the inputs, rows by a tidy-tree layout grown back
from the outputs, so the main chain of a computation is a straight line and side inputs branch
off it. A graph too long for the page (``max_width``) wraps into bands read top to bottom,
like lines of text. Only the standard library is imported. Use it through
``block4.graph_drawing``, which re-exports ``GraphNode``, ``Layout``, ``layout`` and
``PAGE_WIDTH``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["GraphNode", "Layout", "layout", "PAGE_WIDTH"]

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
        x: the horizontal centre of each node, by key.
        y: the vertical centre of each node, by key.
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
