# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Activation functions — companion notebook
#
# Three small experiments from the chapter [Activation functions](../activations.md). Each
# runs in about a second on a CPU; change the numbers and run again.
#
# 1. Derivatives of the activations at any point, from autograd.
# 2. The gradient of every layer of a 20-layer MLP at its initial weights, for every
#    activation and two initialisations — no training needed.
# 3. ReLU vs tanh on raw-scale inputs: how many tanh pre-activations start saturated.

# %%
import torch
import torch.nn.functional as F

from block4.data import DigitsDataModule
from block4.figures.activations import activation_and_derivative
from block4.models import mlp

_ = torch.manual_seed(0)

# %% [markdown]
# ## 1. Local gradients
#
# `activation_and_derivative(name, x)` returns $f(x)$ and $f'(x)$, the derivative computed by
# one backward pass. The chapter asks about $x = -10, 0, 10$; try others.

# %%
x = torch.tensor([-10.0, -2.0, 0.0, 2.0, 10.0])
for name in ["sigmoid", "tanh", "relu", "leaky_relu", "gelu"]:
    _, slope = activation_and_derivative(name, x)
    print(f"{name:>10}: " + "  ".join(f"{v:9.2e}" for v in slope.tolist()))

# %% [markdown]
# ## 2. Gradient flow at initialisation
#
# One batch of digits, one backward pass through a fresh 20-layer MLP, and the norm of each
# layer's weight gradient. `net.linear_layers()` yields the layers from the input side to the
# output layer (`head`). The printed number is the ratio of the first layer's gradient norm to
# the output layer's: far below 1 means the gradient vanishes on its way down.

# %%
data = DigitsDataModule(batch_size=256)
x_train, y_train = data.tensors("train")
xb, yb = x_train[:256], y_train[:256]


def first_to_last_ratio(activation: str, init: str, depth: int = 20, width: int = 32) -> float:
    torch.manual_seed(0)
    net = mlp(64, 10, depth=depth, width=width, activation=activation, init=init)
    F.cross_entropy(net(xb), yb).backward()
    norms = [layer.weight.grad.norm().item() for _, layer in net.linear_layers()]
    return norms[0] / norms[-1]


print(f"{'activation':>10}  {'default init':>12}  {'kaiming init':>12}")
for activation in ["sigmoid", "tanh", "relu", "leaky_relu", "gelu"]:
    default = first_to_last_ratio(activation, "default")
    kaiming = first_to_last_ratio(activation, "kaiming")
    print(f"{activation:>10}  {default:12.1e}  {kaiming:12.1e}")

# %% [markdown]
# Try `depth=5` or `depth=50`, `init="xavier"`, or `init="normal"` with
# `mlp(..., init_std=0.01)` (AlexNet's Gaussian init).

# %% [markdown]
# ## 3. How many tanh pre-activations start saturated?
#
# Multiply the standardised inputs by the spread of raw pixels (about 3.7) and look at the
# first layer's pre-activations of a Kaiming-initialised tanh net: the fraction of them (over
# all examples and units) with $|z| > 2$, where $\tanh'(z)$ is below about 0.07.

# %%
for scale in [1.0, 3.7]:
    torch.manual_seed(0)
    net = mlp(64, 10, depth=4, width=64, activation="tanh", init="kaiming")
    z = net.block0.linear(scale * x_train)
    saturated = (z.abs() > 2).float().mean().item()
    print(f"input scale {scale}: pre-activation std {z.std():.2f}, saturated {saturated:.0%}")

# %% [markdown]
# ## Your turn
#
# **Task 1.** Use `first_to_last_ratio` to find out how the ReLU net's ratio with PyTorch's
# default init changes with depth: try depths 5, 10 and 20. Does it fall like $6^{-L/2}$
# (exercise 3 of the chapter)?
#
# <details><summary>Solution</summary>
#
# ```python
# for depth in (5, 10, 20):
#     print(depth, f"{first_to_last_ratio('relu', 'default', depth=depth):.1e}",
#           f"{6 ** (-depth / 2):.1e}")
# ```
#
# From depth 5 to 10 the ratio drops by a factor of about 90, as $6^{5/2} \approx 88$
# predicts; from 10 to 20 by a few thousand, somewhat less than $6^{5} \approx 7800$. The
# estimate gets the rate roughly right but not the constant in front: it ignores the output
# layer and the fluctuations of a finite width.
#
# </details>
#
# **Task 2.** Where is GELU's slope negative? Evaluate its derivative on a fine grid between
# $-3$ and $0$ with `activation_and_derivative` and find where it changes sign.
#
# <details><summary>Solution</summary>
#
# ```python
# grid = torch.linspace(-3, 0, 30001)
# _, slope = activation_and_derivative("gelu", grid)
# print(grid[(slope < 0)].max().item())  # about -0.752
# ```
#
# $\mathrm{GELU}'(x) = \Phi(x) + x\varphi(x)$ is negative for $x$ below about $-0.75$; far to
# the left both terms vanish.
#
# </details>
#
# **Task 3.** Repeat the saturation count of section 3 for the sigmoid, with the sigmoid's
# own gain. Count pre-activations with $\sigma'(z) < 0.07$ instead, i.e. $|z| > 2.5$ roughly. Why is the
# sigmoid less saturated than tanh at the same input scale, yet harder to train?
#
# <details><summary>Solution</summary>
#
# ```python
# for scale in [1.0, 3.7]:
#     torch.manual_seed(0)
#     net = mlp(64, 10, depth=4, width=64, activation="sigmoid", init="kaiming")
#     z = net.block0.linear(scale * x_train)
#     print(scale, f"{(torch.sigmoid(z) * (1 - torch.sigmoid(z)) < 0.07).float().mean():.0%}")
# ```
#
# About 2 % at scale 1 and 43 % at scale 3.7, against 17 % and 70 % for tanh in section 3.
# The sigmoid's gain is 1 instead of 5/3, so its pre-activations are narrower, and its tails
# start further out. But its slope is at most 1/4 even at the centre and its outputs are all
# positive, so every layer still shrinks the gradient — the first lesson of the chapter.
#
# </details>
