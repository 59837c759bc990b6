"""LightningModules: a body (usually [`mlp`][block4.models.mlp]) followed by a probabilistic head.

Both modules compute ``dist = head(body(x))`` and train on the negative log-likelihood
``-dist.log_prob(y).mean()`` ([`nll`][block4.heads.nll]). They can be built two ways:

- from plain hyperparameters, which is what LightningCLI and checkpoints need::

      Classifier(in_features=64, n_classes=10, depth=3, width=64, norm="batch")
      ProbabilisticRegressor(in_features=1, head="gaussian", heteroscedastic=True)

- from your own body (any ``nn.Module`` producing ``head.n_params`` features per
  example, or ``body_out_features`` features if you pass that)::

      Classifier(my_cnn, n_classes=10)

  A body passed in is not a hyperparameter: to load such a checkpoint, pass the body again,
  ``Classifier.load_from_checkpoint(path, body=my_cnn)``.

Logged metrics (per epoch): ``train_loss``; ``val_loss`` and ``test_loss`` (NLL);
``val_acc``/``test_acc`` for the classifier; ``val_rmse``/``test_rmse`` (of the predictive
mean) for the regressor. The training loss is accumulated in a tensor and logged once per
epoch, which keeps Lightning's per-step overhead low.
"""

from __future__ import annotations

from typing import Any, Literal

import pytorch_lightning as pl
import torch
import torchmetrics
from torch import distributions as D
from torch import nn

from block4.heads import CategoricalHead, Head, make_head, nll
from block4.models import mlp

__all__ = ["Classifier", "ProbabilisticModule", "ProbabilisticRegressor", "build_body"]

OPTIMIZERS = ("adam", "adamw", "sgd")


def build_body(
    in_features: int,
    out_features: int,
    depth: int,
    width: int,
    activation: str = "relu",
    norm: str | None = None,
    residual: bool = False,
    init: str = "default",
    bias: bool | None = None,
) -> nn.Module:
    """An [`mlp`][block4.models.mlp], or a single ``nn.Linear`` when ``depth == 0``.

    ``depth=0`` gives a (generalised) linear model: with a Gaussian head of learned sigma,
    maximising the likelihood is ordinary least squares.
    """
    if depth == 0:
        return nn.Linear(in_features, out_features)
    return mlp(
        in_features, out_features, depth, width, activation, norm, residual, init=init, bias=bias
    )


