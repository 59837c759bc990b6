"""Figures of the chapter "Computational graphs".

Both graphs are *captured* from real PyTorch code with ``torch.fx`` and run once
(``ShapeProp``) so every edge knows the tensor it carries; ``block4.graph_drawing.draw_graph``
then draws them. Nothing here trains, so every profile makes them in well under a second.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from block4.figures.registry import FigureContext, figure
from block4.graph_drawing import PAGE_WIDTH, GraphNode, draw_graph


# --8<-- [start:product]
def product(m1: torch.Tensor, m2: torch.Tensor) -> torch.Tensor:
    """The chapter's first example: a scalar times a matrix product."""
    return 10 * torch.matmul(m1, m2)


# --8<-- [end:product]


# --8<-- [start:mlp]
def mnist_mlp(p_drop: float = 0.2) -> nn.Sequential:
    """The chapter's MLP: 28x28 image -> 512 ReLUs -> 10 probabilities."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(28 * 28, 512),
        nn.ReLU(),
        nn.Dropout(p_drop),
        nn.Linear(512, 10),
        nn.Softmax(dim=1),
    )


# --8<-- [end:mlp]


class OpLevelTracer(fx.Tracer):
    """A ``torch.fx`` tracer that records the operations *inside* the layers.

    The default tracer keeps ``nn.Linear`` and friends as opaque ``call_module`` nodes; tracing
    through them shows the weights and biases as inputs of the ``linear`` operations, the
    same level of detail as TensorBoard's view of a Keras model.
    """

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return False


def capture_op_level(model: nn.Module, example: torch.Tensor) -> fx.GraphModule:
    """Trace ``model`` down to its tensor operations and record each node's output shape."""
    graph = OpLevelTracer().trace(model)
    gm = fx.GraphModule(model, graph)
    ShapeProp(gm).propagate(example)
    return gm


OP_NAMES = {
    torch.matmul: "matmul",
    operator.mul: "×",
    operator.add: "+",
    torch.nn.functional.linear: "linear",
    torch.nn.functional.relu: "ReLU",
    torch.nn.functional.dropout: "dropout",
    torch.nn.functional.softmax: "softmax",
}


def _op_title(node: fx.Node) -> str:
    if node.op == "call_method":
        return str(node.target)
    title = OP_NAMES.get(node.target, getattr(node.target, "__name__", str(node.target)))
    if title == "dropout":
        title = f"dropout\np={node.kwargs.get('p', 0.5):g}"
    return title


def _shape_text(node: fx.Node, batch: str | None) -> str:
    shape = list(node.meta["tensor_meta"].shape)
    dims = [str(d) for d in shape]
    if batch is not None and dims:
        dims[0] = batch
    return "×".join(dims) if dims else "scalar"


def _tensor_text(t: torch.Tensor) -> str:
    def fmt(x: Any) -> str:
        return "[" + ", ".join(fmt(v) for v in x) + "]" if isinstance(x, list) else f"{x:g}"

    return fmt(t.tolist())


def fx_to_graph(
    gm: fx.GraphModule,
    *,
    values: dict[str, torch.Tensor] | None = None,
    batch: str | None = None,
    titles: dict[str, str] | None = None,
    tensors_on_edges: bool = False,
) -> tuple[list[GraphNode], list[tuple[Any, Any]], dict[tuple[Any, Any], str]]:
    """Turn a shape-propagated fx graph into the arguments of ``draw_graph``.

    Every operation becomes an op node; inputs and parameters become value nodes showing
    their shape (and their contents where ``values`` has them). Python numbers used as
    operands (the ``10`` of ``10 * x``) become constant value nodes. The result of each
    operation is either a value node of its own or, with ``tensors_on_edges``, a label with
    its shape on the edges that carry it (a more compact drawing of long chains).

    Args:
        gm: the traced module, after ``ShapeProp``.
        values: tensor contents by fx node name, shown in the forward colour.
        batch: a symbol for the batch dimension (e.g. ``"N"``), replacing the first dimension.
        titles: display names by fx node name (``"output"`` names the graph's result).
        tensors_on_edges: label edges with the shapes of intermediate results instead of
            drawing a value node for each.

    Returns:
        ``(nodes, edges, edge_labels)``.
    """
    build = _FxDrawing(values or {}, titles or {}, batch, tensors_on_edges)
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "get_attr"):
            build.leaf(node)
        elif node.op in ("call_function", "call_method", "call_module"):
            build.operation(node)
        elif node.op == "output" and tensors_on_edges:
            build.output(node)
    return build.nodes, build.edges, build.labels


