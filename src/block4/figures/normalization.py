"""Figures of the chapter "Normalization and residual connections".

The chain-rule argument for skip connections is made with :mod:`block4.autograd` (the scalar
engine of the first chapters); every claim about training is checked by Lightning runs of
:class:`block4.modules.Classifier` on the digits data set.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from block4.autograd import Value, draw
from block4.callbacks import ActivationStats, GradientFlowMonitor
from block4.figures.registry import FigureContext, figure
from block4.modules import Classifier
from block4.style import PALETTE, ROLE, subplots
from block4.training import (
    ACTIVATION_LABELS,
    activation_and_derivative,
    digits,
    geometric_band,
    layer_grad_norms,
    steps_per_epoch,
    train_classifier,
)

#: Colours of the two architectures, the same on every figure of the chapter.
PLAIN_COLOR = PALETTE[4]
RESIDUAL_COLOR = PALETTE[0]


# --8<-- [start:chain_gradient]
def chain_gradient(depth: int, x0: float, w: float, residual: bool) -> float:
    """d x_L / d x_0 through ``depth`` scalar blocks, computed by :class:`block4.autograd.Value`.

    Each block is ``F(x) = sigmoid(w * x)``; a plain chain computes ``x_{l+1} = F(x_l)``, a
    residual one ``x_{l+1} = x_l + F(x_l)``. By the chain rule the plain gradient is the
    product of the local derivatives ``w * sigmoid'`` (each at most ``|w|/4``), the residual
    one the product of ``1 + w * sigmoid'``: the ``1`` is ``d(a + b)/da`` of the skip.
    """
    x = Value(x0, "x0")
    h = x
    for _ in range(depth):
        f = (h * w).sigmoid()
        h = h + f if residual else f
    h.backward()
    return x.grad


# --8<-- [end:chain_gradient]


@figure(
    "residual_highway",
    chapter="normalization-and-residuals",
    params={"x0": 0.5, "w": 0.8, "max_depth": 30},
)
def residual_highway(ctx: FigureContext, x0: float, w: float, max_depth: int):
    """One residual block as a graph with its gradients, and d x_L / d x_0 vs depth L.

    Numbers: ``grad_a``/``grad_b`` of ``a + b`` (both exactly 1), ``block_grad_x`` (the
    gradient reaching the block's input: 1 through the skip plus the branch's share),
    ``plain_grad_at_<L>`` / ``residual_grad_at_<L>`` for L in (1, 10, 30).
    """
    # d(a + b)/da = d(a + b)/db = 1, by the engine.
    a, b = Value(1.5, "a"), Value(-0.7, "b")
    s = a + b
    s.backward()
    numbers: dict[str, float] = {"grad_a": a.grad, "grad_b": b.grad, "w": w, "x0": x0}
    numbers["max_depth"] = max_depth

    # One residual block H(x) = x + F(x), F(x) = sigmoid(w x): the graph and its gradients.
    x = Value(x0, "x")
    wv = Value(w, "w")
    z = x * wv
    z.label = "w·x"
    f = z.sigmoid()
    f.label = "F(x)"
    h = x + f
    h.label = "H(x)"
    h.backward()
    numbers["block_grad_x"] = x.grad
    numbers["block_grad_branch"] = x.grad - 1.0

    depths = list(range(1, max_depth + 1))
    plain = [chain_gradient(d, x0, w, residual=False) for d in depths]
    resid = [chain_gradient(d, x0, w, residual=True) for d in depths]
    for d in (1, 10, max_depth):
        numbers[f"plain_grad_at_{d}"] = plain[d - 1]
        numbers[f"residual_grad_at_{d}"] = resid[d - 1]

    fig, (ax_graph, ax_depth) = subplots(
        1, 2, width=10.5, height=3.6, gridspec_kw={"width_ratios": [1.5, 1]}
    )
    draw(h, ax=ax_graph, title="one residual block H(x) = x + F(x): value / gradient")
    ax_depth.semilogy(depths, plain, "o-", color=PLAIN_COLOR, markersize=3, label="plain")
    ax_depth.semilogy(depths, resid, "o-", color=RESIDUAL_COLOR, markersize=3, label="residual")
    ax_depth.axhline(1.0, color=ROLE["truth"], linewidth=1, linestyle=":")
    ax_depth.set(
        title=f"chain of sigmoid blocks, w = {w:g}",
        xlabel="number of blocks L",
        ylabel="|d x_L / d x_0| (log scale)",
    )
    ax_depth.legend()
    return fig, numbers


# --- batch normalisation --------------------------------------------------------------------


def _ridge(ax, rows, edges, color, *, fill: bool, label: str | None = None) -> None:  # noqa: ANN001
    """Histograms stacked vertically, layer 1 at the bottom, each scaled to height 0.85."""
    centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:], strict=True)]
    for i, hist in enumerate(rows):
        peak = max(max(hist), 1)
        ys = [i + 0.85 * h / peak for h in hist]
        if fill:
            ax.fill_between(
                centres,
                i,
                ys,
                color=color,
                alpha=0.55,
                linewidth=0,
                label=label if i == 0 else None,
            )
        else:
            ax.plot(
                centres, ys, color=ROLE["truth"], linewidth=1.1, label=label if i == 0 else None
            )


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
    digits. Each panel stacks the histogram of every layer's pre-activations (the input of the
    activation function) for one training batch: outline at the initial weights, filled after
    training. The band marks the region where the activation's slope is above
    ``f'(saturation)``.

    Numbers: ``saturated_<no_bn|bn>_<init|trained>`` = fraction of pre-activations with
    ``|z| > saturation`` (mean over layers), ``std_<no_bn|bn>_trained_max`` (largest per-layer
    standard deviation), ``error_<no_bn|bn>`` (final training error), ``slope_at_saturation``.
    """
    epochs = ctx.pick(smoke=1, quick=5, full=15)
    numbers: dict[str, Any] = {
        "epochs": epochs,
        "depth": depth,
        "width": width,
        "lr": lr,
        "saturation": saturation,
    }
    fig, axes = subplots(1, 2, width=10.0, height=4.2, sharey=True)
    limit = 6.0
    for ax, norm, key in zip(axes, (None, "batch"), ("no_bn", "bn"), strict=True):
        data = digits(ctx, ctx.seed)
        data.setup()
        last = epochs * steps_per_epoch(data) - 1
        stats = ActivationStats(
            steps=[0, last], bins=48, hist_range=(-limit, limit), saturation=saturation
        )
        _, curve, _ = train_classifier(
            ctx,
            epochs=epochs,
            seed=ctx.seed,
            datamodule=data,
            callbacks=[stats],
            depth=depth,
            width=width,
            activation=activation,
            init=init,
            norm=norm,
            lr=lr,
        )
        ax.axvspan(
            -saturation,
            saturation,
            color=ROLE["truth"],
            alpha=0.12,
            linewidth=0,
            label=f"|z| < {saturation:g}: slope > {float(_slope(activation, saturation)):.2f}",
        )
        for step, fill, label in ((0, False, "at init"), (last, True, f"after {epochs} epochs")):
            rows = sorted(stats.table.where(step=step), key=lambda r: r["depth_index"])
            _ridge(
                ax,
                [r["hist"] for r in rows],
                rows[0]["bin_edges"],
                PALETTE[0] if norm is None else PALETTE[2],
                fill=fill,
                label=label,
            )
            when = "init" if step == 0 else "trained"
            numbers[f"saturated_{key}_{when}"] = sum(r["frac_saturated"] for r in rows) / len(rows)
            numbers[f"std_{key}_{when}_max"] = max(r["pre_std"] for r in rows)
        numbers[f"error_{key}"] = curve.errors[-1]
        title = "without batch norm" if norm is None else "with batch norm (before the activation)"
        ax.set(
            title=title, xlabel=f"pre-activation z (input of {activation})", xlim=(-limit, limit)
        )
        ax.legend(loc="upper right", fontsize=8)
    axes[0].set_yticks([i + 0.3 for i in range(depth)], [f"layer {i + 1}" for i in range(depth)])
    axes[0].set_ylim(-0.1, depth + 0.9)
    numbers["slope_at_saturation"] = float(_slope(activation, saturation))
    return fig, numbers


