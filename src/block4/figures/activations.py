"""Figures of the chapter "Activation functions".

Every derivative is computed by ``torch.autograd`` (never written out by hand), and every
training curve comes from a Lightning run of :class:`block4.modules.Classifier` on the digits
data set (:class:`block4.data.DigitsDataModule`).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from block4.figures.registry import FigureContext, figure
from block4.figures.style import PALETTE, subplots

#: The activations compared in the chapter, with the colour each keeps on every figure.
ACTIVATION_COLORS = {
    "sigmoid": PALETTE[0],
    "tanh": PALETTE[1],
    "relu": PALETTE[2],
    "leaky_relu": PALETTE[3],
    "gelu": PALETTE[4],
}

#: Pretty names for legends.
ACTIVATION_LABELS = {
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "relu": "ReLU",
    "leaky_relu": "leaky ReLU (0.01)",
    "gelu": "GELU",
}

_FUNCTIONS = {
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
    "leaky_relu": lambda x: F.leaky_relu(x, negative_slope=0.01),
    "gelu": F.gelu,
}


def activation_and_derivative(name: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(f(x), f'(x))`` for the activation ``name``, the derivative from autograd.

    The derivative is what backpropagation multiplies the incoming gradient with, so it is
    computed exactly the way training computes it: ``f(x).sum().backward()`` leaves
    \\( \\partial f(x_i) / \\partial x_i \\) in ``x.grad`` (each output depends only on its own
    input). At a kink (ReLU at 0) this returns PyTorch's convention.

    Args:
        name: one of ``sigmoid, tanh, relu, leaky_relu, gelu``.
        x: points at which to evaluate (any shape, floating point).

    Raises:
        ValueError: for an unknown activation name.
    """
    if name not in _FUNCTIONS:
        raise ValueError(
            f"activation {name!r} is not supported; choose one of: {', '.join(_FUNCTIONS)}"
        )
    x = x.detach().clone().to(torch.float64).requires_grad_(True)
    y = _FUNCTIONS[name](x)
    y.sum().backward()
    return y.detach(), x.grad.detach()


def _key(x: float) -> str:
    """``-10.0 -> "m10"``, ``0.0 -> "0"``, ``10.0 -> "10"``: manifest-friendly key parts."""
    return ("m" if x < 0 else "") + f"{abs(x):g}".replace(".", "p")


@figure(
    "activation_functions",
    chapter="activations",
    params={"x_zoom": 5.0, "x_max": 10.0, "points": 801, "probes": [-10.0, 0.0, 10.0]},
)
def activation_functions(
    ctx: FigureContext, x_zoom: float, x_max: float, points: int, probes: list[float]
):
    """Five activations, their derivatives (from autograd), and the derivatives on a log scale.

    Numbers: ``d_<act>_at_<x>`` for every activation and probe point (``m10`` = -10), e.g.
    ``d_sigmoid_at_0`` = 0.25 and ``d_sigmoid_at_m10`` ~ 4.5e-5; ``relu_grad_at_0`` is
    PyTorch's convention for the kink; ``sigmoid_max_derivative`` is the largest slope the
    sigmoid ever has (so backprop through n sigmoid layers shrinks a gradient by at least 4^n).
    """
    x = torch.linspace(-x_zoom, x_zoom, points, dtype=torch.float64)
    x_wide = torch.linspace(-x_max, x_max, points, dtype=torch.float64)
    probe_x = torch.tensor(probes, dtype=torch.float64)
    fig, (ax_f, ax_d, ax_log) = subplots(1, 3, width=10.5, height=3.6)
    numbers: dict[str, float] = {}
    for name, color in ACTIVATION_COLORS.items():
        y, dy = activation_and_derivative(name, x)
        label = ACTIVATION_LABELS[name]
        style = "--" if name == "leaky_relu" else "-"
        ax_f.plot(x, y, style, color=color, label=label)
        ax_d.plot(x, dy, style, color=color, label=label)
        _, d_probe = activation_and_derivative(name, probe_x)
        for px, dp in zip(probes, d_probe.tolist(), strict=True):
            numbers[f"d_{name}_at_{_key(px)}"] = float(dp)
        if name in ("sigmoid", "tanh"):
            _, dy_wide = activation_and_derivative(name, x_wide)
            ax_log.semilogy(x_wide, dy_wide, color=color, label=label)
            ax_log.plot(probe_x, d_probe, "o", color=color, markersize=4)
            for px, dp in zip(probes, d_probe.tolist(), strict=True):
                if px >= 0:
                    ax_log.annotate(
                        f"{dp:.2g}",
                        xy=(px, dp),
                        xytext=(-4 if px > 0 else 6, 0),
                        textcoords="offset points",
                        ha="right" if px > 0 else "left",
                        va="center",
                        color=color,
                        fontsize=8,
                    )
    numbers["sigmoid_max_derivative"] = float(activation_and_derivative("sigmoid", x)[1].max())
    numbers["relu_grad_at_0"] = numbers["d_relu_at_0"]
    numbers["sigmoid_ratio_0_over_10"] = numbers["d_sigmoid_at_0"] / numbers["d_sigmoid_at_10"]

    ax_f.set(title="activation f(x)", xlabel="pre-activation x", ylabel="f(x)", ylim=(-1.2, 2.5))
    ax_d.set(title="local gradient f'(x), from autograd", xlabel="pre-activation x")
    ax_d.set(ylabel="f'(x)", ylim=(-0.15, 1.2))
    ax_log.set(
        title="saturation: f'(x), log scale",
        xlabel="pre-activation x",
        ylabel="f'(x) (log scale)",
        ylim=(1e-9, 5),
    )
    ax_f.legend(loc="upper left")
    ax_log.legend(loc="lower center")
    return fig, numbers
