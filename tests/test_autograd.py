"""block4.autograd: values, gradients (checked against torch.autograd), semantics and errors."""

from __future__ import annotations

import math
import re

import matplotlib
import pytest
import torch

from block4.autograd import Value, draw, maximum, topological_order, trace
from block4.graph_drawing import GraphNode, draw_graph

matplotlib.use("Agg")


def torch_grads(fn, *xs: float) -> tuple[float, list[float]]:
    """Value and gradients of ``fn`` computed by torch.autograd in float64."""
    ts = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in xs]
    out = fn(*ts)
    grads = torch.autograd.grad(out, ts, allow_unused=True)
    return float(out.detach()), [0.0 if g is None else float(g) for g in grads]


def our_grads(fn, *xs: float) -> tuple[float, list[float]]:
    vs = [Value(x) for x in xs]
    out = fn(*vs)
    out.backward()
    return out.data, [v.grad for v in vs]


def assert_same(fn_ours, fn_torch, *xs: float) -> None:
    ours, theirs = our_grads(fn_ours, *xs), torch_grads(fn_torch, *xs)
    assert ours[0] == pytest.approx(theirs[0], rel=1e-12, abs=1e-12)
    assert ours[1] == pytest.approx(theirs[1], rel=1e-12, abs=1e-12)


def test_worked_example_of_the_chapter() -> None:
    x, y, z = Value(-2.0, "x"), Value(5.0, "y"), Value(-4.0, "z")
    q = x + y
    f = q * z
    f.backward()
    assert (q.data, f.data) == (3.0, -12.0)
    assert (x.grad, y.grad, z.grad, q.grad, f.grad) == (-4.0, -4.0, 3.0, -4.0, 1.0)


UNARY = {
    "neg": (lambda a: -a, lambda a: -a),
    "exp": (lambda a: a.exp(), torch.exp),
    "log": (lambda a: a.log(), torch.log),
    "tanh": (lambda a: a.tanh(), torch.tanh),
    "sigmoid": (lambda a: a.sigmoid(), torch.sigmoid),
    "relu": (lambda a: a.relu(), torch.relu),
    "pow2": (lambda a: a**2, lambda a: a**2),
    "pow-1.5": (lambda a: a**-1.5, lambda a: a**-1.5),
    "pow0.5": (lambda a: a**0.5, lambda a: a**0.5),
    "pow3int": (lambda a: a**3, lambda a: a**3),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@pytest.mark.parametrize("x", [0.3, 1.7, 2.5])
def test_each_unary_op_matches_torch(name: str, x: float) -> None:
    ours, theirs = UNARY[name]
    assert_same(ours, theirs, x)


@pytest.mark.parametrize("name", ["neg", "exp", "tanh", "sigmoid", "relu", "pow2", "pow3int"])
def test_unary_ops_on_negative_inputs(name: str) -> None:
    ours, theirs = UNARY[name]
    assert_same(ours, theirs, -1.3)


BINARY = {
    "add": (lambda a, b: a + b, lambda a, b: a + b),
    "sub": (lambda a, b: a - b, lambda a, b: a - b),
    "mul": (lambda a, b: a * b, lambda a, b: a * b),
    "div": (lambda a, b: a / b, lambda a, b: a / b),
    "max": (lambda a, b: a.max(b), torch.maximum),
    "maximum": (maximum, torch.maximum),
}


@pytest.mark.parametrize("name", sorted(BINARY))
@pytest.mark.parametrize(("a", "b"), [(1.5, -2.0), (-0.5, 3.0), (2.0, 2.0)])
def test_each_binary_op_matches_torch(name: str, a: float, b: float) -> None:
    ours, theirs = BINARY[name]
    assert_same(ours, theirs, a, b)


def test_numbers_on_either_side_become_constants() -> None:
    x = Value(4.0, "x")
    for expr, value, grad in [
        (lambda v: 2 + v, 6.0, 1.0),
        (lambda v: v + 2, 6.0, 1.0),
        (lambda v: 2 - v, -2.0, -1.0),
        (lambda v: v - 2.5, 1.5, 1.0),
        (lambda v: 3 * v, 12.0, 3.0),
        (lambda v: 1 / v, 0.25, -1 / 16),
        (lambda v: v / 2, 2.0, 0.5),
        (lambda v: maximum(5, v), 5.0, 0.0),
    ]:
        x.zero_grad()
        out = expr(x)
        out.backward()
        assert (out.data, x.grad) == (value, grad)


def test_max_routes_the_gradient_and_splits_ties_like_torch() -> None:
    a, b = Value(3.0), Value(-1.0)
    a.max(b).backward(2.0)
    assert (a.grad, b.grad) == (2.0, 0.0)
    c, d = Value(1.0), Value(1.0)
    c.max(d).backward()
    assert (c.grad, d.grad) == (0.5, 0.5)  # torch.maximum splits a tie evenly


def test_relu_gradient_at_zero_is_zero_like_torch() -> None:
    assert_same(lambda a: a.relu(), torch.relu, 0.0)


def test_sigmoid_and_tanh_are_stable_for_large_inputs() -> None:
    for x in (-800.0, 800.0):
        v = Value(x)
        s = v.sigmoid()
        s.backward()
        assert s.data == (0.0 if x < 0 else 1.0)
        assert v.grad == 0.0
    assert Value(-40.0).sigmoid().data == pytest.approx(math.exp(-40.0), rel=1e-12)


def test_a_reused_node_gets_the_sum_of_its_gradients() -> None:
    a = Value(3.0, "a")
    (a * a).backward()
    assert a.grad == 6.0
    a.zero_grad()
    (a + a).backward()
    assert a.grad == 2.0
    # a used in two branches that meet again: f = (a*b) + (a+b) * a
    a, b = Value(2.0), Value(-3.0)
    f = a * b + (a + b) * a
    f.backward()
    _, (ga, gb) = torch_grads(lambda a, b: a * b + (a + b) * a, 2.0, -3.0)
    assert (a.grad, b.grad) == (ga, gb)


def test_a_reused_interior_node() -> None:
    x = Value(0.5)
    h = x.tanh()
    f = h * h + h.exp() - h / (h + 2)
    f.backward()
    _, (g,) = torch_grads(lambda x: x.tanh() ** 2 + x.tanh().exp() - x.tanh() / (x.tanh() + 2), 0.5)
    assert x.grad == pytest.approx(g, rel=1e-12)


def test_a_deep_chain_needs_no_recursion() -> None:
    depth = 20_000  # far beyond Python's recursion limit
    x = Value(1.0, "x")
    h = x
    for _ in range(depth):
        h = h * 1.0001 + 0.0
    h.backward()
    assert h.data == pytest.approx(1.0001**depth, rel=1e-9)
    assert x.grad == pytest.approx(1.0001**depth, rel=1e-9)
    assert len(topological_order(h)) == 1 + 4 * depth  # x, then per step: const, *, const, +


def test_repeated_backward_accumulates_in_leaves_only() -> None:
    x, y, z = Value(-2.0), Value(5.0), Value(-4.0)
    q = x + y
    f = q * z
    f.backward()
    f.backward()
    # leaves accumulate, exactly as two loss.backward() calls in PyTorch
    assert (x.grad, y.grad, z.grad) == (-8.0, -8.0, 6.0)
    # interior nodes hold the gradient of the last pass, not a pile-up
    assert (q.grad, f.grad) == (-4.0, 1.0)

    xt, zt = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (-2.0, -4.0))
    ft = (xt + 5.0) * zt
    ft.backward(retain_graph=True)
    ft.backward()
    assert (float(xt.grad), float(zt.grad)) == (x.grad, z.grad)


