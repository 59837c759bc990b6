"""Stopping on a non-finite loss, and the metrics of every epoch."""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn

from block4.callbacks.tables import Table


class NonFiniteLossError(FloatingPointError):
    """Raised by `FiniteLossGuard` when the training loss is NaN or infinite."""


class FiniteLossGuard(pl.Callback):
    """Stop training with a clear error as soon as the training loss is NaN or infinite.

    The check runs on every training loss before ``backward`` (one scalar comparison), so
    a non-finite loss never updates the weights. The error names the epoch, the global step
    and the batch index within the epoch, and suggests the usual remedies.

    With several members (``Classifier(members=E)``), a member whose loss is not finite
    is frozen by the module and the others go on: the guard records it (one row per
    diverged member in `table`, and a warning naming it) and stops training only when every
    member has diverged. A member the module froze because its *gradient* was not finite
    (its loss still finite) is recorded and named the same way, at the next check or when
    training ends.

    Args:
        check_every_n_steps: check only every n-th step (the check syncs with the device,
            which costs a little on a GPU).

    Attributes:
        table: a `Table` of rows ``{"member", "epoch", "step", "batch", "loss",
            "cause"}``, one per diverged member of a stacked model; ``cause`` is ``"loss"``
            or ``"gradient"`` (``"loss or gradient"`` when steps go unchecked), ``step`` the
            step it diverged at, ``epoch``, ``batch`` and ``loss`` where and what the guard
            saw (a gradient's row: the member's last, finite, training loss).

    Raises:
        NonFiniteLossError: from ``trainer.fit`` when the loss is not finite (with members:
            when no member is left).
    """

    def __init__(self, check_every_n_steps: int = 1) -> None:
        if not (isinstance(check_every_n_steps, int) and check_every_n_steps >= 1):
            raise ValueError(
                f"check_every_n_steps must be an integer >= 1, got {check_every_n_steps!r}"
            )
        self.check_every_n_steps = check_every_n_steps
        self.table = Table()

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch_idx = batch_idx

    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor
    ) -> None:
        # Before backward: the non-finite loss never reaches the weights, and global_step is
        # still the index of the step that produced it.
        step = trainer.global_step
        if step % self.check_every_n_steps:
            return
        batch = getattr(self, "_batch_idx", "?")
        if getattr(pl_module, "members", 1) > 1:
            self._check_members(trainer, pl_module, batch)
            return
        value = float(loss.detach())
        if not math.isfinite(value):
            trainer.should_stop = True
            raise NonFiniteLossError(
                f"training loss became {value} at epoch {trainer.current_epoch}, step {step} "
                f"(batch {batch} of the epoch); training stopped. "
                "Lower the learning rate, check the inputs and targets for NaN/inf, or clip "
                "gradients (Trainer(gradient_clip_val=...))."
            )

    def _check_members(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any
    ) -> None:
        losses = pl_module.last_member_losses.tolist()
        reported = {r["member"] for r in self.table}
        for k, value in enumerate(losses):
            if not math.isfinite(value) and k not in reported:
                row = {"member": k, "epoch": trainer.current_epoch, "step": trainer.global_step}
                self.table.append({**row, "batch": batch, "loss": value, "cause": "loss"})
                rank_zero_warn(
                    f"member {k}'s training loss became {value} at epoch {row['epoch']}, step "
                    f"{row['step']}; it is frozen at its last finite weights, the others go on"
                )
        self._report_frozen(trainer, pl_module, batch, losses)  # frozen at an earlier step
        if not bool(pl_module.member_active.any()):
            trainer.should_stop = True
            raise NonFiniteLossError(
                f"every member's training loss became NaN or infinite (by step "
                f"{trainer.global_step}: {self.table.to_dicts()}); training stopped. Lower the "
                "learning rates or check the inputs and targets for NaN/inf."
            )

    def _report_frozen(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, losses: list
    ) -> None:
        """Record the members the module froze that no check has reported: for a non-finite
        gradient (or, when steps go unchecked, possibly a loss)."""
        cause = "gradient" if self.check_every_n_steps == 1 else "loss or gradient"
        reported = {r["member"] for r in self.table}
        active = pl_module.member_active.tolist()
        new = [k for k, on in enumerate(active) if not on and k not in reported]
        steps = pl_module.diverged_step.tolist() if new else []
        for k in new:
            row = {"member": k, "epoch": trainer.current_epoch, "step": steps[k]}
            self.table.append({**row, "batch": batch, "loss": losses[k], "cause": cause})
            rank_zero_warn(
                f"member {k}'s {cause} became NaN or infinite at step {steps[k]}; it is frozen "
                "at its last finite weights, the others go on"
            )

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if getattr(pl_module, "members", 1) > 1:
            self._report_frozen(trainer, pl_module, "end", pl_module.last_member_losses.tolist())


#: Alias of `FiniteLossGuard`.
NaNGuard = FiniteLossGuard


class MetricHistory(pl.Callback):
    """Keep the epoch-level metrics logged by the module, one row per training epoch.

    Attributes:
        table: a `Table` of rows ``{"epoch": e, "step": s, "train_loss": ...,
            "val_loss": ...}`` (whatever the module logged for epoch ``e``; ``step`` is the
            global step at the end of that epoch).
    """

    def __init__(self) -> None:
        self.table = Table()
        self._pending: int | None = None

    # The module logs its epoch metrics in its own ``on_train_epoch_end``, which Lightning
    # calls after the callbacks' hook of the same name: read them when the next epoch starts
    # (or when fitting ends) instead.
    def _flush(self, trainer: pl.Trainer) -> None:
        if self._pending is None:
            return
        row: dict[str, Any] = {"epoch": self._pending, "step": trainer.global_step}
        for key, value in trainer.callback_metrics.items():
            row[key] = float(value) if isinstance(value, torch.Tensor) else value
        self.table.append(row)
        self._pending = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._flush(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._pending = trainer.current_epoch

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._flush(trainer)


# --- whole-split measurements and in-memory early stopping ------------------------------------
