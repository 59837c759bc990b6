"""A scalar reverse-mode automatic differentiation engine, small enough to read in one sitting.

Every [`Value`][block4.autograd.Value] remembers the operation that made it and its inputs,
so an expression builds a computational graph as it is evaluated (eager execution). Each
operation defines its *local* backward rule right beside its forward computation: the chain
rule is the line ``input.grad += local_gradient * out.grad``.
[`Value.backward`][block4.autograd.Value.backward] visits the graph in reverse topological
order and applies those rules.

Examples:
    >>> from block4.autograd import Value
    >>> x, y, z = Value(-2.0, "x"), Value(5.0, "y"), Value(-4.0, "z")
    >>> q = x + y
    >>> f = q * z
    >>> f.backward()
    >>> f.data, x.grad, y.grad, z.grad
    (-12.0, -4.0, -4.0, 3.0)

Gradient semantics, the same as PyTorch's for leaves:

- A node used several times (``x * x``, a weight shared by two terms) receives the sum of the
  gradients of all its uses.
- [`Value.backward`][block4.autograd.Value.backward] **accumulates** into the leaves (inputs
  and constants): call it twice and every leaf gradient doubles, exactly like
  ``loss.backward()`` twice in PyTorch. Call
  [`Value.zero_grad`][block4.autograd.Value.zero_grad] (the counterpart of
  ``optimizer.zero_grad()``) between steps.
- Interior nodes (results of operations) hold the gradient of the **most recent** backward
  pass only: it is recomputed from zero on every call, so repeated calls never pile up there.

[`trace`][block4.autograd.trace] lists the nodes and edges of a graph;
[`draw`][block4.autograd.draw] draws it with matplotlib (no graphviz needed);
[`draw_graph`][block4.autograd.draw_graph] draws any small layered graph, such as one
captured by ``torch.fx``, in the same style.
"""

from __future__ import annotations

import math
import numbers
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # matplotlib is imported only when a graph is drawn
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["Value", "maximum", "topological_order", "trace", "draw", "GraphNode", "draw_graph"]

Number = int | float


def _check_number(data: Any, what: str) -> float:
    """``data`` as a float, or one clear ``TypeError``."""
    if isinstance(data, numbers.Real):
        return float(data)
    raise TypeError(
        f"{what} must be a real number (int or float), got {type(data).__name__} {data!r}"
    )


