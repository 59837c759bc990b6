"""Figures of the chapter "Activation functions": how the activations train.

AlexNet's ReLU-vs-tanh speed-up and dead ReLUs, on real Lightning runs of
`block4.modules.Classifier` on the digits data set. Networks of one shape (seeds,
learning rates) are trained as one stack by `block4.training.train_members`; the
``*_runs`` functions hold that expensive part and return plain data, the figure functions only
plot and summarise it. The functions themselves and their gradients are in
`block4.figures.activations`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from block4.callbacks import DeadUnitTracker
from block4.data import DigitsDataModule
from block4.figures.registry import FigureContext, figure
from block4.style import (
    ACTIVATION_COLORS,
    PALETTE,
    ROLE,
    log_decade_labels,
    rate_ticks,
    subplots,
    wide_bottom_row,
)
from block4.training import (
    ACTIVATION_LABELS,
    comparison_seeds,
    digits,
    mean_band,
    put_summary,
    steps_per_epoch,
    train_members,
)


class ScaledDigits(DigitsDataModule):
    """`DigitsDataModule` with every input multiplied by ``input_scale``.

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


def _epochs_per_seed(run: dict[str, list], i: int, goal: float) -> list[float | None]:
    """Epochs each seed of one ``relu_vs_tanh_runs`` entry took to reach ``goal`` at the
    learning rate number ``i`` (``None``: never)."""
    return [epochs_to(run["epochs"], errors, goal) for errors in run["errors"][i]]


def _speedups(runs: dict[str, dict[str, list]], i: int, goal: float) -> list[float]:
    """tanh's epochs to ``goal`` / ReLU's, per seed that reached it with both."""
    relu, tanh = (_epochs_per_seed(runs[act], i, goal) for act in ("relu", "tanh"))
    return [t / r for r, t in zip(relu, tanh, strict=True) if r and t]


def _error_floor(ctx: FigureContext, data: dict[str, dict[str, dict[str, list]]], i: int) -> float:
    """Where a log error axis stops: half of one training example's share, or half the lowest
    error reached at the learning rate number ``i`` if that is higher (0 is drawn there)."""
    floor = 0.5 / len(digits(ctx, ctx.seed).tensors("train")[1])
    lowest = min(
        (e for runs in data.values() for act in ("relu", "tanh")
         for curve in runs[act]["errors"][i] for e in curve if math.isfinite(e)),
        default=floor,
    )  # fmt: skip
    return max(floor, 0.5 * lowest)


def _error_panel(
    ax: Any, kind: str, runs: dict[str, dict[str, list]], numbers: dict[str, Any], *,
    i_lr: int, floor: float, target: float, fine_target: float,
) -> None:  # fmt: skip
    """A top panel of `relu_vs_tanh`: error curves of ReLU and tanh on the ``kind`` of
    inputs, the mean epochs to each target; puts their numbers in ``numbers``."""
    for act in ("relu", "tanh"):
        run = runs[act]
        curves = [[max(e, floor) for e in c] for c in run["errors"][i_lr]]
        mean, low, high = mean_band(curves)
        color = ACTIVATION_COLORS[act]
        ax.semilogy(run["epochs"], mean, color=color, label=ACTIVATION_LABELS[act])
        if len(curves) > 1:
            ax.fill_between(run["epochs"], low, high, color=color, alpha=0.2, linewidth=0)
        for goal, name in ((target, ""), (fine_target, "fine_")):
            reached = [e for e in _epochs_per_seed(run, i_lr, goal) if e is not None]
            put_summary(numbers, f"epochs_{name}{act}_{kind}", reached)
            numbers[f"reached_{name}{act}_{kind}"] = len(reached)
            if reached:
                ax.plot([sum(reached) / len(reached)], [goal], "o", color=color, ms=5)
    for goal in (target, fine_target):
        ax.axhline(goal, color=ROLE["truth"], linestyle=":", linewidth=1)
    for name, goal in (("", target), ("fine_", fine_target)):
        speedups = _speedups(runs, i_lr, goal)
        put_summary(numbers, f"speedup_{name}{kind}", speedups)
        numbers[f"speedup_{name}{kind}_n"] = len(speedups)


