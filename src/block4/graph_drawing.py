"""Layered drawings of small directed graphs: one layout, drawn by matplotlib or as plain SVG.

A graph is a list of [`GraphNode`][block4.graph_drawing.GraphNode]s and ``(from_key, to_key)``
edges in the direction data flows. [`layout`][block4.graph_drawing.layout] places it from left
(inputs) to right (outputs): a column per node by the longest path from the inputs, rows by a
tidy-tree layout grown back from the outputs, so the main chain of a computation is a straight
line and side inputs branch off it. A graph too long for the page (``max_width``) wraps into
bands read top to bottom, like lines of text. The layout lives in ``block4.graph_layout`` and
is re-exported here. [`draw_graph`][block4.graph_drawing.draw_graph] draws it with matplotlib
(the course figures); [`graph_svg`][block4.graph_drawing.graph_svg] writes it as SVG in pure
Python (the live cells, in the browser on Pyodide). Only the standard library is imported
here; matplotlib only inside the matplotlib functions.

Examples:
    >>> from block4.graph_drawing import GraphNode, graph_svg
    >>> nodes = [GraphNode("x", title="x", value="2"), GraphNode("f", kind="op", title="exp"),
    ...          GraphNode("y", title="y", value="7.389")]
    >>> svg = graph_svg(nodes, [("x", "f"), ("f", "y")])
    >>> svg.startswith("<svg") and ">7.389</text>" in svg
    True
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape

from block4.graph_layout import (
    LABEL_SIZE,
    LINE_HEIGHT,
    OP_RADIUS,
    OP_SIZE,
    PAGE_WIDTH,
    TITLE_SIZE,
    VALUE_SIZE,
    GraphNode,
    Layout,
    layout,
)

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
