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
# # Normalization and residual connections — companion notebook
#
# Three small experiments from the chapter
# [Normalization and residual connections](../normalization-and-residuals.md); each runs in
# about a second on a CPU. Change the numbers and run again.
#
# 1. What a batch-norm layer does to one batch of pre-activations.
# 2. A bias right before batch norm: zero gradient, no effect.
# 3. The gradient reaching the first layer of plain and residual 50-layer MLPs.

# %%
import torch
import torch.nn.functional as F

from block4.autograd import Value
from block4.data import DigitsDataModule
from block4.models import mlp

_ = torch.manual_seed(0)
data = DigitsDataModule()
x_train, y_train = data.tensors("train")
xb, yb = x_train[:256], y_train[:256]

# %% [markdown]
# ## 1. Batch norm on one batch
#
# The pre-activations of the first hidden layer of a tanh MLP (Glorot init), before and after
# its `BatchNorm1d` (in training mode, i.e. with the batch's own statistics).

# %%
net = mlp(64, 10, depth=3, width=64, activation="tanh", init="xavier", norm="batch")
net.train()
z = net.block0.linear(xb)  # no bias: mlp drops it before batch norm
z_hat = net.block0.norm(z)
print(f"before BN: unit means in [{z.mean(0).min():.2f}, {z.mean(0).max():.2f}], "
      f"stds in [{z.std(0).min():.2f}, {z.std(0).max():.2f}]")
print(f"after BN:  unit means in [{z_hat.mean(0).min():.2f}, {z_hat.mean(0).max():.2f}], "
      f"stds in [{z_hat.std(0, unbiased=False).min():.3f}, "
      f"{z_hat.std(0, unbiased=False).max():.3f}]")
print(f"saturated (|z| > 2): {(z.abs() > 2).float().mean():.1%} before, "
      f"{(z_hat.abs() > 2).float().mean():.1%} after")

# %% [markdown]
# ## 2. A bias before batch norm
#
# Keep the biases (`bias=True`), run one backward pass and look at their gradients; then shift
# every hidden bias by 3 and compare the outputs.

# %%
net = mlp(64, 10, depth=3, width=32, norm="batch", bias=True)
net.train()
F.cross_entropy(net(xb), yb).backward()
for name, block in net.hidden_blocks():
    print(f"{name}: |grad W| = {block.linear.weight.grad.norm():.3f}, "
          f"|grad b| = {block.linear.bias.grad.norm():.1e}")

with torch.no_grad():
    before = net(xb)
    for _, block in net.hidden_blocks():
        block.linear.bias += 3.0
    print("largest change of the logits:", f"{(net(xb) - before).abs().max():.1e}")

# %% [markdown]
# ## 3. Gradient super-highways
#
# First, the rule behind them with the scalar engine: $\partial(a + b)/\partial a = 1$.

# %%
a, b = Value(2.0, "a"), Value(-3.0, "b")
(a + b).backward()
print("d(a+b)/da =", a.grad, " d(a+b)/db =", b.grad)

# %% [markdown]
# Then the first-layer / output-layer gradient ratio of 50-layer MLPs at their initial weights.
# Try other depths, `activation="sigmoid"`, or `norm="batch"`.

# %%
def first_to_last_ratio(residual: bool, depth: int = 50, **kwargs) -> float:
    torch.manual_seed(0)
    net = mlp(64, 10, depth=depth, width=32, residual=residual, **kwargs)
    F.cross_entropy(net(xb), yb).backward()
    norms = [layer.weight.grad.norm().item() for _, layer in net.linear_layers()]
    return norms[0] / norms[-1]


for kwargs in [dict(activation="tanh"), dict(activation="relu", init="kaiming", norm="batch")]:
    plain, residual = first_to_last_ratio(False, **kwargs), first_to_last_ratio(True, **kwargs)
    print(f"{kwargs}: plain {plain:.1e}, residual {residual:.2f}")

# %% [markdown]
# The tanh nets show the highway: the plain net's first layer gets almost nothing, the residual
# one about as much as the output layer. With batch norm the plain net's gradient does not
# vanish but *grows* towards the input (stacked batch-norm layers do that; see the chapter);
# the residual net keeps it within about an order of magnitude.

# %% [markdown]
# ## Your turn
#
# **Task 1.** Put the batch-norm layer of section 1 into evaluation mode (`net.eval()`) and
# normalise the same batch again. Why are the unit means and standard deviations no longer 0
# and 1?
#
# <details><summary>Solution</summary>
#
# ```python
# net = mlp(64, 10, depth=3, width=64, activation="tanh", init="xavier", norm="batch")
# net.eval()
# z = net.block0.linear(xb)
# z_hat = net.block0.norm(z)
# print(f"{z_hat.mean(0).abs().max():.2f}, {z_hat.std(0).min():.2f}..{z_hat.std(0).max():.2f}")
# ```
#
# In evaluation mode batch norm uses its running averages, which start at mean 0 and variance
# 1 and have seen no training batch yet: the layer passes $z$ through almost unchanged. Only
# training (`net.train()` and forward passes) fills in the statistics of the data.
#
# </details>
#
# **Task 2.** In section 2, shift the biases of a net *without* batch norm by 3 and compare
# the largest change of the logits with the one you saw with batch norm.
#
# <details><summary>Solution</summary>
#
# ```python
# torch.manual_seed(0)
# plain = mlp(64, 10, depth=3, width=32, bias=True)
# with torch.no_grad():
#     before = plain(xb)
#     for _, block in plain.hidden_blocks():
#         block.linear.bias += 3.0
#     print(f"{(plain(xb) - before).abs().max():.1e}")
# ```
#
# Without batch norm the shift goes straight into the activations and the logits move by
# whole units; with batch norm it is subtracted again with the batch mean, and only float
# rounding is left.
#
# </details>
#
# **Task 3.** Chain scalar blocks $F(x) = \sigma(0.8\,x)$ with `Value`, 30 of them, once plain
# and once residual, starting at $x_0 = 0.5$, and compare $\mathrm{d}x_{30}/\mathrm{d}x_0$.
#
# <details><summary>Solution</summary>
#
# ```python
# for residual in (False, True):
#     x0 = Value(0.5, "x0")
#     h = x0
#     for _ in range(30):
#         f = (h * 0.8).sigmoid()
#         h = h + f if residual else f
#     h.backward()
#     print("residual" if residual else "plain", f"{x0.grad:.2e}")
# ```
#
# The plain chain multiplies 30 factors of at most $0.8/4 = 0.2$: about $10^{-22}$. Each
# residual factor is $1 + 0.8\,\sigma'$, never below 1: the gradient stays of order 1.
#
# </details>