def test_zero_grad_resets_the_whole_graph() -> None:
    x, y = Value(2.0), Value(3.0)
    f = (x * y).exp()
    f.backward()
    assert x.grad != 0.0
    f.zero_grad()
    nodes, _ = trace(f)
    assert all(n.grad == 0.0 for n in nodes)
    f.backward()
    assert x.grad == pytest.approx(3.0 * math.exp(6.0))


def test_backward_with_an_incoming_gradient() -> None:
    a, b = Value(3.0), Value(-1.0)
    (a * b).backward(2.0)
    assert (a.grad, b.grad) == (-2.0, 6.0)  # local gradient x incoming gradient


def test_backward_from_an_interior_node() -> None:
    x, y, z = Value(-2.0), Value(5.0), Value(-4.0)
    q = x + y
    f = q * z
    f.backward()
    x.zero_grad()
    y.zero_grad()
    q.backward()  # dq/dx = dq/dy = 1; f is not part of q's graph
    assert (x.grad, y.grad, q.grad) == (1.0, 1.0, 1.0)


def test_a_leaf_on_its_own() -> None:
    x = Value(2.0)
    x.backward()
    x.backward()
    assert x.grad == 2.0


def test_trace_lists_nodes_after_their_inputs_and_one_edge_per_operand() -> None:
    a = Value(3.0, "a")
    b = a * a
    c = b + a
    nodes, edges = trace(c)
    assert nodes[-1] is c and nodes[0] is a and len(nodes) == 3
    assert [(i.data, o.data) for i, o in edges] == [
        (3.0, 9.0),
        (3.0, 9.0),
        (9.0, 12.0),
        (3.0, 12.0),
    ]
    assert c.inputs == (b, a) and c.op == "+" and a.is_leaf and not c.is_leaf


