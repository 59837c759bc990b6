"""Figures of the chapter "Normalization and residual connections": the batch-norm half.

Every claim about batch norm is checked by Lightning runs of `block4.modules.Classifier`
on the digits data set. Networks of one shape (seeds, learning rates) are trained as one stack
by `block4.training.train_members`; the ``*_runs`` functions hold that expensive part and
return plain data. The residual figures of the chapter live in `block4.figures.residuals`.
"""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from block4.callbacks import ActivationStats, GradientFlowMonitor
from block4.figures.registry import FigureContext, figure
from block4.modules import Classifier
from block4.style import PALETTE, ROLE, log_decade_labels, rate_ticks, subplots
from block4.training import (
    ACTIVATION_LABELS,
    activation_and_derivative,
    comparison_seeds,
    digits,
    geometric_band,
    put_summary,
    steps_per_epoch,
    train_members,
)


def _band_note(seeds: list[int]) -> str:
    return f"{len(seeds)} seeds: mean, band min-max" if len(seeds) > 1 else "one seed"


def _ridge(ax, rows, edges, color, *, fill: bool) -> None:  # noqa: ANN001
    """Histograms stacked vertically, layer 1 at the bottom, each scaled to height 0.85."""
    centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:], strict=True)]
    for i, hist in enumerate(rows):
        peak = max(max(hist), 1)
        ys = [i + 0.85 * h / peak for h in hist]
        if fill:
            ax.fill_between(centres, i, ys, color=color, alpha=0.55, linewidth=0)
        else:
            ax.plot(centres, ys, color=ROLE["truth"], linewidth=1.1)


def bn_preactivations_runs(
    ctx: FigureContext,
    *,
    seeds: list[int],
    epochs: int,
    saturation: float,
    limit: float,
    **hparams: Any,
) -> dict[str, Any]:
    """Pre-activation statistics of every layer at the first and the last step, without and
    with batch norm: one stack of ``seeds`` per architecture.

    Returns:
        ``{"no_bn" | "bn": {"init" | "trained": {"hist": [[counts per bin] per layer]
        (summed over seeds), "saturated": [mean over layers, per seed], "std_max": [largest
        per-layer std, per seed]}, "error": [final error per seed]}, "bin_edges": [...]}``.
    """
    data = digits(ctx, seeds[0])
    data.setup()
    last = epochs * steps_per_epoch(data) - 1
    out: dict[str, Any] = {}
    for norm, key in ((None, "no_bn"), ("batch", "bn")):
        stats = ActivationStats(
            steps=[0, last], bins=48, hist_range=(-limit, limit), saturation=saturation, log=False
        )
        runs = train_members(
            ctx, epochs=epochs, seeds=seeds, data=data, callbacks=[stats], norm=norm, **hparams
        )
        out[key] = {"error": runs.errors()}
        for step, when in ((0, "init"), (last, "trained")):
            rows = stats.table.where(step=step)
            members = (
                [rows.where(member=k) for k in range(len(seeds))] if len(seeds) > 1 else [rows]
            )
            layers = sorted({r["depth_index"] for r in rows})
            hist = [
                [sum(c) for c in zip(*[r["hist"] for r in rows if r["depth_index"] == i],
                                     strict=True)]
                for i in layers
            ]  # fmt: skip
            out[key][when] = {
                "hist": hist,
                "saturated": [sum(r["frac_saturated"] for r in m) / len(m) for m in members],
                "std_max": [max(r["pre_std"] for r in m) for m in members],
            }
        out["bin_edges"] = stats.bin_edges
    return out


