"""The chapter "Normalization and residual connections": its claims, on real Lightning runs.

- a bias right before batch norm gets (numerically) zero gradient and changes nothing;
- batch norm puts every layer's pre-activations at mean 0 and standard deviation 1;
- d(a + b)/da = 1 (block4.autograd), so a residual chain keeps its gradient;
- at depth >= 20 a residual MLP's first/last layer gradient ratio stays within 10x, the plain
  tanh/sigmoid MLP's does not.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from block4.autograd import Value
from block4.callbacks import ActivationStats, GradientFlowMonitor
from block4.figures.normalization import (
    bn_bias_runs,
    bn_learning_rates_runs,
    bn_preactivations_runs,
)
from block4.figures.registry import FigureContext
from block4.figures.residuals import chain_gradient, first_last_ratio, residual_depth_runs
from block4.modules import Classifier
from block4.training import digits, layer_grad_norms, train_classifier

SMOKE = FigureContext(profile="smoke", accelerator="cpu", devices=1)


# --- batch norm ------------------------------------------------------------------------------


def test_bias_before_batch_norm_gets_zero_gradient_during_training():
    monitor = GradientFlowMonitor(include_bias=True)
    train_classifier(SMOKE, epochs=1, seed=0, callbacks=[monitor], depth=3, width=16,
                     norm="batch", bias=True, lr=0.05)  # fmt: skip
    hidden = [r for r in monitor.table if r["layer"] != "head"]
    assert len(hidden) == 3 * 4  # 3 hidden layers x 4 steps (256 images, batches of 64)
    for row in hidden:
        assert row["bias_grad_norm"] < 1e-5 * row["grad_norm"]
    head = [r for r in monitor.table if r["layer"] == "head"]
    assert all(r["bias_grad_norm"] > 1e-3 for r in head)  # the head's bias does learn


def test_shifting_the_bias_before_batch_norm_changes_nothing():
    x = digits(SMOKE, 0).tensors("train")[0][:128]
    net = Classifier(depth=3, width=16, norm="batch", bias=True, seed=0).body.train()
    plain = Classifier(depth=3, width=16, norm=None, bias=True, seed=0).body.train()
    with torch.no_grad():
        before, before_plain = net(x), plain(x)
        for model in (net, plain):
            for _, block in model.hidden_blocks():
                block.linear.bias += 3.0
        assert (net(x) - before).abs().max() < 1e-4
        assert (plain(x) - before_plain).abs().max() > 0.1


def test_batch_norm_puts_pre_activations_at_mean_0_std_1():
    stats = ActivationStats(steps=[0])
    train_classifier(SMOKE, epochs=1, seed=0, callbacks=[stats], depth=4, width=32,
                     activation="tanh", init="xavier", norm="batch", lr=0.01)  # fmt: skip
    rows = stats.table.where(step=0)
    assert len(rows) == 4
    for row in rows:
        assert abs(row["pre_mean"]) < 1e-5
        assert row["pre_std"] == pytest.approx(1.0, abs=1e-3)


# --- residual connections --------------------------------------------------------------------


def test_add_passes_the_gradient_unchanged():
    a, b = Value(1.5, "a"), Value(-0.7, "b")
    s = a + b
    s.backward()
    assert (a.grad, b.grad) == (1.0, 1.0)


@pytest.mark.parametrize("residual", [False, True])
def test_chain_gradient_matches_torch_autograd(residual):
    x = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    h = x
    for _ in range(7):
        f = torch.sigmoid(0.8 * h)
        h = h + f if residual else f
    h.backward()
    assert chain_gradient(7, 0.5, 0.8, residual) == pytest.approx(x.grad.item(), rel=1e-12)


def test_residual_chain_keeps_its_gradient_where_the_plain_chain_loses_it():
    assert chain_gradient(30, 0.5, 0.8, residual=False) < 1e-15
    assert chain_gradient(30, 0.5, 0.8, residual=True) >= 1.0


def grad_ratio(depth: int, **hparams) -> float:
    monitor = GradientFlowMonitor(steps=[0])
    train_classifier(SMOKE, epochs=1, seed=0, callbacks=[monitor], depth=depth, width=32,
                     lr=0.01, **hparams)  # fmt: skip
    return first_last_ratio(layer_grad_norms(monitor, [0]))


@pytest.mark.parametrize("depth", [20, 30])
def test_residual_mlp_keeps_first_to_last_gradient_within_10x(depth):
    ratio = grad_ratio(depth, activation="tanh", init="default", residual=True)
    assert 0.1 < ratio < 10


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_plain_saturating_mlp_at_depth_20_is_not_within_10x(activation):
    ratio = grad_ratio(20, activation=activation, init="default", residual=False)
    assert not 0.1 < ratio < 10
    assert ratio < 1e-2


# --- the figures' runs: several seeds as one stack ----------------------------------------------


def test_bn_learning_rate_sweep_freezes_and_reports_diverged_members():
    data = bn_learning_rates_runs(
        SMOKE, lrs=[0.01, 1e4], seeds=[0, 1], epochs=2, depth=3, width=16, momentum=0.0
    )
    assert set(data) == {"relu_no_bn", "relu_bn", "sigmoid_no_bn", "sigmoid_bn"}
    plain = data["relu_no_bn"]
    assert plain["diverged"] == [[False, False], [True, True]]
    assert all(math.isfinite(v) for v in plain["loss"][0])
    assert all(v == math.inf for v in plain["loss"][1])


def test_bn_preactivations_runs_pool_the_seeds_and_keep_each_seeds_numbers():
    data = bn_preactivations_runs(
        SMOKE, seeds=[0, 1], epochs=1, saturation=2.0, limit=6.0, depth=3, width=16,
        activation="tanh", init="xavier", lr=0.1,
    )  # fmt: skip
    bn = data["bn"]["init"]
    assert len(bn["hist"]) == 3 and len(bn["saturated"]) == len(bn["std_max"]) == 2
    # pooled over 2 seeds: every pre-activation of a 64-image batch x 16 units, twice
    assert all(sum(h) <= 2 * 64 * 16 for h in bn["hist"])
    assert all(s == pytest.approx(1.0, abs=1e-3) for s in bn["std_max"])  # BN: std 1


def test_bn_bias_runs_bias_gradients_stay_at_rounding_level_for_every_seed():
    data = bn_bias_runs(
        SMOKE, seeds=[0, 1], epochs=1, depth=3, width=16, activation="relu", init="default",
        norm="batch", bias=True, lr=0.05,
    )  # fmt: skip
    assert len(data["bias"]) == 2 and len(data["bias"][0]) == 3  # seeds x hidden layers
    biases = [v for member in data["bias"] for layer in member for v in layer]
    weights = [v for member in data["weight"] for layer in member for v in layer]
    assert max(biases) < 1e-5 < min(weights)
    assert max(data["bias_moved"]) < 1e-5


def test_residual_depth_runs_one_stack_per_depth():
    data = residual_depth_runs(SMOKE, depths=[2, 20], seeds=[0, 1], epochs=1, width=16, lr=0.01)
    tanh = data["tanh"]
    assert set(tanh["plain"]) == {"2", "20"}
    assert [len(g) for g in tanh["plain"]["20"]["grads"]] == [21, 21]
    for grads in tanh["residual"]["20"]["grads"]:
        assert 0.1 < first_last_ratio(grads) < 10
    for grads in tanh["plain"]["20"]["grads"]:
        assert first_last_ratio(grads) < 1e-2


# --- the figures, end to end -----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    ["residual_highway", "bn_preactivations", "bn_learning_rates", "bn_bias", "residual_depth"],
)
def test_figure_runs_in_the_smoke_profile(name):
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    import block4.figures.normalization  # noqa: F401 - registers the figures
    import block4.figures.residuals  # noqa: F401
    from block4.pipeline import Project, discover, load_figure

    REGISTRY = discover(Project(Path(__file__).resolve().parents[1]))

    spec = REGISTRY[name]
    fig, numbers = load_figure(spec)(SMOKE, **spec.params)
    try:
        assert isinstance(fig, Figure)
        assert numbers and all(isinstance(v, int | float | str) for v in numbers.values())
        if name == "residual_highway":
            assert numbers["grad_a"] == numbers["grad_b"] == 1.0
        if name == "bn_bias":
            assert numbers["bias_grad_max"] < 1e-5 < numbers["weight_grad_min"]
            assert numbers["logit_change_bn_max"] < 1e-3 < 0.1 < numbers["logit_change_plain_max"]
        if name == "residual_depth":
            assert 0.1 < numbers["ratio_tanh_residual_20"] < 10
            assert numbers["ratio_tanh_plain_20"] < 1e-2
            assert {"error_tanh_plain_20_sd", "ratio_tanh_plain_20_min"} <= set(numbers)
    finally:
        plt.close(fig)