def _slope(activation: str, z: float) -> float:
    """The activation's derivative at ``z`` (autograd)."""
    return float(activation_and_derivative(activation, torch.tensor([z]))[1][0])


@figure(
    "bn_learning_rates",
    chapter="normalization-and-residuals",
    params={
        "depth": 10,
        "width": 32,
        "lrs": [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0],
        "good_loss": 0.5,
    },
)
def bn_learning_rates(ctx: FigureContext, depth: int, width: int, lrs: list, good_loss: float):
    """Final training loss vs learning rate, with and without batch norm.

    ``depth``-layer MLPs (ReLU with Kaiming init; sigmoid with PyTorch's default init), SGD
    with momentum 0.9, the same number of epochs for every learning rate. A run whose loss
    became NaN is drawn as a cross at the top.

    Numbers (``<act>_<no_bn|bn>``): ``best_lr_*``, ``best_loss_*``, ``good_lrs_*`` (how many
    learning rates of the sweep reach a loss below ``good_loss``), ``max_good_lr_*`` and
    ``diverged_*`` (how many learning rates diverged).
    """
    epochs = ctx.pick(smoke=1, quick=8, full=20)
    seeds = ctx.pick(smoke=[ctx.seed], quick=[ctx.seed], full=[ctx.seed + i for i in range(3)])
    lrs = ctx.pick(smoke=[0.01, 1.0], quick=lrs, full=lrs)
    numbers: dict[str, Any] = {
        "epochs": epochs,
        "depth": depth,
        "width": width,
        "seeds": len(seeds),
        "good_loss": good_loss,
    }
    fig, ax = subplots(1, 1, width=6.8, height=4.0)
    top = 4.0  # losses above are drawn at the top; NaN runs as crosses above that
    configs = (("relu", "kaiming"), ("sigmoid", "default"))
    for act, init in configs:
        for norm, key in ((None, "no_bn"), ("batch", "bn")):
            losses, crosses = [], []
            for rate in lrs:
                finals = []
                for seed in seeds:
                    _, curve, diverged = train_classifier(
                        ctx,
                        epochs=epochs,
                        seed=seed,
                        depth=depth,
                        width=width,
                        activation=act,
                        init=init,
                        norm=norm,
                        lr=rate,
                    )
                    finals.append(math.inf if diverged else curve.losses[-1])
                finite = [v for v in finals if math.isfinite(v)]
                losses.append(sum(finite) / len(finite) if finite else math.nan)
                crosses.append(len(finite) < len(finals))
            color = PALETTE[0] if norm is None else PALETTE[2]
            style = "-" if act == "relu" else "--"
            label = f"{ACTIVATION_LABELS[act]} ({init} init), {'no BN' if norm is None else 'BN'}"
            ax.semilogx(
                lrs,
                [min(v, top) for v in losses],
                style,
                marker="o",
                markersize=4,
                color=color,
                label=label,
            )
            bad = [r for r, c in zip(lrs, crosses, strict=True) if c]
            ax.plot(
                bad, [top + 0.2] * len(bad), "x", color=color, mew=2, markersize=7, clip_on=False
            )
            name = f"{act}_{key}"
            valid = [(v, r) for v, r in zip(losses, lrs, strict=True) if math.isfinite(v)]
            best_loss, best_lr = min(valid) if valid else (math.nan, math.nan)
            numbers[f"best_lr_{name}"] = best_lr if valid else "none"
            numbers[f"best_loss_{name}"] = best_loss if valid else "none"
            good = [r for v, r in valid if v < good_loss]
            numbers[f"good_lrs_{name}"] = len(good)
            numbers[f"max_good_lr_{name}"] = max(good) if good else "none"
            numbers[f"diverged_{name}"] = sum(crosses)
    ax.axhline(good_loss, color=ROLE["truth"], linestyle=":", linewidth=1)
    ax.set_yticks(range(int(top) + 1))
    ax.set(
        title=f"{depth}-layer MLPs on digits, {epochs} epochs of SGD (momentum 0.9)",
        xlabel="learning rate",
        ylabel="final training loss (cross-entropy)",
        ylim=(0, top + 0.35),
    )
    ax.plot([], [], "x", color=ROLE["truth"], mew=2, label="loss became NaN")
    ax.legend(loc="upper left", fontsize=8)
    return fig, numbers


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
    (``bias=True``; :func:`block4.models.mlp` drops them by default). Left: during training,
    the gradient norm of each hidden layer's weight and of its bias (from
    ``GradientFlowMonitor(include_bias=True)``). Right: the largest change of the logits of a
    batch when every hidden bias is shifted by ``c``, with and without batch norm.

    Numbers: ``bias_grad_max`` (largest hidden-bias gradient norm seen in training),
    ``weight_grad_min`` (smallest hidden-weight gradient norm), ``bias_moved_max`` (largest
    change of any hidden bias over training), ``logit_change_bn_max`` /
    ``logit_change_plain_max`` (largest logit change over the shifts), ``epochs``.
    """
    epochs = ctx.pick(smoke=1, quick=3, full=10)
    monitor = GradientFlowMonitor(include_bias=True)
    data = digits(ctx, ctx.seed)
    data.setup()

    def hidden_biases(model) -> list[torch.Tensor]:  # noqa: ANN001
        return [block.linear.bias.detach().cpu().clone() for _, block in model.body.hidden_blocks()]

    # One ReLU body with BN and hidden biases for every network of this figure.
    hparams: dict[str, Any] = {
        "depth": depth,
        "width": width,
        "activation": "relu",
        "init": "default",
        "norm": "batch",
        "bias": True,
    }

    def classifier(**overrides: Any) -> Classifier:
        return Classifier(
            in_features=data.in_features,
            n_classes=10,
            seed=ctx.seed,
            **{**hparams, **overrides},
        )

    # The same initial weights that train_classifier starts from (same seed, same hparams).
    before = hidden_biases(classifier())
    model, _, _ = train_classifier(
        ctx, epochs=epochs, seed=ctx.seed, datamodule=data, callbacks=[monitor], lr=lr, **hparams
    )
    after = hidden_biases(model)
    hidden_rows = [r for r in monitor.table if r["layer"] != "head"]
    n_steps = steps_per_epoch(data)

    fig, (ax_g, ax_s) = subplots(1, 2, width=10.5, height=3.6)
    for i in range(depth):
        rows = [r for r in hidden_rows if r["depth_index"] == i]
        x = [r["step"] / n_steps for r in rows]
        color = PALETTE[i % len(PALETTE)]
        ax_g.semilogy(
            x,
            [r["grad_norm"] for r in rows],
            color=color,
            linewidth=1,
            label=f"layer {i + 1}: weight",
        )
        ax_g.semilogy(
            x,
            [max(r["bias_grad_norm"], 1e-12) for r in rows],
            ":",
            color=color,
            linewidth=1.2,
            label=f"layer {i + 1}: bias",
        )
    ax_g.set(
        title="gradient norms during training (BN after each linear layer)",
        xlabel="epoch",
        ylabel="‖gradient‖ (log scale)",
        ylim=(1e-12, 10),
    )
    ax_g.legend(loc="center right", ncol=2, fontsize=7)

    # Shift every hidden bias by c: with BN (train mode, batch statistics) nothing changes.
    x_batch = data.tensors("train")[0][:256].cpu()  # the splits live on the training device
    changes = {}
    for norm in ("batch", None):
        net = classifier(norm=norm).body
        net.train()
        with torch.no_grad():
            base = net(x_batch)
            original = [block.linear.bias.clone() for _, block in net.hidden_blocks()]
            out = []
            for c in shifts:
                for (_, block), b in zip(net.hidden_blocks(), original, strict=True):
                    block.linear.bias.copy_(b + c)
                out.append(float((net(x_batch) - base).abs().max()))
            for (_, block), b in zip(net.hidden_blocks(), original, strict=True):
                block.linear.bias.copy_(b)
        changes[norm] = out
        ax_s.plot(
            shifts,
            [max(v, 1e-12) for v in out],
            "o-",
            color=PALETTE[2] if norm else PALETTE[4],
            label="with batch norm" if norm else "without batch norm",
        )
    ax_s.set_yscale("log")
    ax_s.set(
        title="shift every hidden bias by c",
        xlabel="shift c",
        ylabel="max |change of the logits| (log scale)",
        ylim=(1e-12, 1e3),
    )
    ax_s.legend(loc="upper center")
    numbers = {
        "epochs": epochs,
        "depth": depth,
        "width": width,
        "bias_grad_max": max(r["bias_grad_norm"] for r in hidden_rows),
        "weight_grad_min": min(r["grad_norm"] for r in hidden_rows),
        "bias_moved_max": max(
            float((a - b).abs().max()) for a, b in zip(after, before, strict=True)
        ),
        "logit_change_bn_max": max(changes["batch"]),
        "logit_change_plain_max": max(changes[None]),
    }
    return fig, numbers


# --- residual connections -------------------------------------------------------------------

#: The two families compared at increasing depth: a saturating activation with PyTorch's
#: default init, and the ResNet recipe (ReLU, Kaiming init, batch norm).
RESIDUAL_FAMILIES = {
    "tanh": {"activation": "tanh", "init": "default", "norm": None},
    "relu_bn": {"activation": "relu", "init": "kaiming", "norm": "batch"},
}
FAMILY_LABELS = {"tanh": "tanh, default init", "relu_bn": "ReLU + BN, Kaiming init"}


def first_last_ratio(norms: list[float]) -> float:
    """|gradient of the first layer| / |gradient of the output layer|."""
    return norms[0] / norms[-1]


@figure(
    "residual_depth",
    chapter="normalization-and-residuals",
    params={"depths": [2, 5, 10, 20, 30, 50], "width": 32, "lr": 0.01, "show_depth": 50},
)
def residual_depth(ctx: FigureContext, depths: list, width: int, lr: float, show_depth: int):
    """Plain vs residual MLPs at increasing depth: training error and per-layer gradients.

    Left: final training error vs depth (the degradation problem: deeper plain nets train
    *worse*, on the training set). Right: per-layer weight-gradient norm at the initial
    weights for ``show_depth`` layers. Residual blocks compute ``x + act(norm(W x + b))``
    (every hidden block but the first, whose input width differs).

    Numbers (``<family>`` is ``tanh`` or ``relu_bn``, ``<arch>`` ``plain`` or ``residual``):
    ``error_<family>_<arch>_<depth>``, ``ratio_<family>_<arch>_<depth>`` (first/last layer
    gradient norm at init), ``epochs``, ``seeds``.
    """
    epochs = ctx.pick(smoke=1, quick=10, full=30)
    seeds = ctx.pick(smoke=[ctx.seed], quick=[ctx.seed], full=[ctx.seed + i for i in range(3)])
    depths = ctx.pick(smoke=[2, 20], quick=depths, full=depths)
    show_depth = show_depth if show_depth in depths else max(depths)
    numbers: dict[str, Any] = {
        "epochs": epochs,
        "seeds": len(seeds),
        "width": width,
        "lr": lr,
        "show_depth": show_depth,
    }
    fig, (ax_e, ax_g) = subplots(1, 2, width=10.5, height=3.8)
    for family, hp in RESIDUAL_FAMILIES.items():
        for residual in (False, True):
            arch = "residual" if residual else "plain"
            color = RESIDUAL_COLOR if residual else PLAIN_COLOR
            style = "-" if family == "tanh" else "--"
            errors, lows, highs = [], [], []
            for depth in depths:
                per_seed, grads = [], []
                for seed in seeds:
                    monitor = GradientFlowMonitor(steps=[0])
                    _, curve, diverged = train_classifier(
                        ctx,
                        epochs=epochs,
                        seed=seed,
                        callbacks=[monitor],
                        depth=depth,
                        width=width,
                        residual=residual,
                        lr=lr,
                        **hp,
                    )
                    per_seed.append(0.9 if diverged else curve.errors[-1])
                    grads.append(layer_grad_norms(monitor, [0]))
                errors.append(sum(per_seed) / len(per_seed))
                lows.append(min(per_seed))
                highs.append(max(per_seed))
                mean_grads = geometric_band(grads)[0]
                key = f"{family}_{arch}_{depth}"
                numbers[f"error_{key}"] = errors[-1]
                numbers[f"ratio_{key}"] = first_last_ratio(mean_grads)
                if depth == show_depth:
                    ax_g.semilogy(
                        range(1, depth + 2),
                        mean_grads,
                        style,
                        color=color,
                        label=f"{arch}, {FAMILY_LABELS[family]}",
                    )
            ax_e.plot(
                depths,
                errors,
                style,
                marker="o",
                markersize=4,
                color=color,
                label=f"{arch}, {FAMILY_LABELS[family]}",
            )
            if len(seeds) > 1:
                ax_e.fill_between(depths, lows, highs, color=color, alpha=0.15, linewidth=0)
    ax_e.set(
        title=f"training error after {epochs} epochs",
        xlabel="hidden layers (depth)",
        ylabel="training error",
        ylim=(-0.02, 1.0),
    )
    ax_g.set(
        title=f"gradient per layer at init, depth {show_depth}",
        xlabel=f"layer (1 = input side, {show_depth + 1} = output)",
        ylabel="‖∂loss/∂W‖ (log scale)",
    )
    ax_g.legend(loc="lower right", fontsize=8)
    return fig, numbers
