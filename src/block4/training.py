"""Training runs and measurements shared by the chapters' figures.

One place for what several chapters do the same way:

- `trainer`: the one way to build a Lightning ``Trainer`` for a figure (the context's
  accelerator, devices and strategy; no logger, no checkpoints, deterministic algorithms).
- `digits` and `train_classifier`: an MLP [`Classifier`][block4.modules.Classifier]
  trained on the digits data with SGD, its training curve, and whether it diverged.
- `fit`: train any module for some epochs, optionally early-stopped on the validation loss.
- `activation_and_derivative`: an activation and its derivative, from autograd.
- `steps_per_epoch`, `layer_grad_norms`, `geometric_band`, `mean_band`: reading the
  recorded tables and summarising runs over seeds.

The functions take a *run context*: anything with ``pick(smoke=, quick=, full=)`` and
``trainer_kwargs(**overrides)`` such as [`FigureContext`][block4.figures.registry.FigureContext]
(see `RunContext`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import pytorch_lightning as pl
import torch
from torch.nn import functional as F

from block4.callbacks import (
    BestValidationState,
    FiniteLossGuard,
    GradientFlowMonitor,
    NonFiniteLossError,
    TrainingCurve,
)
from block4.data import DigitsDataModule
from block4.modules import Classifier

__all__ = [
    "ACTIVATION_LABELS",
    "RunContext",
    "activation_and_derivative",
    "digits",
    "fit",
    "geometric_band",
    "layer_grad_norms",
    "mean_band",
    "steps_per_epoch",
    "train_classifier",
    "trainer",
]


class RunContext(Protocol):
    """What the helpers need from a figure's context (a `FigureContext` has all of it)."""

    def pick(self, *, smoke: Any, quick: Any, full: Any) -> Any:
        """The value for the current profile."""
        ...  # pragma: no cover

    def trainer_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments of a ``Trainer`` that honour the context, ``overrides`` winning."""
        ...  # pragma: no cover


def trainer(ctx: RunContext, **overrides: Any) -> pl.Trainer:
    """A Lightning ``Trainer`` for ``ctx``: the one way the figures build one.

    Args:
        ctx: the run context (accelerator, devices, strategy, progress bar).
        **overrides: any ``Trainer`` argument (``max_epochs=5``, ``callbacks=[...]``,
            ``limit_val_batches=0``, ...); they win over the context's defaults.
    """
    return pl.Trainer(**ctx.trainer_kwargs(**overrides))


#: Names of the activations in legends, shared by the chapters that compare them.
ACTIVATION_LABELS = {
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "relu": "ReLU",
    "leaky_relu": "leaky ReLU (0.01)",
    "gelu": "GELU",
}

_FUNCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
    "leaky_relu": lambda x: F.leaky_relu(x, negative_slope=0.01),
    "gelu": F.gelu,
}


# --8<-- [start:derivative]
def activation_and_derivative(name: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(f(x), f'(x))`` for the activation ``name``, the derivative from autograd.

    The derivative is what backpropagation multiplies the incoming gradient with, so it is
    computed exactly the way training computes it: ``f(x).sum().backward()`` leaves
    \\( \\partial f(x_i) / \\partial x_i \\) in ``x.grad`` (each output depends only on its own
    input). At a kink (ReLU at 0) this returns PyTorch's convention.

    Args:
        name: one of ``sigmoid, tanh, relu, leaky_relu, gelu``.
        x: points at which to evaluate (any shape, floating point).

    Raises:
        ValueError: for an unknown activation name.
    """
    if name not in _FUNCTIONS:
        raise ValueError(
            f"activation {name!r} is not supported; choose one of: {', '.join(_FUNCTIONS)}"
        )
    x = x.detach().clone().to(torch.float64).requires_grad_(True)
    y = _FUNCTIONS[name](x)
    y.sum().backward()  # each y_i depends on x_i only: x.grad[i] = f'(x_i)
    return y.detach(), x.grad.detach()


# --8<-- [end:derivative]


def digits(ctx: RunContext, seed: int, batch_size: int = 64) -> DigitsDataModule:
    """The digits data of the classifier runs (1079 training images; 256 in ``smoke``)."""
    return DigitsDataModule(
        batch_size=batch_size, seed=seed, n_train=ctx.pick(smoke=256, quick=None, full=None)
    )


