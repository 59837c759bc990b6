"""Tests of the callbacks (block4.callbacks) against hand-computed autograd results."""

from __future__ import annotations

import copy

import pytest
import torch
from _helpers import trainer
from torch import nn

from block4.callbacks import (
    ActivationStats,
    FiniteLossGuard,
    GradientFlowMonitor,
    MetricHistory,
    NaNGuard,
    NonFiniteLossError,
    Table,
    linear_layers,
)
from block4.data import DigitsDataModule, TensorBatches
from block4.heads import nll
from block4.modules import Classifier, ProbabilisticRegressor


def first_batch(dm: DigitsDataModule):
    return next(iter(dm.train_dataloader()))


def test_gradient_flow_step0_matches_autograd_at_initial_weights():
    dm = DigitsDataModule(batch_size=64, seed=2)
    model = Classifier(in_features=64, depth=3, width=32, activation="sigmoid")
    initial = copy.deepcopy(model)
    monitor = GradientFlowMonitor(steps=[0, 7], every_n_steps=5)
    trainer(max_epochs=1, callbacks=[monitor], limit_val_batches=0).fit(model, dm)
    assert sorted({r["step"] for r in monitor.table}) == [0, 5, 7, 10, 15]
    step0 = monitor.table.where(step=0)
    assert [r["layer"] for r in step0] == ["block0", "block1", "block2", "head"]
    assert [r["depth_index"] for r in step0] == [0, 1, 2, 3]
    assert set(step0[0]) >= {"step", "epoch", "layer", "depth_index", "grad_norm"}
    # the same gradients by hand: first batch of epoch 0, initial weights
    x, y = first_batch(DigitsDataModule(batch_size=64, seed=2))
    nll(initial(x), y).backward()
    for row, (name, layer) in zip(step0, linear_layers(initial), strict=True):
        assert row["layer"] == name
        assert row["grad_norm"] == pytest.approx(float(layer.weight.grad.norm()), rel=1e-5)
        assert row["weight_norm"] == pytest.approx(float(layer.weight.detach().norm()), rel=1e-6)
    # sigmoid net: the gradient shrinks towards the input
    g = monitor.grad_norms(0)
    assert g["block0"] < g["block2"]
    rows = monitor.table.to_dicts()
    assert isinstance(rows, list) and isinstance(rows[0], dict) and rows[0] is not monitor.table[0]
    with pytest.raises(
        KeyError, match=r"step 3 was not recorded; recorded steps: \[0, 5, 7, 10, 15\]"
    ):
        monitor.grad_norms(3)


def test_gradient_flow_on_a_plain_body_uses_linear_module_names():
    body = nn.Sequential(nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 10))
    monitor = GradientFlowMonitor(steps=[0], include_bias=True)
    trainer(callbacks=[monitor], limit_train_batches=2, limit_val_batches=0).fit(
        Classifier(body), DigitsDataModule()
    )
    assert [r["layer"] for r in monitor.table] == ["0", "2"]
    assert all(r["bias_grad_norm"] > 0 for r in monitor.table)


def test_activation_stats_match_a_manual_forward():
    dm = DigitsDataModule(batch_size=128, seed=1)
    model = Classifier(in_features=64, depth=2, width=16, activation="tanh", init="normal")
    model.body.reset_parameters()
    initial = copy.deepcopy(model)
    stats = ActivationStats(steps=[0, 3], bins=20, hist_range=(-3, 3), saturation=2.0)
    trainer(callbacks=[stats], limit_train_batches=4, limit_val_batches=0).fit(model, dm)
    assert sorted({r["step"] for r in stats.table}) == [0, 3]
    rows = stats.table.where(step=0)
    assert [r["layer"] for r in rows] == ["block0", "block1"]
    x, _ = first_batch(DigitsDataModule(batch_size=128, seed=1))
    z0 = initial.body.block0.linear(x).detach()
    r = rows[0]
    assert r["pre_mean"] == pytest.approx(float(z0.mean()), abs=1e-6)
    assert r["pre_std"] == pytest.approx(float(z0.std(unbiased=False)), rel=1e-5)
    assert r["post_std"] == pytest.approx(float(torch.tanh(z0).std(unbiased=False)), rel=1e-5)
    assert r["frac_saturated"] == pytest.approx(float((z0.abs() > 2).float().mean()))
    inside = int(((z0 >= -3) & (z0 <= 3)).sum())
    assert sum(r["hist"]) == inside and len(r["hist"]) == 20 and len(r["bin_edges"]) == 21
    assert r["frac_outside"] == pytest.approx(1 - inside / z0.numel())
    # hooks are removed after the recorded step
    assert all(len(b.act._forward_hooks) == 0 for _, b in model.body.hidden_blocks())


def test_finite_loss_guard_names_epoch_and_step():
    x = torch.randn(100, 1)
    y = torch.randn(100)
    x[70] = float("nan")  # batch 2 of each epoch (batch size 32, no shuffling)
    batches = TensorBatches(x, y, batch_size=32)
    model = ProbabilisticRegressor(in_features=1, depth=1, width=4)
    assert NaNGuard is FiniteLossGuard
    with pytest.raises(
        NonFiniteLossError,
        match=r"training loss became nan at epoch 0, step 2 \(batch 2 of the epoch\); training stopped",
    ):
        trainer(callbacks=[FiniteLossGuard()]).fit(model, train_dataloaders=batches)


def test_finite_loss_guard_catches_divergence_later_in_training():
    dm = DigitsDataModule(batch_size=64)
    model = Classifier(in_features=64, depth=4, width=64, optimizer="sgd", lr=1e4, momentum=0.0)
    with pytest.raises(
        NonFiniteLossError, match=r"training loss became (nan|inf) at epoch \d+, step \d+"
    ):
        trainer(max_epochs=5, callbacks=[FiniteLossGuard()], limit_val_batches=0).fit(model, dm)


def test_metric_history_one_row_per_epoch():
    history = MetricHistory()
    trainer(max_epochs=3, callbacks=[history]).fit(
        Classifier(depth=1, width=16), DigitsDataModule()
    )
    assert [r["epoch"] for r in history.table] == [0, 1, 2]
    assert [r["step"] for r in history.table] == [17, 34, 51]
    assert all({"train_loss", "val_loss", "val_acc"} <= set(r) for r in history.table)
    losses = history.table.column("train_loss")
    assert losses[2] < losses[0]


def test_table_helpers_and_bad_arguments():
    t = Table([{"a": 1, "b": 2}, {"a": 2, "b": 3}])
    assert t.column("b") == [2, 3] and t.where(a=2) == [{"a": 2, "b": 3}]
    with pytest.raises(ValueError, match="steps must be >= 0"):
        GradientFlowMonitor(steps=[-1])
    with pytest.raises(ValueError, match="every_n_steps must be an integer >= 1"):
        GradientFlowMonitor(every_n_steps=0)
    with pytest.raises(ValueError, match="hist_range must satisfy low < high"):
        ActivationStats(hist_range=(1.0, -1.0))
    with pytest.raises(ValueError, match="check_every_n_steps must be an integer >= 1"):
        FiniteLossGuard(0)