def _speedup_panel(
    ax: Any, data: dict[str, dict[str, dict[str, list]]], lrs: Sequence[float],
    target: float, titles: dict[str, str], numbers: dict[str, Any], *, band: bool,
) -> None:  # fmt: skip
    """The bottom panel of `relu_vs_tanh`: the speed-up to ``target`` vs learning rate
    (mean over seeds, with a min-max band if ``band``); puts each learning rate's speed-up
    in ``numbers`` (``speedup_<inputs>_lr_<i>`` for ``lrs[i]``)."""
    for kind, marker in (("std", "o"), ("raw", "s")):
        xs, ys, lows, highs = [], [], [], []
        for i, rate in enumerate(lrs):
            values = _speedups(data[kind], i, target)
            put_summary(numbers, f"speedup_{kind}_lr_{i}", values)
            numbers[f"speedup_{kind}_lr_{i}_n"] = len(values)
            if values:
                xs.append(rate)
                ys.append(sum(values) / len(values))
                lows.append(min(values))
                highs.append(max(values))
        color = PALETTE[0 if kind == "std" else 4]
        ax.semilogx(xs, ys, marker + "-", color=color, label=titles[kind])
        if band and xs:
            ax.fill_between(xs, lows, highs, color=color, alpha=0.15, linewidth=0)


def _best_rate_numbers(
    data: dict[str, dict[str, dict[str, list]]], lrs: Sequence[float], target: float,
    numbers: dict[str, Any],
) -> None:  # fmt: skip
    """Each activation at its own best learning rate (the one with the fewest epochs to
    ``target`` on average, among those at which every seed reached it), as AlexNet compared
    them; puts ``best_lr_<act>_<inputs>``, ``epochs_best_<act>_<inputs>`` (mean, ``_sd``,
    ``_min``, ``_max``) and ``speedup_best_<inputs>`` (tanh / ReLU per seed, each at its
    best rate) in ``numbers``."""
    for kind, runs in data.items():
        per_seed = {}
        for act in ("relu", "tanh"):
            reached = [_epochs_per_seed(runs[act], i, target) for i in range(len(lrs))]
            usable = [i for i, epochs in enumerate(reached) if all(epochs)]
            if not usable:
                numbers[f"best_lr_{act}_{kind}"] = "n/a"
                continue
            best = min(usable, key=lambda i: sum(reached[i]) / len(reached[i]))
            numbers[f"best_lr_{act}_{kind}"] = lrs[best]
            put_summary(numbers, f"epochs_best_{act}_{kind}", reached[best])
            per_seed[act] = reached[best]
        if len(per_seed) == 2:
            ratios = [t / r for r, t in zip(per_seed["relu"], per_seed["tanh"], strict=True)]
            put_summary(numbers, f"speedup_best_{kind}", ratios)


