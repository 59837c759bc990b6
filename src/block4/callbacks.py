"""Lightning callbacks that look inside training: gradient flow, activations, loss guards.

- `GradientFlowMonitor`: per-layer gradient norms at chosen steps, starting *before
  the first update* (the gradient at the initial weights).
- `ActivationStats`: per-layer pre-activation mean, standard deviation and histogram.
- `FiniteLossGuard` (alias `NaNGuard`): stops training with an error naming the
  epoch and step at which the loss became NaN or infinite.
- `MetricHistory`: the logged metrics of every epoch, for learning curves.

Layers are found by name. For a body built by [`mlp`][block4.models.mlp] they are the hidden
blocks ``block0, block1, ...`` and the output layer ``head`` (``depth_index`` 0, 1, ...,
counting from the input). For any other body, every ``nn.Linear`` is a layer, named by its
module path. The recorded rows are plain dicts, ready for ``pandas.DataFrame(rows)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn

from block4.models import ACTIVATIONS, MLP
from block4.stacked import StackedMLP

__all__ = [
    "ActivationStats",
    "FiniteLossGuard",
    "GradientFlowMonitor",
    "MetricHistory",
    "NaNGuard",
    "NonFiniteLossError",
    "Table",
    "linear_layers",
]


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
    ) -> None:
        self._chosen, self._every = _step_selector(steps, every_n_steps)
        self.include_bias = include_bias
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
        self.table = Table()
        self._handles: list[Any] = []

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
        self._remove_hooks()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._remove_hooks()


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
    member has diverged.

    Args:
        check_every_n_steps: check only every n-th step (the check syncs with the device,
            which costs a little on a GPU).

    Attributes:
        table: a `Table` of rows ``{"member", "epoch", "step", "batch", "loss"}``, one per
            diverged member of a stacked model.

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
                self.table.append({**row, "batch": batch, "loss": value})
                rank_zero_warn(
                    f"member {k}'s training loss became {value} at epoch {row['epoch']}, step "
                    f"{row['step']}; it is frozen at its last finite weights, the others go on"
                )
        if not bool(pl_module.member_active.any()):
            trainer.should_stop = True
            raise NonFiniteLossError(
                f"every member's training loss became NaN or infinite (by step "
                f"{trainer.global_step}: {self.table.to_dicts()}); training stopped. Lower the "
                "learning rates or check the inputs and targets for NaN/inf."
            )


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
