"""Tests of the MLP builder (block4.models)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from block4.models import ACTIVATIONS, MLP, HiddenBlock, mlp


def test_structure_names_and_shapes():
    net = mlp(64, 10, depth=3, width=32)
    assert isinstance(net, MLP)
    assert [n for n, _ in net.named_children()] == ["block0", "block1", "block2", "head"]
    for _, block in net.hidden_blocks():
        assert isinstance(block, HiddenBlock)
        assert isinstance(block.linear, nn.Linear)
        assert isinstance(block.norm, nn.Identity)
        assert isinstance(block.act, nn.ReLU)
    assert [n for n, _ in net.linear_layers()] == ["block0", "block1", "block2", "head"]
    x = torch.randn(7, 64)
    assert net(x).shape == (7, 10)
    feats = net[:-1](x)
    assert feats.shape == (7, 32)
    torch.testing.assert_close(net.features(x), feats)
    torch.testing.assert_close(net.head(feats), net(x))


def test_depth_counts_hidden_layers_and_parameter_count():
    net = mlp(5, 2, depth=2, width=4)
    n_params = sum(p.numel() for p in net.parameters())
    assert n_params == (5 * 4 + 4) + (4 * 4 + 4) + (4 * 2 + 2)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_every_activation(name):
    net = mlp(3, 1, depth=1, width=4, activation=name)
    assert isinstance(net.block0.act, ACTIVATIONS[name])
    x = torch.randn(2, 3)
    pre = net.block0.norm(net.block0.linear(x))
    torch.testing.assert_close(net.block0(x), ACTIVATIONS[name]()(pre))


def test_batch_norm_drops_hidden_bias_by_default_and_is_configurable():
    net = mlp(8, 3, depth=2, width=6, norm="batch")
    assert isinstance(net.block0.norm, nn.BatchNorm1d)
    assert net.block0.linear.bias is None and net.block1.linear.bias is None
    assert net.head.bias is not None
    assert mlp(8, 3, depth=1, width=6, norm="batch", bias=True).block0.linear.bias is not None
    assert mlp(8, 3, depth=1, width=6).block0.linear.bias is not None
    assert mlp(8, 3, depth=1, width=6, bias=False).block0.linear.bias is None
    layer = mlp(8, 3, depth=1, width=6, norm="layer")
    assert isinstance(layer.block0.norm, nn.LayerNorm) and layer.block0.linear.bias is not None


def test_residual_blocks_compute_x_plus_f_of_x():
    torch.manual_seed(0)
    net = mlp(4, 2, depth=3, width=4, residual=True, activation="tanh")
    assert all(b.residual for _, b in net.hidden_blocks())
    x = torch.randn(5, 4)
    b = net.block1
    torch.testing.assert_close(b(x), x + torch.tanh(b.linear(x)))
    # first block cannot be residual when the widths differ
    net2 = mlp(6, 2, depth=3, width=4, residual=True)
    assert [b.residual for _, b in net2.hidden_blocks()] == [False, True, True]
    with pytest.raises(ValueError, match="equal input and output widths"):
        HiddenBlock(3, 4, residual=True)


def test_residual_gradient_reaches_first_layer_in_deep_sigmoid_net():
    torch.manual_seed(0)
    x = torch.randn(64, 8)
    norms = {}
    for residual in (False, True):
        torch.manual_seed(1)
        net = mlp(8, 1, depth=30, width=8, activation="sigmoid", residual=residual)
        net(x).pow(2).mean().backward()
        norms[residual] = float(net.block0.linear.weight.grad.norm())
    assert norms[True] > 100 * norms[False]


@pytest.mark.parametrize(
    "init,activation,expected_std",
    [
        ("kaiming", "relu", math.sqrt(2 / 200)),
        ("xavier", "tanh", 5 / 3 * math.sqrt(2 / 400)),
        ("normal", "relu", 0.01),
    ],
)
def test_init_schemes(init, activation, expected_std):
    torch.manual_seed(0)
    net = mlp(200, 1, depth=2, width=200, activation=activation, init=init)
    w = net.block1.linear.weight.detach()
    assert abs(float(w.std()) / expected_std - 1) < 0.03
    assert float(net.block1.linear.bias.detach().abs().max()) == 0.0


def test_default_init_is_pytorchs():
    torch.manual_seed(3)
    net = mlp(10, 2, depth=1, width=5)
    torch.manual_seed(3)
    ref = nn.Linear(10, 5)
    torch.testing.assert_close(net.block0.linear.weight, ref.weight)


def test_kaiming_keeps_deep_relu_gradients_alive():
    x = torch.randn(128, 64, generator=torch.Generator().manual_seed(0))
    ratios = {}
    for init in ("default", "kaiming"):
        torch.manual_seed(0)
        net = mlp(64, 10, depth=20, width=64, init=init)
        net(x).pow(2).mean().backward()
        first = float(net.block0.linear.weight.grad.norm())
        last = float(net.head.weight.grad.norm())
        ratios[init] = first / last
    assert ratios["kaiming"] > 1e3 * ratios["default"]


# --- bad inputs -----------------------------------------------------------------------------


def test_unknown_activation():
    with pytest.raises(
        ValueError, match=r"activation 'swish' is not supported; choose one of: sigmoid, tanh, relu"
    ):
        mlp(2, 1, depth=1, width=2, activation="swish")


def test_unknown_norm():
    with pytest.raises(
        ValueError, match=r"norm 'group' is not supported; choose one of: None, batch, layer"
    ):
        mlp(2, 1, depth=1, width=2, norm="group")


def test_unknown_init():
    with pytest.raises(
        ValueError, match=r"init 'he' is not supported; choose one of: default, kaiming"
    ):
        mlp(2, 1, depth=1, width=2, init="he")


@pytest.mark.parametrize(
    "field,kwargs",
    [
        ("depth", {"depth": 0}),
        ("width", {"width": 0}),
        ("depth", {"depth": -2}),
        ("width", {"width": 2.5}),
        ("in_features", {"in_features": 0}),
    ],
)
def test_sizes_below_one(field, kwargs):
    args = {"in_features": 3, "out_features": 1, "depth": 2, "width": 4} | kwargs
    with pytest.raises(ValueError, match=rf"{field} must be an integer >= 1, got"):
        mlp(**args)
