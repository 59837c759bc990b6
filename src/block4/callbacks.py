"""Lightning callbacks that look inside training: gradient flow, activations, loss guards.

- `GradientFlowMonitor`: per-layer gradient norms at chosen steps, starting *before
  the first update* (the gradient at the initial weights).
- `ActivationStats`: per-layer pre-activation mean, standard deviation and histogram.
- `FiniteLossGuard` (alias `NaNGuard`): stops training with an error naming the
  epoch and step at which the loss became NaN or infinite.
- `MetricHistory`: the logged metrics of every epoch, for learning curves.
- `TrainingCurve`: a classifier's error and loss on the whole training split.
- `DeadUnitTracker`: the fraction of hidden ReLU units that never activate.
- `BestValidationState`: early stopping on ``val_loss`` without checkpoint files.

Layers are found by name. For a body built by [`mlp`][block4.models.mlp] they are the hidden
blocks ``block0, block1, ...`` and the output layer ``head`` (``depth_index`` 0, 1, ...,
counting from the input). For any other body, every ``nn.Linear`` is a layer, named by its
module path. The recorded rows are plain dicts, ready for ``pandas.DataFrame(rows)``.
"""

from __future__ import annotations

import copy
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
    "log_rows",
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


# --- whole-split measurements and in-memory early stopping ------------------------------------


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


class TrainingCurve(pl.Callback):
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
        member_errors, member_losses: ``[E][time]`` per member (``E = 1`` for a single
            network: the same lists as ``errors`` and ``losses``).

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

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.every_n_steps:
            self._measure(trainer, pl_module)

    def member(self, k: int) -> TrainingCurve:
        """Member ``k``'s curve as a `TrainingCurve` of its own (a copy).

        Raises:
            IndexError: when ``k`` is not a recorded member.
        """
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < len(self.member_errors):
            raise IndexError(
                f"member {k!r} is out of range; this curve has members "
                f"0..{len(self.member_errors) - 1}"
            )
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


class DeadUnitTracker(pl.Callback):
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
            never_active = (h > 0).sum(-2) == 0  # [width] or [E, width]
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
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < len(self.member_dead):
            raise IndexError(
                f"member {k!r} is out of range; this tracker has members "
                f"0..{len(self.member_dead) - 1}"
            )
        tracker = DeadUnitTracker(self.every_n_steps)
        tracker.steps = list(self.steps)
        tracker.dead[:] = self.member_dead[k]
        tracker.dead_per_layer[:] = [list(r) for r in self.member_dead_per_layer[k]]
        return tracker

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
        if trainer.global_step % self.every_n_steps == 0:
            self._measure(trainer, pl_module)


class BestValidationState(pl.Callback):
    """Keep (in memory) the weights of the epoch with the lowest ``val_loss``.

    Early stopping on the validation loss without writing checkpoints to disk: after
    ``trainer.fit`` call `restore` to load the best weights. The module must log
    ``val_loss`` (every [`block4.modules`][block4.modules] module does); the sanity check
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


__all__ += ["BestValidationState", "DeadUnitTracker", "TrainingCurve"]
