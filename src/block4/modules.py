"""LightningModules: a body (usually [`mlp`][block4.models.mlp]) followed by a probabilistic head.

Both modules compute ``dist = head(body(x))`` and train on the negative log-likelihood
``-dist.log_prob(y).mean()`` ([`nll`][block4.heads.nll]). They can be built two ways:

- from plain hyperparameters (the body's are [`BodyOptions`][block4.models.BodyOptions]),
  which is what LightningCLI and checkpoints need:

    ```python
    Classifier(in_features=64, n_classes=10, depth=3, width=64, norm="batch")
    ProbabilisticRegressor(in_features=1, head="gaussian", heteroscedastic=True)
    ```

- from your own body (any ``nn.Module`` producing ``head.n_params`` features per
  example, or ``body_out_features`` features if you pass that):

    ```python
    Classifier(my_cnn, n_classes=10)
    ```

    A body passed in is not a hyperparameter: to load such a checkpoint, pass the body
    again, ``Classifier.load_from_checkpoint(path, body=my_cnn)``.

**Many members at once.** ``members=E`` trains ``E`` independent networks of one shape in one
run, as a [`StackedMLP`][block4.stacked.StackedMLP]: member ``k`` starts from seed
``seed + k`` (or ``seed[k]``), may have its own ``init``, learning rate (``lr=[...]``) and
``residual`` flag, and the loss is the sum of the members' mean losses, so every member's
gradient is the one of its own run. Batches may be shared (``[B, F]``) or one per member
(``[E, B, F]``, see [`MemberBatches`][block4.data.MemberBatches]). A member whose loss or gradient
becomes NaN/inf is frozen at its last finite weights (``member_active``,
``diverged_step``); the others go on.

Logged metrics (per epoch): ``train_loss``; ``val_loss`` and ``test_loss`` (NLL);
``val_acc``/``test_acc`` for the classifier; ``val_rmse``/``test_rmse`` (of the predictive
mean) for the regressor. With members, each also per member (``train_loss/member_3``) and
as the mean over members, plus ``members_active``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import pytorch_lightning as pl
import torch
import torchmetrics
from torch import distributions as D
from torch import nn
from typing_extensions import Unpack

from block4.heads import CategoricalHead, Head, check_targets, make_head, nll
from block4.models import BodyOptions, mlp
from block4.module_checks import as_model_input, check_checkpoint
from block4.stacked import (
    StackedBatchNorm,
    aleatoric_variance,
    ensemble_dist,
    epistemic_variance,
    member_values,
)
from block4.stacked_optim import StackedAdam, StackedSGD

__all__ = [
    "Classifier",
    "ProbabilisticModule",
    "ProbabilisticRegressor",
    "aleatoric_variance",
    "build_body",
    "epistemic_variance",
]

OPTIMIZERS = ("adam", "adamw", "sgd")
REGRESSION_HEADS = ("gaussian", "poisson", "student_t", "mixture")
_BODY_DEFAULTS: BodyOptions = {
    "depth": 2,
    "activation": "relu",
    "norm": None,
    "residual": False,
    "init": "default",
    "bias": None,
    "init_std": 0.01,
}


def build_body(
    in_features: int,
    out_features: int,
    members: int = 1,
    seed: int | list[int] | None = None,
    **options: Unpack[BodyOptions],
) -> nn.Module:
    """An [`mlp`][block4.models.mlp] (a `StackedMLP` when ``members > 1``), or a single
    ``nn.Linear`` when ``depth == 0``.

    ``depth=0`` gives a (generalised) linear model: with a Gaussian head of learned sigma,
    maximising the likelihood is ordinary least squares.
    """
    options = {**_BODY_DEFAULTS, "width": 64, **options}
    if options["depth"] == 0:
        if members > 1:
            raise ValueError("members > 1 needs an MLP body (depth >= 1), got depth=0")
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)  # type: ignore[arg-type]
            return nn.Linear(in_features, out_features)
    stacked = None if members == 1 else members
    return mlp(in_features, out_features, members=stacked, seed=seed, **options)  # type: ignore[misc]


class ProbabilisticModule(pl.LightningModule):
    """Shared machinery of `Classifier` and `ProbabilisticRegressor`.

    Attributes:
        body: the feature extractor (a `StackedMLP` when ``members > 1``).
        head: the [`Head`][block4.heads.Head] mapping features to a distribution.
        members (int): number of networks trained together (1: a plain single network).
        member_active (torch.Tensor): ``[E]`` bool buffer, False for members frozen after
            diverging.
        diverged_step (torch.Tensor): ``[E]`` long buffer, the global step of each member's
            divergence (-1: none).
    """

    body: nn.Module
    head: Head

    def _build(self, body: nn.Module | None, head: Head, in_features: int) -> None:
        """Validate the common hyperparameters, keep ``head`` and build ``body``.

        Called inside the seeded RNG that built the head: a single body continues that
        stream (as it always has), stacked members are seeded one by one.
        """
        hp = self.hparams
        for name, default in {**_BODY_DEFAULTS, "width": self._default_width}.items():
            hp.setdefault(name, default)  # complete hparams: checkpoints rebuild the same net
        members = hp.members
        if isinstance(members, bool) or not isinstance(members, int) or members < 1:
            raise ValueError(f"members must be an integer >= 1, got {members!r}")
        if hp.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"optimizer {hp.optimizer!r} is not supported; choose one of: {', '.join(OPTIMIZERS)}"
            )
        for name in ("lr", "seed"):
            if members == 1 and isinstance(hp[name], (list, tuple)):
                raise ValueError(f"{name} is a list ({hp[name]}); a list needs members=len({name})")
        lrs = member_values("lr", hp.lr, members)
        bad = [
            v for v in lrs if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0
        ]
        if bad:
            raise ValueError(f"lr must be > 0 (for every member), got {hp.lr!r}")
        self.members = members
        self.head = head
        if members > 1:
            if body is not None:
                raise ValueError("members > 1 builds its own stacked MLP body; pass body=None")
            if any(True for _ in head.parameters()):
                raise ValueError(
                    f"members > 1 needs a head without parameters, got {head._describe()}; use "
                    "a heteroscedastic or fixed-sigma Gaussian, a fixed df, and no "
                    "body_out_features"
                )
        options = {k: hp[k] for k in {**_BODY_DEFAULTS, "width": 0}}
        if body is not None:
            self.body = body
        elif members == 1:
            self.body = build_body(in_features, head.in_features, **options)
        else:
            self.body = build_body(in_features, head.in_features, members, hp.seed, **options)
        self.register_buffer("member_active", torch.ones(members, dtype=torch.bool))
        self.register_buffer("diverged_step", torch.full((members,), -1, dtype=torch.long))
        for module in self.body.modules():
            if isinstance(module, StackedBatchNorm):
                module.track_previous = True  # a frozen member's statistics roll back too
        self._train_sums: torch.Tensor | None = None
        self._train_count = 0
        self._eval_sums: torch.Tensor | None = None

    # --- the model ------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> D.Distribution:
        """The distribution ``head(body(x))`` (with gradients); with members its batch shape
        is ``[E, B]``.

        Raises:
            ValueError: when ``x`` does not have the body's input width (checked for bodies
                that declare ``in_features``, such as ours and ``nn.Linear``).
        """
        expected = getattr(self.body, "in_features", None)
        if isinstance(expected, int) and (x.ndim == 0 or x.shape[-1] != expected):
            raise ValueError(
                f"input has shape {tuple(x.shape)}, but this model's body expects "
                f"{expected} features per example; pass a tensor of shape (batch, {expected})"
            )
        return self.head(self.body(x))

    @torch.no_grad()
    def member_dists(self, x: Any) -> D.Distribution:
        """Each member's predictive distribution (batch shape ``[E, B]``; ``[B]`` for one
        member), in evaluation mode, without gradients. See `predict_dist`."""
        x = as_model_input(x, next(self.parameters(), torch.empty(0)).dtype, self.device)
        was_training = self.training
        self.eval()
        try:
            return self(x)
        finally:
            self.train(was_training)

    def predict_dist(self, x: Any) -> D.Distribution:
        """The predictive distribution for ``x`` in evaluation mode, without gradients.

        BatchNorm layers use their running statistics; the module's train/eval mode is
        restored afterwards. ``x`` (a tensor or numpy array, of any real dtype) is converted
        to the model's dtype and device; NaN/inf inputs are refused. With members, this is
        the ensemble's predictive distribution: the equal-weight mixture of the members
        (``MixtureSameFamily``; for a classifier, the ``Categorical`` of the mean
        probabilities).
        """
        dist = self.member_dists(x)
        if self.members == 1:
            return dist
        return ensemble_dist(dist, self.members)

    # --- training -------------------------------------------------------------------------
    def _member_losses(
        self, dist: D.Distribution, y: torch.Tensor, x: torch.Tensor
    ) -> torch.Tensor:
        """``[E]`` mean NLL of each member (``y`` shared when ``x`` is)."""
        if x.dim() == 2:
            y = y.unsqueeze(0).expand(self.members, *y.shape)
        if self.hparams.validate_targets:
            y = check_targets(dist, y)
        return -dist.log_prob(y).reshape(self.members, -1).mean(1)

    def on_train_epoch_start(self) -> None:
        self._train_sums = None
        self._train_count = 0

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        x, y = batch
        dist = self(x)
        if self.members == 1:
            loss = nll(dist, y, validate=self.hparams.validate_targets)
            weighted = loss.detach() * len(y)
            self._train_sums = weighted if self._train_sums is None else self._train_sums + weighted
            self._train_count += len(y)
            return loss
        n = y.shape[1] if x.dim() == 3 else len(y)
        losses = self._member_losses(dist, y, x)
        finite = torch.isfinite(losses)
        self._freeze(~finite)
        kept = torch.where(self.member_active, losses, torch.zeros_like(losses))
        loss = kept.sum()  # each member's gradient is the one of its own run
        self.last_member_losses = losses.detach()
        counted = (finite & self.member_active).to(losses.dtype)
        sums = torch.stack([kept.detach() * n, counted * n])
        self._train_sums = sums if self._train_sums is None else self._train_sums + sums
        return loss

    @torch.no_grad()
    def _freeze(self, failed: torch.Tensor) -> None:
        newly = self.member_active & failed
        self.diverged_step.copy_(torch.where(newly, self.global_step, self.diverged_step))
        self.member_active &= ~failed

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.members == 1:
            return
        # A finite loss can still give an infinite gradient: freeze such members before the
        # step moves them, and roll their BatchNorm statistics back to before this batch.
        params, norms = self._stacked_parts()
        with torch.no_grad():
            grads = [p.grad.reshape(self.members, -1) for p in params if p.grad is not None]
            if grads:  # a NaN/inf anywhere makes the member's sum NaN/inf
                self._freeze(~torch.isfinite(torch.cat(grads, dim=1).sum(1)))
            for module in norms:
                module.restore_members(self.member_active)

    def _stacked_parts(self) -> tuple[list[torch.nn.Parameter], list[StackedBatchNorm]]:
        """The body's parameters and stacked BatchNorm layers (looked up once, not per step)."""
        parts = getattr(self, "_stacked_parts_cache", None)
        if parts is None or parts[0] is not self.body:
            norms = [m for m in self.body.modules() if isinstance(m, StackedBatchNorm)]
            parts = (self.body, list(self.body.parameters()), norms)
            self._stacked_parts_cache = parts
        return parts[1], parts[2]

    def _reduce(self, stats: torch.Tensor) -> torch.Tensor:
        if self.trainer.world_size > 1:
            stats = self.trainer.strategy.reduce(stats, reduce_op="sum")
        return stats

    def _log_members(self, name: str, values: torch.Tensor, **kw: Any) -> None:
        """Log ``name`` (mean over active members) and ``name/member_k``."""
        active = self.member_active
        mean = values[active].mean() if bool(active.any()) else values.new_tensor(math.nan)
        self.log(name, mean, **kw)
        if self.members > 1:
            for k, value in enumerate(values.tolist()):
                self.log(f"{name}/member_{k}", value)

    def on_train_epoch_end(self) -> None:
        if self._train_sums is None:
            return
        sums = self._train_sums
        if self.members == 1:
            sums = torch.stack([sums.reshape(()), sums.new_tensor(float(self._train_count))])[
                :, None
            ]
        stats = self._reduce(sums)
        self._log_members("train_loss", stats[0] / stats[1], prog_bar=True)
        if self.members > 1:
            self.log("members_active", self.member_active.sum().to(torch.float32))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        if self.members > 1:
            lrs = member_values("lr", hp.lr, self.members)
            if hp.optimizer == "sgd":
                return StackedSGD(
                    self.parameters(), lrs, hp.momentum, weight_decay=hp.weight_decay,
                    active=self.member_active,
                )  # fmt: skip
            return StackedAdam(
                self.parameters(), lrs, weight_decay=hp.weight_decay,
                decoupled=hp.optimizer == "adamw", active=self.member_active,
            )  # fmt: skip
        params = self.parameters()
        if hp.optimizer == "adam":
            return torch.optim.Adam(params, lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        return torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)

    def predict_step(self, batch: Any, batch_idx: int) -> D.Distribution:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(x)

    # --- evaluation -----------------------------------------------------------------------
    def _eval_metric(self, dist: D.Distribution, y: torch.Tensor, shared: bool) -> torch.Tensor:
        """``[E, B]`` per-example values of the second metric (correct / squared error)."""
        raise NotImplementedError

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> None:
        x, y = batch
        dist = self(x)
        if self.members == 1:
            self._single_eval_step(dist, y, stage)
            return
        losses = self._member_losses(dist, y, x)
        metric = self._eval_metric(dist, y, shared=x.dim() == 2).reshape(self.members, -1).mean(1)
        n = float(y.shape[1] if x.dim() == 3 else len(y))
        sums = torch.stack([losses * n, metric * n, torch.full_like(losses, n)])
        self._eval_sums = sums if self._eval_sums is None else self._eval_sums + sums

    def _eval_epoch_end(self, stage: str) -> None:
        if self.members == 1 or self._eval_sums is None:
            return
        stats = self._reduce(self._eval_sums)
        self._eval_sums = None
        self._log_members(f"{stage}_loss", stats[0] / stats[2], prog_bar=stage == "val")
        metric = stats[1] / stats[2]
        self._log_members(f"{stage}_{self._metric_name}", self._metric_finish(metric))

    def _metric_finish(self, mean: torch.Tensor) -> torch.Tensor:
        return mean

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    # --- checkpoints ----------------------------------------------------------------------
    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """Lightning's ``load_from_checkpoint``, with one clear error for a file that is
        missing, empty, truncated or corrupt, or a checkpoint of another model."""
        check_checkpoint(cls, checkpoint_path, set(BodyOptions.__annotations__))
        return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    # --- speed ----------------------------------------------------------------------------
    # Lightning sets ``_current_fx_name`` on the module around every hook call (about 45 times
    # per training step); ``nn.Module.__setattr__`` spends ~2 us on each, checking whether the
    # value is a parameter, buffer or submodule. These attributes are never any of those, so
    # they are stored directly -- the same result, a measurable share of the per-step overhead.
    _PLAIN_ATTRIBUTES = frozenset(
        {"_current_fx_name", "_train_sums", "_train_count", "_eval_sums", "last_member_losses"}
    )

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ProbabilisticModule._PLAIN_ATTRIBUTES:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)


