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
    LABEL_SIZE,
    PAGE_WIDTH,
    GraphNode,
    Layout,
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


def long_chain(n_layers: int = 4) -> tuple[list[GraphNode], list[tuple], dict[tuple, str]]:
    """An MLP-like chain: per layer a linear op with its weight as side input, then a ReLU;
    shapes on the edges. A band can end after a linear op (one edge leads on to the ReLU),
    not after a ReLU (the next weight sits in its column)."""
    nodes = [GraphNode("in", title="images", value="N×28×28")]
    edges: list[tuple] = []
    labels: dict[tuple, str] = {}
    previous = "in"
    for i in range(n_layers):
        op, weight, relu = f"op{i}", f"w{i}", f"relu{i}"
        nodes += [
            GraphNode(op, kind="op", title="linear"),
            GraphNode(weight, title=f"W{i}", value="512×512"),
            GraphNode(relu, kind="op", title="ReLU"),
        ]
        edges += [(previous, op), (weight, op), (op, relu)]
        labels[(op, relu)] = "N×512"
        previous = relu
    nodes.append(GraphNode("out", title="probabilities", value="N×10"))
    edges.append((previous, "out"))
    return nodes, edges, labels


def assert_tidy(plan: Layout) -> None:
    """Every node and edge inside the drawing, and no two nodes overlap."""
    left, right, bottom, top = plan.bounds
    for k in plan.x:
        w, h = plan.size[k]
        assert left <= plan.x[k] - w / 2 and plan.x[k] + w / 2 <= right
        assert bottom <= plan.y[k] - h / 2 and plan.y[k] + h / 2 <= top
    for points in plan.routes.values():
        assert all(left <= x <= right and bottom <= y <= top for x, y in points)
    boxes = [(plan.x[k], plan.y[k], *plan.size[k]) for k in plan.x]
    for i, (x1, y1, w1, h1) in enumerate(boxes):
        for x2, y2, w2, h2 in boxes[i + 1 :]:
            assert abs(x1 - x2) >= (w1 + w2) / 2 - 1e-9 or abs(y1 - y2) >= (h1 + h2) / 2 - 1e-9


def test_layout_places_inputs_left_of_their_ops_and_the_output_last() -> None:
    f = worked_example()
    nodes, edges = value_graph(*trace(f))
    plan = layout(nodes, edges)
    for a, b in edges:  # data flows left to right
        assert plan.x[a] < plan.x[b]
    xs = sorted(plan.x.values())
    assert plan.x[id(f)] == xs[-1]
    assert not plan.routes
    assert_tidy(plan)


def test_a_long_graph_wraps_into_bands_within_max_width() -> None:
    nodes, edges, labels = long_chain()
    wide = layout(nodes, edges, edge_labels=labels)
    assert (wide.bounds[1] - wide.bounds[0]) * wide.scale + 0.1 > PAGE_WIDTH  # needs wrapping
    plan = layout(nodes, edges, edge_labels=labels, max_width=PAGE_WIDTH)
    left, right, bottom, top = plan.bounds
    assert (right - left) * plan.scale + 0.1 <= PAGE_WIDTH
    assert_tidy(plan)
    assert len(plan.routes) >= 1
    for (a, b), points in plan.routes.items():
        # out of a to the right, back left below a's band, into b from the left
        assert points[0] == plan.port(a, +1) and points[-1] == plan.port(b, -1)
        (_, ya), (x_out, _), (_, y_back), (x_in, _) = points[:4]
        assert x_out > plan.port(a, +1)[0] and x_in < plan.port(b, -1)[0]
        assert ya > y_back > plan.y[b] + plan.size[b][1] / 2
        assert (a, b) not in [(u, v) for u, v, _, _ in plan.arrows()]
    # every other edge stays one arrow from left to right within its band
    for a, b, _, _ in plan.arrows():
        assert plan.x[a] < plan.x[b]
    # a band breaks only where one edge leads on: each weight stays in its op's band
    for i in range(4):
        assert abs(plan.y[f"w{i}"] - plan.y[f"op{i}"]) < 1.5
    assert all(a.startswith("op") and b.startswith("relu") for a, b in plan.routes)


