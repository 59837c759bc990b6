"""Figures of the chapter "Normalization and residual connections": the residual half.

The chain-rule argument for skip connections is made with `block4.autograd` (the scalar
engine of the first chapters); the degradation problem is shown by Lightning runs of plain and
residual `block4.modules.Classifier` MLPs on the digits data set, trained as one stack
of seeds per shape by `block4.training.train_members`. The batch-norm figures of the
chapter live in `block4.figures.normalization`, the convolutional ResNet in
`block4.figures.residual_networks`.
"""

from __future__ import annotations

from typing import Any

from block4.autograd import Value, draw
from block4.callbacks import GradientFlowMonitor
from block4.figures.registry import FigureContext, figure
from block4.style import PALETTE, ROLE, log_decade_labels, subplots
from block4.training import (
    comparison_seeds,
    digits,
    geometric_band,
    layer_grad_norms,
    mean_band,
    put_summary,
    train_members,
)

#: Colours of the two architectures, the same on every figure of the chapter.
PLAIN_COLOR = PALETTE[4]
RESIDUAL_COLOR = PALETTE[0]


# --8<-- [start:chain_gradient]
def chain_gradient(depth: int, x0: float, w: float, residual: bool) -> float:
    """d x_L / d x_0 through ``depth`` scalar blocks, computed by `block4.autograd.Value`.

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


def _band_note(seeds: list[int]) -> str:
    return f"{len(seeds)} seeds: mean, band min-max" if len(seeds) > 1 else "one seed"


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
        2, 1, width=6.9, height=5.6, gridspec_kw={"height_ratios": [0.75, 1]}
    )
    draw(h, ax=ax_graph, title="one residual block H(x) = x + F(x): value / gradient")
    ax_depth.semilogy(depths, plain, "o-", color=PLAIN_COLOR, markersize=3)
    ax_depth.semilogy(depths, resid, "o-", color=RESIDUAL_COLOR, markersize=3)
    ax_depth.annotate(
        "residual",
        (depths[-1], resid[-1]),
        xytext=(0, 6),
        textcoords="offset points",
        ha="right",
        va="bottom",
        color=RESIDUAL_COLOR,
    )
    middle = len(depths) // 3  # the plain line falls: the space above and right of it is free
    ax_depth.annotate(
        "plain",
        (depths[middle], plain[middle]),
        xytext=(8, 4),
        textcoords="offset points",
        ha="left",
        va="bottom",
        color=PLAIN_COLOR,
    )
    ax_depth.axhline(1.0, color=ROLE["truth"], linewidth=1, linestyle=":")
    ax_depth.set(
        title=f"chain of sigmoid blocks, w = {w:g}",
        xlabel="number of blocks L",
        ylabel="|d x_L / d x_0| (log scale)",
    )
    log_decade_labels(ax_depth)
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


def residual_depth_runs(
    ctx: FigureContext, *, depths: list[int], seeds: list[int], epochs: int, **hparams: Any
) -> dict[str, dict[str, dict[str, dict[str, list]]]]:
    """Plain and residual MLPs of both families at every depth: one stack per (family,
    depth) -- different depths are different shapes -- holding a plain net and its residual
    twin per seed (same initial weights and batches, only the shortcuts differ).

    Returns:
        ``{family: {"plain" | "residual": {str(depth): {"error": [final error per seed; 0.9 if
        diverged], "grads": [[norm per layer at step 0] per seed]}}}}``.
    """
    data = digits(ctx, seeds[0])
    data.setup()
    out: dict[str, dict[str, dict[str, dict[str, list]]]] = {}
    n = len(seeds)
    for family, hp in RESIDUAL_FAMILIES.items():
        out[family] = {"plain": {}, "residual": {}}
        for depth in depths:
            monitor = GradientFlowMonitor(steps=[0], log=False)
            # members 0..n-1 plain, n..2n-1 their residual twins
            runs = train_members(
                ctx,
                epochs=epochs,
                seeds=seeds + seeds,
                data=data,
                callbacks=[monitor],
                depth=depth,
                residual=[False] * n + [True] * n,
                **hp,
                **hparams,
            )
            errors = [0.9 if d else e for e, d in zip(runs.errors(), runs.diverged, strict=True)]
            for i, arch in enumerate(("plain", "residual")):
                members = range(i * n, (i + 1) * n)
                out[family][arch][str(depth)] = {
                    "error": [errors[k] for k in members],
                    "grads": [layer_grad_norms(monitor, [0], k) for k in members],
                }
    return out


@figure(
    "residual_depth",
    chapter="normalization-and-residuals",
    params={"depths": [2, 10, 20, 30], "width": 32, "lr": 0.01, "show_depth": 30},
)
def residual_depth(ctx: FigureContext, depths: list, width: int, lr: float, show_depth: int):
    """Plain vs residual MLPs at increasing depth: training error and per-layer gradients.

    Top: final training error vs depth (the degradation problem: deeper plain nets train
    *worse*, on the training set), mean over seeds with a min-max band. Bottom: per-layer
    weight-gradient norm at the initial weights for ``show_depth`` layers (geometric mean
    over seeds). Residual blocks compute ``x + act(norm(W x + b))`` (every hidden block but
    the first, whose input width differs).

    Numbers (``<family>`` is ``tanh`` or ``relu_bn``, ``<arch>`` ``plain`` or ``residual``):
    ``error_<family>_<arch>_<depth>`` (mean over seeds, with ``_sd``, ``_min``, ``_max``),
    ``ratio_<family>_<arch>_<depth>`` (first/last layer gradient norm at init, geometric
    mean over seeds, with ``_min``, ``_max``), ``epochs``, ``seeds``.
    """
    epochs = ctx.pick(smoke=1, quick=1, full=3)
    seeds = comparison_seeds(ctx)
    depths = ctx.pick(smoke=[2, 20], quick=[2, 10, 30], full=depths)
    show_depth = show_depth if show_depth in depths else max(depths)
    data = ctx.compute(
        residual_depth_runs, depths=depths, seeds=seeds, epochs=epochs, width=width, lr=lr
    )
    numbers: dict[str, Any] = {
        "epochs": epochs,
        "seeds": len(seeds),
        "width": width,
        "lr": lr,
        "show_depth": show_depth,
    }
    fig, (ax_e, ax_g) = subplots(2, 1, width=6.9, height=6.8)
    for family in RESIDUAL_FAMILIES:
        for arch in ("plain", "residual"):
            color = RESIDUAL_COLOR if arch == "residual" else PLAIN_COLOR
            style = "-" if family == "tanh" else "--"
            label = f"{arch}, {FAMILY_LABELS[family]}"
            runs = data[family][arch]
            mean, low, high = mean_band(
                [[runs[str(d)]["error"][k] for d in depths] for k in range(len(seeds))]
            )
            ax_e.plot(depths, mean, style, marker="o", markersize=4, color=color, label=label)
            if len(seeds) > 1:
                ax_e.fill_between(depths, low, high, color=color, alpha=0.15, linewidth=0)
            for depth in depths:
                key = f"{family}_{arch}_{depth}"
                put_summary(numbers, f"error_{key}", runs[str(depth)]["error"])
                ratios = [first_last_ratio(g) for g in runs[str(depth)]["grads"]]
                put_summary(numbers, f"ratio_{key}", ratios, geometric=True)
            grads = geometric_band(runs[str(show_depth)]["grads"])[0]
            ax_g.semilogy(range(1, show_depth + 2), grads, style, color=color)
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
    log_decade_labels(ax_g)
    fig.legend(loc="outside upper center", ncol=2, title=_band_note(seeds))
    return fig, numbers