def _check_head_input(head: Head, body_out_features: int | None) -> Head:
    if body_out_features is None or body_out_features == head.in_features:
        return head
    raise ValueError(
        f"the body produces {body_out_features} features but the head expects "
        f"{head.in_features}; build the head with in_features={body_out_features}"
    )


class Classifier(ProbabilisticModule):
    """Body + [`CategoricalHead`][block4.heads.CategoricalHead], trained on the NLL (cross-entropy).

    Args:
        body: your own feature extractor; ``None`` builds an MLP from the hyperparameters.
        in_features: input width (MLP body).
        n_classes: number of classes.
        members: networks trained at once (see the module docs); 1 is a plain network.
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"``.
        lr: learning rate (with members: one for all, or a list with one per member).
        weight_decay: L2 penalty of the optimizer.
        momentum: SGD momentum.
        seed: seed of the initial weights (``None``: the global RNG); member ``k`` gets
            ``seed + k``, or ``seed[k]`` for a list.
        validate_targets: check targets each step (clear errors for out-of-range classes).
        body_out_features: width of your body's output, if it differs from ``n_classes``: the
            head then owns a linear layer ``body_out_features -> n_classes``.
        **body_options: the MLP body, see [`BodyOptions`][block4.models.BodyOptions]
            (``depth=2, width=64, activation="relu"`` unless given).

    Examples:
        >>> model = Classifier(in_features=64, n_classes=10, depth=2, width=32)
        >>> model.predict_dist(torch.zeros(3, 64)).probs.shape
        torch.Size([3, 10])
        >>> ensemble = Classifier(in_features=64, depth=2, width=32, members=4, lr=[1e-3] * 4)
        >>> ensemble.member_dists(torch.zeros(3, 64)).probs.shape
        torch.Size([4, 3, 10])
    """

    _default_width = 64
    _metric_name = "acc"

    def __init__(
        self,
        body: nn.Module | None = None,
        in_features: int = 64,
        n_classes: int = 10,
        members: int = 1,
        optimizer: Literal["adam", "adamw", "sgd"] = "adam",
        lr: float | list[float] = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        seed: int | list[int] | None = 0,
        validate_targets: bool = True,
        body_out_features: int | None = None,
        **body_options: Unpack[BodyOptions],
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["body"])
        in_head = None if body_out_features in (None, n_classes) else body_out_features
        with torch.random.fork_rng(devices=[]):
            if isinstance(seed, int) and not isinstance(seed, bool):
                torch.manual_seed(seed)
            head = CategoricalHead(n_classes, in_features=in_head)
            self._build(body, head, in_features)
        self.n_classes = n_classes
        self.val_acc = torchmetrics.classification.MulticlassAccuracy(n_classes, average="micro")
        self.test_acc = torchmetrics.classification.MulticlassAccuracy(n_classes, average="micro")

    def _single_eval_step(self, dist: D.Distribution, y: torch.Tensor, stage: str) -> None:
        loss = nll(dist, y, validate=self.hparams.validate_targets)
        acc = self.val_acc if stage == "val" else self.test_acc
        acc.update(dist.logits, y)
        self.log(f"{stage}_loss", loss, batch_size=len(y), sync_dist=True, prog_bar=stage == "val")
        self.log(f"{stage}_acc", acc, prog_bar=stage == "val")

    def _eval_metric(self, dist: D.Distribution, y: torch.Tensor, shared: bool) -> torch.Tensor:
        return (dist.logits.argmax(-1) == y.reshape(dist.logits.shape[1 if shared else 0 : -1])).to(
            dist.logits.dtype
        )


