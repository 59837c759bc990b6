"""Figures of the chapter "Normalization and residual connections": the real (convolutional) ResNet.

He et al.'s degradation experiment, scaled down to the 8x8 digits: plain and residual
convolutional nets (`block4.resnet`) of increasing depth, several seeds each. All nets of
one depth, plain and residual, every seed, train as *one* network
(`block4.resnet.StackedResNet`: grouped convolutions, one member per net) in one Lightning
run, so ten nets cost little more than one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from matplotlib.ticker import FuncFormatter, NullFormatter

from block4.data import DigitsDataModule, MemberBatches
from block4.figures.registry import FigureContext, figure
from block4.resnet import StackedResNet, stacked_resnet
from block4.style import PALETTE, ROLE, subplots

#: Colours of the two kinds of net (the same as the chapter's MLP figures).
PLAIN_COLOR = PALETTE[4]
RESIDUAL_COLOR = PALETTE[0]
KINDS = {"plain": False, "residual": True}


def member_losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``[E]``: each member's mean cross-entropy, from logits ``[E, B, C]`` and labels ``[E, B]``."""
    return F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(dim=1)


class StackedConvClassifier(pl.LightningModule):
    """Trains the members of a `StackedResNet` side by side (SGD with momentum).

    The loss is the sum over members of each member's mean cross-entropy: member k's
    gradient is exactly the gradient of its own run. ``epoch_errors[e][k]`` is member k's
    training error in epoch ``e`` (the fraction of training images it misclassified while
    training on them, as He et al. plot it).
    """

    def __init__(self, net: StackedResNet, lr: float, momentum: float = 0.9) -> None:
        super().__init__()
        self.net, self.lr, self.momentum = net, lr, momentum
        self.epoch_errors: list[list[float]] = []

    # --8<-- [start:stacked_training_step]
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        x, y = batch  # [E, B, 1, 8, 8], [E, B]
        logits = self.net(x)  # [E, B, 10]
        loss = member_losses(logits, y).sum()  # sum over members of each member's mean loss
        self._wrong += (logits.argmax(dim=-1) != y).sum(dim=1).detach()
        self._seen += y.shape[1]
        return loss

    # --8<-- [end:stacked_training_step]

    def on_train_epoch_start(self) -> None:
        self._wrong = torch.zeros(self.net.members, device=self.device)
        self._seen = 0

    def on_train_epoch_end(self) -> None:
        self.epoch_errors.append((self._wrong / self._seen).tolist())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=self.momentum)


def digit_images(ctx: FigureContext) -> tuple[torch.Tensor, torch.Tensor]:
    """The standardised digits training images as ``[N, 1, 8, 8]`` and their labels."""
    data = DigitsDataModule(n_train=ctx.pick(smoke=128, quick=256, full=None))
    data.setup()
    x, y = data.tensors("train")
    return x.reshape(-1, 1, 8, 8), y


def block_grad_norms(net: StackedResNet) -> torch.Tensor:
    """``[E, blocks]``: each member's gradient norm over the two conv weights of every block."""
    rows = []
    for block in net.blocks:
        squares = [
            conv.weight.grad.reshape(net.members, -1).square().sum(dim=1)
            for conv in (block.conv1, block.conv2)
        ]
        rows.append((squares[0] + squares[1]).sqrt())
    return torch.stack(rows, dim=1)


def degradation_runs(
    ctx: FigureContext,
    *,
    depths: list[int],
    seeds: list[int],
    width: int,
    stem_stride: int,
    epochs: int,
    batch_size: int,
    lr: float,
) -> dict[str, Any]:
    """Train plain and residual nets of every depth: one stacked Lightning run per depth.

    The stack of one depth holds a plain net and its residual twin per seed: the twins start
    from the same weights and see the same batches, only the shortcuts differ.

    Returns ``{"errors": {kind: [[per seed] per depth]}, "grads": {kind: [[[per block]
    per seed] per depth]}}``: the training error in the last epoch and the per-block gradient
    norms at the initial weights (on the first 256 training images).
    """
    x, y = digit_images(ctx)
    n = len(seeds)
    out: dict[str, Any] = {"errors": {k: [] for k in KINDS}, "grads": {k: [] for k in KINDS}}
    for depth in depths:
        net = stacked_resnet(
            depth,
            2 * n,
            width,
            seeds=seeds + seeds,
            residual=[False] * n + [True] * n,  # members 0..n-1 plain, n..2n-1 residual
            stem_stride=stem_stride,
        )
        # gradient per block at the initial weights, on one batch shared by every member
        member_losses(net(x[:256]), y[:256].expand(2 * n, -1)).sum().backward()
        grads = block_grad_norms(net).tolist()
        net.zero_grad(set_to_none=True)

        model = StackedConvClassifier(net, lr=lr)
        trainer = pl.Trainer(**ctx.trainer_kwargs(max_epochs=epochs))
        trainer.fit(model, train_dataloaders=MemberBatches(x, y, batch_size, seeds + seeds))
        for i, kind in enumerate(KINDS):
            out["errors"][kind].append(model.epoch_errors[-1][i * n : (i + 1) * n])
            out["grads"][kind].append(grads[i * n : (i + 1) * n])
    return out


def _mean_spread(values: Sequence[float]) -> tuple[float, float]:
    """Mean and (sample) standard deviation; the spread of one value is 0."""
    n = len(values)
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def _geometric_mean(values: Sequence[float]) -> float:
    return math.exp(sum(math.log(max(v, 1e-30)) for v in values) / len(values))