class ProbabilisticModule(pl.LightningModule):
    """Shared machinery of `Classifier` and `ProbabilisticRegressor`.

    Attributes:
        body: the feature extractor.
        head: the [`Head`][block4.heads.Head] mapping features to a distribution.
    """

    body: nn.Module
    head: Head

    # Lightning sets ``_current_fx_name`` on the module around every hook call (about 45 times
    # per training step); ``nn.Module.__setattr__`` spends ~2 us on each, checking whether the
    # value is a parameter, buffer or submodule. These attributes are never any of those, so
    # they are stored directly -- the same result, a measurable share of the per-step overhead.
    _PLAIN_ATTRIBUTES = frozenset({"_current_fx_name", "_train_loss_sum", "_train_count"})

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ProbabilisticModule._PLAIN_ATTRIBUTES:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def _init_common(
        self,
        optimizer: str,
        lr: float,
        weight_decay: float,
        momentum: float,
        validate_targets: bool,
    ) -> None:
        if optimizer not in OPTIMIZERS:
            raise ValueError(
                f"optimizer {optimizer!r} is not supported; choose one of: {', '.join(OPTIMIZERS)}"
            )
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr!r}")
        self.optimizer_name = optimizer
        self.lr = lr
        self.weight_decay = weight_decay
        self.momentum = momentum
        self.validate_targets = validate_targets
        self._train_loss_sum: torch.Tensor | None = None
        self._train_count = 0

    def forward(self, x: torch.Tensor) -> D.Distribution:
        """The predictive distribution ``head(body(x))`` (with gradients).

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
    def predict_dist(self, x: torch.Tensor) -> D.Distribution:
        """The predictive distribution for ``x`` in evaluation mode, without gradients.

        BatchNorm layers use their running statistics; the module's train/eval mode is
        restored afterwards. ``x`` is moved to the module's device.
        """
        was_training = self.training
        self.eval()
        try:
            return self(x.to(self.device))
        finally:
            self.train(was_training)

    # --- training -------------------------------------------------------------------------
    def _loss(self, dist: D.Distribution, y: torch.Tensor) -> torch.Tensor:
        return nll(dist, y, validate=self.validate_targets)

    def on_train_epoch_start(self) -> None:
        self._train_loss_sum = None
        self._train_count = 0

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        x, y = batch
        loss = self._loss(self(x), y)
        n = len(y)
        weighted = loss.detach() * n
        self._train_loss_sum = (
            weighted if self._train_loss_sum is None else self._train_loss_sum + weighted
        )
        self._train_count += n
        return loss

    def on_train_epoch_end(self) -> None:
        if self._train_loss_sum is not None and self._train_count:
            total = self._train_loss_sum.new_tensor([float(self._train_count)])
            stats = torch.stack([self._train_loss_sum.reshape(()), total[0]])
            if self.trainer.world_size > 1:
                stats = self.trainer.strategy.reduce(stats, reduce_op="sum")
            self.log("train_loss", stats[0] / stats[1], prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = self.parameters()
        if self.optimizer_name == "adam":
            return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        if self.optimizer_name == "adamw":
            return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        return torch.optim.SGD(
            params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
        )

    def predict_step(self, batch: Any, batch_idx: int) -> D.Distribution:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(x)


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
        depth: hidden layers of the MLP body (0 = a linear model, softmax regression).
        width: units per hidden layer.
        activation: see [`mlp`][block4.models.mlp].
        norm: ``None``, ``"batch"`` or ``"layer"``.
        residual: skip connections in the hidden blocks.
        init: ``"default"``, ``"kaiming"``, ``"xavier"`` or ``"normal"``.
        bias: bias of hidden layers (``None``: off when followed by BatchNorm).
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"``.
        lr: learning rate.
        weight_decay: L2 penalty of the optimizer.
        momentum: SGD momentum.
        seed: seed of the initial weights (``None``: the global RNG).
        validate_targets: check targets each step (clear errors for out-of-range classes).
        body_out_features: width of your body's output, if it differs from ``n_classes``: the
            head then owns a linear layer ``body_out_features -> n_classes``.

    Examples:
        >>> model = Classifier(in_features=64, n_classes=10, depth=2, width=32)
        >>> model.predict_dist(torch.zeros(3, 64)).probs.shape
        torch.Size([3, 10])
    """

    def __init__(
        self,
        body: nn.Module | None = None,
        in_features: int = 64,
        n_classes: int = 10,
        depth: int = 2,
        width: int = 64,
        activation: str = "relu",
        norm: Literal["batch", "layer"] | None = None,
        residual: bool = False,
        init: str = "default",
        bias: bool | None = None,
        optimizer: str = "adam",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        seed: int | None = 0,
        validate_targets: bool = True,
        body_out_features: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["body"])
        self._init_common(optimizer, lr, weight_decay, momentum, validate_targets)
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            in_head = None if body_out_features in (None, n_classes) else body_out_features
            self.head = CategoricalHead(n_classes, in_features=in_head)
            self.body = (
                body
                if body is not None
                else build_body(
                    in_features, n_classes, depth, width, activation, norm, residual, init, bias
                )
            )
        self.n_classes = n_classes
        self.val_acc = torchmetrics.classification.MulticlassAccuracy(n_classes, average="micro")
        self.test_acc = torchmetrics.classification.MulticlassAccuracy(n_classes, average="micro")

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> None:
        x, y = batch
        dist = self(x)
        loss = self._loss(dist, y)
        acc = self.val_acc if stage == "val" else self.test_acc
        acc.update(dist.logits, y)
        self.log(f"{stage}_loss", loss, batch_size=len(y), sync_dist=True, prog_bar=stage == "val")
        self.log(f"{stage}_acc", acc, prog_bar=stage == "val")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")