class Value:
    """A scalar that records how it was computed, so gradients can flow back through it.

    Args:
        data: the number (stored as a Python float, i.e. float64).
        label: an optional name shown in drawings (``"x"``, ``"w0"``, ...).

    Attributes:
        data: the value computed in the forward pass.
        grad: the derivative of the output of the last
            [`backward`][block4.autograd.Value.backward] call with respect to this value
            (``0.0`` before any backward pass).
        label: the name shown in drawings.

    Supported operations: ``+ - * /`` with another ``Value`` or a number (either side),
    ``**`` with an int or float exponent, unary ``-``, and the methods ``exp``, ``log``,
    ``tanh``, ``sigmoid``, ``relu`` and ``max``. Numbers mixed
    into an expression become constant leaves of the graph.
    """

    __slots__ = ("data", "grad", "label", "_prev", "_op", "_backward", "_reached")

    def __init__(
        self,
        data: Number,
        label: str = "",
        *,
        _children: tuple[Value, ...] = (),
        _op: str = "",
    ) -> None:
        self.data = _check_number(data, "Value data")
        if not isinstance(label, str):
            raise TypeError(f"Value label must be a str, got {type(label).__name__} {label!r}")
        self.grad = 0.0
        self.label = label
        self._prev = _children
        self._op = _op
        self._backward: Callable[[], None] = _no_backward
        self._reached = False  # set by backward(): the drawing shows gradients only then

    # ----------------------------------------------------------------- introspection
    @property
    def op(self) -> str:
        """The operation that produced this value (``""`` for a leaf)."""
        return self._op

    @property
    def inputs(self) -> tuple[Value, ...]:
        """The operands of :attr:`op`, in order; empty for a leaf. A reused operand repeats."""
        return self._prev

    @property
    def is_leaf(self) -> bool:
        """Whether this value is an input or a constant rather than the result of an operation."""
        return not self._prev

    def __repr__(self) -> str:
        label = f", label={self.label!r}" if self.label else ""
        return f"Value(data={self.data:.6g}, grad={self.grad:.6g}{label})"

    # ----------------------------------------------------------------- arithmetic
    # --8<-- [start:add]
    def __add__(self, other: Value | Number) -> Value:
        other = _as_value(other, "+", self, left=True)
        out = Value(self.data + other.data, _children=(self, other), _op="+")

        def _backward() -> None:  # d(a+b)/da = d(a+b)/db = 1: add distributes
            self.grad += out.grad
            other.grad += out.grad

        out._backward = _backward
        return out

    # --8<-- [end:add]

    # --8<-- [start:mul]
    def __mul__(self, other: Value | Number) -> Value:
        other = _as_value(other, "*", self, left=True)
        out = Value(self.data * other.data, _children=(self, other), _op="*")

        def _backward() -> None:  # d(ab)/da = b, d(ab)/db = a: multiply switches
            self.grad += other.data * out.grad
            other.grad += self.data * out.grad

        out._backward = _backward
        return out

    # --8<-- [end:mul]

    def __sub__(self, other: Value | Number) -> Value:
        other = _as_value(other, "-", self, left=True)
        out = Value(self.data - other.data, _children=(self, other), _op="-")

        def _backward() -> None:
            self.grad += out.grad
            other.grad -= out.grad

        out._backward = _backward
        return out

    def __truediv__(self, other: Value | Number) -> Value:
        other = _as_value(other, "/", self, left=True)
        if other.data == 0.0:
            raise ZeroDivisionError(
                f"division by zero: {self.data:g} / {other.data:g} "
                f"(divisor {_describe(other)} is 0)"
            )
        out = Value(self.data / other.data, _children=(self, other), _op="/")

        def _backward() -> None:  # d(a/b)/da = 1/b, d(a/b)/db = -a/b^2
            self.grad += out.grad / other.data
            other.grad -= self.data / other.data**2 * out.grad

        out._backward = _backward
        return out

    # --8<-- [start:pow]
    def __pow__(self, exponent: Number) -> Value:
        if isinstance(exponent, Value):
            raise TypeError(
                "the exponent of ** must be an int or float, not a Value; for a variable "
                "exponent write (b * a.log()).exp() instead of a ** b"
            )
        n = _check_number(exponent, "the exponent of **")
        a = self.data
        if a == 0.0 and n < 0:
            raise ZeroDivisionError(f"0 ** {n:g} is undefined (division by zero)")
        if a < 0.0 and not n.is_integer():
            raise ValueError(
                f"{a:g} ** {n:g} is not a real number: a negative base needs an integer exponent"
            )
        out = Value(a**n, _children=(self,), _op=f"**{n:g}")

        def _backward() -> None:  # d(a^n)/da = n a^(n-1)
            self.grad += n * _power(a, n - 1) * out.grad

        out._backward = _backward
        return out

    # --8<-- [end:pow]

    def __neg__(self) -> Value:
        out = Value(-self.data, _children=(self,), _op="neg")

        def _backward() -> None:
            self.grad -= out.grad

        out._backward = _backward
        return out

    def __radd__(self, other: Number) -> Value:  # 2 + x
        return _as_value(other, "+", self, left=False) + self

    def __rsub__(self, other: Number) -> Value:  # 2 - x
        return _as_value(other, "-", self, left=False) - self

    def __rmul__(self, other: Number) -> Value:  # 2 * x
        return _as_value(other, "*", self, left=False) * self

    def __rtruediv__(self, other: Number) -> Value:  # 1 / x
        return _as_value(other, "/", self, left=False) / self

    def __rpow__(self, base: Any) -> Value:  # 2 ** x
        raise TypeError(
            "the exponent of ** must be an int or float, not a Value; for a variable exponent "
            f"write (x * math.log({base!r})).exp() instead of {base!r} ** x"
        )

    # ----------------------------------------------------------------- functions
    # --8<-- [start:exp]
    def exp(self) -> Value:
        """``e ** self``; its local gradient is its own output."""
        try:
            e = math.exp(self.data)
        except OverflowError:
            raise OverflowError(
                f"exp({self.data:g}) overflows a float64 (the largest finite result is "
                "exp(709.78)); rescale the input"
            ) from None
        out = Value(e, _children=(self,), _op="exp")

        def _backward() -> None:  # d(e^a)/da = e^a
            self.grad += e * out.grad

        out._backward = _backward
        return out

    # --8<-- [end:exp]

    def log(self) -> Value:
        """The natural logarithm; defined for positive values only."""
        if self.data <= 0.0:
            raise ValueError(
                f"log is defined only for positive numbers, got log({self.data:g}) "
                f"of {_describe(self)}"
            )
        out = Value(math.log(self.data), _children=(self,), _op="log")

        def _backward() -> None:  # d(log a)/da = 1/a
            self.grad += out.grad / self.data

        out._backward = _backward
        return out

    def tanh(self) -> Value:
        """The hyperbolic tangent; local gradient ``1 - tanh^2``."""
        t = math.tanh(self.data)
        out = Value(t, _children=(self,), _op="tanh")

        def _backward() -> None:
            self.grad += (1.0 - t * t) * out.grad

        out._backward = _backward
        return out

    # --8<-- [start:sigmoid]
    def sigmoid(self) -> Value:
        """The logistic function ``1 / (1 + e^-x)`` as one gate."""
        s = _sigmoid(self.data)
        out = Value(s, _children=(self,), _op="sigmoid")

        def _backward() -> None:  # ds/da = s (1 - s): at most 1/4, tiny for large |a|
            self.grad += s * (1.0 - s) * out.grad

        out._backward = _backward
        return out

    # --8<-- [end:sigmoid]

    # --8<-- [start:relu]
    def relu(self) -> Value:
        """``max(0, x)``; the gradient passes where ``x > 0``, elsewhere (and at 0) it is 0."""
        out = Value(self.data if self.data > 0.0 else 0.0, _children=(self,), _op="relu")

        def _backward() -> None:
            self.grad += (1.0 if self.data > 0.0 else 0.0) * out.grad

        out._backward = _backward
        return out

    # --8<-- [end:relu]

    # --8<-- [start:max]
    def max(self, other: Value | Number) -> Value:
        """The larger of two values; the gradient is routed to the larger input.

        On a tie the gradient is split evenly between both inputs, as ``torch.maximum`` does.
        """
        other = _as_value(other, "max", self, left=True)
        a, b = self.data, other.data
        out = Value(max(a, b), _children=(self, other), _op="max")

        def _backward() -> None:  # max routes: the winner gets all, the loser nothing
            share = 1.0 if a > b else 0.0 if a < b else 0.5
            self.grad += share * out.grad
            other.grad += (1.0 - share) * out.grad

        out._backward = _backward
        return out

    # --8<-- [end:max]

    # ----------------------------------------------------------------- backward pass
    # --8<-- [start:backward]
    def backward(self, gradient: Number = 1.0) -> None:
        """Backpropagate from this value: fill ``.grad`` of every node it depends on.

        Args:
            gradient: the incoming gradient d(output)/d(self) to start from; ``1.0`` (the
                default) makes every ``.grad`` the derivative of this value itself.

        Leaves (inputs and constants) accumulate: a second call adds the same gradients
        again, as in PyTorch; ``zero_grad()`` resets them. Interior nodes are recomputed
        from zero on every call.
        """
        seed = _check_number(gradient, "the gradient passed to backward()")
        order = topological_order(self)  # every input before the nodes that use it
        for node in order:
            node._reached = True
            if not node.is_leaf:
                node.grad = 0.0  # interior gradients belong to this pass only
        self.grad += seed
        for node in reversed(order):  # a node's grad is complete before it is used
            node._backward()  # input.grad += local gradient * node.grad

    # --8<-- [end:backward]

    def zero_grad(self) -> None:
        """Set ``.grad`` to zero on this value and on every node it depends on."""
        for node in topological_order(self):
            node.grad = 0.0