@figure(
    "resnet_degradation",
    chapter="normalization-and-residuals",
    params={
        "depths": [8, 20, 32],
        "width": 8,
        "stem_stride": 2,
        "batch_size": 64,
        "lr": 0.05,
    },
)
def resnet_degradation(
    ctx: FigureContext,
    depths: list,
    width: int,
    stem_stride: int,
    batch_size: int,
    lr: float,
):
    """He et al.'s degradation experiment on the 8x8 digits, plain vs residual conv nets.

    Top: training error in the last epoch vs depth (mean over seeds, a bar from the lowest to
    the highest seed, each seed a dot). Bottom: each block's gradient norm at the initial
    weights for the deepest nets (geometric mean over seeds, band from min to max).

    Numbers (``<kind>`` is ``plain`` or ``residual``): ``error_<kind>_<depth>`` (mean),
    ``error_sd_<kind>_<depth>`` (standard deviation over seeds), ``error_min_/error_max_``,
    ``grad_ratio_<kind>_<depth>`` (first block's gradient norm over the last block's,
    geometric mean over seeds), ``deepest``, ``shallowest``, ``seeds``, ``epochs``,
    ``blocks_<depth>``, ``width``, ``lr``, ``batch_size``.
    """
    seeds = [ctx.seed + i for i in range(ctx.pick(smoke=1, quick=1, full=5))]
    epochs = ctx.pick(smoke=1, quick=1, full=6)
    depths = ctx.pick(smoke=[4, 6], quick=depths, full=depths)
    width = ctx.pick(smoke=4, quick=width, full=width)
    data = ctx.compute(
        degradation_runs,
        depths=depths,
        seeds=seeds,
        width=width,
        stem_stride=stem_stride,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
    )
    numbers: dict[str, Any] = {
        "seeds": len(seeds),
        "epochs": epochs,
        "width": width,
        "lr": lr,
        "batch_size": batch_size,
        "shallowest": min(depths),
        "deepest": max(depths),
    }
    fig, (ax_e, ax_g) = subplots(2, 1, width=6.8, height=6.6)
    for kind in KINDS:
        numbers.update(_draw_kind(ax_e, ax_g, kind, data, depths, several=len(seeds) > 1))
    ax_e.plot([], [], "o", color=ROLE["truth"], markersize=3.5, alpha=0.6, label="one seed")
    ax_e.set(
        title=f"training error in epoch {epochs}, {len(seeds)} seed{'s' * (len(seeds) > 1)} each",
        xlabel="layers (conv + fully connected)",
        ylabel="training error",
        xticks=depths,
        ylim=(0, None),
    )
    ax_e.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    deepest = max(depths)
    ax_g.set(
        title=f"gradient per block at the initial weights, {deepest} layers",
        xlabel="block (1 = input side)",
        ylabel="‖∂loss/∂W‖ (log scale)",
    )
    # plain tick labels ("0.1", "1"): the default 10^x writes its exponent in 7-pt type
    ax_g.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax_g.yaxis.set_minor_formatter(NullFormatter())
    # the same legend entries as above, kept outside the data
    ax_g.plot([], [], "-", color=PLAIN_COLOR, label="plain")
    ax_g.plot([], [], "-", color=RESIDUAL_COLOR, label="residual")
    ax_g.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return fig, numbers


def _draw_kind(ax_e, ax_g, kind: str, data: dict, depths: list, *, several: bool) -> dict:
    """One architecture's errors by depth (top) and per-block gradients (bottom); its numbers."""
    color = RESIDUAL_COLOR if kind == "residual" else PLAIN_COLOR
    numbers: dict[str, Any] = {}
    means = []
    for i, depth in enumerate(depths):
        errors = data["errors"][kind][i]
        mean, sd = _mean_spread(errors)
        means.append(mean)
        numbers[f"blocks_{depth}"] = (depth - 2) // 2
        numbers[f"error_{kind}_{depth}"] = mean
        numbers[f"error_sd_{kind}_{depth}"] = sd
        numbers[f"error_min_{kind}_{depth}"] = min(errors)
        numbers[f"error_max_{kind}_{depth}"] = max(errors)
        per_seed = [g[0] / max(g[-1], 1e-30) for g in data["grads"][kind][i]]
        numbers[f"grad_ratio_{kind}_{depth}"] = _geometric_mean(per_seed)
        # each seed a dot, slightly offset so plain and residual dots do not overlap
        offset = 0.35 if kind == "residual" else -0.35
        ax_e.plot(
            [depth + offset] * len(errors),
            errors,
            "o",
            color=color,
            markersize=3.5,
            alpha=0.5,
            markeredgewidth=0,
        )
    ax_e.plot(depths, means, "-o", color=color, markersize=6, label=f"{kind}, mean")
    # per-block gradient norms of the deepest nets: geometric mean and min-max band
    grads = data["grads"][kind][-1]  # [seed][block]
    blocks = range(1, len(grads[0]) + 1)
    columns = list(zip(*grads, strict=True))
    ax_g.semilogy(blocks, [_geometric_mean(c) for c in columns], "-o", color=color, markersize=3.5)
    if several:
        low, high = [min(c) for c in columns], [max(c) for c in columns]
        ax_g.fill_between(blocks, low, high, color=color, alpha=0.2, linewidth=0)
    return numbers
