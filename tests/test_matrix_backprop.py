"""Backprop with matrices (block4.matrix_backprop) against torch.autograd, and its memory.

- a linear layer's backward in matrix form equals autograd's, in float64 to rounding;
- the manual backward through the graphs chapter's MNIST MLP equals autograd's (float64 and
  float32), and the MLP it uses is that chapter's `mnist_mlp` without dropout;
- the bytes autograd saves for a forward pass are exactly batch x (784 + 512 + 10) x 4;
- bad shapes give one clear error each.
"""

from __future__ import annotations

import pytest
import torch

from block4.figures.backpropagation import matrix_backprop_memory
from block4.figures.computational_graphs import mnist_mlp
from block4.figures.registry import FigureContext
from block4.matrix_backprop import (
    MNIST_MLP_SIZES,
    activation_numbers_per_example,
    linear_backward,
    mlp_backward,
    mlp_forward,
    mlp_module,
    mlp_params,
    saved_tensor_bytes,
)

SMOKE = FigureContext(profile="smoke", accelerator="cpu", devices=1)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize(("batch", "n_in", "n_out"), [(1, 1, 1), (5, 3, 7), (32, 20, 4)])
def test_linear_backward_matches_autograd(bias, batch, n_in, n_out):
    gen = torch.Generator().manual_seed(batch * 100 + n_in)
    x = torch.randn(batch, n_in, dtype=torch.float64, generator=gen, requires_grad=True)
    layer = torch.nn.Linear(n_in, n_out, bias=bias, dtype=torch.float64)
    dy = torch.randn(batch, n_out, dtype=torch.float64, generator=gen)
    layer(x).backward(dy)  # y = x @ W.T + b; autograd's vector-Jacobian product with dy
    dx, dw, db = linear_backward(x.detach(), layer.weight.detach(), layer.bias, dy)
    assert dx.shape == x.shape and dw.shape == layer.weight.shape
    torch.testing.assert_close(dx, x.grad, rtol=0, atol=1e-13)
    torch.testing.assert_close(dw, layer.weight.grad, rtol=0, atol=1e-13)
    if bias:
        torch.testing.assert_close(db, layer.bias.grad, rtol=0, atol=1e-13)
    else:
        assert db is None


def test_linear_backward_in_the_textbook_convention():
    """With W_math = W.T ([n_in, n_out], Y = X W_math + b): dX = dY W_math^T, dW_math = X^T dY."""
    x, w, dy = torch.randn(4, 3), torch.randn(2, 3), torch.randn(4, 2)
    dx, dw, db = linear_backward(x, w, torch.zeros(2), dy)
    w_math = w.T
    torch.testing.assert_close(dx, dy @ w_math.T)
    torch.testing.assert_close(dw.T, x.T @ dy)
    torch.testing.assert_close(db, dy.sum(0))


def test_the_mlp_is_the_graphs_chapters_mnist_mlp_without_dropout():
    ours, theirs = mlp_module(), mnist_mlp(p_drop=0.0)
    shapes = [tuple(p.shape) for p in ours.parameters()]
    assert shapes == [tuple(p.shape) for p in theirs.parameters()]
    assert shapes == [(512, 784), (512,), (10, 512), (10,)]
    assert MNIST_MLP_SIZES == (784, 512, 10)
    theirs.load_state_dict(
        {k: v for k, v in zip(theirs.state_dict(), ours.state_dict().values(), strict=True)}
    )
    x = torch.rand(3, 28, 28)
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float64, 1e-13), (torch.float32, 1e-6)])
def test_manual_mlp_backward_matches_autograd(dtype, tolerance):
    torch.manual_seed(0)
    model = mnist_mlp(p_drop=0.0).to(dtype)
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(64, 28, 28, generator=gen).to(dtype).requires_grad_()
    labels = torch.randint(0, 10, (64,), generator=gen)
    p = model(images)
    loss = -p[torch.arange(64), labels].log().mean()
    loss.backward()
    params = {k: v.detach() for k, v in mlp_params(model).items()}
    manual_loss, cache = mlp_forward(images.detach(), labels, params)
    grads = mlp_backward(cache, params)
    torch.testing.assert_close(manual_loss, loss.detach(), rtol=0, atol=tolerance)
    reference = {k: v.grad for k, v in mlp_params(model).items()}
    reference["x"] = images.grad.reshape(64, -1)
    for name, expected in reference.items():
        assert grads[name].shape == expected.shape
        scale = expected.abs().max().item()
        assert scale > 0
        worst = (grads[name] - expected).abs().max().item()
        assert worst <= tolerance * max(scale, 1.0), (name, worst)