def _no_backward() -> None:
    """The backward rule of a leaf: nothing further to pass on."""


def _describe(v: Value) -> str:
    return f"Value {v.label!r}" if v.label else f"a Value made by {v.op!r}" if v.op else "a Value"


def _as_value(other: Any, op: str, this: Value, *, left: bool) -> Value:
    """Wrap a number as a constant leaf; reject anything else with one clear error."""
    if isinstance(other, Value):
        return other
    if isinstance(other, numbers.Real):
        return Value(other)
    a, b = ("Value", type(other).__name__) if left else (type(other).__name__, "Value")
    raise TypeError(
        f"unsupported operand types for {op}: {a} and {b} ({other!r}); "
        "the operands must be Value, int or float"
    )


def _power(a: float, n: float) -> float:
    """``a ** n`` that gives ``inf`` for ``0 ** negative`` (an infinite slope, as in torch)."""
    if a == 0.0 and n < 0:
        return math.inf
    return a**n


def _sigmoid(x: float) -> float:
    """A logistic function that neither overflows nor loses precision for large ``|x|``."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def maximum(a: Value | Number, b: Value | Number) -> Value:
    """The larger of ``a`` and ``b`` as a graph node (see ``Value.max``)."""
    if isinstance(a, Value):
        return a.max(b)
    if isinstance(b, Value):
        return _as_value(a, "max", b, left=False).max(b)
    raise TypeError(
        f"maximum needs at least one Value, got {type(a).__name__} and {type(b).__name__}"
    )


def topological_order(root: Value) -> list[Value]:
    """All nodes ``root`` depends on (and ``root``), each after all of its inputs.

    Iterative, so a chain of any depth works without hitting Python's recursion limit.
    """
    order: list[Value] = []
    visited: set[int] = set()
    stack: list[tuple[Value, bool]] = [(root, False)]
    while stack:
        node, inputs_done = stack.pop()
        if inputs_done:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        for child in reversed(node._prev):  # reversed: the first operand is visited first
            if id(child) not in visited:
                stack.append((child, False))
    return order


def trace(root: Value) -> tuple[list[Value], list[tuple[Value, Value]]]:
    """The graph behind ``root``: its nodes and its edges.

    Returns:
        ``(nodes, edges)``: ``nodes`` lists every value ``root`` depends on, each after its
        inputs (``root`` last); ``edges`` holds one ``(input, output)`` pair per operand, so
        ``x * x`` gives the edge ``(x, x*x)`` twice.
    """
    nodes = topological_order(root)
    edges = [(child, node) for node in nodes for child in node._prev]
    return nodes, edges


# ===================================================================== drawing

#: How each operation is written inside its op node.
OP_SYMBOLS = {
    "+": "+",
    "-": "−",
    "*": "×",
    "/": "÷",
    "neg": "−x",
    "exp": "exp",
    "log": "log",
    "tanh": "tanh",
    "sigmoid": "σ",
    "relu": "ReLU",
    "max": "max",
}


@dataclass
class GraphNode:
    """One node of a drawing made by [`draw_graph`][block4.autograd.draw_graph].

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


