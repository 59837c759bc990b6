"""The chapter "Activation functions": derivative numbers, gradient flow and its figures.

Gradient-flow claims are checked on real (tiny) Lightning runs of the same code the figures
use; the figure functions themselves run end to end in the smoke profile (marked slow).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from block4.callbacks import GradientFlowMonitor
from block4.figures.activation_training import (
    ScaledDigits,
    dead_relus_runs,
    epochs_to,
    relu_vs_tanh_runs,
)
from block4.figures.activations import activation_gradient_flow_runs
from block4.figures.registry import FigureContext
from block4.style import log_decade_labels, subplots, wide_bottom_row
from block4.training import activation_and_derivative, digits, layer_grad_norms, train_classifier

SMOKE = FigureContext(profile="smoke", accelerator="cpu", devices=1)
PROBES = torch.tensor([-10.0, 0.0, 10.0])


# --- derivatives, from autograd --------------------------------------------------------------


def test_sigmoid_derivative_numbers_of_the_chapter():
    _, d = activation_and_derivative("sigmoid", PROBES)
    assert d[1].item() == 0.25
    assert d[0].item() == pytest.approx(4.5396e-5, rel=1e-4)
    assert d[2].item() == pytest.approx(d[0].item(), rel=1e-9)  # symmetric
    s = torch.sigmoid(PROBES.double())
    torch.testing.assert_close(d, s * (1 - s))  # the closed form s (1 - s)


def test_relu_gradient_is_zero_then_the_convention_then_one():
    _, d = activation_and_derivative("relu", PROBES)
    assert d.tolist() == [0.0, 0.0, 1.0]  # PyTorch's convention at the kink: 0


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("tanh", [1 - math.tanh(10) ** 2, 1.0, 1 - math.tanh(10) ** 2]),
        ("leaky_relu", [0.01, 0.01, 1.0]),
        ("gelu", [0.0, 0.5, 1.0]),
    ],
)
def test_other_derivatives(name, expected):
    _, d = activation_and_derivative(name, PROBES)
    assert d.tolist() == pytest.approx(expected, abs=1e-12)


def test_derivative_of_unknown_activation_is_one_clear_error():
    with pytest.raises(ValueError, match="activation 'swish' is not supported; choose one of"):
        activation_and_derivative("swish", PROBES)


# --- plotting helpers the chapter's figures share (block4.style) -----------------------------


def test_log_axes_label_every_decade_in_full_size_text_and_nothing_between():
    fig, (ax_y, ax_x) = subplots(1, 2)
    ax_y.semilogy([1, 2], [1e-5, 10.0])
    ax_x.semilogx([1e-3, 1.0], [1, 2])
    log_decade_labels(ax_y)
    log_decade_labels(ax_x, axis="x")
    y_label, x_label = ax_y.yaxis.get_major_formatter(), ax_x.xaxis.get_major_formatter()
    assert [y_label(v) for v in (1e-5, 1e-2, 1.0, 10.0, 3e-5)] == ["10⁻⁵", "10⁻²", "1", "10", ""]
    assert x_label(1e-3) == "10⁻³"
    assert ax_y.yaxis.get_minor_formatter()(2e-5) == ""
    with pytest.raises(ValueError, match="axis must be 'x' or 'y', got 'z'"):
        log_decade_labels(ax_y, axis="z")
    assert y_label(1e-5) == "10⁻⁵"  # the failed call changed nothing


def test_wide_bottom_row_spans_the_figure_and_needs_a_2x2_grid():
    fig, axes = subplots(2, 2)
    wide = wide_bottom_row(fig, axes)
    assert len(fig.axes) == 3
    top_left, top_right = axes[0]
    span = wide.get_subplotspec()
    assert (span.rowspan, span.colspan) == (range(1, 2), range(0, 2))
    assert top_left in fig.axes and top_right in fig.axes
    fig, axes = subplots(2, 1)
    with pytest.raises(ValueError, match=r"axes must be a 2 x 2 grid, got shape \(2,\)"):
        wide_bottom_row(fig, axes)
    assert len(fig.axes) == 2  # nothing removed


# --- gradient flow in a deep MLP, real Lightning runs ---------------------------------------


def grad_ratio_at_init(depth: int, **hparams) -> float:
    """|grad of layer 1| / |grad of the output layer| at the initial weights (step 0)."""
    monitor = GradientFlowMonitor(steps=[0])
    data = digits(SMOKE, seed=0)
    train_classifier(SMOKE, epochs=1, seed=0, datamodule=data, callbacks=[monitor],
                     depth=depth, width=32, lr=0.01, **hparams)  # fmt: skip
    norms = layer_grad_norms(monitor, [0])
    assert len(norms) == depth + 1
    return norms[0] / norms[-1]


def test_sigmoid_first_layer_gradient_is_orders_of_magnitude_below_the_last():
    assert grad_ratio_at_init(20, activation="sigmoid", init="default") < 1e-6


def test_relu_with_kaiming_init_keeps_the_gradient_flowing():
    assert 0.1 < grad_ratio_at_init(20, activation="relu", init="kaiming") < 10


def test_relu_with_pytorch_default_init_also_vanishes_at_depth_20():
    assert grad_ratio_at_init(20, activation="relu", init="default") < 1e-3


# --- data of the chapter ------------------------------------------------------------------


def test_scaled_digits_multiplies_every_split():
    plain, scaled = digits(SMOKE, 0), ScaledDigits(2.5, seed=0, n_train=256)
    for split in ("train", "val", "test"):
        torch.testing.assert_close(scaled.tensors(split)[0], 2.5 * plain.tensors(split)[0])


# --- the figures' runs: several seeds as one stack ----------------------------------------------


def test_gradient_flow_runs_give_one_entry_per_seed_and_each_seed_is_its_own_run():
    stacked = activation_gradient_flow_runs(
        SMOKE, activations=["sigmoid", "relu"], inits=["default", "kaiming"], seeds=[0, 1],
        epochs=1, depth=6, width=16, lr=0.01,
    )  # fmt: skip
    alone = activation_gradient_flow_runs(
        SMOKE, activations=["relu"], inits=["kaiming"], seeds=[1], epochs=1, depth=6, width=16,
        lr=0.01,
    )  # fmt: skip
    runs = stacked["relu"]["kaiming"]
    assert len(runs["at_init"]) == len(runs["trained"]) == len(runs["error"]) == 2
    assert all(len(norms) == 7 for norms in runs["at_init"])  # 6 hidden layers + the output
    # member (kaiming, seed 1) of the stack = the single run with seed 1
    assert runs["at_init"][1] == pytest.approx(alone["relu"]["kaiming"]["at_init"][0], rel=1e-4)
    assert runs["error"][1] == pytest.approx(alone["relu"]["kaiming"]["error"][0], abs=1e-6)
    # sigmoid with the default init: the first layer's gradient is far below the output's
    for norms in stacked["sigmoid"]["default"]["at_init"]:
        assert norms[0] / norms[-1] < 1e-2


def test_relu_vs_tanh_runs_cover_every_learning_rate_and_seed():
    data = relu_vs_tanh_runs(
        SMOKE, input_scales={"std": 1.0}, lrs=[0.003, 0.01], seeds=[0, 1], epochs=1,
        curve_every=2, depth=2, width=16,
    )  # fmt: skip
    for act in ("relu", "tanh"):
        run = data["std"][act]
        assert run["epochs"] == [0.0, 0.5, 1.0]  # 4 steps of 256 images, every 2 steps
        assert [len(per_lr) for per_lr in run["errors"]] == [2, 2]
        assert all(len(curve) == 3 for per_lr in run["errors"] for curve in per_lr)
    assert epochs_to([0.0, 0.5, 1.0], [0.9, 0.2, 0.1], 0.25) == 0.5
    assert epochs_to([0.0, 1.0], [0.9, 0.8], 0.25) is None


def test_dead_relus_runs_report_a_diverging_learning_rate_and_keep_the_others():
    data = dead_relus_runs(
        SMOKE, lrs=[0.01, 1e4], seeds=[0, 1], epochs=2, every=1, depth=3, width=16, momentum=0.0
    )
    assert data["diverged"] == [[False, False], [True, True]]
    assert all(math.isfinite(e) for e in data["error"][0])
    assert all(math.isnan(e) for e in data["error"][1])
    assert len(data["epochs"]) == 9  # step 0 and after each of 8 steps
    for dead in data["dead"][0]:
        assert all(0.0 <= d <= 1.0 for d in dead)


# --- the figures, end to end -----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["activation_functions", "activation_gradient_flow", "relu_vs_tanh", "dead_relus"]
)
def test_figure_runs_in_the_smoke_profile(name):
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    from block4.pipeline import Project, discover, load_figure

    REGISTRY = discover(Project(Path(__file__).resolve().parents[1]))

    spec = REGISTRY[name]
    fig, numbers = load_figure(spec)(SMOKE, **spec.params)
    try:
        assert isinstance(fig, Figure)
        assert numbers and all(isinstance(v, int | float | str) for v in numbers.values())
        if name == "activation_functions":
            assert numbers["d_sigmoid_at_0"] == 0.25
            assert numbers["d_sigmoid_at_10"] == pytest.approx(4.5396e-5, rel=1e-4)
        if name == "activation_gradient_flow":
            assert numbers["ratio_init_sigmoid_default"] < 1e-6
            assert 0.1 < numbers["ratio_init_relu_kaiming"] < 10
            for key in (
                "error_gelu_kaiming",
                "error_gelu_kaiming_sd",
                "ratio_init_tanh_default_min",
            ):
                assert key in numbers
            for act in ("sigmoid", "tanh", "relu", "leaky_relu", "gelu"):
                for init in ("default", "kaiming"):
                    assert 0 <= numbers[f"learning_{act}_{init}"] <= numbers["seeds"]
            assert numbers["learning_sigmoid_default"] == 0  # stays at chance (about 0.9)
        if name == "relu_vs_tanh":
            assert {"speedup_raw", "speedup_raw_sd", "speedup_raw_min"} <= set(numbers)
        if name == "dead_relus":
            assert {"dead_high", "dead_high_sd", "diverged_high"} <= set(numbers)
    finally:
        plt.close(fig)
