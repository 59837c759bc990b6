"""The shared training helpers (block4.training): the Trainer factory, runs and summaries."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch

from block4.callbacks import FiniteLossGuard, GradientFlowMonitor, Table
from block4.data import HeteroscedasticDataModule
from block4.figures.registry import FigureContext
from block4.heads import CategoricalHead, nll
from block4.modules import ProbabilisticRegressor
from block4.training import (
    digits,
    fit,
    geometric_band,
    layer_grad_norms,
    mean_band,
    steps_per_epoch,
    train_classifier,
    trainer,
)

SMOKE = FigureContext(profile="smoke", accelerator="cpu", devices=1)


# --- the Trainer factory ------------------------------------------------------------------------


def test_trainer_honours_the_context_and_the_overrides():
    guard = FiniteLossGuard()
    run = trainer(SMOKE, max_epochs=3, callbacks=[guard], limit_val_batches=0)
    assert isinstance(run, pl.Trainer)
    assert run.max_epochs == 3 and run.limit_val_batches == 0
    assert guard in run.callbacks
    assert run.logger is None and run.checkpoint_callback is None  # figures write nothing
    assert run.accelerator.__class__.__name__ == "CPUAccelerator"
    assert run.progress_bar_callback is None  # SMOKE.progress is False
    with pytest.raises(TypeError, match="max_epoch"):
        trainer(SMOKE, max_epoch=3)  # a misspelt argument is Lightning's clear error


# --- digits and train_classifier ----------------------------------------------------------------


def test_digits_is_sized_by_the_profile():
    assert len(digits(SMOKE, seed=0).tensors("train")[1]) == 256
    quick = FigureContext(profile="quick", accelerator="cpu", devices=1)
    assert len(digits(quick, seed=0).tensors("train")[1]) == 1079
    assert steps_per_epoch(digits(SMOKE, seed=0)) == 4
    assert steps_per_epoch(digits(SMOKE, seed=0, batch_size=100)) == 3


def test_train_classifier_is_deterministic_and_measures_the_whole_training_split():
    runs = [train_classifier(SMOKE, epochs=2, seed=3, depth=2, width=16, lr=0.05) for _ in range(2)]
    (model, curve, diverged), (_, again, _) = runs
    assert not diverged
    assert curve.errors == again.errors and curve.losses == again.losses
    assert curve.epochs == [0.0, 1.0, 2.0]
    assert curve.errors[-1] < curve.errors[0]
    n = len(digits(SMOKE, 0).tensors("train")[1])
    for e in curve.errors:  # an error is a count of wrong images over the whole split
        assert abs(e * n - round(e * n)) < 1e-3
    # SGD with momentum 0.9 unless given
    assert model.hparams.optimizer == "sgd" and model.hparams.momentum == 0.9


def test_non_finite_logits_give_a_nan_loss_not_an_error_of_the_head():
    # What divergence detection relies on: the head passes NaN features through to a NaN
    # loss, which FiniteLossGuard then reports (no head-specific exception to look for).
    dist = CategoricalHead(10)(torch.full((4, 10), math.nan))
    assert math.isnan(float(nll(dist, torch.tensor([0, 1, 2, 3]))))


class _PoisonWeights(pl.Callback):
    """Sets one weight to ``value`` before the first step: the logits are then non-finite."""

    def __init__(self, value: float) -> None:
        self.value = value

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        with torch.no_grad():
            pl_module.body.block0.linear.weight[0, 0] = self.value


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_logits_are_reported_as_divergence_at_the_first_step(value):
    monitor = GradientFlowMonitor()
    model, curve, diverged = train_classifier(
        SMOKE, epochs=2, seed=0, depth=2, width=8, callbacks=[_PoisonWeights(value), monitor]
    )
    assert diverged
    assert len(monitor.table) == 0  # stopped before the first update
    assert curve.epochs[-1] == 0.0 and curve.losses[-1] == math.inf
    assert math.isnan(curve.errors[-1])
    # the other weights were never updated by the non-finite loss
    assert torch.isfinite(model.body.head.weight).all()


def test_a_learning_rate_far_too_high_diverges_and_is_reported():
    _, curve, diverged = train_classifier(
        SMOKE, epochs=3, seed=0, depth=4, width=32, lr=1e4, momentum=0.0
    )
    assert diverged
    assert curve.losses[-1] == math.inf and math.isnan(curve.errors[-1])
    assert curve.epochs[-1] < 3.0  # stopped early


class _Broken(pl.Callback):
    def on_train_batch_start(self, *args) -> None:  # noqa: ANN002
        raise ValueError("logits of this callback are broken")


def test_other_errors_are_not_mistaken_for_divergence():
    with pytest.raises(ValueError, match="logits of this callback are broken"):
        train_classifier(SMOKE, epochs=1, seed=0, depth=1, width=8, callbacks=[_Broken()])
    with pytest.raises(ValueError, match="activation 'swish' is not supported"):
        train_classifier(SMOKE, epochs=1, seed=0, depth=1, width=8, activation="swish")


# --- fit ----------------------------------------------------------------------------------------


def regressor(seed: int = 0) -> ProbabilisticRegressor:
    return ProbabilisticRegressor(in_features=1, depth=1, width=16, lr=0.05, seed=seed)


def test_fit_trains_and_returns_the_model_on_the_cpu_in_eval_mode():
    data = HeteroscedasticDataModule(n_train=200, n_val=0, n_test=100, batch_size=50, seed=0)
    model = regressor()
    x, y = data.tensors("test")
    before = float(nll(model.predict_dist(x), y))
    out = fit(SMOKE, model, data, epochs=5)
    assert out is model and not model.training
    assert next(model.parameters()).device.type == "cpu"
    assert float(nll(model.predict_dist(x), y)) < before


def test_fit_with_early_stopping_restores_the_best_validation_epoch():
    data = HeteroscedasticDataModule(n_train=200, n_val=100, n_test=0, batch_size=50, seed=0)
    seen = []

    class ValLoss(pl.Callback):
        def on_validation_epoch_end(self, trainer, pl_module):  # noqa: ANN001
            seen.append(float(trainer.callback_metrics["val_loss"]))

    model = fit(SMOKE, regressor(), data, epochs=6, early_stopping=True, callbacks=[ValLoss()])
    assert len(seen) == 6  # validated every epoch, no sanity check
    x, y = data.tensors("val")
    assert float(nll(model.predict_dist(x), y)) == pytest.approx(min(seen), rel=1e-5)


# --- summaries ------------------------------------------------------------------------------


def test_layer_grad_norms_is_the_geometric_mean_per_layer_over_the_steps():
    monitor = GradientFlowMonitor()
    monitor.table = Table(
        {"step": s, "depth_index": i, "grad_norm": g}
        for s, i, g in [(0, 0, 1.0), (0, 1, 8.0), (1, 0, 4.0), (1, 1, 2.0), (2, 0, 100.0)]
    )
    assert layer_grad_norms(monitor, [0, 1]) == pytest.approx([2.0, 4.0])
    assert layer_grad_norms(monitor, [2]) == pytest.approx([100.0])
    assert layer_grad_norms(monitor, [7]) == []


def test_bands_over_seeds():
    runs = [[1.0, 10.0], [4.0, 1000.0]]
    mean, low, high = geometric_band(runs)
    assert mean == pytest.approx([2.0, 100.0]) and low == [1.0, 10.0] and high == [4.0, 1000.0]
    mean, low, high = mean_band(runs)
    assert mean == pytest.approx([2.5, 505.0]) and low == [1.0, 10.0] and high == [4.0, 1000.0]
    mean, _, _ = geometric_band([[0.0], [1.0]])  # zeros are floored, not log(0)
    assert mean[0] == pytest.approx(1e-15)
    with pytest.raises(ValueError):  # runs of different lengths
        mean_band([[1.0, 2.0], [1.0]])
