"""Backpropagation with matrices: a linear layer's backward pass, and a whole MLP's by hand.

A linear layer in PyTorch's convention computes, for a batch of ``B`` examples,

    Y = X W^T + b        X: [B, n_in], W: [n_out, n_in], b: [n_out], Y: [B, n_out]

(``nn.Linear`` stores ``W`` as ``[n_out, n_in]``). Given the gradient of the loss with
respect to the output, ``dY = dL/dY`` (``[B, n_out]``), the chain rule applied entry by entry
collapses into three matrix products:

    dX = dY W            [B, n_out] @ [n_out, n_in]  -> [B, n_in]
    dW = dY^T X          [n_out, B] @ [B, n_in]      -> [n_out, n_in]
    db = sum_i dY[i, :]  sum over the batch          -> [n_out]

Written with the textbook's weight matrix ``W_math = W^T`` (``[n_in, n_out]``,
``Y = X W_math + b``) the same three lines read ``dX = dY W_math^T`` and
``dW_math = X^T dY``. The shapes decide the order of every product: there is only one way to
multiply the available matrices into a result of the parameter's shape.

`mlp_forward` / `mlp_backward` push the MNIST-sized MLP of the graphs chapter (784 -> 512
ReLUs -> 10 softmax probabilities, cross-entropy loss) forward and backward with these
formulas alone; the tests check them against ``torch.autograd``. The forward pass keeps
exactly what the backward pass needs (the `MLPCache`): the input of each linear layer
and the output of each nonlinearity. `saved_tensor_bytes` measures what autograd keeps for
the same network, with ``torch.autograd.graph.saved_tensors_hooks``.

This module needs torch only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = [
    "MNIST_MLP_SIZES",
    "MLPCache",
    "activation_numbers_per_example",
    "linear_backward",
    "mlp_backward",
    "mlp_forward",
    "mlp_module",
    "mlp_params",
    "saved_tensor_bytes",
]

#: Layer widths of the graphs chapter's ``mnist_mlp``: 28x28 pixels, 512 hidden ReLUs, 10 classes.
MNIST_MLP_SIZES: tuple[int, int, int] = (28 * 28, 512, 10)


def linear_backward(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, dy: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The backward pass of ``y = x @ w.T + b`` (``nn.Linear``) in matrix form.

    Args:
        x: the layer's input, ``[B, n_in]``.
        w: its weight, ``[n_out, n_in]``.
        b: its bias, ``[n_out]``, or ``None``.
        dy: the gradient of the loss with respect to the output, ``[B, n_out]``.

    Returns:
        ``(dx, dw, db)`` with the shapes of ``x``, ``w`` and ``b`` (``db`` is ``None`` without
        a bias).

    Raises:
        ValueError: when the shapes do not fit together.
    """
    _check_linear_shapes(x, w, b, dy)
    # --8<-- [start:linear_backward]
    # y = x @ w.T + b with x [B, n_in], w [n_out, n_in], b [n_out]; dy = dL/dy is [B, n_out]
    dx = dy @ w  # [B, n_out] @ [n_out, n_in] -> [B, n_in]
    dw = dy.T @ x  # [n_out, B] @ [B, n_in]   -> [n_out, n_in]
    db = dy.sum(dim=0) if b is not None else None  # every example adds to the same bias
    return dx, dw, db
    # --8<-- [end:linear_backward]


def _check_linear_shapes(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, dy: torch.Tensor
) -> None:
    if x.ndim != 2 or w.ndim != 2 or dy.ndim != 2:
        raise ValueError(
            f"expected x [B, n_in], w [n_out, n_in], dy [B, n_out]; got x {tuple(x.shape)}, "
            f"w {tuple(w.shape)}, dy {tuple(dy.shape)}"
        )
    (batch, n_in), (n_out, w_in) = x.shape, w.shape
    if w_in != n_in or tuple(dy.shape) != (batch, n_out):
        raise ValueError(
            f"shapes do not fit y = x @ w.T + b: x {tuple(x.shape)}, w {tuple(w.shape)}, "
            f"dy {tuple(dy.shape)} (need w [n_out, {n_in}] and dy [{batch}, n_out])"
        )
    if b is not None and tuple(b.shape) != (n_out,):
        raise ValueError(f"bias must have shape [{n_out}], got {tuple(b.shape)}")


def mlp_module(sizes: tuple[int, int, int] = MNIST_MLP_SIZES) -> nn.Sequential:
    """The graphs chapter's ``mnist_mlp`` without its dropout: flatten, linear, ReLU, linear, softmax."""
    n_in, n_hidden, n_out = sizes
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(n_in, n_hidden),
        nn.ReLU(),
        nn.Linear(n_hidden, n_out),
        nn.Softmax(dim=1),
    )


