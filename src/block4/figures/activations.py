"""Figures of the chapter "Activation functions".

Every derivative is computed by ``torch.autograd`` (never written out by hand), and every
training curve comes from a Lightning run of :class:`block4.modules.Classifier` on the digits
data set (:class:`block4.data.DigitsDataModule`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from block4.callbacks import DeadUnitTracker, GradientFlowMonitor, TrainingCurve
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
    steps_per_epoch,
    train_classifier,
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


#: Activations of the deep-network experiments (leaky ReLU behaves like ReLU there).
DEEP_ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "gelu")
#: Those drawn: leaky ReLU's curves lie on top of ReLU's (its numbers are in the manifest).
PLOTTED_DEEP_ACTIVATIONS = ("sigmoid", "tanh", "relu", "gelu")
INIT_LABELS = {"default": "PyTorch default init", "kaiming": "Kaiming (He) init"}


# --8<-- [start:gradient_flow]
def gradient_flow_run(
    ctx: FigureContext, data: DigitsDataModule, *, seed: int, epochs: int, **hparams: Any
) -> tuple[list[float], list[float], float]:
    """Train one MLP; return its per-layer gradient norms at init and after training.

    Returns:
        ``(at_init, trained, error)``: the gradient norm of every layer (input side first,
        output layer last) at step 0 and averaged over the last epoch, and the final
        training error.
    """
    data.setup()
    n_steps = steps_per_epoch(data)
    last_epoch = range((epochs - 1) * n_steps, epochs * n_steps)
    monitor = GradientFlowMonitor(steps=[0, *last_epoch])
    _, curve, _ = train_classifier(
        ctx, epochs=epochs, seed=seed, datamodule=data, callbacks=[monitor], **hparams
    )
    return layer_grad_norms(monitor, [0]), layer_grad_norms(monitor, last_epoch), curve.errors[-1]


# --8<-- [end:gradient_flow]


@figure(
    "activation_gradient_flow",
    chapter="activations",
    params={"depth": 20, "width": 32, "lr": 0.01, "inits": ["default", "kaiming"]},
)
def activation_gradient_flow(ctx: FigureContext, depth: int, width: int, lr: float, inits: list):
    """Per-layer weight-gradient norm of a deep MLP, at init and after training, per activation.

    One panel per initialisation. Solid: the gradient at the initial weights (step 0);
    dashed: geometric mean over the last training epoch. Layer ``depth + 1`` is the output
    layer. Leaky ReLU is trained and measured too but not drawn: its curves lie on ReLU's.

    Numbers (``<act>_<init>`` for each activation and init):
    ``ratio_init_<act>_<init>`` = |grad block0| / |grad head| at step 0,
    ``ratio_trained_<act>_<init>`` = the same after training, ``error_<act>_<init>`` = final
    training error; plus ``epochs``, ``depth``, ``width``, ``lr``, ``seeds``.
    """
    epochs = ctx.pick(smoke=1, quick=8, full=30)
    seeds = ctx.pick(smoke=[ctx.seed], quick=[ctx.seed], full=[ctx.seed + i for i in range(3)])
    numbers: dict[str, Any] = {"epochs": epochs, "depth": depth, "width": width, "lr": lr}
    numbers["seeds"] = len(seeds)
    fig, axes = subplots(1, len(inits), width=10.5, height=3.8, sharey=True)
    axes = [axes] if len(inits) == 1 else list(axes)
    layers = list(range(1, depth + 2))
    for ax, init in zip(axes, inits, strict=True):
        for act in DEEP_ACTIVATIONS:
            at_init, trained, errors = [], [], []
            for seed in seeds:
                data = digits(ctx, seed)
                init_norms, trained_norms, error = gradient_flow_run(
                    ctx,
                    data,
                    seed=seed,
                    epochs=epochs,
                    depth=depth,
                    width=width,
                    activation=act,
                    init=init,
                    lr=lr,
                )
                at_init.append(init_norms)
                trained.append(trained_norms)
                errors.append(error)
            color = ACTIVATION_COLORS[act]
            for runs, style in ((at_init, "-"), (trained, "--")):
                if act not in PLOTTED_DEEP_ACTIVATIONS:
                    break
                mean, low, high = geometric_band(runs)
                ax.semilogy(
                    layers,
                    mean,
                    style,
                    color=color,
                    marker="o",
                    markersize=2.5,
                    label=ACTIVATION_LABELS[act] if style == "-" else None,
                )
                if len(runs) > 1:
                    ax.fill_between(layers, low, high, color=color, alpha=0.15, linewidth=0)
            key = f"{act}_{init}"
            numbers[f"ratio_init_{key}"] = geometric_band([[r[0] / r[-1]] for r in at_init])[0][0]
            numbers[f"ratio_trained_{key}"] = geometric_band([[r[0] / r[-1]] for r in trained])[0][
                0
            ]
            numbers[f"error_{key}"] = sum(errors) / len(errors)
        ax.set(
            title=f"{depth}-layer MLP, {INIT_LABELS.get(init, init)}",
            xlabel=f"layer (1 = input side, {depth + 1} = output)",
        )
        ax.set_xticks(sorted({1, *range(5, depth + 1, 5), depth + 1}))
    axes[0].set_ylabel("‖∂loss/∂W‖ of the layer (log scale)")
    axes[-1].plot([], [], "-", color=ROLE["truth"], label="at init (step 0)")
    axes[-1].plot([], [], "--", color=ROLE["truth"], label=f"after {epochs} epochs")
    axes[-1].legend(loc="lower right", ncol=2, fontsize=8)
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


def _mean_or_none(values: Sequence[float | None]) -> float | None:
    return None if any(v is None for v in values) else sum(values) / len(values)  # type: ignore[arg-type]


@figure(
    "relu_vs_tanh",
    chapter="activations",
    params={
        "depth": 4,
        "width": 64,
        "lr": 0.003,
        "lrs": [0.001, 0.003, 0.01, 0.03],
        "target": 0.25,
        "fine_target": 0.05,
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
    spread of raw pixel values (``input_scale``). Left and middle: training error vs epoch
    at ``lr``; right: the speed-up (tanh's epochs to the target / ReLU's) vs learning rate.

    Numbers (``<inputs>`` is ``std`` or ``raw``): ``epochs_<act>_<inputs>`` and
    ``epochs_fine_<act>_<inputs>`` (epochs to ``target`` and to ``fine_target`` at ``lr``),
    ``speedup_<inputs>`` and ``speedup_fine_<inputs>`` (tanh / ReLU), ``speedup_max``,
    ``speedup_min`` over the sweep, and the settings.
    """
    epochs = ctx.pick(smoke=1, quick=15, full=30)
    seeds = ctx.pick(
        smoke=[ctx.seed], quick=[ctx.seed, ctx.seed + 1], full=[ctx.seed + i for i in range(5)]
    )
    lrs = ctx.pick(smoke=[lr], quick=lrs, full=lrs)
    inputs = {"std": 1.0, "raw": input_scale}
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
    curves: dict[tuple[str, str, float], list[TrainingCurve]] = {}
    for kind, scale in inputs.items():
        for rate in lrs:
            for act in ("relu", "tanh"):
                runs = []
                for seed in seeds:
                    data = ScaledDigits(
                        scale, seed=seed, n_train=ctx.pick(smoke=256, quick=None, full=None)
                    )
                    _, curve, _ = train_classifier(
                        ctx,
                        epochs=epochs,
                        seed=seed,
                        datamodule=data,
                        curve_every_n_steps=2,
                        depth=depth,
                        width=width,
                        activation=act,
                        init="kaiming",
                        lr=rate,
                    )
                    runs.append(curve)
                curves[(kind, act, rate)] = runs

    def epochs_to(kind: str, act: str, rate: float, goal: float) -> float | None:
        return _mean_or_none([c.epochs_to(goal) for c in curves[(kind, act, rate)]])

    fig, axes = subplots(1, 3, width=11.5, height=3.6)
    titles = {"std": "standardised inputs", "raw": f"inputs at raw-pixel spread (x{input_scale:g})"}
    floor = 0.5 / len(digits(ctx, ctx.seed).tensors("train")[1])
    for ax, kind in zip(axes[:2], inputs, strict=True):
        for act in ("relu", "tanh"):
            runs = curves[(kind, act, lr)]
            x = runs[0].epochs
            mean, low, high = mean_band([[max(e, floor) for e in c.errors] for c in runs])
            color = ACTIVATION_COLORS[act]
            ax.semilogy(x, mean, color=color, label=ACTIVATION_LABELS[act])
            if len(runs) > 1:
                ax.fill_between(x, low, high, color=color, alpha=0.2, linewidth=0)
            e_t = epochs_to(kind, act, lr, target)
            e_f = epochs_to(kind, act, lr, fine_target)
            numbers[f"epochs_{act}_{kind}"] = e_t if e_t is not None else "never"
            numbers[f"epochs_fine_{act}_{kind}"] = e_f if e_f is not None else "never"
            for goal, e in ((target, e_t), (fine_target, e_f)):
                if e is not None:
                    ax.plot([e], [goal], "o", color=color, markersize=5)
        for goal in (target, fine_target):
            ax.axhline(goal, color=ROLE["truth"], linestyle=":", linewidth=1)
        for key, goal in (("", target), ("fine_", fine_target)):
            r, t = epochs_to(kind, "relu", lr, goal), epochs_to(kind, "tanh", lr, goal)
            numbers[f"speedup_{key}{kind}"] = t / r if r and t else "n/a"
        ax.set(
            title=titles[kind],
            xlabel="epoch",
            ylabel="training error (log scale)",
            ylim=(floor * 0.8, 1.0),
        )
        ax.legend(loc="lower left")
    ratios = []
    ax = axes[2]
    for kind, marker in (("std", "o"), ("raw", "s")):
        xs, ys = [], []
        for rate in lrs:
            r, t = epochs_to(kind, "relu", rate, target), epochs_to(kind, "tanh", rate, target)
            if r and t:
                xs.append(rate)
                ys.append(t / r)
        ratios += ys
        label = "standardised inputs" if kind == "std" else "raw-pixel spread"
        ax.semilogx(xs, ys, marker + "-", color=PALETTE[0 if kind == "std" else 4], label=label)
    ax.axhline(1.0, color=ROLE["truth"], linestyle=":", linewidth=1)
    ax.axvline(lr, color=ROLE["truth"], linewidth=0.8, alpha=0.5)
    ax.set(
        title=f"speed-up to {target:.0%} training error",
        xlabel="learning rate (SGD, momentum 0.9)",
        ylabel="tanh epochs / ReLU epochs",
    )
    ax.legend(loc="upper right")
    numbers["speedup_max"] = max(ratios) if ratios else "n/a"
    numbers["speedup_min"] = min(ratios) if ratios else "n/a"
    return fig, numbers


