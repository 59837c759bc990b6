"""Figures of the chapters "Computational graphs" and "Backpropagation", and their examples."""

from __future__ import annotations

import io
import runpy
import subprocess
import sys
from contextlib import redirect_stdout

import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.text import Text

from block4.figures import backpropagation as bp
from block4.figures import computational_graphs as cg
from block4.figures.registry import FigureContext
from block4.graph_drawing import PAGE_WIDTH


@pytest.fixture
def ctx() -> FigureContext:
    return FigureContext(profile="smoke")


def texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def assert_readable_at_page_width(fig) -> None:
    """At most PAGE_WIDTH wide, every text (titles, keys, node text, labels) at least 9 pt."""
    assert fig.get_size_inches()[0] <= PAGE_WIDTH
    sizes = {t.get_text(): t.get_fontsize() for t in fig.findobj(Text) if t.get_text().strip()}
    small = {text: size for text, size in sizes.items() if size < 9}
    assert sizes and not small


GRAPH_FIGURES = [
    (cg.graph_matmul_product, {}),
    (cg.graph_mlp_captured, {"p_drop": 0.2}),
    (bp.backprop_worked_example, {"x": -2.0, "y": 5.0, "z": -4.0}),
    (bp.backprop_patterns, {"x": 3.0, "y": -1.0, "incoming": 2.0}),
    (bp.backprop_sigmoid_gate, {"w0": 2.0, "x0": -1.0, "w1": -3.0, "x1": -2.0, "w2": -3.0}),
]


@pytest.mark.parametrize(
    ("make", "params"), GRAPH_FIGURES, ids=lambda v: getattr(v, "__name__", "")
)
def test_graph_figures_are_readable_at_page_width(ctx: FigureContext, make, params) -> None:
    fig, _ = make(ctx, **params)
    assert_readable_at_page_width(fig)
    plt.close(fig)


def test_matmul_product_graph(ctx: FigureContext) -> None:
    fig, numbers = cg.graph_matmul_product(ctx)
    assert numbers["matmul"] == 12.0 and numbers["product"] == 120.0
    assert numbers["scale"] == 10.0  # read from the captured graph, not typed
    assert numbers["n_ops"] == 2 and numbers["n_tensors"] == 4 and numbers["n_constants"] == 1
    shown = texts(fig)
    assert {"matmul", "×", "[[3, 3]]", "[[2], [2]]", "[[12]]", "[[120]]", "10"} <= set(shown)
    plt.close(fig)


def test_mlp_graph_is_captured_op_by_op(ctx: FigureContext) -> None:
    fig, numbers = cg.graph_mlp_captured(ctx, p_drop=0.2)
    assert numbers["n_parameters"] == 784 * 512 + 512 + 512 * 10 + 10
    assert numbers["n_ops"] == 6  # flatten, linear, relu, dropout, linear, softmax
    assert numbers["n_parameter_tensors"] == 4
    assert (numbers["hidden"], numbers["classes"]) == (512, 10)
    assert numbers["n_module_nodes"] == 8  # input, six layers, output
    shown = set(texts(fig))
    assert {"flatten", "linear", "ReLU", "dropout\np=0.2", "softmax"} <= shown
    assert {"N×28×28", "N×784", "N×512", "N×10", "512×784", "W1", "b2"} <= shown
    # too long for one row at page width: layer 2 (from dropout on) is a second row
    at = {t.get_text(): t.get_position() for t in fig.axes[0].texts}
    assert at["dropout\np=0.2"][1] < at["ReLU"][1] and at["dropout\np=0.2"][0] < at["ReLU"][0]
    assert at["softmax"][1] == at["dropout\np=0.2"][1]
    plt.close(fig)


def test_captured_graph_computes_what_the_model_computes() -> None:
    torch.manual_seed(0)
    model = cg.mnist_mlp().eval()
    x = torch.rand(3, 28, 28)
    gm = cg.capture_op_level(model, x)
    assert torch.equal(gm(x), model(x))