class _FxDrawing:
    """The nodes, edges and edge labels of `fx_to_graph`, built one fx node at a time."""

    def __init__(
        self,
        values: dict[str, torch.Tensor],
        titles: dict[str, str],
        batch: str | None,
        tensors_on_edges: bool,
    ) -> None:
        self.values, self.titles, self.batch = values, titles, batch
        self.tensors_on_edges = tensors_on_edges
        self.nodes: list[GraphNode] = []
        self.edges: list[tuple[Any, Any]] = []
        self.labels: dict[tuple[Any, Any], str] = {}
        self.tensor_of: dict[str, str] = {}  # fx node name -> key of the node its output leaves
        self.shape_of: dict[str, str] = {}  # fx node name -> shape text of its output

    def _value(self, node: fx.Node) -> str | None:
        return _tensor_text(self.values[node.name]) if node.name in self.values else None

    def leaf(self, node: fx.Node) -> None:
        """An input (placeholder) or a parameter (get_attr): a value node with its shape."""
        is_param = node.op == "get_attr"
        title = self.titles.get(node.name, str(node.target))
        shape = _shape_text(node, None if is_param else self.batch)
        value = self._value(node)
        note = str(node.target) if is_param else shape if value else None
        self.nodes.append(GraphNode(key=node.name, title=title, value=value or shape, note=note))
        self.tensor_of[node.name] = node.name

    def operation(self, node: fx.Node) -> None:
        """An op node, its operands' edges (Python numbers as constants) and its result."""
        op_key = f"op:{node.name}"
        self.nodes.append(GraphNode(key=op_key, kind="op", title=_op_title(node)))
        for i, arg in enumerate(node.args):
            if isinstance(arg, fx.Node):
                edge = (self.tensor_of[arg.name], op_key)
                self.edges.append(edge)
                if self.tensors_on_edges and arg.name in self.shape_of:
                    self.labels[edge] = self.shape_of[arg.name]
            elif isinstance(arg, (int, float)) and node.op == "call_function":
                const_key = f"const:{node.name}:{i}"
                self.nodes.append(
                    GraphNode(key=const_key, title="", value=f"{arg:g}", note="constant")
                )
                self.edges.append((const_key, op_key))
        shape = _shape_text(node, self.batch)
        if self.tensors_on_edges:
            self.tensor_of[node.name] = op_key
            self.shape_of[node.name] = shape
            return
        out_key = f"out:{node.name}"
        value = self._value(node)
        title = self.titles.get(node.name, "")
        self.nodes.append(
            GraphNode(key=out_key, title=title, value=value or shape, note=shape if value else None)
        )
        self.edges.append((op_key, out_key))
        self.tensor_of[node.name] = out_key

    def output(self, node: fx.Node) -> None:
        """With shapes on edges, the graph's result still gets a node of its own."""
        (result,) = [a for a in node.args if isinstance(a, fx.Node)] or [None]
        if result is not None and result.name in self.shape_of:
            out_key = f"out:{result.name}"
            title = self.titles.get("output", "output")
            self.nodes.append(GraphNode(key=out_key, title=title, value=self.shape_of[result.name]))
            self.edges.append((self.tensor_of[result.name], out_key))


