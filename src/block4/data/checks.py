"""What data may enter training: the checks every entry point of `block4.data` applies.

`TensorBatches`, `InMemoryDataModule` and every datamodule's ``setup`` pass their tensors
through `check_examples`, so bad data stop where they enter, with one error that says what
was wrong and what to pass, instead of training silently to NaN weights or failing later
inside a matrix product.

The rule for inputs ``x`` (converted to ``dtype``: float32 unless asked otherwise, the dtype
of block4's models; ``dtype=None`` converts nothing and only checks):

- a ``torch.Tensor`` or a ``numpy.ndarray`` (numpy arrays become tensors); anything else
  is refused;
- floating point (float16, bfloat16, float32, float64) is converted to ``dtype``: float64 to
  float32 rounds each value to about 7 significant digits (a relative error below
  ``6e-8``), far below the noise of any data set, so it counts as lossless; values beyond
  the range of ``dtype`` are refused;
- integers and booleans are converted when every value is exactly representable in
  ``dtype`` (up to ``2**24`` in magnitude for float32, ``2**53`` for float64), and refused
  otherwise;
- complex numbers are refused;
- NaN and infinite values are refused, naming the row (example) and column (feature) of the
  first one.

Targets ``y`` follow the same rule with one difference: integer and boolean targets (class
indices, counts) stay integers, as ``int64``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["check_examples", "check_tensor"]

#: Largest integer magnitude below which each floating dtype represents every integer exactly.
_EXACT_INTEGERS = {
    torch.float16: 2**11,
    torch.bfloat16: 2**8,
    torch.float32: 2**24,
    torch.float64: 2**53,
}


def _as_tensor(value: Any, name: str, where: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        if value.dtype == object or value.dtype.kind in "USV":
            raise TypeError(
                f"{where}{name} is a numpy array of {value.dtype}; pass numbers, e.g. "
                f"np.asarray({name}, dtype=np.float32)"
            )
        return torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"{where}{name} must be a torch.Tensor or a numpy array, got "
            f"{type(value).__name__}; pass torch.tensor({name}, dtype=torch.float32)"
        )
    return value


def _position(index: tuple[int, ...]) -> str:
    """``(70, 3)`` -> ``"row 70, column 3"``; more dimensions name the whole position."""
    if len(index) == 1:
        return f"row {index[0]}"
    if len(index) == 2:
        return f"row {index[0]}, column {index[1]}"
    return f"row {index[0]}, position {index[1:]} within the example"


def _refuse_non_finite(t: torch.Tensor, name: str, where: str) -> None:
    bad = ~torch.isfinite(t)
    if not bool(bad.any()):
        return
    where_bad = bad.nonzero()
    first = tuple(int(i) for i in where_bad[0])
    value = t[first].item()
    n_rows = len(torch.unique(where_bad[:, 0]))
    raise ValueError(
        f"{where}{name} has a non-finite value ({value}) at {_position(first)}: "
        f"{len(where_bad)} non-finite value(s) in {n_rows} of {len(t)} rows; drop or impute "
        "these rows before training"
    )


def check_tensor(
    value: Any,
    name: str = "x",
    *,
    dtype: torch.dtype | None = torch.float32,
    integers_stay: bool = False,
    where: str = "",
) -> torch.Tensor:
    """Check one tensor of examples and convert it by the rule of this module.

    Args:
        value: a tensor or numpy array whose first dimension indexes the examples.
        name: what it is, for the error messages (``"x"``, ``"y"``).
        dtype: the floating dtype to convert to; ``None`` converts nothing (only checks),
            e.g. for integer token ids that feed an embedding.
        integers_stay: keep integer and boolean values as ``int64`` (targets: class
            indices and counts) instead of converting them to ``dtype``.
        where: a prefix for the error messages naming the data (e.g. ``"train split: "``).

    Returns:
        The checked tensor, on the device it came on (a new tensor only when converted).

    Raises:
        TypeError: not a tensor or numpy array, complex, or a numpy array of strings or
            objects.
        ValueError: no first dimension, NaN or infinite values (naming the row and column
            of the first), values outside the range of ``dtype``, or integers that ``dtype``
            cannot represent exactly.
    """
    if dtype is not None and dtype not in _EXACT_INTEGERS:
        raise ValueError(
            f"dtype must be a floating dtype ({', '.join(map(str, _EXACT_INTEGERS))}) or None, "
            f"got {dtype!r}"
        )
    t = _as_tensor(value, name, where)
    if t.dim() == 0:
        raise ValueError(
            f"{where}{name} is a single number; pass one row per example (shape (n, ...))"
        )
    if t.is_complex():
        raise TypeError(f"{where}{name} is complex ({t.dtype}); pass real-valued data")
    if not t.is_floating_point():
        if integers_stay:
            return t.to(torch.int64)
        if dtype is None:
            return t
        limit = _EXACT_INTEGERS[dtype]
        largest = int(t.abs().max()) if t.numel() and t.dtype != torch.bool else 0
        if largest > limit:
            raise ValueError(
                f"{where}{name} holds integers up to {largest}, which {dtype} cannot "
                f"represent exactly (limit 2**{limit.bit_length() - 1} = {limit}); convert "
                f"them yourself ({name}.to({dtype})) if rounding is acceptable"
            )
        return t.to(dtype)
    _refuse_non_finite(t, name, where)
    if dtype is None or t.dtype == dtype:
        return t
    largest = float(t.abs().max()) if t.numel() else 0.0
    if largest > torch.finfo(dtype).max:
        raise ValueError(
            f"{where}{name} holds values up to {largest:.3g}, beyond the range of {dtype} "
            f"({torch.finfo(dtype).max:.3g}); rescale them, or pass dtype=torch.float64 and "
            "train a float64 model (model.double())"
        )
    return t.to(dtype)


def check_examples(
    x: Any, y: Any, *, dtype: torch.dtype | None = torch.float32, where: str = ""
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check a pair of inputs ``x`` and targets ``y`` (see the rule of this module).

    Inputs become ``dtype``; integer targets stay integers (``int64``), floating targets
    become ``dtype``; both must have the same number of rows.

    Raises:
        TypeError, ValueError: as `check_tensor`, or when ``x`` and ``y`` differ in length.
    """
    x = check_tensor(x, "x", dtype=dtype, where=where)
    y = check_tensor(y, "y", dtype=dtype, integers_stay=True, where=where)
    if len(x) != len(y):
        raise ValueError(
            f"{where}x has {len(x)} examples but y has {len(y)}; they must have the same "
            "first dimension"
        )
    return x, y