@figure(
    "dead_relus",
    chapter="activations",
    params={
        "depth": 6,
        "width": 64,
        "lr_normal": 0.01,
        "lr_high": 0.2,
        "lrs": [0.003, 0.01, 0.03, 0.06, 0.1, 0.2, 0.3],
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

    A ``depth`` x ``width`` ReLU MLP (Kaiming init, SGD with momentum 0.9) on digits. Left:
    the dead fraction during the first epochs, one line per seed; right: the dead fraction
    after training vs learning rate, with the final training error.

    Numbers: ``dead_normal`` / ``dead_high`` (mean dead fraction after training over seeds),
    ``dead_init`` (at the initial weights), ``error_normal`` / ``error_high`` (final training
    error of the runs that finished), ``diverged_high`` / ``diverged_normal`` (runs whose loss
    became NaN), ``seeds``, ``epochs``, ``dead_max`` (largest mean over the sweep).
    """
    epochs = ctx.pick(smoke=1, quick=5, full=15)
    seeds = ctx.pick(
        smoke=[ctx.seed],
        quick=[ctx.seed + i for i in range(3)],
        full=[ctx.seed + i for i in range(8)],
    )
    lrs = sorted(
        set(ctx.pick(smoke=[lr_normal, lr_high], quick=lrs, full=lrs)) | {lr_normal, lr_high}
    )
    results: dict[float, list[tuple[DeadUnitTracker, TrainingCurve, bool]]] = {}
    for rate in lrs:
        results[rate] = []
        for seed in seeds:
            tracker = DeadUnitTracker(every_n_steps=1)
            _, curve, diverged = train_classifier(
                ctx,
                epochs=epochs,
                seed=seed,
                callbacks=[tracker],
                depth=depth,
                width=width,
                activation="relu",
                init="kaiming",
                lr=rate,
            )
            results[rate].append((tracker, curve, diverged))

    numbers: dict[str, Any] = {
        "epochs": epochs,
        "depth": depth,
        "width": width,
        "seeds": len(seeds),
        "lr_normal": lr_normal,
        "lr_high": lr_high,
    }
    fig, (ax_t, ax_lr) = subplots(1, 2, width=10.5, height=3.6)
    n_steps = steps_per_epoch(digits(ctx, ctx.seed))
    for rate, name, color in ((lr_normal, "normal", PALETTE[2]), (lr_high, "high", PALETTE[4])):
        for i, (tracker, _, diverged) in enumerate(results[rate]):
            x = [s / n_steps for s in tracker.steps]
            ax_t.plot(
                x,
                tracker.dead,
                color=color,
                alpha=0.8,
                linewidth=1.3,
                label=f"lr = {rate:g} ({name})" if i == 0 else None,
            )
            if diverged:
                ax_t.plot(x[-1:], tracker.dead[-1:], "x", color=color, markersize=7, mew=2)
        runs = results[rate]
        numbers[f"dead_{name}"] = sum(t.dead[-1] for t, _, _ in runs) / len(runs)
        finished = [c.errors[-1] for _, c, d in runs if not d]
        numbers[f"error_{name}"] = sum(finished) / len(finished) if finished else "none finished"
        numbers[f"diverged_{name}"] = sum(d for _, _, d in runs)
    numbers["dead_init"] = results[lr_normal][0][0].dead[0]
    ax_t.plot([], [], "x", color=ROLE["truth"], mew=2, label="loss became NaN")
    ax_t.set(
        title="dead units during training",
        xlabel="epoch",
        ylabel="fraction of hidden units dead",
        ylim=(-0.02, 1.0),
    )
    ax_t.legend(loc="upper right")

    means = [sum(t.dead[-1] for t, _, _ in results[r]) / len(seeds) for r in lrs]
    for r in lrs:
        for t, _, d in results[r]:
            ax_lr.plot(
                [r],
                [t.dead[-1]],
                "x" if d else "o",
                color=PALETTE[0],
                alpha=0.6,
                markersize=5,
                mew=1.5,
            )
    ax_lr.semilogx(lrs, means, "-", color=PALETTE[0], label="dead fraction: seeds, mean")
    ax_lr.plot([], [], "x", color=PALETTE[0], mew=1.5, label="seed whose loss became NaN")
    errors = []
    for r in lrs:
        finished = [c.errors[-1] for _, c, d in results[r] if not d]
        errors.append(sum(finished) / len(finished) if finished else math.nan)
    ax_err = ax_lr.twinx()
    ax_err.semilogx(
        lrs, errors, "s--", color=PALETTE[1], markersize=4, label="training error (finished runs)"
    )
    ax_err.set_ylabel("final training error", color=PALETTE[1])
    ax_err.set_ylim(-0.02, 1.0)
    ax_err.grid(False)
    ax_lr.set(
        title=f"after {epochs} epochs",
        xlabel="learning rate (SGD, momentum 0.9)",
        ylabel="fraction of hidden units dead",
        ylim=(-0.02, 1.0),
    )
    h1, l1 = ax_lr.get_legend_handles_labels()
    h2, l2 = ax_err.get_legend_handles_labels()
    ax_lr.legend(h1 + h2, l1 + l2, loc="upper left")
    numbers["dead_max"] = max(means)
    return fig, numbers
