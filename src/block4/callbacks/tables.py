"""Shared by the callbacks: tidy tables of rows, the layers a body has, logging rows."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytorch_lightning as pl
from torch import nn

from block4.models import ACTIVATIONS, MLP
from block4.stacked import StackedMLP


class Table(list):
    """A list of row dicts (a tidy table) with a few conveniences for plotting.

    Examples:
        >>> t = Table([{"step": 0, "layer": "block0", "grad_norm": 1.0},
        ...            {"step": 0, "layer": "head", "grad_norm": 2.0}])
        >>> t.column("grad_norm")
        [1.0, 2.0]
        >>> t.where(layer="head")
        [{'step': 0, 'layer': 'head', 'grad_norm': 2.0}]
    """

    def to_dicts(self) -> list[dict[str, Any]]:
        """The rows as a plain ``list`` of (copied) dicts."""
        return [dict(r) for r in self]

    def column(self, name: str) -> list[Any]:
        """The values of one column, in row order."""
        return [r[name] for r in self]

    def where(self, **equal: Any) -> Table:
        """The rows whose columns equal the given values."""
        return Table(r for r in self if all(r.get(k) == v for k, v in equal.items()))


def _body(pl_module: nn.Module) -> nn.Module:
    return getattr(pl_module, "body", pl_module)


def linear_layers(module: nn.Module) -> list[tuple[str, nn.Linear]]:
    """The layers the callbacks report on, input side first, as ``(name, nn.Linear)``.

    For a LightningModule with a ``body`` attribute the body is searched. An
    [`MLP`][block4.models.MLP] gives ``block0 .. block{depth-1}, head``; any other module
    gives all its ``nn.Linear`` submodules in registration order, named by module path.
    """
    body = _body(module)
    if isinstance(body, (MLP, StackedMLP)):
        return list(body.linear_layers())
    if isinstance(body, nn.Linear):
        return [("linear", body)]
    return [(name, m) for name, m in body.named_modules() if isinstance(m, nn.Linear)]


def _step_selector(
    steps: Iterable[int] | None, every_n_steps: int | None
) -> tuple[set[int], int | None]:
    chosen = set() if steps is None else {int(s) for s in steps}
    if any(s < 0 for s in chosen):
        raise ValueError(f"steps must be >= 0, got {sorted(chosen)}")
    if every_n_steps is not None and (not isinstance(every_n_steps, int) or every_n_steps < 1):
        raise ValueError(f"every_n_steps must be an integer >= 1 or None, got {every_n_steps!r}")
    if steps is None and every_n_steps is None:
        every_n_steps = 1
    return chosen, every_n_steps


def _selected(step: int, chosen: set[int], every: int | None) -> bool:
    return step in chosen or (every is not None and step % every == 0)


def log_rows(trainer: pl.Trainer, rows: list[dict[str, Any]], keys: Iterable[str]) -> None:
    """Send table rows to the Trainer's loggers as scalars (``metrics.csv``, TensorBoard, ...).

    Each row gives one scalar per key, named ``<key>/<layer>`` (``<key>/<layer>/member_<k>``
    for a stacked body), at the row's ``step``. Only the global rank 0 writes; without a
    logger nothing happens.
    """
    if not rows or not trainer.loggers or not trainer.is_global_zero:
        return
    by_step: dict[int, dict[str, float]] = {}
    for row in rows:
        member = f"/member_{row['member']}" if "member" in row else ""
        metrics = by_step.setdefault(int(row["step"]), {})
        for key in keys:
            if key in row:
                metrics[f"{key}/{row['layer']}{member}"] = float(row[key])
    for step, metrics in by_step.items():
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)


def _activation_modules(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """The activation modules of the body, input side first."""
    body = _body(module)
    if isinstance(body, (MLP, StackedMLP)):
        return [(name, block.act) for name, block in body.hidden_blocks()]
    act_types = tuple(ACTIVATIONS.values())
    return [
        (name, m)
        for name, m in body.named_modules()
        if isinstance(m, act_types) and not isinstance(m, nn.Identity)
    ]