def mlp_params(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{"w1", "b1", "w2", "b2"}`` of an MLP with two ``nn.Linear`` layers (input side first).

    Raises:
        ValueError: unless ``model`` has exactly two linear layers.
    """
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if len(linears) != 2:
        raise ValueError(f"expected an MLP with two nn.Linear layers, found {len(linears)}")
    (l1, l2) = linears
    return {"w1": l1.weight, "b1": l1.bias, "w2": l2.weight, "b2": l2.bias}


@dataclass
class MLPCache:
    """What the forward pass keeps for the backward pass: one tensor per layer boundary.

    Attributes:
        x: the flattened images, ``[B, 784]`` (the first linear layer's input).
        h: the hidden ReLU outputs, ``[B, 512]`` (the second linear layer's input; their
            sign is also the ReLU's local gradient).
        p: the softmax probabilities, ``[B, 10]``.
        y: the labels, ``[B]``.
    """

    x: torch.Tensor
    h: torch.Tensor
    p: torch.Tensor
    y: torch.Tensor

    def activation_bytes(self) -> int:
        """Bytes of the kept activations ``x``, ``h`` and ``p`` (the labels not counted)."""
        return sum(t.numel() * t.element_size() for t in (self.x, self.h, self.p))


def mlp_forward(
    images: torch.Tensor, labels: torch.Tensor, params: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, MLPCache]:
    """Cross-entropy of the MLP ``softmax(relu(x W1^T + b1) W2^T + b2)``; returns ``(loss, cache)``.

    Args:
        images: ``[B, 28, 28]`` (or anything with 784 values per example).
        labels: class indices ``[B]``.
        params: ``{"w1": [512, 784], "b1": [512], "w2": [10, 512], "b2": [10]}``.

    Returns:
        The mean negative log-probability of the labels and the `MLPCache`.
    """
    x = images.reshape(len(images), -1)
    h = torch.relu(x @ params["w1"].T + params["b1"])
    p = torch.softmax(h @ params["w2"].T + params["b2"], dim=1)
    loss = -p[torch.arange(len(labels)), labels].log().mean()
    return loss, MLPCache(x=x, h=h, p=p, y=labels)


def mlp_backward(cache: MLPCache, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The gradients of `mlp_forward`'s loss, by hand: matrices only, no autograd.

    Returns:
        ``{"w1", "b1", "w2", "b2", "x"}``: gradients with the shapes of the parameters (and of
        the flattened input).
    """
    # --8<-- [start:mlp_backward]
    x, h, p, y = cache.x, cache.h, cache.p, cache.y  # kept by the forward pass
    batch = len(y)
    # loss = -mean_i log p[i, y_i]  ->  dL/dp is -1/(B p) at each label, 0 elsewhere
    dp = torch.zeros_like(p)
    dp[torch.arange(batch), y] = -1.0 / (batch * p[torch.arange(batch), y])
    # softmax: dz_j = p_j (dp_j - sum_k dp_k p_k), row by row  (= (p - onehot) / B here)
    dz2 = p * (dp - (dp * p).sum(dim=1, keepdim=True))
    dh, dw2, db2 = linear_backward(h, params["w2"], params["b2"], dz2)
    dz1 = dh * (h > 0)  # ReLU passes the gradient where its output is positive
    dx, dw1, db1 = linear_backward(x, params["w1"], params["b1"], dz1)
    return {"w1": dw1, "b1": db1, "w2": dw2, "b2": db2, "x": dx}
    # --8<-- [end:mlp_backward]


def activation_numbers_per_example(sizes: Iterable[int] = MNIST_MLP_SIZES) -> int:
    """Numbers an MLP keeps per example for its backward pass: the sum of its layer widths.

    Each linear layer needs its input (for ``dW = dY^T X``), ReLU and softmax need their
    output; the ReLU output *is* the next layer's input, so each boundary is kept once:
    784 + 512 + 10 = 1306 for the MNIST MLP.
    """
    return sum(sizes)


def saved_tensor_bytes(
    fn: Callable[[], Any], exclude: Iterable[torch.Tensor] = ()
) -> dict[str, int]:
    """Run ``fn()`` and measure the tensors autograd saves for the backward pass.

    Every tensor an operation saves passes through a ``saved_tensors_hooks`` pack hook; a
    tensor saved by two operations (the ReLU output, needed by the ReLU and by the next
    layer) and views of one storage (a transposed weight) are counted once, by storage.

    Args:
        fn: runs a forward pass (its result is returned nowhere; autograd keeps what it saved
            while the hooks are active).
        exclude: tensors whose storage does not count as activations (the parameters: they
            are in memory anyway).

    Returns:
        ``{"activation_bytes", "excluded_bytes", "saved_tensors"}``: bytes of the distinct
        storages saved, apart from the excluded ones; bytes of the excluded storages that
        were saved; and how many tensors were saved in all (with repeats).
    """
    excluded = {_storage_key(t) for t in exclude}
    storages: dict[tuple[int, str], int] = {}
    count = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal count
        count += 1
        storages[_storage_key(t)] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return {
        "activation_bytes": sum(n for k, n in storages.items() if k not in excluded),
        "excluded_bytes": sum(n for k, n in storages.items() if k in excluded),
        "saved_tensors": count,
    }


def _storage_key(t: torch.Tensor) -> tuple[int, str]:
    return (t.untyped_storage().data_ptr(), str(t.device))