def test_repr_and_labels() -> None:
    assert repr(Value(2.5, "w")) == "Value(data=2.5, grad=0, label='w')"
    assert repr(Value(1.0)) == "Value(data=1, grad=0)"


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: Value("a"), TypeError, "Value data must be a real number"),
        (lambda: Value(1.0, label=3), TypeError, "label must be a str"),
        (lambda: Value(1.0) + "a", TypeError, "unsupported operand types for +: Value and str"),
        (lambda: "a" + Value(1.0), TypeError, "unsupported operand types for +: str and Value"),
        (lambda: Value(1.0) * [2], TypeError, "the operands must be Value, int or float"),
        (lambda: [2] - Value(1.0), TypeError, "unsupported operand types for -: list and Value"),
        (lambda: Value(1.0) / None, TypeError, "for /: Value and NoneType"),
        (lambda: Value(1.0).max("x"), TypeError, "for max: Value and str"),
        (lambda: maximum(1, 2), TypeError, "maximum needs at least one Value"),
        (lambda: Value(0.0).log(), ValueError, "log is defined only for positive numbers"),
        (lambda: Value(-2.0, "x").log(), ValueError, "log(-2) of Value 'x'"),
        (lambda: Value(2.0) ** Value(3.0), TypeError, "exponent of ** must be an int or float"),
        (lambda: 2 ** Value(3.0), TypeError, "exponent of ** must be an int or float"),
        (lambda: Value(2.0) ** "2", TypeError, "the exponent of ** must be a real number"),
        (lambda: Value(0.0) ** -1, ZeroDivisionError, "0 ** -1 is undefined"),
        (lambda: Value(-8.0) ** 0.5, ValueError, "a negative base needs an integer exponent"),
        (lambda: Value(1.0) / Value(0.0, "d"), ZeroDivisionError, "divisor Value 'd' is 0"),
        (lambda: 1 / Value(0.0), ZeroDivisionError, "division by zero"),
        (lambda: Value(1000.0).exp(), OverflowError, "exp(1000) overflows a float64"),
        (lambda: Value(1.0).backward("x"), TypeError, "gradient passed to backward()"),
    ],
)
def test_clear_errors(make, error, message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        make()


def test_negative_base_with_an_integer_exponent_is_fine() -> None:
    assert_same(lambda a: a**3.0, lambda a: a**3.0, -2.0)


# ---------------------------------------------------------------- drawing
def _texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_draw_shows_values_and_gradients_after_backward() -> None:
    x, y, z = Value(-2.0, "x"), Value(5.0, "y"), Value(-4.0, "z")
    q = x + y
    q.label = "q"
    f = q * z
    f.label = "f"
    before = _texts(draw(f))
    assert {"x", "y", "z", "q", "f", "+", "×", "-2", "5", "-4", "3", "-12"} <= set(before)
    assert not any(t.startswith("grad") for t in before)
    f.backward()
    after = _texts(draw(f))
    assert {"grad -4", "grad 3", "grad 1"} <= set(after)
    assert after.count("grad -4") == 3  # x, y and q


def test_draw_into_given_axes_and_show_grad_override() -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    a = Value(2.0, "a")
    out = (a * 3).relu()
    out.backward()
    assert draw(out, ax=ax, show_grad=False, title="t") is fig
    assert not any(t.startswith("grad") for t in _texts(fig))
    assert ax.get_title() == "t"
    plt.close(fig)


def test_draw_graph_rejects_bad_graphs() -> None:
    a, b = GraphNode("a"), GraphNode("b", kind="op", title="+")
    with pytest.raises(ValueError, match="unknown node 'c'"):
        draw_graph([a, b], [("a", "c")])
    with pytest.raises(ValueError, match="contain a cycle"):
        draw_graph([a, b], [("a", "b"), ("b", "a")])
    with pytest.raises(ValueError, match="choose 'op' or 'value'"):
        draw_graph([GraphNode("a", kind="tensor")], [])
    with pytest.raises(ValueError, match="keys must be unique"):
        draw_graph([a, GraphNode("a")], [])
    with pytest.raises(ValueError, match="not an edge"):
        draw_graph([a, b], [("a", "b")], edge_labels={("b", "a"): "3x4"})


def test_draw_graph_writes_edge_labels() -> None:
    nodes = [GraphNode("x", title="x"), GraphNode("f", kind="op", title="exp"), GraphNode("y")]
    fig = draw_graph(nodes, [("x", "f"), ("f", "y")], edge_labels={("f", "y"): "N×3"})
    assert "N×3" in _texts(fig)


def test_draw_lays_out_a_chain_on_one_line() -> None:
    x = Value(0.5, "x")
    out = x.tanh().exp().log().sigmoid()
    fig = draw(out)
    ys = {
        round(t.get_position()[1], 6)
        for t in fig.axes[0].texts
        if t.get_text() in {"tanh", "exp", "log", "σ"}
    }
    assert len(ys) == 1


def test_docstring_examples_run() -> None:
    import doctest

    import block4.autograd

    result = doctest.testmod(block4.autograd)
    assert result.attempted >= 4 and result.failed == 0


def test_importing_the_engine_is_cheap() -> None:
    import subprocess
    import sys

    code = "import sys, block4.autograd; print('torch' in sys.modules, 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]  # drawing imports matplotlib on demand