@figure(
    "bn_preactivations",
    chapter="normalization-and-residuals",
    params={
        "depth": 8,
        "width": 64,
        "activation": "tanh",
        "init": "xavier",
        "lr": 0.1,
        "saturation": 2.0,
    },
)
def bn_preactivations(
    ctx: FigureContext,
    depth: int,
    width: int,
    activation: str,
    init: str,
    lr: float,
    saturation: float,
):
    """Pre-activations per layer, without and with batch norm (from ``ActivationStats``).

    A ``depth``-layer ``activation`` MLP (``init`` init, SGD with momentum 0.9 at ``lr``) on
    digits, several seeds in one stack per architecture. Each panel stacks the histogram of
    every layer's pre-activations (the input of the activation function), pooled over the
    seeds' training batches: outline at the initial weights, filled after training. The band
    marks the region where the activation's slope is above ``f'(saturation)``.

    Numbers (mean over seeds, with ``_sd``, ``_min``, ``_max``):
    ``saturated_<no_bn|bn>_<init|trained>`` = fraction of pre-activations with
    ``|z| > saturation`` (mean over layers), ``std_<no_bn|bn>_trained_max`` (largest
    per-layer standard deviation), ``error_<no_bn|bn>`` (final training error);
    ``slope_at_saturation``, ``seeds``.
    """
    epochs = ctx.pick(smoke=1, quick=1, full=6)
    seeds = comparison_seeds(ctx)
    limit = 6.0
    data = ctx.compute(
        bn_preactivations_runs, seeds=seeds, epochs=epochs, saturation=saturation, limit=limit,
        depth=depth, width=width, activation=activation, init=init, lr=lr,
    )  # fmt: skip
    numbers: dict[str, Any] = {
        "epochs": epochs,
        "depth": depth,
        "width": width,
        "lr": lr,
        "saturation": saturation,
        "seeds": len(seeds),
    }
    slope = _slope(activation, saturation)
    fig, axes = subplots(1, 2, width=6.9, height=4.6, sharey=True)
    for ax, key in zip(axes, ("no_bn", "bn"), strict=True):
        ax.axvspan(-saturation, saturation, color=ROLE["truth"], alpha=0.12, linewidth=0)
        color = PALETTE[0] if key == "no_bn" else PALETTE[2]
        for when, fill in (("init", False), ("trained", True)):
            run = data[key][when]
            _ridge(ax, run["hist"], data["bin_edges"], color, fill=fill)
            put_summary(numbers, f"saturated_{key}_{when}", run["saturated"])
            put_summary(numbers, f"std_{key}_{when}_max", run["std_max"])
        put_summary(numbers, f"error_{key}", data[key]["error"])
        title = "without batch norm" if key == "no_bn" else "with batch norm"
        ax.set(
            title=title, xlabel=f"pre-activation z (input of {activation})", xlim=(-limit, limit)
        )
    axes[0].set_yticks([i + 0.3 for i in range(depth)], [f"layer {i + 1}" for i in range(depth)])
    axes[0].set_ylim(-0.1, depth + 0.05)
    handles = [
        Patch(color=ROLE["truth"], alpha=0.25, label=f"|z| < {saturation:g}: slope > {slope:.2f}"),
        Line2D([], [], color=ROLE["truth"], label="at init"),
        Patch(color=PALETTE[0], alpha=0.55, label=f"after {epochs} epochs, no BN"),
        Patch(color=PALETTE[2], alpha=0.55, label=f"after {epochs} epochs, BN"),
    ]
    pooled = f"histograms pooled over {len(seeds)} seeds" if len(seeds) > 1 else "one seed"
    fig.legend(handles=handles, loc="outside upper center", ncol=2, title=pooled)
    numbers["slope_at_saturation"] = slope
    return fig, numbers


def _slope(activation: str, z: float) -> float:
    """The activation's derivative at ``z`` (autograd)."""
    return float(activation_and_derivative(activation, torch.tensor([z]))[1][0])


#: The networks of the learning-rate sweep: (activation, init) x (norm, key).
LR_SWEEP_CONFIGS = (("relu", "kaiming"), ("sigmoid", "default"))
LR_SWEEP_NORMS = ((None, "no_bn"), ("batch", "bn"))


def bn_learning_rates_runs(
    ctx: FigureContext, *, lrs: list[float], seeds: list[int], epochs: int, **hparams: Any
) -> dict[str, dict[str, list[list[float]]]]:
    """Final training losses of the sweep: one stack per (activation, norm), members =
    learning rates x seeds; a member that diverges is frozen and reported.

    Returns:
        ``{"<act>_<no_bn|bn>": {"loss": [[final loss per seed] per lr], "diverged":
        [[bool ...] ...]}}`` (``inf`` loss for a diverged member).
    """
    data = digits(ctx, seeds[0])
    data.setup()
    out: dict[str, dict[str, list[list[float]]]] = {}
    for act, init in LR_SWEEP_CONFIGS:
        for norm, key in LR_SWEEP_NORMS:
            runs = train_members(
                ctx, epochs=epochs, seeds=[s for _ in lrs for s in seeds], data=data,
                activation=act, init=init, norm=norm, lr=[r for r in lrs for _ in seeds],
                **hparams,
            )  # fmt: skip
            losses = runs.losses()
            n = len(seeds)
            out[f"{act}_{key}"] = {
                "loss": [losses[i * n : (i + 1) * n] for i in range(len(lrs))],
                "diverged": [runs.diverged[i * n : (i + 1) * n] for i in range(len(lrs))],
            }
    return out