def _fmt(x: float, fmt: str) -> str:
    text = fmt.format(x)
    return "0" if text in ("-0", "-0.0") else text


def draw(
    root: Value,
    *,
    show_grad: bool | None = None,
    fmt: str = "{:.4g}",
    grad_prefix: str = "grad ",
    title: str | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Draw the graph behind ``root`` from left (inputs) to right (output).

    Op nodes are circles holding the operation; each value is a box with its name, its
    forward value (in the forward colour) and, after ``backward()``, its gradient (in the
    backward colour). Only matplotlib is needed.

    Args:
        root: the output value.
        show_grad: show gradients; by default, whenever a backward pass reached the graph.
        fmt: format of the numbers.
        grad_prefix: written before each gradient (``""`` makes wide graphs narrower; the
            colour still tells gradients from values).
        title: an optional title above the graph.
        ax: draw into these axes instead of a new figure.

    Returns:
        The matplotlib Figure.
    """
    nodes, edges = trace(root)
    if show_grad is None:
        show_grad = any(n._reached for n in nodes)
    graph_nodes: list[GraphNode] = []
    graph_edges: list[tuple[Any, Any]] = []
    for n in nodes:
        graph_nodes.append(
            GraphNode(
                key=id(n),
                kind="value",
                title=n.label,
                value=_fmt(n.data, fmt),
                grad=grad_prefix + _fmt(n.grad, fmt) if show_grad else None,
            )
        )
        if not n.is_leaf:
            op_key = ("op", id(n))
            symbol = OP_SYMBOLS.get(n.op, n.op.replace("**", "^"))
            graph_nodes.append(GraphNode(key=op_key, kind="op", title=symbol))
            graph_edges.append((op_key, id(n)))
    for child, node in edges:
        graph_edges.append((id(child), ("op", id(node))))
    return draw_graph(graph_nodes, graph_edges, title=title, ax=ax)


def _layers(keys: Sequence[Any], edges: Sequence[tuple[Any, Any]]) -> dict[Any, int]:
    """A column per node: longest path from the sources; each source sits just before its use."""
    preds: dict[Any, list[Any]] = {k: [] for k in keys}
    succs: dict[Any, list[Any]] = {k: [] for k in keys}
    for a, b in edges:
        preds[b].append(a)
        succs[a].append(b)
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


def _rows(
    keys: Sequence[Any], edges: Sequence[tuple[Any, Any]], col: dict[Any, int]
) -> dict[Any, float]:
    """Vertical positions by a tidy-tree layout grown back from the outputs.

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
    Contour = dict[int, tuple[float, float]]

    def stack(
        parts: list[tuple[dict[Any, float], Contour, Any]],
    ) -> tuple[dict[Any, float], Contour, list[float]]:
        pos: dict[Any, float] = {}
        contour: Contour = {}
        anchors: list[float] = []
        for sub_pos, sub_contour, anchor in parts:
            offset = 0.0
            if contour:
                gaps = [
                    contour[c][1] - sub_contour[c][0] + 1.0 for c in sub_contour if c in contour
                ]
                offset = max(gaps + [anchors[-1] + 1.0 - sub_pos[anchor]])
            for k, v in sub_pos.items():
                pos[k] = v + offset
            for c, (lo, hi) in sub_contour.items():
                old = contour.get(c)
                contour[c] = (
                    (lo + offset, hi + offset)
                    if old is None
                    else (
                        min(old[0], lo + offset),
                        max(old[1], hi + offset),
                    )
                )
            anchors.append(sub_pos[anchor] + offset)
        return pos, contour, anchors

    def layout(k: Any) -> tuple[dict[Any, float], Contour, Any]:
        placed.add(k)
        parts = []
        for child in preds[k]:
            if child not in placed:
                parts.append(layout(child))
        if not parts:
            return {k: 0.0}, {col[k]: (0.0, 0.0)}, k
        pos, contour, anchors = stack(parts)
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

    roots = [k for k in keys if k not in has_succ]
    pos, _, _ = stack([layout(r) for r in roots])
    # every node reaches an output, so all are placed; guard against overlaps regardless
    columns: dict[int, list[Any]] = {}
    for k in keys:
        columns.setdefault(col[k], []).append(k)
    for members in columns.values():
        members.sort(key=lambda k: pos[k])
        for prev, k in zip(members, members[1:], strict=False):
            pos[k] = max(pos[k], pos[prev] + 1.0)
    return pos


def _text_width(text: str, fontsize: float) -> float:
    """Rough width of ``text`` in inches (DejaVu Sans averages ~0.6 em per character)."""
    return 0.6 * fontsize / 72 * len(text)


def draw_graph(
    nodes: Iterable[GraphNode],
    edges: Iterable[tuple[Any, Any]],
    *,
    title: str | None = None,
    ax: Axes | None = None,
    scale: float = 0.8,
    edge_labels: dict[tuple[Any, Any], str] | None = None,
) -> Figure:
    """Draw a small directed acyclic graph in layers from left to right.

    Used by [`draw`][block4.autograd.draw] for [`Value`][block4.autograd.Value] graphs and by
    the course figures for graphs captured from PyTorch (``torch.fx``). Op nodes are grey
    circles (or pills for long names); value nodes are boxes showing the name, the forward
    value in the course's ``forward`` colour and the gradient in its ``backward`` colour.

    Args:
        nodes: the nodes, see [`GraphNode`][block4.autograd.GraphNode].
        edges: ``(from_key, to_key)`` pairs, in the direction data flows.
        title: an optional title.
        ax: draw into these axes instead of a new figure (their aspect is set to equal).
        scale: inches per layout unit (one row) when a new figure is made.
        edge_labels: text written along some edges, by ``(from_key, to_key)``, in the
            forward colour: the tensor an edge carries (its shape, say) when the graph has
            no value node for it.

    Returns:
        The matplotlib Figure.

    Raises:
        ValueError: for duplicate keys, an edge naming an unknown node, an unknown node
            kind, or a cycle.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch

    from block4.figures.style import ROLE, context

    nodes = list(nodes)
    edges = list(edges)
    by_key = {n.key: n for n in nodes}
    if len(by_key) != len(nodes):
        raise ValueError("draw_graph: node keys must be unique")
    for n in nodes:
        if n.kind not in ("op", "value"):
            raise ValueError(f"GraphNode kind {n.kind!r} is not supported; choose 'op' or 'value'")
    for a, b in edges:
        for k in (a, b):
            if k not in by_key:
                raise ValueError(f"draw_graph: edge ({a!r}, {b!r}) names an unknown node {k!r}")
    if len(nodes) > _MAX_DRAWN_NODES:
        raise ValueError(
            f"draw_graph: {len(nodes)} nodes are too many to read in one drawing "
            f"(at most {_MAX_DRAWN_NODES}); draw a smaller part of the graph"
        )
    edge_labels = dict(edge_labels or {})
    for edge in edge_labels:
        if edge not in edges:
            raise ValueError(f"draw_graph: edge_labels names {edge!r}, which is not an edge")
    keys = [n.key for n in nodes]
    col = _layers(keys, edges)
    row = _rows(keys, edges, col)

    unit = 1 / scale  # layout units per inch
    value_size, op_size = 9.0, 10.0

    def lines_of(n: GraphNode) -> list[tuple[str, str, str]]:
        lines: list[tuple[str, str, str]] = []
        if n.title:
            lines.append((n.title, _TEXT, "bold"))
        if n.value is not None:
            lines.append((n.value, ROLE["forward"], "normal"))
        if n.grad is not None:
            lines.append((n.grad, ROLE["backward"], "normal"))
        if n.note:
            lines.append((n.note, _NOTE, "normal"))
        return lines

    def size_of(n: GraphNode) -> tuple[float, float]:
        if n.kind == "op":
            title_lines = n.title.split("\n")
            w = max(_text_width(t, op_size) for t in title_lines) * unit + 0.2
            h = 0.46 + 0.2 * (len(title_lines) - 1)
            return (0.5, 0.5) if w <= 0.5 and h <= 0.5 else (max(w, h), h)
        lines = lines_of(n)
        w = max((_text_width(t, value_size) for t, _, _ in lines), default=0.3) * unit
        return max(0.6, w + 0.2), 0.16 + 0.21 * max(1, len(lines))

    sizes = {n.key: size_of(n) for n in nodes}
    ncols = max(col.values()) + 1 if col else 1
    col_w = [0.0] * ncols
    for k in keys:
        col_w[col[k]] = max(col_w[col[k]], sizes[k][0])
    label_size = 8.0
    gap = [0.4] * ncols  # room for the arrows after each column, and for their labels
    for (a, b), text in edge_labels.items():
        if col[b] == col[a] + 1:
            gap[col[a]] = max(gap[col[a]], _text_width(text, label_size) * unit + 0.25)
    col_x = [0.0] * ncols
    for c in range(1, ncols):  # a column is as wide as its widest node
        col_x[c] = col_x[c - 1] + (col_w[c - 1] + col_w[c]) / 2 + gap[c - 1]
    xs = {k: col_x[col[k]] for k in keys}
    ys = {k: -row[k] * 1.0 for k in keys}
    left, right = -col_w[0] / 2 - 0.05, col_x[-1] + col_w[-1] / 2 + 0.05
    top = max(ys[k] + sizes[k][1] / 2 for k in keys) + 0.05 if keys else 0.5
    bottom = min(ys[k] - sizes[k][1] / 2 for k in keys) - 0.05 if keys else -0.5

    given_ax = False
    with context():
        if ax is None:
            height = (top - bottom) * scale + (0.35 if title else 0.1)
            fig, ax = plt.subplots(
                figsize=((right - left) * scale + 0.1, height), layout="constrained"
            )
        else:
            fig = ax.figure
            given_ax = True
        ax.set_axis_off()
        ax.set_aspect("equal")
        ax.set_xlim(left, right)
        ax.set_ylim(bottom, top)
        if title:
            ax.set_title(title)
        # In axes smaller than the graph's natural size, shrink the text with the drawing.
        shrink = min(1.0, _fit(ax, right - left, top - bottom) / scale) if given_ax else 1.0
        value_size, op_size = value_size * shrink, op_size * shrink
        label_size *= shrink

        for n in nodes:
            x, y = xs[n.key], ys[n.key]
            w, h = sizes[n.key]
            if n.kind == "op":
                if w <= 0.5 and h <= 0.5:
                    patch = Circle((x, y), 0.25, facecolor=_OP_FILL, edgecolor=_LINE, lw=1.1)
                else:
                    patch = FancyBboxPatch(
                        (x - w / 2 + 0.23, y - h / 2 + 0.23),
                        w - 0.46,
                        h - 0.46,
                        boxstyle="round,pad=0.23",
                        facecolor=_OP_FILL,
                        edgecolor=_LINE,
                        lw=1.1,
                    )
                ax.add_patch(patch)
                ax.text(x, y, n.title, ha="center", va="center", color=_TEXT, fontsize=op_size)
                continue
            ax.add_patch(
                FancyBboxPatch(
                    (x - w / 2, y - h / 2),
                    w,
                    h,
                    boxstyle="round,pad=0,rounding_size=0.08",
                    facecolor="none",
                    edgecolor=ROLE["forward"],
                    lw=1.1,
                )
            )
            lines = lines_of(n)
            first = y + 0.21 * (len(lines) - 1) / 2
            for i, (text, colour, weight) in enumerate(lines):
                ax.text(
                    x,
                    first - 0.21 * i,
                    text,
                    ha="center",
                    va="center_baseline",
                    color=colour,
                    fontsize=value_size,
                    fontweight=weight,
                )

        def port(k: Any, side: float) -> tuple[float, float]:
            w = sizes[k][0]
            half = 0.25 if by_key[k].kind == "op" and w <= 0.5 and sizes[k][1] <= 0.5 else w / 2
            return xs[k] + side * half, ys[k]

        multiplicity = Counter(edges)
        drawn: Counter[tuple[Any, Any]] = Counter()
        for a, b in edges:
            i, n = drawn[(a, b)], multiplicity[(a, b)]
            drawn[(a, b)] += 1
            bend = 0.3 * (i - (n - 1) / 2)  # x * x: two arrows, bent apart
            ax.add_patch(
                FancyArrowPatch(
                    port(a, +1),
                    port(b, -1),
                    arrowstyle="-|>",
                    connectionstyle=f"arc3,rad={bend:.3f}",
                    mutation_scale=9,
                    color=_LINE,
                    lw=1.0,
                    shrinkA=1,
                    shrinkB=1,
                )
            )
            if (a, b) in edge_labels and i == 0:
                (xa, ya), (xb, yb) = port(a, +1), port(b, -1)
                ax.text(
                    (xa + xb) / 2,
                    (ya + yb) / 2 + 0.05,
                    edge_labels[(a, b)],
                    ha="center",
                    va="bottom",
                    color=ROLE["forward"],
                    fontsize=label_size,
                )
    return fig


def _fit(ax: Axes, width: float, height: float) -> float:
    """Inches per layout unit that ``ax`` offers a drawing of ``width`` x ``height`` units."""
    root = ax.figure.figure  # the top-level Figure, also for axes inside a SubFigure
    engine = root.get_layout_engine()
    if engine is not None:
        engine.execute(root)  # place the axes where the final figure will have them
    box = ax.get_window_extent()
    return min(box.width / width, box.height / height) / root.dpi


# Neutral greys: the dark variant of a figure mirrors them (see block4.figures.style).
_TEXT = "#222222"
_NOTE = "#707070"
_LINE = "#555555"
_OP_FILL = "#ececec"
_MAX_DRAWN_NODES = 400