class ProbabilisticRegressor(ProbabilisticModule):
    """Body + a regression head (Gaussian, Poisson, Student-t or Gaussian mixture).

    Args:
        body: your own feature extractor; ``None`` builds an MLP from the hyperparameters.
        head: a head name (``"gaussian"``, ``"poisson"``, ``"student_t"``, ``"mixture"``) or
            a [`Head`][block4.heads.Head] instance (then not saved as a hyperparameter).
        in_features: input width (MLP body).
        depth: hidden layers of the MLP body (0 = a linear model).
        width: units per hidden layer.
        activation: see [`mlp`][block4.models.mlp].
        norm: ``None``, ``"batch"`` or ``"layer"``.
        residual: skip connections in the hidden blocks.
        init: ``"default"``, ``"kaiming"``, ``"xavier"`` or ``"normal"``.
        bias: bias of hidden layers (``None``: off when followed by BatchNorm).
        heteroscedastic: for ``head="gaussian"``: predict sigma(x) (``True``) or use one
            shared sigma (``False``: learned, or fixed by ``head_options={"sigma": s}``).
            ``None`` (default) means ``True`` unless a fixed sigma is given.
        head_options: further keyword arguments of the head (e.g. ``{"sigma": 20.0}``,
            ``{"n_components": 3}``, ``{"df": 4.0}``).
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"``.
        lr: learning rate.
        weight_decay: L2 penalty of the optimizer.
        momentum: SGD momentum.
        seed: seed of the initial weights (``None``: the global RNG).
        validate_targets: check targets each step (clear errors for NaN, negative counts...).
        body_out_features: width of your body's output if it differs from what the head
            needs: the head then owns a linear projection.

    Examples:
        >>> model = ProbabilisticRegressor(in_features=1, head="gaussian", heteroscedastic=True)
        >>> dist = model.predict_dist(torch.zeros(4, 1))
        >>> type(dist).__name__, tuple(dist.mean.shape)
        ('Normal', (4,))
    """

    def __init__(
        self,
        body: nn.Module | None = None,
        head: str | Head = "gaussian",
        in_features: int = 1,
        depth: int = 2,
        width: int = 32,
        activation: str = "relu",
        norm: Literal["batch", "layer"] | None = None,
        residual: bool = False,
        init: str = "default",
        bias: bool | None = None,
        heteroscedastic: bool | None = None,
        head_options: dict[str, Any] | None = None,
        optimizer: str = "adam",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        seed: int | None = 0,
        validate_targets: bool = True,
        body_out_features: int | None = None,
    ) -> None:
        super().__init__()
        ignore = ["body"] + ([] if isinstance(head, str) else ["head"])
        self.save_hyperparameters(ignore=ignore)
        self._init_common(optimizer, lr, weight_decay, momentum, validate_targets)
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            if isinstance(head, str):
                options = dict(head_options or {})
                if head == "gaussian":
                    if heteroscedastic is None:  # default: sigma(x), unless sigma is fixed
                        heteroscedastic = options.get("sigma") is None
                    options.setdefault("heteroscedastic", heteroscedastic)
                if body_out_features is not None:
                    options.setdefault("in_features", body_out_features)
                if head == "categorical":
                    raise ValueError(
                        "use Classifier for class labels; ProbabilisticRegressor "
                        "takes head = gaussian, poisson, student_t or mixture"
                    )
                head_module = make_head(head, **options)
            elif isinstance(head, Head):
                head_module = _check_head_input(head, body_out_features)
            else:
                raise TypeError(
                    f"head must be a head name or a block4.heads.Head, got {type(head).__name__}"
                )
            self.head = head_module
            self.body = (
                body
                if body is not None
                else build_body(
                    in_features,
                    head_module.in_features,
                    depth,
                    width,
                    activation,
                    norm,
                    residual,
                    init,
                    bias,
                )
            )
        self.val_rmse = torchmetrics.MeanSquaredError(squared=False)
        self.test_rmse = torchmetrics.MeanSquaredError(squared=False)

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> None:
        x, y = batch
        dist = self(x)
        loss = self._loss(dist, y)
        rmse = self.val_rmse if stage == "val" else self.test_rmse
        mean = dist.mean
        rmse.update(mean, y.reshape(mean.shape).to(mean.dtype))
        self.log(f"{stage}_loss", loss, batch_size=len(y), sync_dist=True, prog_bar=stage == "val")
        self.log(f"{stage}_rmse", rmse)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")