def _put_sweep_numbers(
    numbers: dict[str, Any],
    name: str,
    lrs: list[float],
    finite: list[list[float]],
    diverged: list[list[bool]],
    good_loss: float,
) -> None:
    """The numbers of one line of the learning-rate sweep (see `bn_learning_rates`).

    ``finite`` holds the finite final losses per learning rate, ``diverged`` which seeds of
    each learning rate diverged.
    """
    means = [sum(f) / len(f) if f else math.nan for f in finite]
    crosses = [any(d) for d in diverged]
    valid = [
        (m, r, i)
        for i, (m, r, c) in enumerate(zip(means, lrs, crosses, strict=True))
        if math.isfinite(m)
    ]
    if valid:
        best_loss, best_lr, i_best = min(valid)
        numbers[f"best_lr_{name}"] = best_lr
        put_summary(numbers, f"best_loss_{name}", finite[i_best])
    else:
        numbers[f"best_lr_{name}"] = numbers[f"best_loss_{name}"] = "none"
    good = [r for m, r, i in valid if m < good_loss and not crosses[i]]
    numbers[f"good_lrs_{name}"] = len(good)
    numbers[f"max_good_lr_{name}"] = max(good) if good else "none"
    numbers[f"diverged_{name}"] = sum(crosses)
    numbers[f"diverged_runs_{name}"] = sum(sum(d) for d in diverged)
    put_summary(numbers, f"top_lr_loss_{name}", finite[lrs.index(max(lrs))])


@figure(
    "bn_learning_rates",
    chapter="normalization-and-residuals",
    params={
        "depth": 10,
        "width": 32,
        "lrs": [0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0],
        "good_loss": 0.5,
    },
)
def bn_learning_rates(ctx: FigureContext, depth: int, width: int, lrs: list, good_loss: float):
    """Final training loss vs learning rate, with and without batch norm.

    ``depth``-layer MLPs (ReLU with Kaiming init; sigmoid with PyTorch's default init), SGD
    with momentum 0.9, the same number of epochs for every learning rate; every learning
    rate and seed of one architecture in one stack. Lines: mean over the seeds that did not
    diverge, band min-max; a cross at the top marks a learning rate at which at least one
    seed's loss became NaN (that member is frozen, the others go on).

    Numbers (``<act>_<no_bn|bn>``): ``best_lr_*``, ``best_loss_*`` (lowest mean final loss;
    ``best_loss_*_sd`` its spread over seeds), ``good_lrs_*`` (how many learning rates of
    the sweep reach a mean loss below ``good_loss`` with no seed diverged), ``max_good_lr_*``,
    ``diverged_*`` (learning rates with a diverged seed), ``diverged_runs_*`` (diverged
    members of the whole sweep), ``top_lr_loss_*`` (final loss at the largest learning rate,
    over the seeds that did not diverge; ``n/a`` if all did), ``top_lr``, ``n_lrs``, ``seeds``.
    """
    epochs = ctx.pick(smoke=1, quick=1, full=4)
    seeds = comparison_seeds(ctx)
    lrs = ctx.pick(smoke=[0.01, 1.0], quick=[0.01, 0.1, 1.0, 3.0], full=lrs)
    data = ctx.compute(
        bn_learning_rates_runs, lrs=lrs, seeds=seeds, epochs=epochs, depth=depth, width=width
    )
    numbers: dict[str, Any] = {
        "epochs": epochs,
        "depth": depth,
        "width": width,
        "seeds": len(seeds),
        "good_loss": good_loss,
        "n_lrs": len(lrs),
        "top_lr": max(lrs),
    }
    fig, ax = subplots(1, 1, width=6.9, height=4.6)
    top = 4.0  # losses above are drawn at the top; crosses above that
    for (act, init), (norm, key) in [(c, n) for c in LR_SWEEP_CONFIGS for n in LR_SWEEP_NORMS]:
        name = f"{act}_{key}"
        run = data[name]
        finite = [[v for v in seed_losses if math.isfinite(v)] for seed_losses in run["loss"]]
        means = [sum(f) / len(f) if f else math.nan for f in finite]
        crosses = [any(d) for d in run["diverged"]]
        color = PALETTE[0] if norm is None else PALETTE[2]
        style = "-" if act == "relu" else "--"
        label = f"{ACTIVATION_LABELS[act]} ({init} init), {'no BN' if norm is None else 'BN'}"
        ax.semilogx(
            lrs, [min(v, top) for v in means], style, marker="o", markersize=4, color=color,
            label=label,
        )  # fmt: skip
        if len(seeds) > 1:
            ax.fill_between(
                lrs, [min(min(f), top) if f else math.nan for f in finite],
                [min(max(f), top) if f else math.nan for f in finite],
                color=color, alpha=0.12, linewidth=0,
            )  # fmt: skip
        bad = [r for r, c in zip(lrs, crosses, strict=True) if c]
        marker_y = top + (0.15 if act == "relu" else 0.35)
        ax.plot(bad, [marker_y] * len(bad), "x", color=color, mew=2, markersize=7, clip_on=False)
        _put_sweep_numbers(numbers, name, lrs, finite, run["diverged"], good_loss)
    ax.axhline(good_loss, color=ROLE["truth"], linestyle=":", linewidth=1)
    ax.set_yticks(range(int(top) + 1))
    ax.set(
        title=f"{depth}-layer MLPs on digits, {epochs} epochs of SGD (momentum 0.9)",
        xlabel="learning rate",
        ylabel="final training loss (cross-entropy)",
        ylim=(0, top + 0.5),
    )
    rate_ticks(ax, lrs)
    ax.plot([], [], "x", color=ROLE["truth"], mew=2, label="a seed's loss became NaN")
    fig.legend(loc="outside upper center", ncol=2, title=_band_note(seeds))
    return fig, numbers


