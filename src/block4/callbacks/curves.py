"""Measurements on the whole training split: training curves, dead units, the best epoch."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from block4.callbacks.tables import _body
from block4.models import MLP
from block4.stacked import StackedMLP


def _train_split(trainer: pl.Trainer, who: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole training split ``(x, y)`` of the trainer's datamodule, or one clear error."""
    datamodule = trainer.datamodule
    if datamodule is None or not callable(getattr(datamodule, "tensors", None)):
        raise TypeError(
            f"{who} measures on the whole training split: pass a datamodule with a "
            "tensors('train') method (any block4.data datamodule) to trainer.fit, not bare "
            "dataloaders"
        )
    return datamodule.tensors("train")


def _members_of(pl_module: pl.LightningModule) -> int | None:
    """``E`` for a stacked body (``members=E``), ``None`` for a single network."""
    return getattr(_body(pl_module), "members", None)


def _active_members(pl_module: pl.LightningModule, members: int) -> list[bool]:
    """Which members still train (a diverged member is frozen by the module)."""
    active = getattr(pl_module, "member_active", None)
    return [True] * members if active is None else [bool(a) for a in active.tolist()]


def _mean_of_finite(values: Iterable[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


class _MeasuredWhileTraining(pl.Callback):
    """Calls ``_measure`` before the first step and after every ``every_n_steps``-th step
    (never after a step when ``every_n_steps`` is ``None``)."""

    every_n_steps: int | None

    def _measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        raise NotImplementedError

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._measure(trainer, pl_module)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self._measure(trainer, pl_module)


def _check_member(k: object, members: int, what: str) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < members:
        raise IndexError(f"member {k!r} is out of range; this {what} has members 0..{members - 1}")


class TrainingCurve(_MeasuredWhileTraining):
    """Training error and loss of a classifier on the *whole* training split, during training.

    Measured in evaluation mode (BatchNorm uses its running statistics) on all training
    examples, so curves of different models are directly comparable: at the initial weights,
    then every ``every_n_steps`` optimiser steps (default: at the end of every epoch). The
    module must have a ``body`` that maps inputs to class logits (a
    [`Classifier`][block4.modules.Classifier]), and the datamodule a ``tensors("train")``
    method (every datamodule of [`block4.data`][block4.data]).

    With a stacked body (``Classifier(members=E)``) every member is measured on the same
    examples: `member_errors` and `member_losses` hold one curve per member, and `member`
    returns one member's curve. A member frozen after diverging gets error NaN and loss
    ``inf`` from then on (as a single run that diverged ends).

    Args:
        every_n_steps: measure after every n-th step instead of once per epoch (finer
            curves; one forward pass over the training split each time).

    Attributes:
        epochs: when each measurement was taken, in (fractional) epochs.
        errors: the training error (fraction misclassified) at those times; for a stack,
            the mean over the members still training.
        losses: the mean cross-entropy at those times (``inf`` once it is not finite); for a
            stack, the mean over the members still training.
        member_errors: ``[E][time]``, the training error of each member (``E = 1`` for a
            single network: the same list as ``errors``).
        member_losses: ``[E][time]``, the loss of each member (for a single network: the
            same list as ``losses``).

    Raises:
        TypeError: from ``trainer.fit`` when the trainer has no such datamodule.
    """

    def __init__(self, every_n_steps: int | None = None) -> None:
        if every_n_steps is not None and (
            isinstance(every_n_steps, bool)
            or not isinstance(every_n_steps, int)
            or every_n_steps < 1
        ):
            raise ValueError(
                f"every_n_steps must be an integer >= 1 or None, got {every_n_steps!r}"
            )
        self.every_n_steps = every_n_steps
        self.epochs: list[float] = []
        self.errors: list[float] = []
        self.losses: list[float] = []
        self.member_errors: list[list[float]] = [self.errors]
        self.member_losses: list[list[float]] = [self.losses]
        self.members: int | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        _train_split(trainer, "TrainingCurve")
        self.members = _members_of(pl_module)
        if self.members and len(self.member_errors) != self.members:
            self.member_errors = [[] for _ in range(self.members)]
            self.member_losses = [[] for _ in range(self.members)]

    @torch.no_grad()
    def _measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        x, y = _train_split(trainer, "TrainingCurve")
        was_training = pl_module.training
        pl_module.eval()
        logits = _body(pl_module)(x.to(pl_module.device))
        pl_module.train(was_training)
        y = y.to(logits.device)
        self.epochs.append(trainer.global_step / max(trainer.num_training_batches, 1))
        if not self.members:
            loss = nn.functional.cross_entropy(logits, y)
            self.errors.append(float((logits.argmax(-1) != y).float().mean()))
            self.losses.append(float(loss) if torch.isfinite(loss) else math.inf)
            return
        e, n, c = logits.shape
        losses = nn.functional.cross_entropy(
            logits.reshape(e * n, c), y.repeat(e), reduction="none"
        ).reshape(e, n)
        stats = torch.stack([(logits.argmax(-1) != y).float().mean(1), losses.mean(1)])
        errors, means = stats.cpu().tolist()  # one device sync
        active = _active_members(pl_module, e)
        for k in range(e):
            ok = active[k] and math.isfinite(means[k])
            self.member_errors[k].append(errors[k] if ok else math.nan)
            self.member_losses[k].append(means[k] if ok else math.inf)
        self.errors.append(_mean_of_finite(m[-1] for m in self.member_errors))
        self.losses.append(_mean_of_finite(m[-1] for m in self.member_losses))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.every_n_steps:
            self._measure(trainer, pl_module)

    def member(self, k: int) -> TrainingCurve:
        """Member ``k``'s curve as a `TrainingCurve` of its own (a copy).

        Raises:
            IndexError: when ``k`` is not a recorded member.
        """
        _check_member(k, len(self.member_errors), "curve")
        curve = TrainingCurve(self.every_n_steps)
        curve.epochs = list(self.epochs)
        curve.errors[:] = self.member_errors[k]
        curve.losses[:] = self.member_losses[k]
        return curve

    def epochs_to(self, target_error: float) -> float | None:
        """When the training error first reached ``target_error``, in epochs (``None``: never)."""
        for epoch, error in zip(self.epochs, self.errors, strict=True):
            if error <= target_error:
                return epoch
        return None


class DeadUnitTracker(_MeasuredWhileTraining):
    """Fraction of hidden units that output 0 for *every* training example ("dead" ReLUs).

    A dead unit passes no gradient to its incoming weights and bias for any input, so they stop
    changing; in the first hidden layer (fixed inputs) such a unit is dead for good, deeper
    units can come back when the layers below them change. Measured on the whole training
    split (evaluation mode) at the initial weights and every ``every_n_steps`` steps;
    measurement stops once the weights are no longer finite. A unit counts as dead when its
    output is never positive, so the tracker is meant for ReLU networks.

    The body must be an [`MLP`][block4.models.MLP] or a stacked one (``members=E``; each
    member is counted on its own, a member frozen after diverging reads NaN from then on)
    and the datamodule must have a ``tensors("train")`` method.

    Args:
        every_n_steps: measure after every n-th optimiser step.

    Attributes:
        steps: the global steps measured.
        dead: the dead fraction over all hidden units at those steps (for a stack: the mean
            over the members still training).
        dead_per_layer: per hidden layer, the dead fraction at those steps (single network).
        member_dead: ``[E][step]`` the dead fraction of each member (``E = 1`` for a single
            network: the same list as ``dead``).
        member_dead_per_layer: ``[E][step][layer]``.

    Raises:
        TypeError: from ``trainer.fit`` when the body is not an MLP or the trainer has no
            such datamodule.
    """

    def __init__(self, every_n_steps: int = 1) -> None:
        if (
            isinstance(every_n_steps, bool)
            or not isinstance(every_n_steps, int)
            or every_n_steps < 1
        ):
            raise ValueError(f"every_n_steps must be an integer >= 1, got {every_n_steps!r}")
        self.every_n_steps = every_n_steps
        self.steps: list[int] = []
        self.dead: list[float] = []
        self.dead_per_layer: list[list[float]] = []
        self.member_dead: list[list[float]] = [self.dead]
        self.member_dead_per_layer: list[list[list[float]]] = [self.dead_per_layer]
        self.members: int | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not isinstance(_body(pl_module), (MLP, StackedMLP)):
            raise TypeError(
                "DeadUnitTracker measures the hidden blocks of a block4.models.MLP body; got a "
                f"body of type {type(_body(pl_module)).__name__}"
            )
        _train_split(trainer, "DeadUnitTracker")
        self.members = _members_of(pl_module)
        if self.members and len(self.member_dead) != self.members:
            self.member_dead = [[] for _ in range(self.members)]
            self.member_dead_per_layer = [[] for _ in range(self.members)]

    @torch.no_grad()
    def _measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        body = _body(pl_module)
        e = self.members or 1
        finite = torch.ones(e, dtype=torch.bool, device=pl_module.device)
        for p in body.parameters():
            finite &= (
                torch.isfinite(p.reshape(e, -1)).all(1)
                if self.members
                else (torch.isfinite(p).all())
            )
        if not self.members and not bool(finite.all()):
            return
        x, _ = _train_split(trainer, "DeadUnitTracker")
        was_training = pl_module.training
        pl_module.eval()
        h = x.to(pl_module.device)
        per_layer = []  # [layer] of [E] dead fractions
        for _, block in body.hidden_blocks():
            h = block(h)
            never_active = ~(h > 0).any(-2)  # [width] or [E, width]
            per_layer.append(never_active.float().mean(-1).reshape(e))
        pl_module.train(was_training)
        values = torch.stack(per_layer, 1).cpu().tolist()  # [E][layer], one device sync
        active = _active_members(pl_module, e)
        ok = [a and f for a, f in zip(active, finite.tolist(), strict=True)]
        self.steps.append(trainer.global_step)
        for k in range(e):
            layers = values[k] if ok[k] else [math.nan] * len(values[k])
            self.member_dead_per_layer[k].append(layers)
            self.member_dead[k].append(sum(layers) / len(layers))  # equal widths
        if self.members:
            self.dead.append(_mean_of_finite(m[-1] for m in self.member_dead))

    def member(self, k: int) -> DeadUnitTracker:
        """Member ``k``'s measurements as a `DeadUnitTracker` of its own (a copy).

        Raises:
            IndexError: when ``k`` is not a recorded member.
        """
        _check_member(k, len(self.member_dead), "tracker")
        tracker = DeadUnitTracker(self.every_n_steps)
        tracker.steps = list(self.steps)
        tracker.dead[:] = self.member_dead[k]
        tracker.dead_per_layer[:] = [list(r) for r in self.member_dead_per_layer[k]]
        return tracker


class BestValidationState(pl.Callback):
    """Keep (in memory) the weights of the epoch with the lowest ``val_loss``.

    Early stopping in hindsight, without writing checkpoints to disk: every epoch is
    trained, and after ``trainer.fit`` `restore` loads the best epoch's weights. The module
    must log ``val_loss`` (every [`block4.modules`][block4.modules] module does); the sanity check
    before training does not count.

    Attributes:
        best: the lowest ``val_loss`` seen (``inf`` before any validation).
        epoch: the epoch it was seen at (``-1`` before any validation).
        state: a copy of the module's ``state_dict`` at that epoch (``None`` before).
    """

    def __init__(self) -> None:
        self.best = math.inf
        self.epoch = -1
        self.state: dict[str, torch.Tensor] | None = None

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or "val_loss" not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics["val_loss"])
        if value < self.best:
            self.best, self.epoch = value, trainer.current_epoch
            self.state = copy.deepcopy(pl_module.state_dict())

    def restore(self, pl_module: pl.LightningModule) -> None:
        """Load the best weights seen into ``pl_module`` (no-op if no validation ran)."""
        if self.state is not None:
            pl_module.load_state_dict(self.state)
