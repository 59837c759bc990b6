"""Gradient flow and activation statistics, layer by layer (and member by member)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from block4.callbacks.tables import (
    Table,
    _activation_modules,
    _body,
    _selected,
    _step_selector,
    linear_layers,
    log_rows,
)
from block4.models import ACTIVATIONS


class GradientFlowMonitor(pl.Callback):
    """Record the gradient norm of every layer's weight at chosen optimisation steps.

    The norms are read after ``backward`` and before the optimiser updates the weights
    (``on_before_optimizer_step``), so step 0 is the gradient at the initial weights.
    Under DDP the gradients have been averaged across processes at that point.

    Args:
        steps: the global steps to record (e.g. ``[0, 10, 100]``).
        every_n_steps: also record every n-th step (0, n, 2n, ...). With neither
            argument, every step is recorded.
        include_bias: also record the norm of the bias gradients (``bias_grad_norm``).
        log: also send the norms to the Trainer's loggers as scalars ``grad_norm/<layer>``
            and ``weight_norm/<layer>`` (so ``metrics.csv`` or TensorBoard show them).

    Attributes:
        table: a `Table` of rows ``{"step", "epoch", "layer", "depth_index",
            "grad_norm", "weight_norm"}`` (plus ``"bias_grad_norm"`` if asked), where
            ``grad_norm`` is the Euclidean (Frobenius) norm of the weight gradient. For a
            stacked body (``members=E``) there is one row per member and layer, with a
            ``"member"`` column, and the norms are each member's own.

    Examples:
        >>> monitor = GradientFlowMonitor(steps=[0], every_n_steps=50)
        >>> # trainer = pl.Trainer(callbacks=[monitor]); trainer.fit(model, data)
        >>> # monitor.table.where(step=0) -> one row per layer
    """

    def __init__(
        self,
        steps: Iterable[int] | None = None,
        every_n_steps: int | None = None,
        include_bias: bool = False,
        log: bool = True,
    ) -> None:
        self._chosen, self._every = _step_selector(steps, every_n_steps)
        self.include_bias = include_bias
        self.to_loggers = log
        self.table = Table()

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._layers = linear_layers(pl_module)
        if not self._layers:
            raise ValueError(
                "GradientFlowMonitor found no nn.Linear layer in the model; it reports on "
                "linear layers (block4.models.mlp bodies name them block0.., head)"
            )

    @torch.no_grad()
    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        step = trainer.global_step
        if not _selected(step, self._chosen, self._every):
            return
        members = getattr(_body(pl_module), "members", None)
        e = members or 1
        nan = torch.full((e,), math.nan)

        def norm(t: torch.Tensor | None) -> torch.Tensor:
            # per member for stacked parameters (the member is their first dimension)
            if t is None:
                return nan
            return (
                torch.linalg.vector_norm(t.reshape(e, -1), dim=1)
                if members
                else torch.linalg.vector_norm(t)
            )

        norms = []
        for _, layer in self._layers:
            norms.append(norm(layer.weight.grad))
            norms.append(norm(layer.weight))
            if self.include_bias:
                norms.append(norm(None if layer.bias is None else layer.bias.grad))
        # one device sync; values[i][k]: quantity i of member k
        values = torch.stack([n.float().cpu().reshape(e) for n in norms]).tolist()
        per = 3 if self.include_bias else 2
        first = len(self.table)
        for k in range(e):
            for i, (name, _) in enumerate(self._layers):
                row: dict[str, Any] = {"step": step, "epoch": trainer.current_epoch}
                if members:
                    row["member"] = k
                row.update(layer=name, depth_index=i)
                row["grad_norm"] = values[per * i][k]
                row["weight_norm"] = values[per * i + 1][k]
                if self.include_bias:
                    row["bias_grad_norm"] = values[per * i + 2][k]
                self.table.append(row)
        if self.to_loggers:
            log_rows(trainer, self.table[first:], ("grad_norm", "weight_norm", "bias_grad_norm"))

    def grad_norms(self, step: int, member: int | None = None) -> dict[str, float]:
        """``{layer: grad_norm}`` at one recorded step (of one ``member`` of a stack)."""
        rows = self.table.where(step=step)
        if not rows:
            recorded = sorted({r["step"] for r in self.table})
            raise KeyError(f"step {step} was not recorded; recorded steps: {recorded}")
        if "member" in rows[0]:
            if member is None:
                raise ValueError("the model has several members; pass member=k")
            rows = rows.where(member=member)
            if not rows:
                raise KeyError(f"member {member} was not recorded")
        return {r["layer"]: r["grad_norm"] for r in rows}

    def state_dict(self) -> dict[str, Any]:
        return {"table": self.table.to_dicts()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.table = Table(state_dict.get("table", []))


class ActivationStats(pl.Callback):
    """Per-layer statistics of the pre-activations (the inputs of each activation function).

    At each chosen training step, forward hooks on the activation modules record, for the
    training batch of that step (before the update), the mean, standard deviation and a
    histogram of the pre-activations, plus the mean and std of the activations (outputs)
    and the fraction of pre-activations in the saturated range ``|z| > saturation``.

    Args:
        steps: global steps to record (default: only step 0, at the initial weights).
        every_n_steps: also record every n-th step.
        bins: number of histogram bins.
        hist_range: ``(low, high)`` of the histogram, the same for every layer so that
            layers can be compared; values outside are counted in ``frac_outside``.
        saturation: ``|z|`` above which a sigmoid/tanh unit counts as saturated.
        log: also send the statistics (not the histograms) to the Trainer's loggers as
            scalars ``pre_mean/<layer>``, ``pre_std/<layer>``, ``post_mean/<layer>``,
            ``post_std/<layer>`` and ``frac_saturated/<layer>``.

    Attributes:
        table: a `Table` of rows ``{"step", "epoch", "layer", "depth_index",
            "pre_mean", "pre_std", "post_mean", "post_std", "frac_saturated",
            "frac_outside", "hist", "bin_edges"}`` (``hist``: list of counts). For a
            stacked body (``members=E``), one row per member and layer with a ``"member"``
            column, each over that member's own pre-activations.
    """

    def __init__(
        self,
        steps: Iterable[int] | None = (0,),
        every_n_steps: int | None = None,
        bins: int = 60,
        hist_range: tuple[float, float] = (-6.0, 6.0),
        saturation: float = 4.0,
        log: bool = True,
    ) -> None:
        self._chosen, self._every = _step_selector(steps, every_n_steps)
        if not (isinstance(bins, int) and bins >= 1):
            raise ValueError(f"bins must be an integer >= 1, got {bins!r}")
        low, high = hist_range
        if not low < high:
            raise ValueError(f"hist_range must satisfy low < high, got {hist_range!r}")
        self.bins = bins
        self.hist_range = (float(low), float(high))
        self.saturation = saturation
        self.to_loggers = log
        self.table = Table()
        self._handles: list[Any] = []
        self._first_row = 0

    @property
    def bin_edges(self) -> list[float]:
        """The ``bins + 1`` histogram edges."""
        low, high = self.hist_range
        return torch.linspace(low, high, self.bins + 1).tolist()

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._acts = _activation_modules(pl_module)
        if not self._acts:
            raise ValueError(
                "ActivationStats found no activation module in the model (looked for "
                f"{', '.join(ACTIVATIONS)} modules other than identity)"
            )

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if not _selected(step, self._chosen, self._every):
            return
        epoch = trainer.current_epoch
        self._first_row = len(self.table)
        for depth_index, (name, act) in enumerate(self._acts):
            self._handles.append(
                act.register_forward_hook(self._make_hook(step, epoch, name, depth_index))
            )

    def _make_hook(self, step: int, epoch: int, name: str, depth_index: int):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            z_all, a_all = inputs[0].detach().float(), output.detach().float()
            # a stacked body's activations are [E, B, F]: one set of statistics per member
            stacked = z_all.dim() == 3
            for k in range(z_all.shape[0] if stacked else 1):
                z, a = (z_all[k], a_all[k]) if stacked else (z_all, a_all)
                row = self._stats(z, a)
                head = {"step": step, "epoch": epoch}
                if stacked:
                    head["member"] = k
                self.table.append({**head, "layer": name, "depth_index": depth_index, **row})

        return hook

    @torch.no_grad()
    def _stats(self, z: torch.Tensor, a: torch.Tensor) -> dict[str, Any]:
        low, high = self.hist_range
        stats = torch.stack(
            [
                z.mean(),
                z.std(unbiased=False),
                a.mean(),
                a.std(unbiased=False),
                (z.abs() > self.saturation).float().mean(),
                ((z < low) | (z > high)).float().mean(),
            ]
        ).cpu()
        # on the CPU: CUDA's histc has no deterministic implementation, and
        # Trainer(deterministic=True) would refuse it
        hist = torch.histc(z.cpu(), bins=self.bins, min=low, max=high)
        pre_mean, pre_std, post_mean, post_std, sat, outside = stats.tolist()
        return {
            "pre_mean": pre_mean,
            "pre_std": pre_std,
            "post_mean": post_mean,
            "post_std": post_std,
            "frac_saturated": sat,
            "frac_outside": outside,
            "hist": [int(c) for c in hist.tolist()],
            "bin_edges": self.bin_edges,
        }

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self._handles and self.to_loggers:
            keys = ("pre_mean", "pre_std", "post_mean", "post_std", "frac_saturated")
            log_rows(trainer, self.table[self._first_row :], keys)
        self._remove_hooks()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._remove_hooks()