def test_worked_example_numbers(ctx: FigureContext) -> None:
    fig, n = bp.backprop_worked_example(ctx, x=-2.0, y=5.0, z=-4.0)
    assert (n["q"], n["f"]) == (3.0, -12.0)
    assert (n["df_dx"], n["df_dy"], n["df_dz"], n["df_dq"]) == (-4.0, -4.0, 3.0, -4.0)
    # the same numbers from torch.autograd
    x, y, z = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (-2.0, 5.0, -4.0))
    ((x + y) * z).backward()
    assert (float(x.grad), float(y.grad), float(z.grad)) == (n["df_dx"], n["df_dy"], n["df_dz"])
    shown = texts(fig)
    assert shown.count("grad -4") == 3 and "grad 3" in shown
    plt.close(fig)


def test_patterns(ctx: FigureContext) -> None:
    fig, n = bp.backprop_patterns(ctx, x=3.0, y=-1.0, incoming=2.0)
    assert (n["add_dx"], n["add_dy"]) == (2.0, 2.0)  # distributes
    assert (n["mul_dx"], n["mul_dy"]) == (-2.0, 6.0)  # switches: y * 2, x * 2
    assert (n["max_dx"], n["max_dy"]) == (2.0, 0.0)  # routes
    assert [ax.get_title() for ax in fig.axes] == [
        "add distributes",
        "multiply switches",
        "max routes",
    ]
    plt.close(fig)


def test_sigmoid_gate_matches_torch(ctx: FigureContext) -> None:
    args = {"w0": 2.0, "x0": -1.0, "w1": -3.0, "x1": -2.0, "w2": -3.0}
    fig, n = bp.backprop_sigmoid_gate(ctx, **args)
    leaves = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in args.items()}
    f = torch.sigmoid(leaves["w0"] * leaves["x0"] + leaves["w1"] * leaves["x1"] + leaves["w2"])
    f.backward()
    assert n["f"] == pytest.approx(float(f.detach()), rel=1e-12)
    for k, t in leaves.items():
        assert n[f"grad_{k}"] == pytest.approx(float(t.grad), rel=1e-12)
    assert n["max_abs_difference"] < 1e-12
    assert n["local"] == pytest.approx(n["f"] * (1 - n["f"]))
    assert n["local_from_elementary_ops"] == pytest.approx(n["local"], rel=1e-12)
    assert n["local_at_0"] == 0.25 and n["local_at_10"] < 1e-4
    assert (n["n_ops_elementary"], n["n_ops_gate"]) == (8, 5)
    assert len(fig.axes) == 2
    plt.close(fig)


def test_fx_printout_on_the_page_is_current(root) -> None:
    shown = (root / "docs/examples/graphs_fx_mlp.txt").read_text()
    recorded = shown.splitlines()[0].removeprefix("torch ")
    if recorded != torch.__version__.split("+")[0]:
        pytest.skip(f"printout recorded with torch {recorded}, running {torch.__version__}")
    printed = io.StringIO()
    with redirect_stdout(printed):
        example = runpy.run_path(str(root / "docs/examples/graphs_fx_mlp.py"), run_name="example")
    assert example["snippet_file"](printed.getvalue()) == shown, (
        "refresh with: python docs/examples/graphs_fx_mlp.py --write"
    )


@pytest.mark.slow
def test_compile_example_prints_the_captured_graph(root) -> None:
    proc = subprocess.run(
        [sys.executable, str(root / "docs/examples/graphs_compile.py")],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("captured")
    ops = [line.split()[-1] for line in lines if line.startswith("    call_")]
    # the chapter says: the six operations of the network, once (the second call prints nothing)
    assert ops == ["flatten", "linear", "relu", "dropout", "linear", "softmax"]
    assert lines[-1].startswith("(64, 10) 1.0")
