"""Checks at the edges of the LightningModules: prediction inputs and checkpoint files.

This module does not import Lightning.
"""

from __future__ import annotations

import inspect
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["as_model_input", "check_checkpoint"]


def as_model_input(x: Any, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``x`` (tensor or numpy array, any real dtype) as a finite tensor of ``dtype`` on
    ``device``, or one clear error naming the first non-finite row and column."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"inputs must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.dtype == torch.bool or x.is_complex():
        raise TypeError(f"inputs must be real numbers, got dtype {x.dtype}")
    x = x.to(device=device, dtype=dtype)
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        where = bad.nonzero()[0].tolist()
        at = f"row {where[0]}" + (f", column {where[1]}" if len(where) > 1 else "")
        raise ValueError(
            f"inputs must be finite, got {x[tuple(where)].item()} at {at} "
            f"({int(bad.sum())} non-finite values); drop or impute them first"
        )
    return x


def check_checkpoint(cls: type, path: Any, extra_hparams: set[str] = frozenset()) -> None:
    """Raise one clear error unless ``path`` is a readable Lightning checkpoint of ``cls``.

    Names the file and what it is not: missing, empty, truncated or corrupt, a PyTorch file
    without a ``state_dict``, or a checkpoint whose hyperparameters ``cls`` does not take
    (``extra_hparams``: names accepted through ``**kwargs``).
    """
    where = Path(path)
    if not where.is_file():
        raise FileNotFoundError(f"checkpoint {where} does not exist (or is not a file)")
    if where.stat().st_size == 0:
        raise ValueError(f"checkpoint {where} is empty (0 bytes), not a Lightning checkpoint")
    try:
        ckpt = torch.load(where, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Weights only load failed" in str(error) and "Unsupported global" in str(error):
            return  # a real checkpoint holding objects; Lightning loads it as asked
        raise ValueError(f"checkpoint {where} is corrupt, not a PyTorch file: {error}") from None
    except (RuntimeError, EOFError, OSError) as error:
        raise ValueError(
            f"checkpoint {where} is truncated or corrupt, not a readable PyTorch file ({error})"
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(
            f"{where} is a PyTorch file but not a Lightning checkpoint (no state_dict)"
        )
    hparams = ckpt.get("hyper_parameters", {})
    allowed = set(inspect.signature(cls.__init__).parameters) | set(extra_hparams)
    foreign = sorted(k for k in hparams if k not in allowed and not k.startswith("_"))
    if foreign:
        raise ValueError(
            f"{where} is not a {cls.__name__} checkpoint: its hyperparameters "
            f"{', '.join(foreign)} are not {cls.__name__}'s"
        )