def test_softmax_and_cross_entropy_backward_is_p_minus_onehot_over_b():
    params = {k: v.detach().double() for k, v in mlp_params(mlp_module()).items()}
    images, labels = torch.rand(8, 28, 28, dtype=torch.float64), torch.arange(8)
    _, cache = mlp_forward(images, labels, params)
    grads = mlp_backward(cache, params)
    dz2 = (cache.p - torch.nn.functional.one_hot(labels, 10)) / 8
    torch.testing.assert_close(grads["b2"], dz2.sum(0), rtol=0, atol=1e-15)
    torch.testing.assert_close(grads["w2"], dz2.T @ cache.h, rtol=0, atol=1e-15)


@pytest.mark.parametrize("batch", [1, 7, 64, 300])
def test_saved_activation_bytes_are_batch_times_layer_widths(batch):
    model = mlp_module()
    x = torch.rand(batch, 28, 28)
    measured = saved_tensor_bytes(lambda: model(x), exclude=model.parameters())
    assert activation_numbers_per_example() == 784 + 512 + 10
    assert measured["activation_bytes"] == batch * 1306 * 4
    # the only parameter saved is W2 (for dh = dz2 W2); W1 is not needed: x needs no gradient
    assert measured["excluded_bytes"] == 10 * 512 * 4
    # our manual forward keeps exactly as much
    params = {k: v.detach() for k, v in mlp_params(model).items()}
    _, cache = mlp_forward(x, torch.zeros(batch, dtype=torch.long), params)
    assert cache.activation_bytes() == measured["activation_bytes"]


def test_dropout_adds_its_mask_to_the_saved_tensors():
    x = torch.rand(16, 28, 28)
    plain = mnist_mlp(p_drop=0.0).train()
    with_dropout = mnist_mlp(p_drop=0.2).train()
    a = saved_tensor_bytes(lambda: plain(x), exclude=plain.parameters())["activation_bytes"]
    b = saved_tensor_bytes(lambda: with_dropout(x), exclude=with_dropout.parameters())
    assert b["activation_bytes"] > a  # one mask entry per hidden unit and example
    assert b["activation_bytes"] - a >= 16 * 512


def test_nothing_saved_without_gradients():
    model = mlp_module()
    with torch.no_grad():
        measured = saved_tensor_bytes(lambda: model(torch.rand(8, 28, 28)))
    assert measured == {"activation_bytes": 0, "excluded_bytes": 0, "saved_tensors": 0}


def test_bad_shapes():
    x, w, b, dy = torch.zeros(4, 3), torch.zeros(2, 3), torch.zeros(2), torch.zeros(4, 2)
    with pytest.raises(ValueError, match=r"shapes do not fit y = x @ w.T \+ b"):
        linear_backward(x, w.T, b, dy)
    with pytest.raises(ValueError, match=r"need w \[n_out, 3\] and dy \[4, n_out\]"):
        linear_backward(x, w, b, torch.zeros(5, 2))
    with pytest.raises(ValueError, match=r"bias must have shape \[2\], got \(3,\)"):
        linear_backward(x, w, torch.zeros(3), dy)
    with pytest.raises(ValueError, match=r"expected x \[B, n_in\]"):
        linear_backward(torch.zeros(3), w, b, dy)
    with pytest.raises(ValueError, match="expected an MLP with two nn.Linear layers, found 1"):
        mlp_params(torch.nn.Sequential(torch.nn.Linear(3, 2)))


def test_matrix_backprop_memory_figure_smoke():
    fig, numbers = matrix_backprop_memory(SMOKE, max_batch=1024, check_batch=16)
    assert len(fig.axes) == 1
    assert numbers["max_batch"] == 64
    assert numbers["worst_abs_float64"] < 1e-12 and numbers["worst_rel_float64"] < 1e-12
    assert numbers["worst_abs_float32"] < 1e-5 and numbers["worst_rel_float32"] < 1e-5
    assert numbers["measured_equals_analytic"] is True
    assert numbers["bytes_per_example"] == numbers["analytic_bytes_per_example"] == 5224
    assert numbers["parameter_bytes"] == 407_050 * 4
    assert numbers["crossover_batch"] == 312  # 1,628,200 / 5,224 = 311.7
    assert numbers["loss_bytes_per_example"] > 0
