"""Helpers shared by the training tests (imported as ``from _helpers import ...``)."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl


def trainer(**kw: Any) -> pl.Trainer:
    """A quiet, deterministic one-device CPU Trainer for one epoch; ``kw`` overrides any setting.

    No logger, checkpoints, model summary or progress bar, so tests write nothing to disk.
    """
    args: dict[str, Any] = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        deterministic=True,
        max_epochs=1,
    )
    args.update(kw)
    return pl.Trainer(**args)
