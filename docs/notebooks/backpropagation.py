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
    if step % 10 == 0:  # the loss of these weights, before the step changes them
        print(f"step {step:2d}: loss {loss.data:.4f}, weights {[round(v.data, 3) for v in w]}")
    for v in w:
        v.data -= 0.5 * v.grad

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

# %% [markdown]
# ## Your turn
#
# **Task 1.** Let $f = x \cdot y \cdot x$ at $x = 3$, $y = -2$. Find $\partial f/\partial x$ and
# $\partial f/\partial y$ by hand with the patterns (multiply switches, a copy adds), then check
# with `Value`.
#
# <details><summary>Solution</summary>
#
# By hand: $x$ is used twice. Through the first use it receives $y \cdot x = -6$, through the
# second $x \cdot y = -6$; the copy adds: $\partial f/\partial x = 2xy = -12$. And
# $\partial f/\partial y = x^2 = 9$.
#
# ```python
# x, y = Value(3.0, "x"), Value(-2.0, "y")
# f = x * y * x
# f.backward()
# print(x.grad, y.grad)  # -12.0 9.0
# ```
#
# </details>
#
# **Task 2.** How much of the incoming gradient does one sigmoid gate pass on at
# $s = -10, 0, 10$? Use `Value(s).sigmoid()` and `backward()`.
#
# <details><summary>Solution</summary>
#
# ```python
# for s0 in (-10.0, 0.0, 10.0):
#     s = Value(s0, "s")
#     s.sigmoid().backward()
#     print(s0, s.grad)
# ```
#
# About $4.5 \cdot 10^{-5}$, exactly $0.25$ and about $4.5 \cdot 10^{-5}$: a saturated
# sigmoid passes almost nothing, on either side.
#
# </details>
#
# **Task 3.** Check the engine against PyTorch on $f = \tanh(w x + b)$ at $w = 0.5$, $x = 2$,
# $b = -0.3$: compute all three gradients with `Value` and with `torch.autograd`.
#
# <details><summary>Solution</summary>
#
# ```python
# w, x, b = Value(0.5, "w"), Value(2.0, "x"), Value(-0.3, "b")
# f = (w * x + b).tanh()
# f.backward()
# wt, xt, bt = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (0.5, 2.0, -0.3))
# torch.tanh(wt * xt + bt).backward()
# print(w.grad, x.grad, b.grad)
# print(wt.grad.item(), xt.grad.item(), bt.grad.item())
# ```
#
# Both give $\partial f/\partial b = 1 - \tanh^2 0.7 \approx 0.6347$,
# $\partial f/\partial w = x\,(1 - \tanh^2 0.7) \approx 1.2695$ and
# $\partial f/\partial x = w\,(1 - \tanh^2 0.7) \approx 0.3174$, equal to the last digit or
# two.
#
# </details>
