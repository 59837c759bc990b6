"""Figures of the chapter "Activation functions": the functions and their gradients.

Every derivative is computed by ``torch.autograd`` (never written out by hand), and every
gradient comes from a Lightning run of `block4.modules.Classifier` on the digits data
set (`block4.data.DigitsDataModule`). Networks of one shape (seeds, inits) are trained
as one stack by `block4.training.train_members`; the ``*_runs`` functions hold that
expensive part and return plain data, the figure functions only plot and summarise it. How
the activations train (ReLU vs tanh, dead ReLUs) is in
`block4.figures.activation_training`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from block4.callbacks import ActivationStats, GradientFlowMonitor
from block4.figures.registry import FigureContext, figure
from block4.style import ACTIVATION_COLORS, ROLE, log_decade_labels, subplots, wide_bottom_row
from block4.training import (
    ACTIVATION_LABELS,
    activation_and_derivative,
    comparison_seeds,
    digits,
    geometric_band,
    layer_grad_norms,
    put_summary,
    steps_per_epoch,
    train_members,
)


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
    fig, axes = subplots(2, 2, width=6.9, height=6.0)
    ax_f, ax_d = axes[0]
    ax_log = wide_bottom_row(fig, axes)
    numbers: dict[str, float] = {}
    for name, color in ACTIVATION_COLORS.items():
        y, dy = activation_and_derivative(name, x)
        label = ACTIVATION_LABELS[name]
        style = "--" if name == "leaky_relu" else "-"
        ax_f.plot(x, y, style, color=color, label=label)
        ax_d.plot(x, dy, style, color=color)
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
                        f"{label}: {dp:.2g}",
                        xy=(px, dp),
                        xytext=(-6 if px > 0 else 8, 0),
                        textcoords="offset points",
                        ha="right" if px > 0 else "left",
                        va="center",
                        color=color,
                        fontsize=9,
                    )
    numbers["sigmoid_max_derivative"] = float(activation_and_derivative("sigmoid", x)[1].max())
    numbers["relu_grad_at_0"] = numbers["d_relu_at_0"]
    numbers["sigmoid_ratio_0_over_10"] = numbers["d_sigmoid_at_0"] / numbers["d_sigmoid_at_10"]

    ax_f.set(title="activation f(x)", xlabel="pre-activation x", ylabel="f(x)", ylim=(-1.2, 2.5))
    ax_d.set(title="local gradient f'(x) (autograd)", xlabel="pre-activation x")
    ax_d.set(ylabel="f'(x)", ylim=(-0.15, 1.2))
    ax_log.set(
        title="saturation: f'(x) of sigmoid and tanh, log scale",
        xlabel="pre-activation x",
        ylabel="f'(x) (log scale)",
        ylim=(1e-9, 5),
    )
    log_decade_labels(ax_log)
    fig.legend(loc="outside upper center", ncol=5, handlelength=1.6, columnspacing=1.0)
    return fig, numbers


#: Activations of the deep-network experiments (leaky ReLU behaves like ReLU there).
DEEP_ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "gelu")
#: Those drawn: leaky ReLU's curves lie on top of ReLU's (its numbers are in the manifest).
PLOTTED_DEEP_ACTIVATIONS = ("sigmoid", "tanh", "relu", "gelu")
INIT_LABELS = {"default": "PyTorch default init", "kaiming": "Kaiming (He) init"}


# --8<-- [start:gradient_flow]
def activation_gradient_flow_runs(
    ctx: FigureContext,
    *,
    activations: Sequence[str],
    inits: Sequence[str],
    seeds: Sequence[int],
    epochs: int,
    **hparams: Any,
) -> dict[str, dict[str, dict[str, list]]]:
    """Per-layer gradient norms at init and after training, for every activation and init.

    One stack per activation: its members are every init x seed (member ``i * S + s`` has
    ``inits[i]`` and ``seeds[s]``; a seed fixes the batch order for both inits).

    Returns:
        ``{act: {init: {"at_init": [[norm per layer] per seed], "trained": [...],
        "signal": [...], "error": [final training error per seed]}}}``; layers input side
        first, the output layer last; ``trained`` is the geometric mean over the last epoch's
        steps; ``signal`` is the forward signal at step 0: the root mean square of the last
        hidden layer's outputs over that of the first's, on the member's first batch.
    """
    data = digits(ctx, seeds[0])
    data.setup()
    n_steps = steps_per_epoch(data)
    last_epoch = range((epochs - 1) * n_steps, epochs * n_steps)
    member_inits = [init for init in inits for _ in seeds]
    member_seeds = [seed for _ in inits for seed in seeds]
    out: dict[str, dict[str, dict[str, list]]] = {}
    for act in activations:
        monitor = GradientFlowMonitor(steps=[0, *last_epoch], log=False)
        stats = ActivationStats(steps=[0], bins=1, log=False)
        runs = train_members(
            ctx, epochs=epochs, seeds=member_seeds, data=data, callbacks=[monitor, stats],
            activation=act, init=member_inits, **hparams,
        )  # fmt: skip
        single = runs.members == 1
        errors = runs.errors()
        signal = [_forward_signal(stats, None if single else k) for k in range(runs.members)]
        out[act] = {}
        for i, init in enumerate(inits):
            ks = range(i * len(seeds), (i + 1) * len(seeds))
            out[act][init] = {
                "at_init": [layer_grad_norms(monitor, [0], None if single else k) for k in ks],
                "trained": [
                    layer_grad_norms(monitor, last_epoch, None if single else k) for k in ks
                ],
                "signal": [signal[k] for k in ks],
                "error": [errors[k] for k in ks],
            }
    return out


def _forward_signal(stats: ActivationStats, member: int | None) -> float:
    """Root mean square of the last hidden layer's outputs over the first's, at step 0."""
    rows = [r for r in stats.table if r["step"] == 0 and r.get("member") == member]
    rms = {r["depth_index"]: math.hypot(r["post_mean"], r["post_std"]) for r in rows}
    return rms[max(rms)] / rms[0]


# --8<-- [end:gradient_flow]


def _flow_numbers(
    numbers: dict[str, Any], key: str, runs: dict[str, list], learning_below: float
) -> list[float]:
    """`activation_gradient_flow`'s numbers of one activation and init (``key``); returns
    the step-0 first/last ratio of every seed."""
    at_init = [r[0] / r[-1] for r in runs["at_init"]]
    put_summary(numbers, f"ratio_init_{key}", at_init, geometric=True)
    trained = [r[0] / r[-1] for r in runs["trained"]]
    put_summary(numbers, f"ratio_trained_{key}", trained, geometric=True)
    put_summary(numbers, f"signal_{key}", runs["signal"], geometric=True)
    put_summary(numbers, f"error_{key}", runs["error"])
    numbers[f"learning_{key}"] = sum(e < learning_below for e in runs["error"])
    return at_init


@figure(
    "activation_gradient_flow",
    chapter="activations",
    params={
        "depth": 20, "width": 32, "lr": 0.01, "inits": ["default", "kaiming"],
        "learning_below": 0.85,
    },
)  # fmt: skip
def activation_gradient_flow(
    ctx: FigureContext, depth: int, width: int, lr: float, inits: list, learning_below: float
):
    """Per-layer weight-gradient norm of a deep MLP, at init and after training, per activation.

    One panel per initialisation. Solid: the gradient at the initial weights (step 0);
    dashed: geometric mean over the last training epoch; lines are geometric means over the
    seeds, bands their min-max. Layer ``depth + 1`` is the output layer. Leaky ReLU is
    trained and measured too but not drawn: its curves lie on ReLU's.

    Numbers (``<act>_<init>`` for each activation and init), each with ``_min``/``_max`` over
    seeds: ``ratio_init_<act>_<init>`` = |grad block0| / |grad head| at step 0 (geometric
    mean), ``ratio_trained_<act>_<init>`` = the same after training,
    ``signal_<act>_<init>`` = the forward signal at step 0 (root mean square of the last
    hidden layer's outputs over the first's; geometric mean); ``error_<act>_<init>``
    = final training error (mean; also ``_sd``), ``learning_<act>_<init>`` = how many seeds
    end below ``learning_below`` (predicting one class for every digit errs on about 0.9 of
    them: these have left chance level); ``ratio_init_non_sigmoid_<init>_min``/``_max`` = the
    smallest and largest step-0 ratio of any seed of tanh, ReLU, leaky ReLU and GELU; plus
    ``epochs``, ``depth``, ``layers`` (``depth + 1``, with the output layer), ``width``,
    ``lr``, ``seeds``, ``learning_below``.
    """
    epochs = ctx.pick(smoke=1, quick=1, full=5)
    seeds = comparison_seeds(ctx)
    data = ctx.compute(
        activation_gradient_flow_runs, activations=list(DEEP_ACTIVATIONS), inits=list(inits),
        seeds=seeds, epochs=epochs, depth=depth, width=width, lr=lr,
    )  # fmt: skip
    numbers: dict[str, Any] = {
        "epochs": epochs, "depth": depth, "layers": depth + 1, "width": width, "lr": lr,
        "seeds": len(seeds), "learning_below": learning_below,
    }  # fmt: skip
    fig, axes = subplots(len(inits), 1, width=6.9, height=2.9 * len(inits) + 0.8, sharex=True)
    axes = [axes] if len(inits) == 1 else list(axes)
    layers = list(range(1, depth + 2))
    for ax, init in zip(axes, inits, strict=True):
        rest: list[float] = []
        for act in DEEP_ACTIVATIONS:
            runs = data[act][init]
            if act in PLOTTED_DEEP_ACTIVATIONS:
                color = ACTIVATION_COLORS[act]
                for curves, style in ((runs["at_init"], "-"), (runs["trained"], "--")):
                    mean, low, high = geometric_band(curves)
                    ax.semilogy(layers, mean, style, color=color, marker="o", markersize=2.5)
                    if len(curves) > 1:
                        ax.fill_between(layers, low, high, color=color, alpha=0.15, linewidth=0)
            ratios = _flow_numbers(numbers, f"{act}_{init}", runs, learning_below)
            if act != "sigmoid":  # every seed of the activations an init is meant for
                rest.extend(ratios)
        numbers[f"ratio_init_non_sigmoid_{init}_min"] = min(rest)
        numbers[f"ratio_init_non_sigmoid_{init}_max"] = max(rest)
        ax.set(title=f"{depth}-layer MLP, {INIT_LABELS.get(init, init)}")
        ax.set_ylabel("‖∂loss/∂W‖ (log)")
    log_decade_labels(*axes)
    axes[-1].set_xlabel(f"layer (1 = input side, {depth + 1} = output)")
    axes[-1].set_xticks(sorted({1, *range(5, depth + 1, 5), depth + 1}))
    for act in PLOTTED_DEEP_ACTIVATIONS:
        axes[0].plot([], [], "-", color=ACTIVATION_COLORS[act], label=ACTIVATION_LABELS[act])
    axes[0].plot([], [], "-", color=ROLE["truth"], label="at init (step 0)")
    axes[0].plot([], [], "--", color=ROLE["truth"], label=f"after {epochs} epochs")
    band = f"geometric mean of {len(seeds)} seeds, band min-max" if len(seeds) > 1 else "one seed"
    fig.legend(loc="outside upper center", ncol=3, title=band, columnspacing=1.2)
    return fig, numbers
