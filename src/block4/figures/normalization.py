"""Figures of the chapter "Normalization and residual connections".

The chain-rule argument for skip connections is made with :mod:`block4.autograd` (the scalar
engine of the first chapters); every claim about training is checked by Lightning runs of
:class:`block4.modules.Classifier` on the digits data set.
"""

from __future__ import annotations

from block4.autograd import Value, draw
from block4.figures.registry import FigureContext, figure
from block4.figures.style import PALETTE, ROLE, subplots

#: Colours of the two architectures, the same on every figure of the chapter.
PLAIN_COLOR = PALETTE[4]
RESIDUAL_COLOR = PALETTE[0]


def chain_gradient(depth: int, x0: float, w: float, residual: bool) -> float:
    """d x_L / d x_0 through ``depth`` scalar blocks, computed by :class:`block4.autograd.Value`.

    Each block is ``F(x) = sigmoid(w * x)``; a plain chain computes ``x_{l+1} = F(x_l)``, a
    residual one ``x_{l+1} = x_l + F(x_l)``. By the chain rule the plain gradient is the
    product of the local derivatives ``w * sigmoid'`` (each at most ``|w|/4``), the residual
    one the product of ``1 + w * sigmoid'``: the ``1`` is the skip connection's
    \\( \\partial (a + b) / \\partial a \\).
    """
    x = Value(x0, "x0")
    h = x
    for _ in range(depth):
        f = (h * w).sigmoid()
        h = h + f if residual else f
    h.backward()
    return x.grad


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
    numbers: dict[str, float] = {"grad_a": a.grad, "grad_b": b.grad}

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
