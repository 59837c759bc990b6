"""Training runs and measurements shared by the chapters' figures.

One place for what several chapters do the same way:

- `trainer`: the one way to build a Lightning ``Trainer`` for a figure (the context's
  accelerator, devices and strategy; no logger, no checkpoints, deterministic algorithms).
- `digits` and `train_classifier`: an MLP [`Classifier`][block4.modules.Classifier]
  trained on the digits data with SGD, its training curve, and whether it diverged.
- `train_members`: many such classifiers of one shape trained as one stack
  (``Classifier(members=E)``) in one Lightning run: per-member seeds, initialisations,
  learning rates and shortcuts, per-member data order, diverged members frozen and reported.
- `fit`: train any module for some epochs, optionally keeping the weights of its best
  validation epoch (early stopping in hindsight).
- `activation_and_derivative`: an activation and its derivative, from autograd.
- `steps_per_epoch`, `layer_grad_norms`, `geometric_band`, `mean_band`: reading the
  recorded tables and summarising runs over seeds.

The functions take a *run context*: anything with ``pick(smoke=, quick=, full=)`` and
``trainer_kwargs(**overrides)`` such as [`FigureContext`][block4.figures.registry.FigureContext]
(see `RunContext`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
from block4.data import DigitsDataModule, MemberBatches, TensorDataModule
from block4.modules import Classifier
from block4.stacked import member_values

__all__ = [
    "comparison_seeds",
    "ACTIVATION_LABELS",
    "MemberDataModule",
    "MemberRuns",
    "RunContext",
    "activation_and_derivative",
    "digits",
    "fit",
    "geometric_band",
    "layer_grad_norms",
    "mean_band",
    "put_summary",
    "spread",
    "steps_per_epoch",
    "summary",
    "train_classifier",
    "train_members",
    "trainer",
]


class RunContext(Protocol):
    """What the helpers need from a figure's context (a `FigureContext` has all of it)."""

    seed: int  # the figure's base seed

    def pick(self, *, smoke: Any, quick: Any, full: Any) -> Any:
        """The value for the current profile."""
        ...  # pragma: no cover

    def trainer_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments of a ``Trainer`` that honour the context, ``overrides`` winning."""
        ...  # pragma: no cover


def comparison_seeds(ctx: RunContext, full: int = 5, quick: int = 1) -> list[int]:
    """The seeds of a multi-seed comparison: 1 (smoke), ``quick`` (a preview: 1 by default),
    ``full`` (>= 5), counted from the figure's base seed."""
    return [ctx.seed + i for i in range(ctx.pick(smoke=1, quick=quick, full=full))]


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
    """The digits data of the classifier runs (1079 training images; 512 in ``quick``, 256 in
    ``smoke``)."""
    return DigitsDataModule(
        batch_size=batch_size, seed=seed, n_train=ctx.pick(smoke=256, quick=512, full=None)
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


class MemberDataModule(pl.LightningDataModule):
    """A datamodule's training split batched for a stack: member ``k`` sees the batches a
    single run of ``data`` with seed ``seeds[k]`` sees (`MemberBatches`).

    Everything else (``tensors``, ``in_features``, validation and test batches) is the
    wrapped datamodule's, so the whole-split callbacks (`TrainingCurve`,
    `DeadUnitTracker`) work unchanged.

    Args:
        data: the data (any [`block4.data`][block4.data] tensor datamodule, in-memory
            batching).
        seeds: one batch-order seed per member.
        shared_order: every member sees the batches of ``seeds[0]`` (only the initial
            weights differ).
    """

    def __init__(
        self, data: TensorDataModule, seeds: Sequence[int], shared_order: bool = False
    ) -> None:
        super().__init__()
        if getattr(data, "batching", "memory") != "memory":
            raise ValueError(
                f"stacked training batches in memory; got a datamodule with "
                f"batching={data.batching!r}, use batching='memory'"
            )
        self.data = data
        self.seeds = [int(s) for s in seeds]
        self.shared_order = shared_order

    def setup(self, stage: str | None = None) -> None:
        self.data.trainer = self.trainer
        self.data.setup(stage)

    def tensors(self, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
        """The wrapped datamodule's full ``(x, y)`` of ``split``."""
        return self.data.tensors(split)

    @property
    def in_features(self) -> int:
        """Number of input features per example."""
        return self.data.in_features

    def train_dataloader(self) -> MemberBatches:
        """Stacked training batches ``[E, B, ...]`` (``[B, ...]`` with a shared order)."""
        batches = self.data.train_dataloader()
        member = MemberBatches.like(batches, self.seeds, shared_order=self.shared_order)
        member.set_epoch(batches.epoch)
        return member

    def val_dataloader(self) -> Any:
        return self.data.val_dataloader()


@dataclass
class MemberRuns:
    """What `train_members` returns.

    Attributes:
        model: the trained ``Classifier`` (a stack when there are several members).
        curve: the `TrainingCurve` of every member (``curve.member(k)``).
        diverged: per member, whether its loss or gradient became NaN/inf.
        diverged_step: per member, the global step at which it was frozen (-1: never).
        callbacks: the extra callbacks passed in, after training (their tables have a
            ``"member"`` column when there are several members).
    """

    model: Classifier
    curve: TrainingCurve
    diverged: list[bool]
    diverged_step: list[int]
    callbacks: list[pl.Callback]

    @property
    def members(self) -> int:
        """Number of members ``E``."""
        return len(self.diverged)

    def errors(self) -> list[float]:
        """Final training error of every member (NaN for a diverged one)."""
        return [errors[-1] for errors in self.curve.member_errors]

    def losses(self) -> list[float]:
        """Final training loss of every member (``inf`` for a diverged one)."""
        return [losses[-1] for losses in self.curve.member_losses]


def _stack_and_batches(
    data: TensorDataModule,
    seeds: list[int],
    data_seeds: list[int],
    shared_order: bool,
    hparams: dict[str, Any],
) -> tuple[Classifier, pl.LightningDataModule]:
    """The classifier of `train_members` (a stack for several members) and its batches."""
    e = len(seeds)
    hparams = {"optimizer": "sgd", "momentum": 0.9, **hparams}
    for name in ("init", "lr", "residual"):
        if name in hparams:
            values = member_values(name, hparams[name], e)
            hparams[name] = values if e > 1 else values[0]
    data.setup()
    if e == 1:  # a plain single run: the datamodule's own batches with the member's seed
        data.seed = data_seeds[0]
        model = Classifier(in_features=data.in_features, n_classes=10, seed=seeds[0], **hparams)
        return model, data
    model = Classifier(in_features=data.in_features, n_classes=10, members=e, seed=seeds, **hparams)
    return model, MemberDataModule(data, data_seeds, shared_order=shared_order)


# --8<-- [start:train_members]
def train_members(
    ctx: RunContext,
    *,
    epochs: int,
    seeds: Sequence[int],
    data: TensorDataModule | None = None,
    data_seeds: Sequence[int] | None = None,
    shared_order: bool = False,
    callbacks: Sequence[pl.Callback] = (),
    curve_every_n_steps: int | None = None,
    **hparams: Any,
) -> MemberRuns:
    """Train ``len(seeds)`` digit classifiers of one shape as ONE stack in one Lightning run.

    Member ``k`` is bit for bit the network `train_classifier` trains with ``seed=seeds[k]``
    (its initial weights and its batch order), with its own ``init``, ``lr`` and
    ``residual`` when those are lists. The loss is the sum of the members' mean losses, so
    each member follows its own run's gradient; a member whose loss or gradient becomes
    NaN/inf is frozen at its last finite weights and reported in ``diverged``, the others go
    on. With one member this *is* a single run (a plain ``Classifier``).

    Args:
        ctx: the run context (accelerator, devices, profile).
        epochs: training epochs.
        seeds: the seed of each member's initial weights (and batch order).
        data: the data; default `digits` (its ``seed`` is ignored: each member has its own).
        data_seeds: the batch-order seed of each member when it should differ from
            ``seeds`` (e.g. a learning-rate sweep where several members share a seed).
        shared_order: all members see the batches of the first data seed.
        callbacks: extra Lightning callbacks (`GradientFlowMonitor`, `ActivationStats`,
            `DeadUnitTracker`, ...: they record one row per member and layer).
        curve_every_n_steps: measure the training curve every n steps (default: per epoch).
        **hparams: [`Classifier`][block4.modules.Classifier] arguments; ``init``, ``lr``
            and ``residual`` may be lists with one entry per member. SGD with momentum 0.9
            unless given.

    Raises:
        ValueError: for an empty ``seeds``, per-member lists of the wrong length, or a
            learning rate <= 0 (before anything is trained).
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds must name at least one member, got an empty list")
    e = len(seeds)
    data_seeds = seeds if data_seeds is None else [int(s) for s in data_seeds]
    if len(data_seeds) != e:
        raise ValueError(
            f"data_seeds has {len(data_seeds)} entries but there are {e} members (seeds)"
        )
    data = data if data is not None else digits(ctx, data_seeds[0])
    model, batches = _stack_and_batches(data, seeds, data_seeds, shared_order, hparams)
    curve = TrainingCurve(curve_every_n_steps)
    guard = FiniteLossGuard()
    run = trainer(
        ctx,
        max_epochs=epochs,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[curve, guard, *callbacks],
    )
    try:
        run.fit(model, datamodule=batches)
    except NonFiniteLossError:  # every member diverged (or the single run did)
        curve.epochs.append(run.global_step / max(run.num_training_batches, 1))
        for errors, losses in zip(curve.member_errors, curve.member_losses, strict=True):
            errors.append(math.nan)
            losses.append(math.inf)
        if e > 1:
            curve.errors.append(math.nan)
            curve.losses.append(math.inf)
        diverged_step = [int(run.global_step)] * e if e == 1 else model.diverged_step.tolist()
        return MemberRuns(model, curve, [True] * e, diverged_step, list(callbacks))
    steps = model.diverged_step.tolist()
    return MemberRuns(model, curve, [s >= 0 for s in steps], steps, list(callbacks))


# --8<-- [end:train_members]


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


def layer_grad_norms(
    monitor: GradientFlowMonitor, steps: Sequence[int], member: int | None = None
) -> list[float]:
    """Per-layer gradient norm (input side first), geometric mean over ``steps``.

    One mini-batch gradient is noisy; the geometric mean over the steps of an epoch is a
    steadier picture of "the gradient after training" on a log axis. For a stacked model
    pass ``member`` (the rows of one member).

    Returns an empty list when nothing was recorded at ``steps``.

    Raises:
        ValueError: when the table has several members and ``member`` is not given.
    """
    wanted = set(steps)
    rows = [r for r in monitor.table if r["step"] in wanted]
    if rows and "member" in rows[0]:
        if member is None:
            raise ValueError("the monitor recorded several members; pass member=k")
        rows = [r for r in rows if r["member"] == member]
    layers = sorted({r["depth_index"] for r in rows})
    out = []
    for i in layers:
        vals = [max(r["grad_norm"], 1e-30) for r in rows if r["depth_index"] == i]
        out.append(math.exp(sum(math.log(v) for v in vals) / len(vals)))
    return out


def summary(values: Sequence[float]) -> dict[str, float]:
    """``{"mean", "sd", "min", "max"}`` of the finite ``values`` over seeds (all NaN when none
    is finite; ``sd`` is the sample standard deviation, 0 for a single value)."""
    finite = [float(v) for v in values if math.isfinite(v)]
    if not finite:
        return {"mean": math.nan, "sd": math.nan, "min": math.nan, "max": math.nan}
    sd = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return {"mean": statistics.fmean(finite), "sd": sd, "min": min(finite), "max": max(finite)}


def spread(values: Any, name: str) -> dict[str, float]:
    """``{name_mean, name_sd, name_min, name_max}`` of per-seed (per-split, per-ensemble)
    ``values``, a sequence or tensor: ``sd`` is the sample standard deviation, as in
    `summary` (0 for a single value). A NaN is not dropped: it makes the mean NaN, which the
    manifest refuses."""
    v = torch.as_tensor(values, dtype=torch.float64).reshape(-1).tolist()
    if not all(math.isfinite(x) for x in v):
        sd = math.nan
    else:
        sd = statistics.stdev(v) if len(v) > 1 else 0.0
    return {
        f"{name}_mean": statistics.fmean(v),
        f"{name}_sd": sd,
        f"{name}_min": min(v),
        f"{name}_max": max(v),
    }


def put_summary(
    numbers: dict[str, Any], key: str, values: Sequence[float], *, geometric: bool = False
) -> None:
    """Write a figure's multi-seed number: ``key`` (the mean) and ``key_sd``, ``key_min``,
    ``key_max``, over the finite ``values``. With ``geometric`` (for ratios spanning decades)
    ``key`` is the geometric mean and no ``key_sd`` is written. Without a finite value every
    entry is ``"n/a"`` (the manifest holds no NaN)."""
    finite = [float(v) for v in values if math.isfinite(v)]
    names = ("min", "max") if geometric else ("sd", "min", "max")
    if not finite:
        numbers[key] = "n/a"
        numbers.update({f"{key}_{name}": "n/a" for name in names})
        return
    if geometric:
        mean, low, high = geometric_band([[v] for v in finite])
        numbers[key], numbers[f"{key}_min"], numbers[f"{key}_max"] = mean[0], low[0], high[0]
        return
    stats = summary(finite)
    numbers[key] = stats["mean"]
    numbers.update({f"{key}_{name}": stats[name] for name in names})


def geometric_band(runs: Sequence[Sequence[float]]) -> tuple[list[float], list[float], list[float]]:
    """Geometric mean, minimum and maximum over runs (seeds), position by position."""
    cols = list(zip(*runs, strict=True))
    mean = [math.exp(sum(math.log(max(v, 1e-30)) for v in c) / len(c)) for c in cols]
    return mean, [min(c) for c in cols], [max(c) for c in cols]


def mean_band(runs: Sequence[Sequence[float]]) -> tuple[list[float], list[float], list[float]]:
    """Mean, minimum and maximum over runs (seeds), position by position."""
    cols = list(zip(*runs, strict=True))
    return [sum(c) / len(c) for c in cols], [min(c) for c in cols], [max(c) for c in cols]