class _InitialBiases(pl.Callback):
    """Keeps a copy of the hidden biases at the start of training."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.biases = [
            block.linear.bias.detach().cpu().clone() for _, block in pl_module.body.hidden_blocks()
        ]


def bn_bias_runs(
    ctx: FigureContext, *, seeds: list[int], epochs: int, **hparams: Any
) -> dict[str, Any]:
    """Weight and bias gradient norms of every hidden layer at every step, and how far the
    biases moved, for a BN net that keeps its hidden biases: one stack of ``seeds``.

    Returns:
        ``{"epochs": [time of each step], "weight": [[[norm per step] per layer] per seed],
        "bias": [...same], "bias_moved": [largest |change| of a hidden bias, per seed]}``.
    """
    data = digits(ctx, seeds[0])
    data.setup()
    monitor = GradientFlowMonitor(include_bias=True, log=False)
    start = _InitialBiases()
    runs = train_members(
        ctx, epochs=epochs, seeds=seeds, data=data, callbacks=[monitor, start], **hparams
    )
    after = [block.linear.bias.detach().cpu() for _, block in runs.model.body.hidden_blocks()]
    n_steps = steps_per_epoch(data)
    hidden = [r for r in monitor.table if r["layer"] != "head"]
    steps = sorted({r["step"] for r in hidden})
    layers = sorted({r["depth_index"] for r in hidden})
    members = range(len(seeds))

    def series(k: int, i: int, column: str) -> list[float]:
        return [r[column] for r in hidden if r["depth_index"] == i and r.get("member", 0) == k]

    moved = [
        max(float((a - b).abs().reshape(len(seeds), -1)[k].max()) for a, b in
            zip(after, start.biases, strict=True))
        for k in members
    ]  # fmt: skip
    return {
        "epochs": [s / n_steps for s in steps],
        "weight": [[series(k, i, "grad_norm") for i in layers] for k in members],
        "bias": [[series(k, i, "bias_grad_norm") for i in layers] for k in members],
        "bias_moved": moved,
    }


def _plot_gradient_norms(ax: Any, data: dict[str, Any], depth: int, n_seeds: int) -> None:
    """The top panel of `bn_bias`: weight (solid) and bias (dotted) gradient norm of
    every hidden layer per step, geometric mean over the seeds of ``bn_bias_runs``."""
    x = data["epochs"]
    for i in range(depth):
        color = PALETTE[i % len(PALETTE)]
        for column, style in (("weight", "-"), ("bias", ":")):
            runs = [[max(v, 1e-12) for v in member[i]] for member in data[column]]
            ax.semilogy(x, geometric_band(runs)[0], style, color=color, linewidth=1.2)
    for i in range(depth):
        ax.plot([], [], "-", color=PALETTE[i % len(PALETTE)], label=f"layer {i + 1}")
    ax.plot([], [], "-", color=ROLE["truth"], label="weight")
    ax.plot([], [], ":", color=ROLE["truth"], label="bias")
    ax.set(
        title="gradient norms during training (BN after each linear layer)",
        xlabel="epoch",
        ylabel="‖gradient‖ (log scale)",
        ylim=(1e-12, 10),
    )
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), title=f"{n_seeds} seeds")


def _logit_changes(
    x: torch.Tensor, hparams: dict[str, Any], norm: str | None, shifts: list, seed: int
) -> list[float]:
    """Largest |change of the logits| of the batch ``x`` when every hidden bias of a fresh
    network (``hparams`` with ``norm``, in train mode) is shifted by each ``c`` of ``shifts``.
    The biases are put back afterwards."""
    net = Classifier(
        in_features=x.shape[1], n_classes=10, seed=seed, **{**hparams, "norm": norm}
    ).body
    net.train()
    with torch.no_grad():
        base = net(x)
        original = [block.linear.bias.clone() for _, block in net.hidden_blocks()]
        out = []
        for c in shifts:
            for (_, block), b in zip(net.hidden_blocks(), original, strict=True):
                block.linear.bias.copy_(b + c)
            out.append(float((net(x) - base).abs().max()))
        for (_, block), b in zip(net.hidden_blocks(), original, strict=True):
            block.linear.bias.copy_(b)
    return out


@figure(
    "bn_bias",
    chapter="normalization-and-residuals",
    params={
        "depth": 4,
        "width": 32,
        "lr": 0.05,
        "shifts": [-5.0, -2.0, -1.0, -0.5, 0.5, 1.0, 2.0, 5.0],
    },
)
def bn_bias(ctx: FigureContext, depth: int, width: int, lr: float, shifts: list):
    """A bias right before batch norm gets zero gradient and changes nothing.

    A ``depth``-layer ReLU MLP with ``norm="batch"`` *and* biases in its linear layers
    (``bias=True``; `block4.models.mlp` drops them by default), several seeds in one
    stack. Top: during training, the gradient norm of each hidden layer's weight and of its
    bias (from ``GradientFlowMonitor(include_bias=True)``; geometric mean over seeds). Bottom:
    the largest change of the logits of a batch when every hidden bias is shifted by ``c``,
    with and without batch norm (one network each, at its initial weights).

    Numbers: ``bias_grad_max`` (largest hidden-bias gradient norm seen in training, any
    seed), ``weight_grad_min`` (smallest hidden-weight gradient norm, any seed),
    ``bias_moved_max`` (largest change of any hidden bias over training, any seed),
    ``logit_change_bn_max`` / ``logit_change_plain_max`` (largest logit change over the
    shifts), ``epochs``, ``seeds``.
    """
    epochs = ctx.pick(smoke=1, quick=1, full=3)
    seeds = comparison_seeds(ctx)
    # One ReLU body with BN and hidden biases for every network of this figure.
    hparams: dict[str, Any] = {
        "depth": depth,
        "width": width,
        "activation": "relu",
        "init": "default",
        "norm": "batch",
        "bias": True,
    }
    data = ctx.compute(bn_bias_runs, seeds=seeds, epochs=epochs, lr=lr, **hparams)

    fig, (ax_g, ax_s) = subplots(2, 1, width=6.9, height=6.6)
    _plot_gradient_norms(ax_g, data, depth, len(seeds))

    # Shift every hidden bias by c: with BN (train mode, batch statistics) nothing changes.
    x_batch = digits(ctx, ctx.seed).tensors("train")[0][:256].cpu()
    changes = {
        norm: _logit_changes(x_batch, hparams, norm, shifts, ctx.seed) for norm in ("batch", None)
    }
    for norm, out in changes.items():
        ax_s.plot(
            shifts,
            [max(v, 1e-12) for v in out],
            "o-",
            color=PALETTE[2] if norm else PALETTE[4],
            label="with batch norm" if norm else "without\nbatch norm",
        )
    ax_s.set_yscale("log")
    ax_s.set(
        title="shift every hidden bias by c",
        xlabel="shift c",
        ylabel="max |change of logits| (log)",
        ylim=(1e-12, 1e3),
    )
    log_decade_labels(ax_g, ax_s)
    ax_s.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    flat = lambda runs: [v for member in runs for layer in member for v in layer]  # noqa: E731
    numbers = {
        "epochs": epochs,
        "depth": depth,
        "width": width,
        "seeds": len(seeds),
        "bias_grad_max": max(flat(data["bias"])),
        "weight_grad_min": min(flat(data["weight"])),
        "bias_moved_max": max(data["bias_moved"]),
        "logit_change_bn_max": max(changes["batch"]),
        "logit_change_plain_max": max(changes[None]),
    }
    return fig, numbers
