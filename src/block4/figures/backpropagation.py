"""Figures of the chapter "Backpropagation and the chain rule".

Every number on these figures is computed by ``block4.autograd`` (and the tests check that
engine against ``torch.autograd``). Nothing trains, so every profile makes them instantly.
"""

from __future__ import annotations

import matplotlib.pyplot as plt

from block4.autograd import Value, draw, trace
from block4.figures.registry import FigureContext, figure
from block4.style import ROLE, subplots


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
    fig, (ax_f, ax_b) = subplots(2, 1, width=6.0, height=4.9)
    draw(v["f"], ax=ax_f, show_grad=False, title="forward pass: values flow left to right")
    draw(v["f"], ax=ax_b, title="backward pass: gradients df/d(node) flow right to left")
    # The edges keep their forward direction; this arrow shows which way the gradients travel.
    ax_b.annotate(
        "",
        xy=(0.08, -0.04),
        xytext=(0.92, -0.04),
        xycoords="axes fraction",
        arrowprops={"arrowstyle": "-|>", "color": ROLE["backward"], "lw": 1.6},
    )
    ax_b.text(
        0.5,
        -0.07,
        "gradient = local gradient × gradient arriving from the right",
        transform=ax_b.transAxes,
        ha="center",
        va="top",
        fontsize=8,
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
    fig, axes = subplots(1, 3, width=8.4, height=2.2)
    numbers: dict[str, float] = {"x": x, "y": y, "incoming": incoming}
    gates = {
        "add": ("add distributes", lambda a, b: a + b),
        "mul": ("multiply switches", lambda a, b: a * b),
        "max": ("max routes", lambda a, b: a.max(b)),
    }
    for ax, (name, (title, gate)) in zip(axes, gates.items(), strict=True):
        a, b = Value(x, "x"), Value(y, "y")
        out = gate(a, b)
        out.backward(incoming)  # the gradient arriving from the rest of the network
        draw(out, ax=ax, title=title)
        numbers |= {f"{name}_out": out.data, f"{name}_dx": a.grad, f"{name}_dy": b.grad}
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
        (f_gate, "(a) the neuron with one sigmoid gate σ"),
        (f_inside, "(b) inside the gate: σ(s) = 1 / (1 + exp(−s)) from elementary operations"),
    ]
    fig, axes = _stacked_panels(panels, fmt="{:.2f}", grad_prefix="")
    key = "each box: value (forward, blue) over gradient ∂f/∂node (backward, orange)"
    fig.text(0.5, 0.005, key, ha="center", va="bottom", fontsize=9, color="#222222")
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


def _stacked_panels(panels: list[tuple[Value, str]], fmt: str, grad_prefix: str = "grad "):
    """Graphs one above the other, each at its natural size (text never outgrows its box)."""
    sizes = []
    for root, title in panels:
        probe = draw(root, fmt=fmt, grad_prefix=grad_prefix, title=title)
        sizes.append(probe.get_size_inches())
        plt.close(probe)
    width = max(w for w, _ in sizes)
    heights = [h for _, h in sizes]
    fig, axes = subplots(
        len(panels),
        1,
        width=width,
        height=sum(heights) + 0.25,
        gridspec_kw={"height_ratios": heights},
    )
    for ax, (root, title) in zip(axes, panels, strict=True):
        draw(root, ax=ax, fmt=fmt, grad_prefix=grad_prefix, title=title)
    return fig, axes


def _nodes(root: Value) -> list[Value]:
    return trace(root)[0]
