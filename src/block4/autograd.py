"""A scalar reverse-mode automatic differentiation engine, small enough to read in one sitting.

Every [`Value`][block4.autograd.Value] remembers the operation that made it and its inputs, so
an expression builds a computational graph as it is evaluated. Each operation defines its
*local* backward rule right beside its forward computation; ``backward()`` applies those rules
in reverse topological order (the chain rule: ``input.grad += local gradient * out.grad``).

    >>> x, y, z = Value(-2.0, "x"), Value(5.0, "y"), Value(-4.0, "z")
    >>> f = (x + y) * z
    >>> f.backward()
    >>> f.data, x.grad, y.grad, z.grad
    (-12.0, -4.0, -4.0, 3.0)

Gradients follow PyTorch for leaves: a node used several times receives the sum over its uses;
``backward()`` **accumulates** into leaves (inputs and constants) until ``zero_grad()``.
Interior nodes hold the gradient of the **latest** pass only (recomputed from zero each time).
Only the standard library is imported, so the engine also runs in a browser (Pyodide);
[`draw`][block4.autograd.draw] and [`draw_svg`][block4.autograd.draw_svg] use
[`block4.graph_drawing`](graph_drawing.md).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # matplotlib is imported only when a graph is drawn with it
    from matplotlib.figure import Figure

__all__ = ["Value", "maximum", "topological_order", "trace", "draw", "draw_svg"]

Number = int | float


class Value:
    """A scalar that records how it was computed, so gradients can flow back through it.

    Args:
        data: the number (stored as a Python float, i.e. float64).
        label: an optional name shown in drawings (``"x"``, ``"w0"``, ...).

    Attributes:
        data: the value (``float``).
        grad: the derivative of the output of the last
            [`backward`][block4.autograd.Value.backward] call with respect to this value
            (``0.0`` before any backward pass).
        label: the name shown in drawings.
        op: the operation that produced this value (``""`` for a leaf).
        inputs: the operands of ``op``, in order (a reused operand repeats); ``()`` for a leaf.

    Operations: ``+ - * /`` with a ``Value`` or a number on either side (a number becomes a
    constant leaf), ``**`` with a number exponent, unary ``-``, ``exp``, ``log``, ``tanh``,
    ``sigmoid``, ``relu`` and ``max`` (a tie splits the gradient, as ``torch.maximum`` does).
    """

    __slots__ = ("data", "grad", "label", "inputs", "op", "_backward", "_reached")

    def __init__(
        self, data: Number, label: str = "", *, _children: tuple[Value, ...] = (), _op: str = ""
    ) -> None:
        self.data = _check_number(data, "Value data")
        if not isinstance(label, str):
            raise TypeError(f"Value label must be a str, got {type(label).__name__} {label!r}")
        self.grad, self.label, self.inputs, self.op = 0.0, label, _children, _op
        self._backward: Callable[[], None] = lambda: None  # a leaf passes nothing on
        self._reached = False  # set by backward(): drawings show gradients only then

    @property
    def is_leaf(self) -> bool:
        """Whether this value is an input or a constant rather than the result of an operation."""
        return not self.inputs

    def __repr__(self) -> str:
        label = f", label={self.label!r}" if self.label else ""
        return f"Value(data={self.data:.6g}, grad={self.grad:.6g}{label})"

    # Each operation computes its value and defines its local backward rule: add local gradient
    # x incoming gradient (out.grad) to each input's grad. One-input ops pass theirs to _unary.
    # --8<-- [start:add]
    def __add__(self, other: Value | Number) -> Value:
        other = _as_value(other, "+", self)  # a number becomes a constant leaf
        out = Value(self.data + other.data, _children=(self, other), _op="+")

        def _backward() -> None:  # d(a+b)/da = d(a+b)/db = 1: add distributes
            self.grad += out.grad
            other.grad += out.grad

        out._backward = _backward
        return out

    # --8<-- [end:add]
    # --8<-- [start:mul]
    def __mul__(self, other: Value | Number) -> Value:
        other = _as_value(other, "*", self)  # a number becomes a constant leaf
        out = Value(self.data * other.data, _children=(self, other), _op="*")

        def _backward() -> None:  # d(ab)/da = b, d(ab)/db = a: multiply switches
            self.grad += other.data * out.grad
            other.grad += self.data * out.grad

        out._backward = _backward
        return out

    # --8<-- [end:mul]
    def __sub__(self, other: Value | Number) -> Value:
        other = _as_value(other, "-", self)
        out = Value(self.data - other.data, _children=(self, other), _op="-")

        def _backward() -> None:  # d(a-b)/da = 1, d(a-b)/db = -1
            self.grad += out.grad
            other.grad -= out.grad

        out._backward = _backward
        return out

    def __truediv__(self, other: Value | Number) -> Value:
        other = _as_value(other, "/", self)
        if other.data == 0.0:
            raise ZeroDivisionError(f"division by zero: divisor {_describe(other)} is 0")
        out = Value(self.data / other.data, _children=(self, other), _op="/")

        def _backward() -> None:  # d(a/b)/da = 1/b, d(a/b)/db = -a/b^2
            self.grad += out.grad / other.data
            other.grad -= self.data / other.data**2 * out.grad

        out._backward = _backward
        return out

    # --8<-- [start:pow]
    def __pow__(self, exponent: Number) -> Value:
        a, n = self.data, _check_exponent(exponent, self.data)
        # d(a^n)/da = n a^(n-1); infinite at 0 ** (n < 1), as in PyTorch
        return self._unary(a**n, f"**{n:g}", n * (math.inf if a == 0 and n < 1 else a ** (n - 1)))

    # --8<-- [end:pow]
    def __neg__(self) -> Value:
        return self._unary(-self.data, "neg", -1.0)  # d(-a)/da = -1

    def __radd__(self, other: Number) -> Value:  # 2 + x
        return _as_value(other, "+", self, left=False) + self

    def __rsub__(self, other: Number) -> Value:  # 2 - x
        return _as_value(other, "-", self, left=False) - self

    def __rmul__(self, other: Number) -> Value:  # 2 * x
        return _as_value(other, "*", self, left=False) * self

    def __rtruediv__(self, other: Number) -> Value:  # 1 / x
        return _as_value(other, "/", self, left=False) / self

    def __rpow__(self, base: Any) -> Value:  # 2 ** x
        msg = f"write (x * math.log({base!r})).exp() instead of {base!r} ** x"
        raise TypeError(f"the exponent of ** must be an int or float, not a Value; {msg}")

    # --8<-- [start:exp]
    def exp(self) -> Value:
        e = _exp(self.data)
        return self._unary(e, "exp", e)  # d(e^a)/da = e^a: the output itself

    # --8<-- [end:exp]
    def log(self) -> Value:
        if self.data <= 0.0:
            raise ValueError(
                f"log is defined only for positive numbers, got log({self.data:g}) "
                f"of {_describe(self)}"
            )
        return self._unary(math.log(self.data), "log", 1.0 / self.data)  # d(log a)/da = 1/a

    def tanh(self) -> Value:
        t = math.tanh(self.data)
        return self._unary(t, "tanh", 1.0 - t * t)  # d(tanh a)/da = 1 - tanh(a)^2

    # --8<-- [start:sigmoid]
    def sigmoid(self) -> Value:
        s = _sigmoid(self.data)  # 1 / (1 + e^-a), computed without overflow
        return self._unary(s, "sigmoid", s * (1.0 - s))  # ds/da = s (1 - s): at most 1/4

    # --8<-- [end:sigmoid]
    # --8<-- [start:relu]
    def relu(self) -> Value:
        active = self.data > 0.0  # ReLU passes the gradient where a > 0 and blocks it elsewhere
        return self._unary(self.data if active else 0.0, "relu", 1.0 if active else 0.0)

    # --8<-- [end:relu]
    # --8<-- [start:unary]
    def _unary(self, data: float, op: str, local: float) -> Value:
        """The result of a one-input operation whose local gradient d(out)/d(self) is ``local``."""
        out = Value(data, _children=(self,), _op=op)

        def _backward() -> None:  # the chain rule: local gradient x incoming gradient
            self.grad += local * out.grad

        out._backward = _backward
        return out

    # --8<-- [end:unary]
    # --8<-- [start:max]
    def max(self, other: Value | Number) -> Value:
        other = _as_value(other, "max", self)
        a, b = self.data, other.data
        out = Value(max(a, b), _children=(self, other), _op="max")

        def _backward() -> None:  # max routes: the winner gets all, the loser nothing
            share = 1.0 if a > b else 0.0 if a < b else 0.5  # a tie splits, as in torch
            self.grad += share * out.grad
            other.grad += (1.0 - share) * out.grad

        out._backward = _backward
        return out

    # --8<-- [end:max]
    def backward(self, gradient: Number = 1.0) -> None:
        """Fill ``.grad`` of every node this value depends on: d(self)/d(node) x ``gradient``.

        Leaves accumulate (a second call adds the same gradients again, as in PyTorch);
        interior nodes are recomputed from zero on every call.
        """
        seed = _check_number(gradient, "the gradient passed to backward()")
        # --8<-- [start:backward]
        order = topological_order(self)  # every input before the nodes that use it
        for node in order:
            if not node.is_leaf:
                node.grad = 0.0  # interior gradients belong to this pass only
        self.grad += seed  # d(self)/d(self) = 1, times the incoming gradient (1 by default)
        for node in reversed(order):  # a node's grad is complete before it is passed on
            node._backward()  # input.grad += local gradient * node.grad
        # --8<-- [end:backward]
        for node in order:
            node._reached = True

    def zero_grad(self) -> None:
        """Set ``.grad`` to zero on this value and on every node it depends on."""
        for node in topological_order(self):
            node.grad = 0.0


def _check_number(data: Any, what: str) -> float:
    """``data`` as a float, or one clear ``TypeError``."""
    if isinstance(data, numbers.Real):
        return float(data)
    raise TypeError(f"{what} must be a real number (int or float), got {data!r}")


def _as_value(other: Any, op: str, this: Value, *, left: bool = True) -> Value:
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


def _check_exponent(exponent: Any, a: float) -> float:
    """The exponent of ``a ** exponent`` as a float, or one clear error."""
    if isinstance(exponent, Value):
        raise TypeError(
            "the exponent of ** must be an int or float, not a Value; for a variable "
            "exponent write (b * a.log()).exp() instead of a ** b"
        )
    n = _check_number(exponent, "the exponent of **")
    if a == 0.0 and n < 0:
        raise ZeroDivisionError(f"0 ** {n:g} is undefined (division by zero)")
    if a < 0.0 and not n.is_integer():
        raise ValueError(f"{a:g} ** {n:g} is not real: a negative base needs an integer exponent")
    return n


def _describe(v: Value) -> str:
    return f"Value {v.label!r}" if v.label else f"a Value made by {v.op!r}" if v.op else "a Value"


def _exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        raise OverflowError(f"exp({x:g}) overflows a float64 (at most exp(709.78))") from None


def _sigmoid(x: float) -> float:  # neither overflows nor loses precision for large |x|
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def maximum(a: Value | Number, b: Value | Number) -> Value:
    """The larger of ``a`` and ``b`` as a graph node (see ``Value.max``)."""
    if isinstance(a, Value):
        return a.max(b)
    if isinstance(b, Value):
        return _as_value(a, "max", b, left=False).max(b)
    raise TypeError(f"maximum needs at least one Value, got {a!r} and {b!r}")


def topological_order(root: Value) -> list[Value]:
    """All nodes ``root`` depends on (and ``root``), each after all of its inputs."""
    # Iterative, so a chain of any depth works without hitting Python's recursion limit.
    order: list[Value] = []
    visited: set[int] = set()
    stack: list[tuple[Value, bool]] = [(root, False)]
    while stack:
        node, inputs_done = stack.pop()
        if inputs_done:
            order.append(node)
        elif id(node) not in visited:
            visited.add(id(node))
            stack.append((node, True))
            # reversed: the first operand is visited first
            stack += [(c, False) for c in reversed(node.inputs) if id(c) not in visited]
    return order


def trace(root: Value) -> tuple[list[Value], list[tuple[Value, Value]]]:
    """``(nodes, edges)`` of the graph behind ``root``: every value it depends on, each after
    its inputs (``root`` last), and one ``(input, output)`` pair per operand (``x * x`` gives
    the edge ``(x, x*x)`` twice)."""
    nodes = topological_order(root)
    return nodes, [(child, node) for node in nodes for child in node.inputs]


def draw(root: Value, *, title: str | None = None, ax: Any = None, **options: Any) -> Figure:
    """Draw the graph behind ``root`` with matplotlib, inputs left, output right.

    Each value is a box with its label, its value and (once a backward pass reached the graph,
    or with ``show_grad=True``) its gradient; each operation a circle. ``title``, ``ax``
    (draw into these axes) and the options ``show_grad``, ``fmt``, ``grad_prefix`` are those
    of [`draw_graph`][block4.graph_drawing.draw_graph] and
    [`value_graph`][block4.graph_drawing.value_graph].
    """
    from block4.graph_drawing import draw_graph

    return draw_graph(*_drawing(root, **options), title=title, ax=ax)


def draw_svg(root: Value, *, title: str | None = None, **options: Any) -> str:
    """The drawing of [`draw`][block4.autograd.draw] as SVG text, in pure Python (same layout)."""
    from block4.graph_drawing import graph_svg

    return graph_svg(*_drawing(root, **options), title=title)


def _drawing(root: Value, show_grad: bool | None = None, **options: Any) -> tuple[list, list]:
    from block4.graph_drawing import value_graph

    nodes, edges = trace(root)
    show = any(n._reached for n in nodes) if show_grad is None else show_grad
    return value_graph(nodes, edges, show_grad=show, **options)