def train_classifier(
    ctx: RunContext,
    *,
    epochs: int,
    seed: int,
    callbacks: Sequence[pl.Callback] = (),
    datamodule: DigitsDataModule | None = None,
    curve_every_n_steps: int | None = None,
    **hparams: Any,
) -> tuple[Classifier, TrainingCurve, bool]:
    """Train a [`Classifier`][block4.modules.Classifier] MLP on digits with SGD; no validation.

    Divergence is detected by [`FiniteLossGuard`][block4.callbacks.FiniteLossGuard]: a
    network whose weights or logits became NaN/inf gives a non-finite loss (the heads
    turn non-finite features into a NaN loss, never into an error of their own), and the
    guard stops the run before that loss reaches the weights.

    Args:
        ctx: the run context (accelerator, devices, profile).
        epochs: training epochs.
        seed: seed of the initial weights and of the batch order.
        callbacks: extra Lightning callbacks (e.g. a `GradientFlowMonitor`).
        datamodule: the data; default `digits`.
        curve_every_n_steps: measure the training curve every n steps (default: per epoch).
        **hparams: [`Classifier`][block4.modules.Classifier] arguments (``depth``,
            ``width``, ``activation``, ``init``, ``norm``, ``residual``, ``lr``, ...). The
            optimiser is SGD with momentum 0.9 unless given.

    Returns:
        ``(model, curve, diverged)``: ``diverged`` is true when the loss became NaN/inf (the
        run is stopped there and the curve ends with an infinite loss and a NaN error).
    """
    hparams = {"optimizer": "sgd", "momentum": 0.9, **hparams}
    data = datamodule if datamodule is not None else digits(ctx, seed)
    data.setup()
    model = Classifier(in_features=data.in_features, n_classes=10, seed=seed, **hparams)
    curve = TrainingCurve(curve_every_n_steps)
    run = trainer(
        ctx,
        max_epochs=epochs,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[curve, FiniteLossGuard(), *callbacks],
    )
    try:
        run.fit(model, datamodule=data)
    except NonFiniteLossError:
        curve.epochs.append(run.global_step / max(run.num_training_batches, 1))
        curve.errors.append(math.nan)
        curve.losses.append(math.inf)
        return model, curve, True
    return model, curve, False


def fit(
    ctx: RunContext,
    model: pl.LightningModule,
    data: pl.LightningDataModule,
    epochs: int,
    *,
    early_stopping: bool = False,
    callbacks: Sequence[pl.Callback] | None = None,
) -> pl.LightningModule:
    """Train ``model`` on ``data`` for ``epochs`` with the context's Trainer settings.

    With ``early_stopping`` the validation loss is computed every epoch and the weights of
    the best epoch are restored at the end (`BestValidationState`, nothing written to disk);
    otherwise validation is skipped (faster).

    Returns:
        The trained ``model``, on the CPU and in evaluation mode.
    """
    callbacks = list(callbacks or [])
    best = BestValidationState() if early_stopping else None
    if best is not None:
        callbacks.append(best)
    extra: dict[str, Any] = {"num_sanity_val_steps": 0}
    if not early_stopping:
        extra["limit_val_batches"] = 0
    trainer(ctx, max_epochs=epochs, callbacks=callbacks, **extra).fit(model, data)
    if best is not None:
        best.restore(model)
    return model.cpu().eval()


def steps_per_epoch(data: DigitsDataModule) -> int:
    """Optimiser steps in one epoch of ``data``'s training batches (one process)."""
    n = len(data.tensors("train")[1])
    return math.ceil(n / data.batch_size)


def layer_grad_norms(monitor: GradientFlowMonitor, steps: Sequence[int]) -> list[float]:
    """Per-layer gradient norm (input side first), geometric mean over ``steps``.

    One mini-batch gradient is noisy; the geometric mean over the steps of an epoch is a
    steadier picture of "the gradient after training" on a log axis.
    """
    wanted = set(steps)
    rows = [r for r in monitor.table if r["step"] in wanted]
    layers = sorted({r["depth_index"] for r in rows})
    out = []
    for i in layers:
        vals = [max(r["grad_norm"], 1e-30) for r in rows if r["depth_index"] == i]
        out.append(math.exp(sum(math.log(v) for v in vals) / len(vals)))
    return out


def geometric_band(runs: Sequence[Sequence[float]]) -> tuple[list[float], list[float], list[float]]:
    """Geometric mean, minimum and maximum over runs (seeds), position by position."""
    cols = list(zip(*runs, strict=True))
    mean = [math.exp(sum(math.log(max(v, 1e-30)) for v in c) / len(c)) for c in cols]
    return mean, [min(c) for c in cols], [max(c) for c in cols]


def mean_band(runs: Sequence[Sequence[float]]) -> tuple[list[float], list[float], list[float]]:
    """Mean, minimum and maximum over runs (seeds), position by position."""
    cols = list(zip(*runs, strict=True))
    return [sum(c) / len(c) for c in cols], [min(c) for c in cols], [max(c) for c in cols]