def _resolution_numbers(
    data: dict[str, dict[str, dict[str, list]]], lrs: Sequence[float], target: float,
    numbers: dict[str, Any],
) -> None:  # fmt: skip
    """How finely the race is timed: ``resolution_epochs`` (epochs between two measurements
    of the training error) and ``apart_<inputs>_lr_<i>_min``/``_max``: by how many
    measurements tanh reached ``target`` before ReLU, over the seeds in which both did
    (negative: after)."""
    times = next(iter(data.values()))["relu"]["epochs"]
    step = times[1] - times[0]
    numbers["resolution_epochs"] = step
    for kind, runs in data.items():
        for i in range(len(lrs)):
            relu, tanh = (_epochs_per_seed(runs[act], i, target) for act in ("relu", "tanh"))
            apart = [round((r - t) / step) for r, t in zip(relu, tanh, strict=True) if r and t]
            if apart:
                numbers[f"apart_{kind}_lr_{i}_min"] = min(apart)
                numbers[f"apart_{kind}_lr_{i}_max"] = max(apart)


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
    ``speedup_fine_<inputs>`` (tanh / ReLU, per seed that reached the target with both; their
    count in ``speedup_<inputs>_n`` and ``speedup_fine_<inputs>_n``);
    ``speedup_<inputs>_lr_<i>`` (the same at the learning rate ``lr_<i>`` of the sweep, in
    increasing order, with ``_n``); ``reached_<act>_<inputs>`` and
    ``reached_fine_<act>_<inputs>`` (seeds that reached ``target`` / ``fine_target`` at
    ``lr``), each activation at its own best rate (`_best_rate_numbers`), the timing's
    resolution (`_resolution_numbers`) and the settings.
    """
    epochs = ctx.pick(smoke=1, quick=2, full=7)
    seeds = comparison_seeds(ctx)
    lrs = sorted(set(ctx.pick(smoke=[lr], quick=lrs, full=lrs)) | {lr})
    inputs = {"std": 1.0, "raw": input_scale}
    data = ctx.compute(
        relu_vs_tanh_runs, input_scales=inputs, lrs=lrs, seeds=seeds, epochs=epochs,
        curve_every=ctx.pick(smoke=1, quick=2, full=4), depth=depth, width=width,
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
    fig, axes = subplots(2, 2, width=6.9, height=6.2)
    ax_speed = wide_bottom_row(fig, axes)
    titles = {"std": "standardised inputs", "raw": f"inputs ×{input_scale:g} (raw spread)"}
    floor = _error_floor(ctx, data, i_lr)
    for ax, kind in zip(axes[0], inputs, strict=True):
        _error_panel(
            ax, kind, data[kind], numbers,
            i_lr=i_lr, floor=floor, target=target, fine_target=fine_target,
        )  # fmt: skip
        ax.set(title=titles[kind], xlabel="epoch", ylim=(floor * 0.8, 1.0))
    axes[0, 0].set_ylabel(f"training error (log), lr {lr:g}")
    numbers.update({f"lr_{i}": rate for i, rate in enumerate(lrs)})
    _speedup_panel(ax_speed, data, lrs, target, titles, numbers, band=len(seeds) > 1)
    _best_rate_numbers(data, lrs, target, numbers)
    _resolution_numbers(data, lrs, target, numbers)
    log_decade_labels(*axes[0])
    rate_ticks(ax_speed, lrs)
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


def _dead_during_training(
    ax: Any, data: dict[str, Any], lrs: Sequence[float], rates: dict[str, float],
    numbers: dict[str, Any], *, band: bool,
) -> None:  # fmt: skip
    """The top panel of `dead_relus`: the dead fraction during training at each of
    ``rates`` (``{name: learning rate}``), mean over the seeds that have not diverged, with a
    min-max band if ``band``; puts the numbers after training in ``numbers``."""
    for (name, rate), color in zip(rates.items(), (PALETTE[2], PALETTE[4]), strict=True):
        i = lrs.index(rate)
        dead, diverged = data["dead"][i], data["diverged"][i]
        cols = [[v for v in col if math.isfinite(v)] for col in zip(*dead, strict=True)]
        times = [t for t, c in zip(data["epochs"], cols, strict=True) if c]
        cols = [c for c in cols if c]
        label = f"lr = {rate:g} ({name})"
        ax.plot(times, [sum(c) / len(c) for c in cols], color=color, label=label)
        if band:
            ax.fill_between(
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
    ax.set(
        title="dead units during training",
        xlabel="epoch",
        ylabel="fraction of hidden units dead",
        ylim=(-0.02, 1.0),
    )
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))


def _dead_after_training(ax: Any, data: dict[str, Any], lrs: Sequence[float]) -> list[float]:
    """The bottom panel of `dead_relus`: the dead fraction after training vs learning rate
    (every seed, x where its loss became NaN, and the mean) with the final training error of
    the seeds that finished; returns the mean dead fraction per learning rate."""
    means = []
    for i, r in enumerate(lrs):
        finals = []
        for d, div in zip(data["dead"][i], data["diverged"][i], strict=True):
            last = [v for v in d if math.isfinite(v)][-1]
            finals.append(last)
            ax.plot([r], [last], "x" if div else "o", color=PALETTE[0], alpha=0.6, ms=5, mew=1.5)
        means.append(sum(finals) / len(finals))
    ax.semilogx(lrs, means, "-", color=PALETTE[0], label="dead fraction:\nseeds (o), mean")
    ax.plot([], [], "x", color=PALETTE[0], mew=1.5, label="seed whose loss\nbecame NaN")
    errors = []
    for i in range(len(lrs)):
        finished = [e for e, d in zip(data["error"][i], data["diverged"][i], strict=True) if not d]
        errors.append(sum(finished) / len(finished) if finished else math.nan)
    ax.semilogx(
        lrs, errors, "s--", color=PALETTE[1], markersize=4, label="training error\n(finished seeds)"
    )
    return means


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
    epochs = ctx.pick(smoke=1, quick=2, full=5)
    seeds = comparison_seeds(ctx)
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
    numbers["dead_init"] = sum(d[0] for d in data["dead"][0]) / len(seeds)
    rates = {"normal": lr_normal, "high": lr_high}
    _dead_during_training(ax_t, data, lrs, rates, numbers, band=len(seeds) > 1)
    means = _dead_after_training(ax_lr, data, lrs)
    ax_lr.set(
        title=f"after {epochs} epochs",
        xlabel="learning rate (SGD, momentum 0.9)",
        ylabel="dead fraction / error",
        ylim=(-0.02, 1.0),
    )
    rate_ticks(ax_lr, lrs)
    ax_lr.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    numbers["dead_max"] = max(means)
    return fig, numbers
