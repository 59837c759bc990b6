"""Figures of the chapter "Activation functions".

Every derivative is computed by ``torch.autograd`` (never written out by hand), and every
training curve comes from a Lightning run of :class:`block4.modules.Classifier` on the digits
data set (:class:`block4.data.DigitsDataModule`). Networks of one shape (seeds, inits,
learning rates) are trained as one stack by :func:`block4.training.train_members`; the
``*_runs`` functions hold that expensive part and return plain data, the figure functions
only plot and summarise it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from matplotlib.ticker import FuncFormatter, NullFormatter

from block4.callbacks import DeadUnitTracker, GradientFlowMonitor
from block4.data import DigitsDataModule
from block4.figures.registry import FigureContext, figure
from block4.style import PALETTE, ROLE, subplots
from block4.training import (
    ACTIVATION_LABELS,
    activation_and_derivative,
    digits,
    geometric_band,
    layer_grad_norms,
    mean_band,
    put_summary,
    steps_per_epoch,
    train_members,
)

#: The activations compared in the chapter, with the colour each keeps on every figure.
ACTIVATION_COLORS = {
    "sigmoid": PALETTE[0],
    "tanh": PALETTE[1],
    "relu": PALETTE[2],
    "leaky_relu": PALETTE[3],
    "gelu": PALETTE[4],
}


def _key(x: float) -> str:
    """``-10.0 -> "m10"``, ``0.0 -> "0"``, ``10.0 -> "10"``: manifest-friendly key parts."""
    return ("m" if x < 0 else "") + f"{abs(x):g}".replace(".", "p")


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _decade(value: float, _position: object = None) -> str:
    """``1e-5 -> "10⁻⁵"`` in plain text (mathtext would draw the exponent at 70 % of the
    font size, too small to read at page width); "" between decades."""
    if value <= 0 or abs(math.log10(value) - round(math.log10(value))) > 1e-6:
        return ""
    exponent = round(math.log10(value))
    return {0: "1", 1: "10"}.get(exponent, "10" + str(exponent).translate(_SUPERSCRIPT))


def _log_labels(*axes: Any, axis: str = "y") -> None:
    """Label the decades of log-scale axes as ``10⁻⁵`` in full-size text."""
    for ax in axes:
        target = ax.yaxis if axis == "y" else ax.xaxis
        target.set_major_formatter(FuncFormatter(_decade))
        target.set_minor_formatter(NullFormatter())


def _rate_ticks(ax: Any, rates: Sequence[float]) -> None:
    """Learning rates on a log x axis, labelled with their values (``0.003``)."""
    ax.set_xticks(list(rates), [f"{r:g}" for r in rates])
    ax.xaxis.set_minor_formatter(NullFormatter())


def _seeds(ctx: FigureContext, full: int = 5, quick: int = 2) -> list[int]:
    """The seeds of a multi-seed comparison: 1 (smoke), ``quick``, ``full`` (>= 5)."""
    return [ctx.seed + i for i in range(ctx.pick(smoke=1, quick=quick, full=full))]


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
    gs = axes[1, 0].get_gridspec()
    for ax in axes[1]:
        ax.remove()
    ax_log = fig.add_subplot(gs[1, :])
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
    _log_labels(ax_log)
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
        "error": [final training error per seed]}}}``; layers input side first, the output
        layer last; ``trained`` is the geometric mean over the last epoch's steps.
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
        runs = train_members(
            ctx, epochs=epochs, seeds=member_seeds, data=data, callbacks=[monitor],
            activation=act, init=member_inits, **hparams,
        )  # fmt: skip
        single = runs.members == 1
        errors = runs.errors()
        out[act] = {}
        for i, init in enumerate(inits):
            ks = range(i * len(seeds), (i + 1) * len(seeds))
            out[act][init] = {
                "at_init": [layer_grad_norms(monitor, [0], None if single else k) for k in ks],
                "trained": [
                    layer_grad_norms(monitor, last_epoch, None if single else k) for k in ks
                ],
                "error": [errors[k] for k in ks],
            }
    return out


# --8<-- [end:gradient_flow]


@figure(
    "activation_gradient_flow",
    chapter="activations",
    params={"depth": 20, "width": 32, "lr": 0.01, "inits": ["default", "kaiming"]},
)
def activation_gradient_flow(ctx: FigureContext, depth: int, width: int, lr: float, inits: list):
    """Per-layer weight-gradient norm of a deep MLP, at init and after training, per activation.

    One panel per initialisation. Solid: the gradient at the initial weights (step 0);
    dashed: geometric mean over the last training epoch; lines are geometric means over the
    seeds, bands their min-max. Layer ``depth + 1`` is the output layer. Leaky ReLU is
    trained and measured too but not drawn: its curves lie on ReLU's.

    Numbers (``<act>_<init>`` for each activation and init), each with ``_min``/``_max`` over
    seeds: ``ratio_init_<act>_<init>`` = |grad block0| / |grad head| at step 0 (geometric
    mean), ``ratio_trained_<act>_<init>`` = the same after training; ``error_<act>_<init>``
    = final training error (mean; also ``_sd``); plus ``epochs``, ``depth``, ``width``,
    ``lr``, ``seeds``.
    """
    epochs = ctx.pick(smoke=1, quick=2, full=5)
    seeds = _seeds(ctx)
    data = ctx.compute(
        activation_gradient_flow_runs, activations=list(DEEP_ACTIVATIONS), inits=list(inits),
        seeds=seeds, epochs=epochs, depth=depth, width=width, lr=lr,
    )  # fmt: skip
    numbers: dict[str, Any] = {"epochs": epochs, "depth": depth, "width": width, "lr": lr}
    numbers["seeds"] = len(seeds)
    fig, axes = subplots(len(inits), 1, width=6.9, height=2.9 * len(inits) + 0.8, sharex=True)
    axes = [axes] if len(inits) == 1 else list(axes)
    layers = list(range(1, depth + 2))
    for ax, init in zip(axes, inits, strict=True):
        for act in DEEP_ACTIVATIONS:
            runs = data[act][init]
            if act in PLOTTED_DEEP_ACTIVATIONS:
                color = ACTIVATION_COLORS[act]
                for curves, style in ((runs["at_init"], "-"), (runs["trained"], "--")):
                    mean, low, high = geometric_band(curves)
                    ax.semilogy(layers, mean, style, color=color, marker="o", markersize=2.5)
                    if len(curves) > 1:
                        ax.fill_between(layers, low, high, color=color, alpha=0.15, linewidth=0)
            key = f"{act}_{init}"
            for when in ("init", "trained"):
                ratios = [r[0] / r[-1] for r in runs["at_init" if when == "init" else "trained"]]
                put_summary(numbers, f"ratio_{when}_{key}", ratios, geometric=True)
            put_summary(numbers, f"error_{key}", runs["error"])
        ax.set(title=f"{depth}-layer MLP, {INIT_LABELS.get(init, init)}")
        ax.set_ylabel("‖∂loss/∂W‖ (log)")
    _log_labels(*axes)
    axes[-1].set_xlabel(f"layer (1 = input side, {depth + 1} = output)")
    axes[-1].set_xticks(sorted({1, *range(5, depth + 1, 5), depth + 1}))
    for act in PLOTTED_DEEP_ACTIVATIONS:
        axes[0].plot([], [], "-", color=ACTIVATION_COLORS[act], label=ACTIVATION_LABELS[act])
    axes[0].plot([], [], "-", color=ROLE["truth"], label="at init (step 0)")
    axes[0].plot([], [], "--", color=ROLE["truth"], label=f"after {epochs} epochs")
    band = f"geometric mean of {len(seeds)} seeds, band min-max" if len(seeds) > 1 else "one seed"
    fig.legend(loc="outside upper center", ncol=3, title=band, columnspacing=1.2)
    return fig, numbers


class ScaledDigits(DigitsDataModule):
    """:class:`~block4.data.DigitsDataModule` with every input multiplied by ``input_scale``.

    ``input_scale`` about 3.7 gives the inputs the spread of the raw pixel intensities (the
    average per-pixel standard deviation of the 0..16 images), i.e. what a network sees when
    the pixels are only centred, not standardised.
    """

    def __init__(self, input_scale: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.input_scale = input_scale

    def load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {k: (x * self.input_scale, y) for k, (x, y) in super().load().items()}


def relu_vs_tanh_runs(
    ctx: FigureContext,
    *,
    input_scales: dict[str, float],
    lrs: Sequence[float],
    seeds: Sequence[int],
    epochs: int,
    curve_every: int,
    **hparams: Any,
) -> dict[str, dict[str, dict[str, list]]]:
    """Training curves of ReLU and tanh MLPs (Kaiming init) for every input scale, learning
    rate and seed: one stack per (inputs, activation), members = learning rates x seeds.

    Returns:
        ``{inputs: {act: {"epochs": [when measured], "errors": [[curve] per lr][per seed]}}}``
        (``errors[i][s]``: learning rate ``lrs[i]``, seed ``seeds[s]``; NaN once diverged).
    """
    member_lrs = [rate for rate in lrs for _ in seeds]
    member_seeds = [seed for _ in lrs for seed in seeds]
    n_train = ctx.pick(smoke=256, quick=None, full=None)
    out: dict[str, dict[str, dict[str, list]]] = {}
    for kind, scale in input_scales.items():
        out[kind] = {}
        data = ScaledDigits(scale, seed=seeds[0], n_train=n_train)
        for act in ("relu", "tanh"):
            runs = train_members(
                ctx, epochs=epochs, seeds=member_seeds, data=data, curve_every_n_steps=curve_every,
                activation=act, init="kaiming", lr=member_lrs, **hparams,
            )  # fmt: skip
            curves = runs.curve.member_errors
            out[kind][act] = {
                "epochs": list(runs.curve.epochs),
                "errors": [
                    [curves[i * len(seeds) + s] for s in range(len(seeds))] for i in range(len(lrs))
                ],
            }
    return out


def epochs_to(epochs: Sequence[float], errors: Sequence[float], goal: float) -> float | None:
    """When ``errors`` first reached ``goal``, in epochs (``None``: never)."""
    for epoch, error in zip(epochs, errors, strict=True):
        if error <= goal:
            return epoch
    return None


@figure(
    "relu_vs_tanh",
    chapter="activations",
    params={
        "depth": 4,
        "width": 64,
        "lr": 0.003,
        "lrs": [0.003, 0.01, 0.03],
        "target": 0.25,
        "fine_target": 0.15,
        "input_scale": 3.7,
    },
)
def relu_vs_tanh(
    ctx: FigureContext,
    depth: int,
    width: int,
    lr: float,
    lrs: list,
    target: float,
    fine_target: float,
    input_scale: float,
):
    """AlexNet's "ReLU reaches 25 % training error six times faster than tanh", on digits.

    Two nets of the same size (``depth`` x ``width``, Kaiming init with each activation's
    gain, SGD with momentum 0.9), trained on standardised inputs and on inputs with the
    spread of raw pixel values (``input_scale``). Top: training error vs epoch at ``lr``
    (mean over seeds, band min-max); bottom: the speed-up (tanh's epochs to the target /
    ReLU's, per seed, mean and min-max) vs learning rate.

    Numbers (``<inputs>`` is ``std`` or ``raw``), each a mean over seeds with ``_sd``,
    ``_min``, ``_max``: ``epochs_<act>_<inputs>`` and ``epochs_fine_<act>_<inputs>`` (epochs
    to ``target`` and to ``fine_target`` at ``lr``), ``speedup_<inputs>`` and
    ``speedup_fine_<inputs>`` (tanh / ReLU, per seed); ``speedup_max`` / ``speedup_min``
    (over the sweep, of the per-learning-rate means); ``reached_<act>_<inputs>`` (seeds that
    reached the target at ``lr``) and the settings.
    """
    epochs = ctx.pick(smoke=1, quick=4, full=7)
    seeds = _seeds(ctx)
    lrs = sorted(set(ctx.pick(smoke=[lr], quick=lrs, full=lrs)) | {lr})
    inputs = {"std": 1.0, "raw": input_scale}
    data = ctx.compute(
        relu_vs_tanh_runs, input_scales=inputs, lrs=lrs, seeds=seeds, epochs=epochs,
        curve_every=ctx.pick(smoke=1, quick=4, full=4), depth=depth, width=width,
    )  # fmt: skip
    numbers: dict[str, Any] = {
        "epochs": epochs,
        "depth": depth,
        "width": width,
        "lr": lr,
        "target": target,
        "fine_target": fine_target,
        "input_scale": input_scale,
        "seeds": len(seeds),
    }
    i_lr = lrs.index(lr)

    def per_seed(kind: str, act: str, i: int, goal: float) -> list[float | None]:
        run = data[kind][act]
        return [epochs_to(run["epochs"], e, goal) for e in run["errors"][i]]

    def speedups(kind: str, i: int, goal: float) -> list[float]:
        pairs = zip(per_seed(kind, "relu", i, goal), per_seed(kind, "tanh", i, goal), strict=True)
        return [t / r for r, t in pairs if r and t]

    fig, axes = subplots(2, 2, width=6.9, height=6.2)
    gs = axes[1, 0].get_gridspec()
    for ax in axes[1]:
        ax.remove()
    ax_speed = fig.add_subplot(gs[1, :])
    titles = {"std": "standardised inputs", "raw": f"inputs ×{input_scale:g} (raw spread)"}
    floor = 0.5 / len(digits(ctx, ctx.seed).tensors("train")[1])
    lowest = min(
        (e for kind in inputs for act in ("relu", "tanh")
         for curve in data[kind][act]["errors"][i_lr] for e in curve if math.isfinite(e)),
        default=floor,
    )  # fmt: skip
    floor = max(floor, 0.5 * lowest)
    for ax, kind in zip(axes[0], inputs, strict=True):
        for act in ("relu", "tanh"):
            run = data[kind][act]
            curves = [[max(e, floor) for e in c] for c in run["errors"][i_lr]]
            mean, low, high = mean_band(curves)
            color = ACTIVATION_COLORS[act]
            ax.semilogy(run["epochs"], mean, color=color, label=ACTIVATION_LABELS[act])
            if len(curves) > 1:
                ax.fill_between(run["epochs"], low, high, color=color, alpha=0.2, linewidth=0)
            for goal, name in ((target, ""), (fine_target, "fine_")):
                reached = [e for e in per_seed(kind, act, i_lr, goal) if e is not None]
                put_summary(numbers, f"epochs_{name}{act}_{kind}", reached)
                if goal == target:
                    numbers[f"reached_{act}_{kind}"] = len(reached)
                if reached:
                    ax.plot([sum(reached) / len(reached)], [goal], "o", color=color, ms=5)
        for goal in (target, fine_target):
            ax.axhline(goal, color=ROLE["truth"], linestyle=":", linewidth=1)
        for name, goal in (("", target), ("fine_", fine_target)):
            put_summary(numbers, f"speedup_{name}{kind}", speedups(kind, i_lr, goal))
        ax.set(title=titles[kind], xlabel="epoch", ylim=(floor * 0.8, 1.0))
    axes[0, 0].set_ylabel(f"training error (log), lr {lr:g}")
    means = []
    for kind, marker in (("std", "o"), ("raw", "s")):
        xs, ys, lows, highs = [], [], [], []
        for i, rate in enumerate(lrs):
            values = speedups(kind, i, target)
            if values:
                xs.append(rate)
                ys.append(sum(values) / len(values))
                lows.append(min(values))
                highs.append(max(values))
        means += ys
        color = PALETTE[0 if kind == "std" else 4]
        ax_speed.semilogx(xs, ys, marker + "-", color=color, label=titles[kind])
        if len(seeds) > 1 and xs:
            ax_speed.fill_between(xs, lows, highs, color=color, alpha=0.15, linewidth=0)
    _log_labels(*axes[0])
    _rate_ticks(ax_speed, lrs)
    ax_speed.axhline(1.0, color=ROLE["truth"], linestyle=":", linewidth=1)
    ax_speed.axvline(lr, color=ROLE["truth"], linewidth=0.8, alpha=0.5)
    ax_speed.set(
        title=f"speed-up to {target:.0%} training error",
        xlabel="learning rate (SGD, momentum 0.9)",
        ylabel="tanh epochs / ReLU epochs",
    )
    ax_speed.legend(loc="upper right")  # the speed-up falls with the learning rate
    band = f"{len(seeds)} seeds: mean, band min-max" if len(seeds) > 1 else "one seed"
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncol=2, title=band)
    numbers["speedup_max"] = max(means) if means else "n/a"
    numbers["speedup_min"] = min(means) if means else "n/a"
    return fig, numbers


def dead_relus_runs(
    ctx: FigureContext,
    *,
    lrs: Sequence[float],
    seeds: Sequence[int],
    epochs: int,
    every: int,
    **hparams: Any,
) -> dict[str, Any]:
    """Dead-unit fractions of ReLU MLPs (Kaiming init) for every learning rate and seed, in
    one stack (members = learning rates x seeds).

    Returns:
        ``{"epochs": [when measured], "dead": [[[fraction per time] per seed] per lr],
        "error": [[final error] ...], "diverged": [[bool] ...]}``.
    """
    data = digits(ctx, seeds[0])
    data.setup()
    tracker = DeadUnitTracker(every_n_steps=every)
    runs = train_members(
        ctx, epochs=epochs, seeds=[s for _ in lrs for s in seeds], data=data,
        callbacks=[tracker], activation="relu", init="kaiming",
        lr=[r for r in lrs for _ in seeds], **hparams,
    )  # fmt: skip
    n_steps = steps_per_epoch(data)
    errors = runs.errors()

    def grid(values: Sequence[Any]) -> list[list[Any]]:
        return [[values[i * len(seeds) + s] for s in range(len(seeds))] for i in range(len(lrs))]

    return {
        "epochs": [step / n_steps for step in tracker.steps],
        "dead": grid(tracker.member_dead),
        "error": grid(errors),
        "diverged": grid(runs.diverged),
    }


@figure(
    "dead_relus",
    chapter="activations",
    params={
        "depth": 6,
        "width": 64,
        "lr_normal": 0.01,
        "lr_high": 0.2,
        "lrs": [0.003, 0.01, 0.03, 0.1, 0.2, 0.3],
    },
)
def dead_relus(
    ctx: FigureContext,
    depth: int,
    width: int,
    lr_normal: float,
    lr_high: float,
    lrs: list,
):
    """Dead ReLUs: units that never activate, at a normal and at a high learning rate.

    A ``depth`` x ``width`` ReLU MLP (Kaiming init, SGD with momentum 0.9) on digits, every
    learning rate and seed in one stack. Top: the dead fraction during training at the
    normal and the high rate (mean over seeds, band min-max; a seed whose loss became NaN is
    frozen and drops out of the mean); bottom: the dead fraction after training vs learning
    rate (every seed, and the mean), with the final training error.

    Numbers: ``dead_normal`` / ``dead_high`` (dead fraction after training, mean over the
    seeds that finished, with ``_sd``, ``_min``, ``_max``), ``dead_init`` (at the initial
    weights, mean over seeds), ``error_normal`` / ``error_high`` (final training error of the
    seeds that finished, with spread), ``diverged_normal`` / ``diverged_high`` (seeds whose
    loss became NaN), ``seeds``, ``epochs``, ``dead_max`` (largest mean over the sweep).
    """
    epochs = ctx.pick(smoke=1, quick=3, full=5)
    seeds = _seeds(ctx)
    lrs = sorted(
        set(ctx.pick(smoke=[lr_normal, lr_high], quick=lrs, full=lrs)) | {lr_normal, lr_high}
    )
    data = ctx.compute(
        dead_relus_runs, lrs=lrs, seeds=seeds, epochs=epochs,
        every=ctx.pick(smoke=1, quick=4, full=4), depth=depth, width=width,
    )  # fmt: skip
    numbers: dict[str, Any] = {
        "epochs": epochs,
        "depth": depth,
        "width": width,
        "seeds": len(seeds),
        "lr_normal": lr_normal,
        "lr_high": lr_high,
    }
    fig, (ax_t, ax_lr) = subplots(2, 1, width=6.9, height=6.4)
    x = data["epochs"]
    numbers["dead_init"] = sum(d[0] for d in data["dead"][0]) / len(seeds)
    for rate, name, color in ((lr_normal, "normal", PALETTE[2]), (lr_high, "high", PALETTE[4])):
        i = lrs.index(rate)
        dead, diverged = data["dead"][i], data["diverged"][i]
        cols = [[v for v in col if math.isfinite(v)] for col in zip(*dead, strict=True)]
        times = [t for t, c in zip(x, cols, strict=True) if c]
        cols = [c for c in cols if c]
        label = f"lr = {rate:g} ({name})"
        ax_t.plot(times, [sum(c) / len(c) for c in cols], color=color, label=label)
        if len(seeds) > 1:
            ax_t.fill_between(
                times, [min(c) for c in cols], [max(c) for c in cols],
                color=color, alpha=0.2, linewidth=0,
            )  # fmt: skip
        finished = [not d for d in diverged]
        put_summary(
            numbers, f"dead_{name}", [d[-1] for d, ok in zip(dead, finished, strict=True) if ok]
        )
        errors = [e for e, ok in zip(data["error"][i], finished, strict=True) if ok]
        put_summary(numbers, f"error_{name}", errors)
        numbers[f"diverged_{name}"] = sum(diverged)
    ax_t.set(
        title="dead units during training",
        xlabel="epoch",
        ylabel="fraction of hidden units dead",
        ylim=(-0.02, 1.0),
    )
    ax_t.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))

    means = []
    for i, r in enumerate(lrs):
        finals = []
        for d, div in zip(data["dead"][i], data["diverged"][i], strict=True):
            last = [v for v in d if math.isfinite(v)][-1]
            finals.append(last)
            ax_lr.plot([r], [last], "x" if div else "o", color=PALETTE[0], alpha=0.6, ms=5, mew=1.5)
        means.append(sum(finals) / len(finals))
    ax_lr.semilogx(lrs, means, "-", color=PALETTE[0], label="dead fraction:\nseeds (o), mean")
    ax_lr.plot([], [], "x", color=PALETTE[0], mew=1.5, label="seed whose loss\nbecame NaN")
    errors = []
    for i in range(len(lrs)):
        finished = [e for e, d in zip(data["error"][i], data["diverged"][i], strict=True) if not d]
        errors.append(sum(finished) / len(finished) if finished else math.nan)
    ax_lr.semilogx(
        lrs, errors, "s--", color=PALETTE[1], markersize=4, label="training error\n(finished seeds)"
    )
    ax_lr.set(
        title=f"after {epochs} epochs",
        xlabel="learning rate (SGD, momentum 0.9)",
        ylabel="dead fraction / error",
        ylim=(-0.02, 1.0),
    )
    _rate_ticks(ax_lr, lrs)
    ax_lr.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    numbers["dead_max"] = max(means)
    return fig, numbers
