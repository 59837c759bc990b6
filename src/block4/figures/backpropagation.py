"""Figures of the chapter "Backpropagation and the chain rule".

Every number on these figures is computed by ``block4.autograd`` (and the tests check that
engine against ``torch.autograd``). Nothing trains, so every profile makes them instantly.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch
from matplotlib.patches import FancyArrowPatch
from matplotlib.ticker import FuncFormatter, NullFormatter

from block4.autograd import Value, draw, trace
from block4.figures.registry import FigureContext, figure
from block4.graph_drawing import COLOURS, layout, value_graph
from block4.matrix_backprop import (
    MNIST_MLP_SIZES,
    activation_numbers_per_example,
    mlp_backward,
    mlp_forward,
    mlp_module,
    mlp_params,
    saved_tensor_bytes,
)
from block4.style import ROLE, context, subplots

#: Inches above a graph panel for its title, between two panels, and around the figure.
TITLE_ROOM, PANEL_GAP, FIGURE_MARGIN = 0.35, 0.25, 0.02
#: Font size of the keys and captions written under a graph figure (points).
KEY_SIZE = 9


# --8<-- [start:worked_example]
def worked_example(x: float, y: float, z: float) -> dict[str, Value]:
    """f(x, y, z) = (x + y) z, forward and backward, with every node named."""
    xv, yv, zv = Value(x, "x"), Value(y, "y"), Value(z, "z")
    q = xv + yv
    q.label = "q = x + y"
    f = q * zv
    f.label = "f = q z"
    f.backward()  # fills .grad of every node: df/dnode
    return {"x": xv, "y": yv, "z": zv, "q": q, "f": f}


# --8<-- [end:worked_example]


@figure(
    "backprop_worked_example",
    chapter="backpropagation",
    params={"x": -2.0, "y": 5.0, "z": -4.0},
)
def backprop_worked_example(ctx: FigureContext, x: float, y: float, z: float):
    """f(x, y, z) = (x + y) z: forward values (top) and the gradients backpropagation adds.

    Numbers: the inputs ``x``, ``y``, ``z``; ``q`` and ``f`` (forward); ``df_dq``, ``df_dz``,
    ``df_dx``, ``df_dy`` (backward); the local gradients ``dq_dx``, ``dq_dy`` (both 1) and
    ``df_dq_local`` (= z).
    """
    v = worked_example(x, y, z)
    footer = 0.5  # inches under the graphs for the backward arrow and its caption
    fig, (ax_f, ax_b) = _graph_grid(
        [
            (v["f"], "forward pass: values flow left to right", {"show_grad": False}),
            (v["f"], "backward pass: gradients df/d(node) flow right to left", {}),
        ],
        footer=footer,
    )
    height = fig.get_size_inches()[1]
    # The edges keep their forward direction; this arrow shows which way the gradients travel.
    arrow_y = (footer - 0.12) / height
    fig.add_artist(
        FancyArrowPatch(
            (0.92, arrow_y),
            (0.08, arrow_y),
            transform=fig.transFigure,
            arrowstyle="-|>",
            mutation_scale=12,
            color=ROLE["backward"],
            lw=1.6,
        )
    )
    fig.text(
        0.5,
        FIGURE_MARGIN / height,
        "gradient = local gradient × gradient arriving from the right",
        ha="center",
        va="bottom",
        fontsize=KEY_SIZE,
        color=ROLE["backward"],
    )
    # The local gradients of q = x + y, from the engine: backpropagate from q alone.
    xl, yl = Value(x), Value(y)
    (xl + yl).backward()
    numbers = {
        "x": x,
        "y": y,
        "z": z,
        "q": v["q"].data,
        "f": v["f"].data,
        "df_df": v["f"].grad,
        "df_dq": v["q"].grad,
        "df_dz": v["z"].grad,
        "df_dx": v["x"].grad,
        "df_dy": v["y"].grad,
        "dq_dx": xl.grad,
        "dq_dy": yl.grad,
        "df_dq_local": v["z"].data,
    }
    return fig, numbers


@figure(
    "backprop_patterns",
    chapter="backpropagation",
    params={"x": 3.0, "y": -1.0, "incoming": 2.0},
)
def backprop_patterns(ctx: FigureContext, x: float, y: float, incoming: float):
    """The three gates every network is full of, each receiving the same incoming gradient.

    Numbers: ``x``, ``y``, ``incoming`` and, for ``add``, ``mul`` and ``max``, the gradients
    ``<gate>_dx``, ``<gate>_dy`` and the output ``<gate>_out``.
    """
    numbers: dict[str, float] = {"x": x, "y": y, "incoming": incoming}
    gates = {
        "add": ("add distributes", lambda a, b: a + b),
        "mul": ("multiply switches", lambda a, b: a * b),
        "max": ("max routes", lambda a, b: a.max(b)),
    }
    panels = []
    for name, (title, gate) in gates.items():
        a, b = Value(x, "x"), Value(y, "y")
        out = gate(a, b)
        out.backward(incoming)  # the gradient arriving from the rest of the network
        panels.append((out, title, {}))
        numbers |= {f"{name}_out": out.data, f"{name}_dx": a.grad, f"{name}_dy": b.grad}
    # Without the "grad " prefix three graphs fit side by side at page width; a key says
    # which number is which.
    fig, _ = _graph_grid(panels, ncols=3, footer=0.3, fmt="{:.4g}", grad_prefix="")
    key = (
        f"each box: value (forward, blue) over gradient (backward, orange); "
        f"each output receives {incoming:g}"
    )
    fig.text(0.5, FIGURE_MARGIN / fig.get_size_inches()[1], key, ha="center", va="bottom",
             fontsize=KEY_SIZE, color=COLOURS["text"])  # fmt: skip
    return fig, numbers


# --8<-- [start:sigmoid_gate]
def sigmoid_neuron(w0, x0, w1, x1, w2, *, one_gate: bool):
    """f = sigmoid(w0 x0 + w1 x1 + w2): elementary ops, or one sigmoid gate."""
    values, names = (w0, x0, w1, x1, w2), ("w0", "x0", "w1", "x1", "w2")
    leaves = [Value(v, n) for v, n in zip(values, names, strict=True)]
    w0, x0, w1, x1, w2 = leaves
    s = w0 * x0 + w1 * x1 + w2
    f = s.sigmoid() if one_gate else 1 / (1 + (-s).exp())
    f.backward()
    return f, leaves


# --8<-- [end:sigmoid_gate]


@figure(
    "backprop_sigmoid_gate",
    chapter="backpropagation",
    params={"w0": 2.0, "x0": -1.0, "w1": -3.0, "x1": -2.0, "w2": -3.0},
)
def backprop_sigmoid_gate(
    ctx: FigureContext, w0: float, x0: float, w1: float, x1: float, w2: float
):
    """A sigmoid neuron with one sigmoid gate (a), and the gate's inside as elementary ops (b).

    Numbers: the five inputs; ``s`` (the pre-activation) and ``f``; ``local`` = f (1 - f), the
    sigmoid gate's local gradient, and ``local_from_elementary_ops``, the same backpropagated
    through panel (b); ``grad_<leaf>`` for the five leaves; ``max_abs_difference`` between
    them and the gradients of the whole neuron built from elementary operations;
    ``n_ops_elementary`` and ``n_ops_gate`` (operations in either neuron); the sigmoid's local
    gradient ``local_at_<x>`` at x = -10, 0, 10; ``best_case_10_layers`` (1/4 to the power 10).
    """
    args = (w0, x0, w1, x1, w2)
    f_ops, leaves_ops = sigmoid_neuron(*args, one_gate=False)
    f_gate, leaves_gate = sigmoid_neuron(*args, one_gate=True)
    # Inside the gate: the same sigmoid from elementary operations, fed by s alone.
    s = w0 * x0 + w1 * x1 + w2
    s_alone = Value(s, "s")
    f_inside = 1 / (1 + (-s_alone).exp())
    f_inside.backward()
    panels = [
        (f_gate, "(a) the neuron with one sigmoid gate σ", {}),
        (f_inside, "(b) inside the gate: σ(s) = 1 / (1 + exp(−s)) from elementary operations", {}),
    ]
    fig, axes = _graph_grid(panels, footer=0.3, fmt="{:.2f}", grad_prefix="")
    key = "each box: value (forward, blue) over gradient ∂f/∂node (backward, orange)"
    fig.text(0.5, FIGURE_MARGIN / fig.get_size_inches()[1], key, ha="center", va="bottom",
             fontsize=KEY_SIZE, color=COLOURS["text"])  # fmt: skip
    numbers: dict[str, float] = dict(w0=w0, x0=x0, w1=w1, x1=x1, w2=w2)
    numbers |= {"s": s, "f": f_gate.data, "local": f_gate.data * (1 - f_gate.data)}
    for leaf in leaves_gate:
        numbers[f"grad_{leaf.label}"] = leaf.grad
    numbers["max_abs_difference"] = max(
        abs(a.grad - b.grad) for a, b in zip(leaves_ops, leaves_gate, strict=True)
    )
    numbers["local_from_elementary_ops"] = s_alone.grad
    numbers["n_ops_elementary"] = sum(1 for n in _nodes(f_ops) if not n.is_leaf)
    numbers["n_ops_gate"] = sum(1 for n in _nodes(f_gate) if not n.is_leaf)
    for at, key in ((-10.0, "m10"), (0.0, "0"), (10.0, "10")):
        probe = Value(at)
        probe.sigmoid().backward()
        numbers[f"local_at_{key}"] = probe.grad
    # the best case through ten stacked sigmoids: the largest local gradient, ten times over
    numbers["best_case_10_layers"] = numbers["local_at_0"] ** 10
    return fig, numbers


def _graph_grid(
    panels: list[tuple[Value, str, dict]], *, ncols: int = 1, footer: float = 0.0, **options
):
    """Graphs in a grid of ``ncols`` columns, each drawn at its natural size.

    Every axes is exactly as large as its graph wants to be, so the text keeps the sizes of
    ``block4.graph_drawing`` (a layout engine would shrink the axes, and the text with them).
    ``panels`` are ``(root, title, options)``; ``options`` (and the shared ``**options``) go
    to ``draw`` (``show_grad``, default ``True``; ``fmt``; ``grad_prefix``). ``footer`` inches stay free under
    the grid for a key. Returns ``(fig, axes)``.
    """
    sizes, title_widths = [], []
    with context():
        probe = plt.figure()
        renderer = probe.canvas.get_renderer()
        for root, title, own in panels:
            kw = {"show_grad": True} | options | own
            plan = layout(*value_graph(*trace(root), **kw))
            left, right, bottom, top = plan.bounds
            sizes.append(((right - left) * plan.scale, (top - bottom) * plan.scale))
            text = probe.text(0, 0, title, fontsize=plt.rcParams["axes.titlesize"])
            title_widths.append(text.get_window_extent(renderer).width / probe.dpi)
        plt.close(probe)
    nrows = -(-len(panels) // ncols)
    cells = [(i // ncols, i % ncols) for i in range(len(panels))]
    col_w = [0.0] * ncols
    row_h = [0.0] * nrows
    for (r, c), (w, h), tw in zip(cells, sizes, title_widths, strict=True):
        col_w[c] = max(col_w[c], w, tw)
        row_h[r] = max(row_h[r], h + TITLE_ROOM)
    width = sum(col_w) + PANEL_GAP * (ncols - 1) + 2 * FIGURE_MARGIN
    height = sum(row_h) + PANEL_GAP * (nrows - 1) + footer + 2 * FIGURE_MARGIN
    with context():
        fig = plt.figure(figsize=(width, height))
    axes = []
    for (r, c), (w, h) in zip(cells, sizes, strict=True):
        cell_left = FIGURE_MARGIN + sum(col_w[:c]) + PANEL_GAP * c
        cell_top = FIGURE_MARGIN + sum(row_h[:r]) + PANEL_GAP * r + TITLE_ROOM
        x0 = cell_left + (col_w[c] - w) / 2
        y0 = height - cell_top - h - (row_h[r] - TITLE_ROOM - h) / 2
        axes.append(fig.add_axes((x0 / width, y0 / height, w / width, h / height)))
    for ax, (root, title, own) in zip(axes, panels, strict=True):
        draw(root, ax=ax, title=title, **({"show_grad": True} | options | own))
    return fig, axes


def _nodes(root: Value) -> list[Value]:
    return trace(root)[0]


# --- backprop with matrices -------------------------------------------------------------------


def _autograd_gradients(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor):
    """The reference: the same loss through the ``nn`` modules, differentiated by autograd."""
    images = images.clone().requires_grad_()
    model.zero_grad(set_to_none=True)
    p = model(images)
    loss = -p[torch.arange(len(labels)), labels].log().mean()
    loss.backward()
    grads = {name: t.grad for name, t in mlp_params(model).items()}
    grads["x"] = images.grad.reshape(len(images), -1)
    return loss.detach(), grads


def matrix_backprop_runs(
    ctx: FigureContext, *, batch_sizes: list[int], check_batch: int
) -> dict[str, object]:
    """The manual matrix backward checked against autograd, and the saved-activation memory.

    Returns ``{"check": {dtype: {"abs", "rel", "loss_diff"}}, "batch_sizes", "saved_bytes",
    "saved_bytes_with_loss", "parameter_bytes", "n_parameters"}``. ``abs`` is the largest
    absolute difference over every gradient entry; ``rel`` the largest of
    ``max|manual - autograd| / max|autograd|`` over the gradient tensors.
    """
    out: dict[str, object] = {"check": {}}
    gen = torch.Generator().manual_seed(ctx.seed)
    # random "images" with MNIST's shape and pixel range; no data set is needed for a check
    images = torch.rand(check_batch, 28, 28, generator=gen)
    labels = torch.randint(0, MNIST_MLP_SIZES[-1], (check_batch,), generator=gen)
    torch.manual_seed(ctx.seed)
    model32 = mlp_module()
    for dtype in (torch.float64, torch.float32):
        model = mlp_module().to(dtype)
        model.load_state_dict(model32.state_dict())
        x = images.to(dtype)
        params = {k: v.detach() for k, v in mlp_params(model).items()}
        loss, cache = mlp_forward(x, labels, params)
        manual = mlp_backward(cache, params)
        ref_loss, reference = _autograd_gradients(model, x, labels)
        diffs = {k: (manual[k] - reference[k]).abs().max().item() for k in reference}
        out["check"][str(dtype).removeprefix("torch.")] = {
            "abs": max(diffs.values()),
            "rel": max(diffs[k] / reference[k].abs().max().item() for k in reference),
            "loss_diff": abs(loss.item() - ref_loss.item()),
        }
    model = model32
    saved, with_loss = [], []
    for batch in batch_sizes:
        x = torch.rand(batch, 28, 28, generator=gen)
        y = torch.randint(0, MNIST_MLP_SIZES[-1], (batch,), generator=gen)

        def network(x=x):
            return model(x)

        def network_and_loss(x=x, y=y):
            return -model(x)[torch.arange(len(y)), y].log().mean()

        saved.append(saved_tensor_bytes(network, exclude=model.parameters())["activation_bytes"])
        with_loss.append(
            saved_tensor_bytes(network_and_loss, exclude=model.parameters())["activation_bytes"]
        )
    out["batch_sizes"] = list(batch_sizes)
    out["saved_bytes"] = saved
    out["saved_bytes_with_loss"] = with_loss
    out["n_parameters"] = sum(p.numel() for p in model.parameters())
    out["parameter_bytes"] = sum(p.numel() * p.element_size() for p in model.parameters())
    return out


def _bytes_label(value: float, _position: object = None) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:g} {unit}"
    return f"{value:g} B"


@figure(
    "matrix_backprop_memory",
    chapter="backpropagation",
    params={"max_batch": 1024, "check_batch": 64},
)
def matrix_backprop_memory(ctx: FigureContext, max_batch: int, check_batch: int):
    """Memory autograd keeps for the backward pass of the MNIST MLP, against the batch size.

    The MLP of the graphs chapter (784 -> 512 ReLUs -> 10 softmax) without dropout. Measured:
    the bytes of the distinct tensors autograd saves during a forward pass (parameters not
    counted), with ``torch.autograd.graph.saved_tensors_hooks``. Analytic: one float32 per
    layer boundary and example, 784 + 512 + 10 of them. The parameters' memory is the
    horizontal line.

    Numbers: ``worst_abs_float64`` / ``worst_rel_float64`` / ``worst_abs_float32`` /
    ``worst_rel_float32`` (manual matrix backward vs autograd, on ``check_batch`` random
    images), ``bytes_per_example`` (measured), ``analytic_bytes_per_example``,
    ``numbers_per_example``, ``measured_equals_analytic``, ``loss_bytes_per_example`` (what
    the loss adds: label indices and picked probabilities), ``parameter_bytes``,
    ``n_parameters``, ``crossover_batch`` (smallest batch whose saved activations exceed the
    parameters), ``max_batch``, ``max_batch_bytes``.
    """
    max_batch = ctx.pick(smoke=64, quick=max_batch, full=max_batch)
    batch_sizes = [2**i for i in range(max_batch.bit_length()) if 2**i <= max_batch]
    data = ctx.compute(matrix_backprop_runs, batch_sizes=batch_sizes, check_batch=check_batch)
    numbers_per_example = activation_numbers_per_example()
    per_example = 4 * numbers_per_example  # float32
    analytic = [per_example * b for b in batch_sizes]
    measured = data["saved_bytes"]
    params = data["parameter_bytes"]
    measured_per_example = measured[-1] / batch_sizes[-1]
    crossover = math.ceil(params / measured_per_example)  # the first batch above the line
    numbers: dict[str, object] = {
        "max_batch": max_batch,
        "check_batch": check_batch,
        "numbers_per_example": numbers_per_example,
        "analytic_bytes_per_example": per_example,
        "bytes_per_example": measured_per_example,
        "measured_equals_analytic": measured == analytic,
        "loss_bytes_per_example": (data["saved_bytes_with_loss"][-1] - measured[-1])
        / batch_sizes[-1],
        "parameter_bytes": params,
        "n_parameters": data["n_parameters"],
        "crossover_batch": crossover,
        "max_batch_bytes": measured[-1],
    }
    for dtype, check in data["check"].items():
        numbers[f"worst_abs_{dtype}"] = check["abs"]
        numbers[f"worst_rel_{dtype}"] = check["rel"]
        numbers[f"loss_diff_{dtype}"] = check["loss_diff"]

    fig, ax = subplots(1, 1, width=6.8, height=3.8)
    ax.loglog(batch_sizes, analytic, "-", color=ROLE["truth"], linewidth=3, alpha=0.6,
              label=f"analytic: batch × {numbers_per_example} floats × 4 B")  # fmt: skip
    ax.loglog(batch_sizes, measured, "o", color=ROLE["forward"], markersize=5,
              label="measured: tensors autograd saves")  # fmt: skip
    ax.axhline(params, color=ROLE["backward"], linestyle="--", linewidth=1.5,
               label=f"parameters: {data['n_parameters']:,} floats")  # fmt: skip
    ax.axvline(crossover, color=ROLE["highlight"], linestyle=":", linewidth=1.2,
               label=f"activations > parameters from batch {crossover}")  # fmt: skip
    ax.set(
        title="memory kept for the backward pass, MLP 784-512-10",
        xlabel="batch size (examples)",
        ylabel="bytes (log scale)",
    )
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_formatter(FuncFormatter(_bytes_label))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, borderaxespad=0)
    return fig, numbers