@figure("graph_matmul_product", chapter="computational-graphs", params={})
def graph_matmul_product(ctx: FigureContext):
    """The graph of ``10 * (M1 @ M2)`` with M1 = [[3, 3]], M2 = [[2], [2]], captured by torch.fx.

    Numbers: ``matmul`` (the 1x1 product, 12), ``product`` (120), ``n_ops`` (2),
    ``n_tensors`` (the tensors on the edges: M1, M2, M1 @ M2, the product), ``n_constants``
    (the Python number 10, an argument of the multiplication).
    """
    m1 = torch.tensor([[3.0, 3.0]])
    m2 = torch.tensor([[2.0], [2.0]])
    gm = fx.symbolic_trace(product)
    ShapeProp(gm).propagate(m1, m2)
    values = {"m1": m1, "m2": m2}
    for node in gm.graph.nodes:  # run the captured graph once more to read every result
        if node.op == "call_function":
            args = [values[a.name] if isinstance(a, fx.Node) else a for a in node.args]
            values[node.name] = node.target(*args)
    out = values["mul"]
    assert float(out) == float(product(m1, m2))
    # the constant factor, as the captured graph recorded it (the 10 in ``product``)
    (scale,) = [
        a
        for a in gm.graph.find_nodes(op="call_function", target=operator.mul)[0].args
        if isinstance(a, (int, float))
    ]
    nodes, edges, _ = fx_to_graph(
        gm, values=values, titles={"m1": "M1", "m2": "M2", "matmul": "M1 @ M2", "mul": "product"}
    )
    fig = draw_graph(nodes, edges, scale=0.9)
    n_ops = sum(1 for n in nodes if n.kind == "op")
    n_constants = sum(1 for n in nodes if n.note == "constant")
    return fig, {
        "matmul": float(values["matmul"]),
        "product": float(out),
        "scale": float(scale),
        "n_ops": n_ops,
        "n_tensors": len(nodes) - n_ops - n_constants,
        "n_constants": n_constants,
    }


@figure("graph_mlp_captured", chapter="computational-graphs", params={"p_drop": 0.2})
def graph_mlp_captured(ctx: FigureContext, p_drop: float):
    """The MNIST-style MLP as torch.fx captures it, traced down to its tensor operations.

    Drawn at page width: the chain wraps into two rows (layer 1, then layer 2), so the text
    keeps its size.

    Numbers: ``n_ops`` (operations in the captured graph), ``n_parameter_tensors``,
    ``n_parameters`` (407,050), ``n_module_nodes`` (nodes of the default, layer-level trace),
    ``hidden`` (512), ``classes`` (10).
    """
    torch.manual_seed(ctx.seed)
    model = mnist_mlp(p_drop)
    gm = capture_op_level(model, torch.zeros(1, 28, 28))
    # W1, b1, W2, b2 in the order the layers use them; the note keeps PyTorch's own name
    params = [n for n in gm.graph.nodes if n.op == "get_attr"]
    titles = {
        n.name: f"{'W' if str(n.target).endswith('weight') else 'b'}{i // 2 + 1}"
        for i, n in enumerate(params)
    }
    titles["input_1"] = "images"
    titles["output"] = "probabilities"
    nodes, edges, labels = fx_to_graph(gm, batch="N", titles=titles, tensors_on_edges=True)
    fig = draw_graph(nodes, edges, edge_labels=labels, scale=0.8, max_width=PAGE_WIDTH)
    module_level = fx.symbolic_trace(model)
    n_ops = sum(1 for n in nodes if n.kind == "op")
    return fig, {
        "n_ops": n_ops,
        "n_parameter_tensors": sum(1 for n in gm.graph.nodes if n.op == "get_attr"),
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "n_module_nodes": len(list(module_level.graph.nodes)),
        "hidden": model[1].out_features,
        "classes": model[4].out_features,
        "p_drop": p_drop,
    }
