"""Tests of the callbacks (block4.callbacks) against hand-computed autograd results."""

from __future__ import annotations

import copy

import pytest
import torch
from _helpers import trainer
from torch import nn

from block4.callbacks import (
    ActivationStats,
    BestValidationState,
    DeadUnitTracker,
    FiniteLossGuard,
    GradientFlowMonitor,
    MetricHistory,
    NaNGuard,
    NonFiniteLossError,
    Table,
    TrainingCurve,
    linear_layers,
)
from block4.data import DiabetesDataModule, DigitsDataModule, TensorBatches
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
    # A finite input (so TensorBatches accepts it) whose square overflows float32: the loss
    # of batch 2 of the epoch (batch size 32, no shuffling) is not finite.
    x[70] = 3e38
    batches = TensorBatches(x, y, batch_size=32)
    model = ProbabilisticRegressor(in_features=1, depth=1, width=4)
    assert NaNGuard is FiniteLossGuard
    with pytest.raises(
        NonFiniteLossError,
        match=r"training loss became (nan|inf) at epoch 0, step 2 \(batch 2 of the epoch\); "
        "training stopped",
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


# --- TrainingCurve, DeadUnitTracker, BestValidationState ----------------------------------------


def small_digits(seed: int = 0) -> DigitsDataModule:
    return DigitsDataModule(batch_size=32, seed=seed, n_train=128)


def test_training_curve_measures_the_whole_training_split_at_init_and_each_epoch():
    data = small_digits()
    model = Classifier(in_features=64, depth=1, width=16, lr=0.05, seed=0)
    curve = TrainingCurve()
    trainer(max_epochs=2, callbacks=[curve], limit_val_batches=0).fit(model, data)
    assert curve.epochs == [0.0, 1.0, 2.0]
    # the last point is the trained model on all 128 training images, in evaluation mode
    x, y = data.tensors("train")
    with torch.no_grad():
        logits = model.eval().body(x)
    assert curve.losses[-1] == pytest.approx(float(nn.functional.cross_entropy(logits, y)))
    assert curve.errors[-1] == pytest.approx(float((logits.argmax(-1) != y).float().mean()))
    assert curve.errors[-1] < curve.errors[0]
    assert curve.epochs_to(curve.errors[-1]) <= 2.0 and curve.epochs_to(-1.0) is None


def test_training_curve_every_n_steps_and_epochs_to():
    curve = TrainingCurve(every_n_steps=2)
    trainer(max_epochs=1, callbacks=[curve], limit_val_batches=0).fit(
        Classifier(in_features=64, depth=1, width=8, seed=0), small_digits()
    )
    assert curve.epochs == [0.0, 0.5, 1.0]  # 4 steps per epoch: at init, steps 2 and 4
    curve.epochs, curve.errors = [0.0, 0.5, 1.0], [0.9, 0.3, 0.1]
    assert curve.epochs_to(0.3) == 0.5
    assert curve.epochs_to(0.05) is None


def test_whole_split_callbacks_refuse_bare_dataloaders_and_bad_arguments():
    batches = TensorBatches(torch.randn(40, 64), torch.randint(0, 10, (40,)), batch_size=8)
    for callback in (TrainingCurve(), DeadUnitTracker()):
        with pytest.raises(TypeError, match=r"pass a datamodule with a tensors\('train'\)"):
            trainer(callbacks=[callback]).fit(
                Classifier(in_features=64, depth=1, width=8), train_dataloaders=batches
            )
    with pytest.raises(ValueError, match="every_n_steps must be an integer >= 1 or None"):
        TrainingCurve(every_n_steps=0)
    with pytest.raises(ValueError, match="every_n_steps must be an integer >= 1, got 0"):
        DeadUnitTracker(every_n_steps=0)


def test_dead_unit_tracker_counts_units_silent_on_every_training_image():
    data = small_digits()
    tracker = DeadUnitTracker(every_n_steps=1)
    model = Classifier(in_features=64, depth=3, width=16, activation="relu", init="kaiming")
    trainer(callbacks=[tracker], limit_val_batches=0).fit(model, data)
    assert tracker.steps == [0, 1, 2, 3, 4]
    assert tracker.dead[0] < 0.2 and len(tracker.dead_per_layer[0]) == 3
    # Push every first-layer bias far below zero: all units of that layer die, and with them
    # every unit above (their inputs are all zero, so they see only their own bias).
    with torch.no_grad():
        model.body.block0.linear.bias.fill_(-1e3)
        for _, block in list(model.body.hidden_blocks())[1:]:
            block.linear.bias.fill_(-1.0)
    tracker.every_n_steps = 100  # measure only at the start of the second run
    trainer(callbacks=[tracker], limit_train_batches=1, limit_val_batches=0).fit(model, data)
    assert tracker.dead[-1] == 1.0 and tracker.dead_per_layer[-1] == [1.0, 1.0, 1.0]


def test_dead_unit_tracker_needs_an_mlp_body():
    body = nn.Sequential(nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 10))
    with pytest.raises(
        TypeError, match="hidden blocks of a block4.models.MLP body; got .*Sequential"
    ):
        trainer(callbacks=[DeadUnitTracker()]).fit(Classifier(body), small_digits())


