"""The shared training helpers (block4.training): the Trainer factory, runs and summaries."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch

from block4.callbacks import (
    DeadUnitTracker,
    FiniteLossGuard,
    GradientFlowMonitor,
    Table,
    TrainingCurve,
)
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
    put_summary,
    spread,
    steps_per_epoch,
    summary,
    train_classifier,
    train_members,
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
    assert len(digits(quick, seed=0).tensors("train")[1]) == 512
    full = FigureContext(profile="full", accelerator="cpu", devices=1)
    assert len(digits(full, seed=0).tensors("train")[1]) == 1079
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


def test_put_summary_writes_mean_and_spread_of_the_finite_values():
    numbers: dict = {}
    put_summary(numbers, "error", [0.1, 0.3, math.nan])
    assert numbers == pytest.approx(
        {"error": 0.2, "error_sd": math.sqrt(0.02), "error_min": 0.1, "error_max": 0.3}
    )
    put_summary(numbers, "ratio", [1e-4, 1e-2], geometric=True)
    assert numbers["ratio"] == pytest.approx(1e-3) and "ratio_sd" not in numbers
    assert (numbers["ratio_min"], numbers["ratio_max"]) == (1e-4, 1e-2)
    put_summary(numbers, "never", [math.nan, math.inf])
    assert {numbers[k] for k in ("never", "never_sd", "never_min", "never_max")} == {"n/a"}
    assert summary([0.5]) == {"mean": 0.5, "sd": 0.0, "min": 0.5, "max": 0.5}


def test_spread_is_the_sample_spread_of_tensors_and_lists_and_keeps_nan_visible():
    values = torch.tensor([1.0, 2.0, 4.0])
    out = spread(values, "nll")
    assert out == pytest.approx(
        {"nll_mean": 7 / 3, "nll_sd": float(values.std()), "nll_min": 1.0, "nll_max": 4.0}
    )
    assert out["nll_sd"] == pytest.approx(math.sqrt(7 / 3))  # n - 1, not n
    assert spread([0.5], "one") == {"one_mean": 0.5, "one_sd": 0.0, "one_min": 0.5, "one_max": 0.5}
    assert math.isnan(spread([1.0, math.nan], "bad")["bad_mean"])  # not silently dropped
    # the same convention as put_summary's
    numbers: dict = {}
    put_summary(numbers, "x", [1.0, 2.0, 4.0])
    assert numbers["x_sd"] == pytest.approx(out["nll_sd"])


def test_layer_grad_norms_of_a_stack_needs_the_member():
    monitor = GradientFlowMonitor()
    monitor.table = Table(
        {"step": 0, "member": k, "depth_index": i, "grad_norm": g}
        for k, i, g in [(0, 0, 1.0), (0, 1, 2.0), (1, 0, 3.0), (1, 1, 4.0)]
    )
    assert layer_grad_norms(monitor, [0], member=1) == pytest.approx([3.0, 4.0])
    with pytest.raises(ValueError, match="pass member=k"):
        layer_grad_norms(monitor, [0])


# --- train_members: many classifiers of one shape in one run ------------------------------------

MEMBER_OPTIONS = {"depth": 3, "width": 16}


def test_each_member_of_the_stack_is_its_own_single_run():
    tracker = DeadUnitTracker(every_n_steps=2)
    monitor = GradientFlowMonitor(steps=[0, 5], log=False)
    runs = train_members(
        SMOKE, epochs=2, seeds=[3, 4, 3], lr=[0.05, 0.05, 0.01], init=["kaiming", "default", "kaiming"],
        callbacks=[tracker, monitor], **MEMBER_OPTIONS,
    )  # fmt: skip
    assert runs.members == 3 and runs.diverged == [False] * 3 and runs.diverged_step == [-1] * 3
    for k, (seed, lr, init) in enumerate(
        [(3, 0.05, "kaiming"), (4, 0.05, "default"), (3, 0.01, "kaiming")]
    ):
        single_tracker = DeadUnitTracker(every_n_steps=2)
        single_monitor = GradientFlowMonitor(steps=[0, 5], log=False)
        _, curve, diverged = train_classifier(
            SMOKE, epochs=2, seed=seed, lr=lr, init=init, callbacks=[single_tracker, single_monitor],
            **MEMBER_OPTIONS,
        )  # fmt: skip
        assert not diverged
        mine = runs.curve.member(k)
        assert mine.epochs == curve.epochs == [0.0, 1.0, 2.0]
        assert mine.errors == pytest.approx(curve.errors, abs=1e-6)
        assert mine.losses == pytest.approx(curve.losses, rel=1e-5)
        assert tracker.member(k).dead == pytest.approx(single_tracker.dead, abs=1e-6)
        assert tracker.steps == single_tracker.steps
        for step in (0, 5):
            assert layer_grad_norms(monitor, [step], member=k) == pytest.approx(
                layer_grad_norms(single_monitor, [step]), rel=1e-4
            )
    assert runs.errors() == [c[-1] for c in runs.curve.member_errors]
    # the stack's own curve is the mean over its members
    assert runs.curve.errors[-1] == pytest.approx(sum(runs.errors()) / 3)


def test_one_member_is_a_plain_single_run():
    runs = train_members(SMOKE, epochs=2, seeds=[5], lr=0.05, **MEMBER_OPTIONS)
    _, curve, _ = train_classifier(SMOKE, epochs=2, seed=5, lr=0.05, **MEMBER_OPTIONS)
    assert runs.members == 1 and runs.model.members == 1
    assert runs.curve.errors == curve.errors and runs.curve.losses == curve.losses


def test_a_diverging_member_is_frozen_and_reported_the_others_go_on():
    options = {"depth": 4, "width": 32, "momentum": 0.0}
    runs = train_members(SMOKE, epochs=3, seeds=[0, 0], lr=[0.01, 1e4], **options)
    assert runs.diverged == [False, True]
    assert runs.diverged_step[0] == -1 and 0 <= runs.diverged_step[1] < 12
    assert math.isnan(runs.errors()[1]) and runs.losses()[1] == math.inf
    frozen = runs.curve.member(1)
    assert all(math.isnan(e) for e in frozen.errors[1:])  # measured NaN once frozen
    _, alone, _ = train_classifier(SMOKE, epochs=3, seed=0, lr=0.01, **options)
    assert runs.curve.member(0).errors == pytest.approx(alone.errors, abs=1e-6)
    # every member diverged: reported, not an error
    all_bad = train_members(SMOKE, epochs=2, seeds=[0, 1], lr=1e4, **options)
    assert all_bad.diverged == [True, True] and all(math.isnan(e) for e in all_bad.errors())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seeds": []}, "seeds must name at least one member"),
        ({"seeds": [0, 1], "lr": [0.1]}, "lr has 1 entries but there are 2 members"),
        ({"seeds": [0, 1], "init": ["kaiming"] * 3}, "init has 3 entries but there are 2"),
        ({"seeds": [0, 1], "data_seeds": [0]}, "data_seeds has 1 entries but there are 2"),
        ({"seeds": [0, 1], "lr": [0.1, 0.0]}, "lr must be > 0"),
    ],
)
def test_bad_member_lists_are_one_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        train_members(SMOKE, epochs=1, **{**MEMBER_OPTIONS, **kwargs})


def test_curve_and_tracker_member_index_is_checked():
    with pytest.raises(IndexError, match="member 2 is out of range"):
        TrainingCurve().member(2)
    with pytest.raises(IndexError, match="member -1 is out of range"):
        DeadUnitTracker().member(-1)
