"""Training helpers shared by the benchmarks that time Lightning runs (kept apart from
``benchmarks.common`` so that the benchmarks without torch do not import it)."""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
import torch


class EpochTimer(pl.Callback):
    """Wall-clock time of each training epoch, measured from one epoch start to the next.

    On a CUDA ``device`` every reading waits for the device first, so queued kernels count
    in the epoch that launched them; ``None`` or a CPU device reads the clock directly.
    """

    def __init__(self, device: torch.device | None = None) -> None:
        self.device = device
        self.starts: list[float] = []

    def _now(self) -> float:
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.starts.append(self._now())

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.starts.append(self._now())

    @property
    def epoch_seconds(self) -> list[float]:
        return [b - a for a, b in zip(self.starts, self.starts[1:], strict=False)]


def bare_trainer(accelerator: str, epochs: int, **kw: Any) -> pl.Trainer:
    """A one-device Trainer without logging, checkpoints, progress bar, summary or validation;
    ``kw`` adds Trainer arguments (e.g. ``callbacks``)."""
    return pl.Trainer(
        accelerator=accelerator,
        devices=1,
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        **kw,
    )