def test_best_validation_state_restores_the_best_epoch():
    data = DiabetesDataModule(batch_size=64, seed=0)
    # A large learning rate makes the validation NLL go up and down.
    model = ProbabilisticRegressor(in_features=10, head="gaussian", depth=1, width=32, lr=0.05)
    best = BestValidationState()
    best.restore(model)  # nothing seen yet: a no-op
    assert best.state is None and best.epoch == -1
    trainer(max_epochs=12, callbacks=[best], num_sanity_val_steps=0).fit(model, data)
    last_weights = {k: v.clone() for k, v in model.state_dict().items()}
    best.restore(model)
    x, y = data.tensors("val")
    restored = float(nll(model.predict_dist(x), y))
    assert 0 <= best.epoch < 12
    assert restored == pytest.approx(best.best, rel=1e-5)
    if best.epoch != 11:  # restoring really changed the weights
        assert any(not torch.equal(v, model.state_dict()[k]) for k, v in last_weights.items())


def test_gradient_and_activation_diagnostics_reach_the_trainers_logger(tmp_path):
    import csv

    from pytorch_lightning.loggers import CSVLogger

    dm = DigitsDataModule(batch_size=64, seed=2, n_train=256)
    model = Classifier(in_features=64, depth=2, width=16, activation="tanh")
    monitor = GradientFlowMonitor(every_n_steps=2)
    stats = ActivationStats(steps=[0, 3])
    logger = CSVLogger(tmp_path, name="run", version=0)
    trainer(max_epochs=1, callbacks=[monitor, stats], limit_val_batches=0, logger=logger).fit(
        model, dm
    )
    with open(tmp_path / "run" / "version_0" / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    logged = {(int(r["step"]), k): float(v) for r in rows for k, v in r.items() if v and "/" in k}
    # every table row is in metrics.csv, at its step, with the same value
    for row in monitor.table:
        assert logged[(row["step"], f"grad_norm/{row['layer']}")] == pytest.approx(row["grad_norm"])
        assert logged[(row["step"], f"weight_norm/{row['layer']}")] == pytest.approx(
            row["weight_norm"]
        )
    assert {s for s, k in logged if k.startswith("grad_norm/")} == {0, 2}
    for row in stats.table:
        assert logged[(row["step"], f"pre_std/{row['layer']}")] == pytest.approx(row["pre_std"])
    assert {s for s, k in logged if k.startswith("pre_mean/")} == {0, 3}
    # log=False keeps them in memory only
    quiet = GradientFlowMonitor(steps=[0], log=False)
    logger2 = CSVLogger(tmp_path, name="quiet", version=0)
    trainer(
        max_epochs=1, callbacks=[quiet], limit_train_batches=2, limit_val_batches=0, logger=logger2
    ).fit(Classifier(in_features=64, depth=1, width=8), dm)
    text = (tmp_path / "quiet" / "version_0" / "metrics.csv").read_text()
    assert "grad_norm/" not in text and len(quiet.table) == 2