def test_a_graph_that_fits_does_not_wrap() -> None:
    nodes, edges = value_graph(*trace(worked_example()))
    plain, roomy = layout(nodes, edges), layout(nodes, edges, max_width=PAGE_WIDTH)
    assert not roomy.routes
    assert (roomy.x, roomy.y, roomy.bounds) == (plain.x, plain.y, plain.bounds)


def test_bad_max_width_gets_one_clear_error() -> None:
    nodes, edges, labels = long_chain()
    for bad in (0, -3.0, "wide", float("nan")):
        with pytest.raises(ValueError, match="max_width must be a positive number"):
            layout(nodes, edges, max_width=bad)
    with pytest.raises(ValueError, match="cannot be wrapped into max_width=1 in"):
        draw_graph(nodes, edges, edge_labels=labels, max_width=1.0)


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


def test_a_wrapped_graph_is_drawn_alike_by_svg_and_matplotlib() -> None:
    nodes, edges, labels = long_chain()
    svg = graph_svg(nodes, edges, edge_labels=labels, max_width=PAGE_WIDTH)
    fig = draw_graph(nodes, edges, edge_labels=labels, max_width=PAGE_WIDTH)
    plan = layout(nodes, edges, edge_labels=labels, max_width=PAGE_WIDTH)
    assert fig.get_size_inches()[0] <= PAGE_WIDTH
    left, _, _, top = plan.bounds
    k = plan.scale * 72
    root = ET.fromstring(svg)

    def where(t: ET.Element, lift: float) -> tuple[str, float, float]:
        x, y = float(t.get("x")), float(t.get("y")) + lift
        return t.text or "", x / k + left, top - y / k

    # node texts sit in a group per node; the edge labels directly in the drawing, centred
    # LABEL_SIZE / 2 above the anchor matplotlib gives as their bottom
    in_nodes = [where(t, 0) for g in root.iter(f"{SVG}g") for t in g.iter(f"{SVG}text")]
    on_edges = [where(t, LABEL_SIZE / 2) for t in root.findall(f"{SVG}text")]
    assert sorted(t for t, _, _ in on_edges) == sorted(labels.values())
    from_mpl = sorted((t.get_text(), *t.get_position()) for t in fig.axes[0].texts)
    from_svg = sorted(in_nodes + on_edges)
    assert [t for t, _, _ in from_svg] == [t for t, _, _ in from_mpl]
    for (_, *svg_at), (_, *mpl_at) in zip(from_svg, from_mpl, strict=True):
        assert svg_at == pytest.approx(mpl_at, abs=0.01)  # the SVG rounds to 0.01 pt
    edge_paths = [p.get("d") for p in root.iter(f"{SVG}path") if p.get("class") == "edge"]
    polylines = [d for d in edge_paths if " L" in d]
    assert len(polylines) == len(plan.routes) >= 1
    arrows = [p for p in fig.axes[0].patches if type(p).__name__ == "FancyArrowPatch"]
    assert len(arrows) == len(edges)  # the routed edges too, one arrow each


def test_every_text_is_at_least_9_pt() -> None:
    nodes, edges, labels = long_chain()
    fig = draw_graph(nodes, edges, edge_labels=labels, max_width=PAGE_WIDTH, title="a chain")
    sizes = [t.get_fontsize() for t in fig.findobj(matplotlib.text.Text) if t.get_text()]
    assert sizes and min(sizes) >= 9
    svg = graph_svg(nodes, edges, edge_labels=labels, max_width=PAGE_WIDTH, title="a chain")
    svg_sizes = [float(t.get("font-size")) for t in ET.fromstring(svg).iter(f"{SVG}text")]
    assert min(svg_sizes) >= 9


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
