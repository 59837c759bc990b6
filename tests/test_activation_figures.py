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
from block4.figures.activations import (
    DeadUnitTracker,
    ScaledDigits,
    TrainingCurve,
    activation_and_derivative,
    digits,
    layer_grad_norms,
    train_classifier,
)
from block4.figures.registry import FigureContext

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


# --- training curve and dead units -----------------------------------------------------------


def test_training_curve_is_deterministic_and_measures_the_whole_training_split():
    runs = [
        train_classifier(SMOKE, epochs=2, seed=3, depth=2, width=16, lr=0.05)[1] for _ in range(2)
    ]
    assert runs[0].errors == runs[1].errors
    assert runs[0].epochs == [0.0, 1.0, 2.0]
    assert runs[0].errors[-1] < runs[0].errors[0]
    n = len(digits(SMOKE, 0).tensors("train")[1])
    for e in runs[0].errors:  # an error is a count of wrong images over the whole split
        assert abs(e * n - round(e * n)) < 1e-3


def test_epochs_to_target():
    curve = TrainingCurve()
    curve.epochs, curve.errors = [0.0, 0.5, 1.0], [0.9, 0.3, 0.1]
    assert curve.epochs_to(0.3) == 0.5
    assert curve.epochs_to(0.05) is None


def test_dead_unit_tracker_counts_units_silent_on_every_training_image():
    tracker = DeadUnitTracker(every_n_steps=1)
    model, _, _ = train_classifier(
        SMOKE, epochs=1, seed=0, callbacks=[tracker], depth=3, width=16, lr=0.01,
        activation="relu", init="kaiming",
    )  # fmt: skip
    assert tracker.dead[0] < 0.2 and len(tracker.dead_per_layer[0]) == 3
    # Push every first-layer bias far below zero: all units of that layer die, and with them
    # every unit above (their inputs are all zero, so they see only their own bias).
    with torch.no_grad():
        model.body.block0.linear.bias.fill_(-1e3)
        for _, block in list(model.body.hidden_blocks())[1:]:
            block.linear.bias.fill_(-1.0)
    trainer = type("T", (), {"datamodule": digits(SMOKE, 0), "global_step": 99})()
    tracker._measure(trainer, model)
    assert tracker.dead[-1] == 1.0


def test_scaled_digits_multiplies_every_split():
    plain, scaled = digits(SMOKE, 0), ScaledDigits(2.5, seed=0, n_train=256)
    for split in ("train", "val", "test"):
        torch.testing.assert_close(scaled.tensors(split)[0], 2.5 * plain.tensors(split)[0])


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
    finally:
        plt.close(fig)
