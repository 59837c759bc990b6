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
# # Backpropagation — companion notebook
#
# Experiments for the chapter [Backpropagation and the chain rule](../backpropagation.md), with
# `block4.autograd`, a scalar engine whose every operation carries its local backward rule.
#
# 1. The worked example $f = (x + y)\,z$, checked against `torch.autograd`.
# 2. The patterns: add distributes, multiply switches, max routes, a copy adds.
# 3. A sigmoid neuron, backpropagated op by op and as one gate — and trained.
# 4. Gradient flow through a stack of sigmoids or ReLUs.

# %%
import torch

from block4.autograd import Value, draw

# %matplotlib inline

# %% [markdown]
# ## 1. The worked example
#
# Change the three numbers and run the cell again.

# %%
x, y, z = Value(-2.0, "x"), Value(5.0, "y"), Value(-4.0, "z")
q = x + y
q.label = "q"
f = q * z
f.label = "f"
f.backward()
print(f"f = {f.data}, df/dx = {x.grad}, df/dy = {y.grad}, df/dz = {z.grad}")
draw(f);  # the ; keeps Jupyter from showing the figure twice

# %% [markdown]
# The same gradients from PyTorch's autograd:

# %%
xt, yt, zt = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (-2.0, 5.0, -4.0))
ft = (xt + yt) * zt
ft.backward()
print(
    f"f = {ft.item()}, df/dx = {xt.grad.item()}, df/dy = {yt.grad.item()}, df/dz = {zt.grad.item()}"
)

# %% [markdown]
# ## 2. Patterns
#
# Each gate receives the incoming gradient 2 (the argument of `backward`).

# %%
for name, gate in [
    ("add", lambda a, b: a + b),
    ("mul", lambda a, b: a * b),
    ("max", lambda a, b: a.max(b)),
]:
    a, b = Value(3.0, "x"), Value(-1.0, "y")
    gate(a, b).backward(2.0)
    print(f"{name}: dx = {a.grad:+g}, dy = {b.grad:+g}")

# %% [markdown]
# A copy adds: in $f = x y + x$ the value $x$ is used twice, and its gradient is the sum
# $y + 1$ of both uses (Exercise 1 of the chapter).

# %%
x, y = Value(2.0, "x"), Value(5.0, "y")
f = x * y + x
f.backward()
print(f"df/dx = {x.grad} (y + 1 = {y.data + 1}), df/dy = {y.grad} (x = {x.data})")
draw(f);  # the ; keeps Jupyter from showing the figure twice

# %% [markdown]
# Leaves accumulate over backward passes, as in PyTorch; `zero_grad()` resets them.

# %%
f.backward()
print("after a second backward:", x.grad, y.grad)
f.zero_grad()
f.backward()
print("after zero_grad and backward:", x.grad, y.grad)

# %% [markdown]
# ## 3. A sigmoid neuron
#
# $f = \sigma(w_0 x_0 + w_1 x_1 + w_2)$ from elementary operations and as one sigmoid gate:
# the gradients agree.


# %%
def neuron(w0, x0, w1, x1, w2, one_gate):
    s = w0 * x0 + w1 * x1 + w2
    return s.sigmoid() if one_gate else 1 / (1 + (-s).exp())


for one_gate in (False, True):
    leaves = [
        Value(v, n)
        for v, n in zip((2.0, -1.0, -3.0, -2.0, -3.0), ("w0", "x0", "w1", "x1", "w2"), strict=True)
    ]
    out = neuron(*leaves, one_gate=one_gate)
    out.backward()
    print("one gate " if one_gate else "elementary", [f"{v.label}: {v.grad:+.4f}" for v in leaves])

# %% [markdown]
# Gradients are what training needs. Here the engine trains the neuron to output 1 for the input
# $(1, 2)$ and 0 for $(-1, -1)$ by gradient descent on the cross-entropy; only the three
# weights learn.

# %%
w = [Value(0.1, "w0"), Value(-0.2, "w1"), Value(0.0, "w2")]
data = [((1.0, 2.0), 1.0), ((-1.0, -1.0), 0.0)]
for step in range(31):
    loss = Value(0.0)
    for (x0, x1), target in data:
        p = (w[0] * x0 + w[1] * x1 + w[2]).sigmoid()
        loss = loss - (p.log() if target == 1.0 else (1 - p).log())
    for v in w:
        v.zero_grad()
    loss.backward()
    for v in w:
        v.data -= 0.5 * v.grad
    if step % 10 == 0:
        print(f"step {step:2d}: loss {loss.data:.4f}, weights {[round(v.data, 3) for v in w]}")

# %% [markdown]
# ## 4. Gradient flow through a stack
#
# The gradient at the input of a stack of $L$ scalar layers $h \mapsto \mathrm{act}(h)$
# is a product of $L$ local gradients. With sigmoids (local gradient at most 1/4) it vanishes
# exponentially fast; tanh (local gradient up to 1, near 1 only around 0) shrinks it more
# slowly; a ReLU in its active region passes it on unchanged.

# %%
for act in ("sigmoid", "tanh", "relu"):
    grads = []
    for depth in (1, 5, 10, 20):
        h0 = Value(0.5)
        h = h0
        for _ in range(depth):
            h = getattr(h, act)()
        h.backward()
        grads.append(f"L={depth}: {h0.grad:.2e}")
    print(f"{act:8s}", "  ".join(grads))