class ProbabilisticRegressor(ProbabilisticModule):
    """Body + a regression head (Gaussian, Poisson, Student-t or Gaussian mixture).

    Args:
        body: your own feature extractor; ``None`` builds an MLP from the hyperparameters.
        head: a head name (``"gaussian"``, ``"poisson"``, ``"student_t"``, ``"mixture"``) or
            a [`Head`][block4.heads.Head] instance (then not saved as a hyperparameter).
        in_features: input width (MLP body).
        heteroscedastic: for ``head="gaussian"``: predict sigma(x) (``True``) or use one
            shared sigma (``False``: learned, or fixed by ``head_options={"sigma": s}``).
            ``None`` (default) means ``True`` unless a fixed sigma is given.
        head_options: further keyword arguments of the head (e.g. ``{"sigma": 20.0}``,
            ``{"n_components": 3}``, ``{"df": 4.0}``).
        members: networks trained at once, e.g. a deep ensemble; `predict_dist` then returns
            their mixture, and `aleatoric_variance` / `epistemic_variance` split its variance.
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"``.
        lr: learning rate (with members: one for all, or a list with one per member).
        weight_decay: L2 penalty of the optimizer.
        momentum: SGD momentum.
        seed: seed of the initial weights (``None``: the global RNG); member ``k`` gets
            ``seed + k``, or ``seed[k]`` for a list.
        validate_targets: check targets each step (clear errors for NaN, negative counts...).
        body_out_features: width of your body's output if it differs from what the head
            needs: the head then owns a linear projection.
        **body_options: the MLP body, see [`BodyOptions`][block4.models.BodyOptions]
            (``depth=2, width=32, activation="relu"`` unless given).

    Examples:
        >>> model = ProbabilisticRegressor(in_features=1, head="gaussian", heteroscedastic=True)
        >>> dist = model.predict_dist(torch.zeros(4, 1))
        >>> type(dist).__name__, tuple(dist.mean.shape)
        ('Normal', (4,))
        >>> ensemble = ProbabilisticRegressor(in_features=1, members=5)
        >>> type(ensemble.predict_dist(torch.zeros(4, 1))).__name__
        'MixtureSameFamily'
    """

    _default_width = 32
    _metric_name = "rmse"

    def __init__(
        self,
        body: nn.Module | None = None,
        head: Literal["gaussian", "poisson", "student_t", "mixture"] | Head = "gaussian",
        in_features: int = 1,
        heteroscedastic: bool | None = None,
        head_options: dict[str, Any] | None = None,
        members: int = 1,
        optimizer: Literal["adam", "adamw", "sgd"] = "adam",
        lr: float | list[float] = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        seed: int | list[int] | None = 0,
        validate_targets: bool = True,
        body_out_features: int | None = None,
        **body_options: Unpack[BodyOptions],
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["body"] + ([] if isinstance(head, str) else ["head"]))
        with torch.random.fork_rng(devices=[]):
            if isinstance(seed, int) and not isinstance(seed, bool):
                torch.manual_seed(seed)
            head_module = self._make_head(head, heteroscedastic, head_options, body_out_features)
            self._build(body, head_module, in_features)
        self.val_rmse = torchmetrics.MeanSquaredError(squared=False)
        self.test_rmse = torchmetrics.MeanSquaredError(squared=False)

    @staticmethod
    def _make_head(
        head: str | Head,
        heteroscedastic: bool | None,
        head_options: dict[str, Any] | None,
        body_out_features: int | None,
    ) -> Head:
        if isinstance(head, Head):
            return _check_head_input(head, body_out_features)
        if not isinstance(head, str):
            raise TypeError(
                f"head must be a head name or a block4.heads.Head, got {type(head).__name__}"
            )
        if head not in REGRESSION_HEADS:
            raise ValueError(
                f"head {head!r} is not a regression head; choose one of: "
                f"{', '.join(REGRESSION_HEADS)} (use Classifier for class labels)"
            )
        options = dict(head_options or {})
        if head == "gaussian":
            if heteroscedastic is None:  # default: sigma(x), unless sigma is fixed
                heteroscedastic = options.get("sigma") is None
            options.setdefault("heteroscedastic", heteroscedastic)
        if body_out_features is not None:
            options.setdefault("in_features", body_out_features)
        return make_head(head, **options)

    def _single_eval_step(self, dist: D.Distribution, y: torch.Tensor, stage: str) -> None:
        loss = nll(dist, y, validate=self.hparams.validate_targets)
        rmse = self.val_rmse if stage == "val" else self.test_rmse
        mean = dist.mean
        rmse.update(mean, y.reshape(mean.shape).to(mean.dtype))
        self.log(f"{stage}_loss", loss, batch_size=len(y), sync_dist=True, prog_bar=stage == "val")
        self.log(f"{stage}_rmse", rmse)

    def _eval_metric(self, dist: D.Distribution, y: torch.Tensor, shared: bool) -> torch.Tensor:
        mean = dist.mean
        return (mean - y.reshape(mean.shape[1:] if shared else mean.shape).to(mean.dtype)) ** 2

    def _metric_finish(self, mean: torch.Tensor) -> torch.Tensor:
        return mean.sqrt()
