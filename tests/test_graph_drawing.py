"""block4.graph_drawing: the layout, the matplotlib drawing and the pure-Python SVG agree."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET

import matplotlib
import pytest

from block4 import style
from block4.autograd import Value, draw_svg, trace
from block4.graph_drawing import (
    COLOURS,
    GraphNode,
    draw_graph,
    graph_svg,
    layout,
    value_graph,
)

matplotlib.use("Agg")
SVG = "{http://www.w3.org/2000/svg}"


def worked_example() -> Value:
    x, y, z = Value(-2.0, "x"), Value(5.0, "y"), Value(-4.0, "z")
    q = x + y
    q.label = "q"
    f = q * z
    f.label = "f"
    f.backward()
    return f


def test_layout_places_inputs_left_of_their_ops_and_the_output_last() -> None:
    f = worked_example()
    nodes, edges = value_graph(*trace(f))
    plan = layout(nodes, edges)
    for a, b in edges:  # data flows left to right
        assert plan.x[a] < plan.x[b]
    xs = sorted(plan.x.values())
    assert plan.x[id(f)] == xs[-1]
    left, right, bottom, top = plan.bounds
    for n in nodes:  # every node lies inside the drawing, and no two overlap
        w, h = plan.size[n.key]
        assert left <= plan.x[n.key] - w / 2 and plan.x[n.key] + w / 2 <= right
        assert bottom <= plan.y[n.key] - h / 2 and plan.y[n.key] + h / 2 <= top
    boxes = [(plan.x[k], plan.y[k], *plan.size[k]) for k in plan.x]
    for i, (x1, y1, w1, h1) in enumerate(boxes):
        for x2, y2, w2, h2 in boxes[i + 1 :]:
            assert abs(x1 - x2) >= (w1 + w2) / 2 - 1e-9 or abs(y1 - y2) >= (h1 + h2) / 2 - 1e-9


def test_a_chain_is_one_straight_row() -> None:
    out = Value(0.5, "x").tanh().exp().log().sigmoid()
    plan = layout(*value_graph(*trace(out)))
    assert len(set(plan.y.values())) == 1
    assert len(set(plan.x.values())) == len(plan.x)


def test_value_graph_writes_labels_values_gradients_and_op_symbols() -> None:
    f = worked_example()
    nodes, edges = value_graph(*trace(f), fmt="{:g}", grad_prefix="")
    values = {n.title: (n.value, n.grad) for n in nodes if n.kind == "value"}
    assert values == {
        "x": ("-2", "-4"),
        "y": ("5", "-4"),
        "z": ("-4", "3"),
        "q": ("3", "-4"),
        "f": ("-12", "1"),
    }
    assert sorted(n.title for n in nodes if n.kind == "op") == ["+", "×"]
    assert len(edges) == 4 + 2  # one per operand, one per op result
    hidden = value_graph(*trace(f), show_grad=False)[0]
    assert all(n.grad is None for n in hidden)


def _svg_texts(svg: str) -> list[tuple[str, float, float, str]]:
    root = ET.fromstring(svg)
    return [
        (t.text or "", float(t.get("x")), float(t.get("y")), t.get("class"))
        for t in root.iter(f"{SVG}text")
    ]


def test_svg_is_valid_xml_with_every_label_value_and_gradient() -> None:
    f = worked_example()
    svg = draw_svg(f, fmt="{:g}")
    root = ET.fromstring(svg)  # raises on malformed XML
    assert root.tag == f"{SVG}svg"
    texts = [(t, role) for t, _, _, role in _svg_texts(svg)]
    for node in trace(f)[0]:
        assert (node.label, "text") in texts
        assert (f"{node.data:g}", "forward") in texts
        assert (f"grad {node.grad:g}", "backward") in texts
    assert len(list(root.iter(f"{SVG}circle"))) == 2  # the + and the × op
    assert len(list(root.iter(f"{SVG}path"))) == 1 + 6  # the arrow head + one path per edge


def test_svg_escapes_text_and_draws_long_ops_as_pills() -> None:
    nodes = [
        GraphNode("a", title="<a & b>", value="1"),
        GraphNode("op", kind="op", title="linear\n(3→4)"),
        GraphNode("b", title="b", note="shape 3×4"),
    ]
    svg = graph_svg(nodes, [("a", "op"), ("op", "b")], edge_labels={("op", "b"): "N×4"})
    root = ET.fromstring(svg)
    texts = [t for t, _, _, _ in _svg_texts(svg)]
    assert {"<a & b>", "linear", "(3→4)", "shape 3×4", "N×4"} <= set(texts)
    assert not list(root.iter(f"{SVG}circle"))  # the op's two lines need a pill


def test_svg_and_matplotlib_share_the_layout() -> None:
    f = worked_example()
    svg = draw_svg(f, fmt="{:g}")
    fig = draw_graph(*value_graph(*trace(f), fmt="{:g}"))
    plan = layout(*value_graph(*trace(f), fmt="{:g}"))
    left, _, _, top = plan.bounds
    k = plan.scale * 72

    def key(text: str, x: float, y: float) -> tuple[str, float, float]:
        return text, round(x, 2), round(y, 2)

    from_svg = sorted(key(t, x / k + left, top - y / k) for t, x, y, _ in _svg_texts(svg))
    from_mpl = sorted(key(t.get_text(), *t.get_position()) for t in fig.axes[0].texts)
    assert from_svg == from_mpl
    root = ET.fromstring(svg)
    width_pt = float(root.get("width").removesuffix("pt"))
    assert width_pt == pytest.approx((fig.get_size_inches()[0] - 0.1) * 72, abs=0.1)


def test_colours_are_the_course_roles() -> None:
    assert COLOURS["forward"] == style.ROLE["forward"]
    assert COLOURS["backward"] == style.ROLE["backward"]


def test_bad_graphs_get_one_clear_error_from_every_renderer() -> None:
    a, b = GraphNode("a"), GraphNode("b", kind="op", title="+")
    for render in (layout, graph_svg, draw_graph):
        with pytest.raises(ValueError, match="unknown node 'c'"):
            render([a, b], [("a", "c")])
        with pytest.raises(ValueError, match="contain a cycle"):
            render([a, b], [("a", "b"), ("b", "a")])
    with pytest.raises(ValueError, match="at most 400"):
        graph_svg([GraphNode(i) for i in range(401)], [])


def test_the_module_and_the_svg_need_no_third_party_package() -> None:
    code = (
        "import sys; from block4.autograd import Value, draw_svg\n"
        "x = Value(2.0, 'x'); y = (x * x).sigmoid(); y.backward()\n"
        "svg = draw_svg(y)\n"
        "print(svg.startswith('<svg'), 'matplotlib' in sys.modules, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False", "False"]


def test_docstring_example_runs() -> None:
    import doctest

    import block4.graph_drawing

    result = doctest.testmod(block4.graph_drawing)
    assert result.attempted >= 2 and result.failed == 0
