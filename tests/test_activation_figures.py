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
from block4.figures.activations import ScaledDigits
from block4.figures.registry import FigureContext
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
