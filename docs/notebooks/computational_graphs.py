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
# # Computational graphs — companion notebook
#
# Experiments for the chapter [Computational graphs](../computational-graphs.md). Everything runs
# on a CPU in a few seconds; change the code and run it again.
#
# 1. Eager execution of
#    $10 \cdot \begin{pmatrix} 3 & 3 \end{pmatrix}
#    \begin{pmatrix} 2 \\ 2 \end{pmatrix}$,
#    and the graph autograd records behind it.
# 2. The same computation captured with `torch.fx`, drawn as a graph.
# 3. The MNIST-style MLP captured by `torch.fx` and by `torch.compile`.

# %%
import torch
from torch import fx
from torch.fx.passes.shape_prop import ShapeProp

from block4.graph_drawing import draw_graph
from block4.figures.computational_graphs import capture_op_level, fx_to_graph, mnist_mlp

# %matplotlib inline
_ = torch.manual_seed(0)

# %% [markdown]
# ## 1. Eager execution
#
# Every line runs at once and returns a tensor we can print. Because `m1` asks for gradients,
# autograd also records, in `grad_fn`, which operation made each result.

# %%
m1 = torch.tensor([[3.0, 3.0]], requires_grad=True)
m2 = torch.tensor([[2.0], [2.0]])
inner = torch.matmul(m1, m2)
product = 10 * inner
print("m1 @ m2 =", inner)
print("10 * (m1 @ m2) =", product)


# %% [markdown]
# Walking `grad_fn.next_functions` from the output backwards shows the graph autograd will use
# for the backward pass: one node per operation, and `AccumulateGrad` where a leaf that wants a
# gradient (`m1`) enters.


# %%
def show_autograd_graph(fn, depth=0):
    print("    " * depth + type(fn).__name__)
    for parent, _ in fn.next_functions:
        if parent is not None:
            show_autograd_graph(parent, depth + 1)


show_autograd_graph(product.grad_fn)

# %% [markdown]
# ## 2. Capturing the graph with `torch.fx`
#
# `symbolic_trace` calls the function once with placeholders instead of tensors and records every
# operation. Compare the printout with the graph you drew for the exercise "be the spider".


# %%
def product_fn(m1, m2):
    return 10 * torch.matmul(m1, m2)


captured = fx.symbolic_trace(product_fn)
print(captured.graph)
print(captured.code)

# %% [markdown]
# Running the captured graph once with `ShapeProp` records the shape of every edge; then
# `block4.graph_drawing.draw_graph` draws it. Try other shapes for `m1` and `m2`.

# %%
ShapeProp(captured).propagate(m1.detach(), m2)
nodes, edges, labels = fx_to_graph(captured, titles={"m1": "M1", "m2": "M2"})
draw_graph(nodes, edges, edge_labels=labels);  # the ; keeps Jupyter from showing the figure twice

# %% [markdown]
# ## 3. The MLP, captured twice
#
# At the layer level, `torch.fx` sees six modules:

# %%
model = mnist_mlp()
print(fx.symbolic_trace(model).graph)

# %% [markdown]
# Traced inside the layers, the parameters appear as inputs of the `linear` operations. Note the
# `training=True` stored in the dropout node: the captured graph is specialised to the mode the
# model was in.

# %%
ops = capture_op_level(model, torch.zeros(1, 28, 28))
for node in ops.graph.nodes:
    print(f"{node.op:<14} {node.name:<11} {tuple(node.meta['tensor_meta'].shape)}  {node.kwargs}")

# %%
nodes, edges, labels = fx_to_graph(ops, batch="N", tensors_on_edges=True)
draw_graph(nodes, edges, edge_labels=labels, scale=0.6);  # the ; keeps Jupyter from showing the figure twice

# %% [markdown]
# `torch.compile` captures a graph on the first call and hands it to a backend. This backend
# only reports what it received, then runs the graph unchanged (no compiler needed). Call the
# model in training mode, then in eval mode: the second mode triggers a second capture.

# %%
captures = []


def report(gm, example_inputs):
    dropout = [n for n in gm.graph.nodes if "dropout" in str(n.target)]
    captures.append(dropout[0].args[2] if dropout and len(dropout[0].args) > 2 else None)
    print(f"capture {len(captures)}: {len(gm.graph.nodes)} nodes, dropout training={captures[-1]}")
    return gm.forward


compiled = torch.compile(model, backend=report)
x = torch.rand(8, 28, 28)
compiled(x)  # capture 1 (training mode)
compiled(x)  # reuses it
model.eval()
probabilities = compiled(x)  # capture 2 (eval mode)
print("rows sum to", probabilities.sum(dim=1).detach())

# %% [markdown]
# ## Your turn
#
# **Task 1.** Capture `def g(m1, m2): return 10 * torch.matmul(m1, m2) + m1.sum()`
# with `fx.symbolic_trace` and print its graph. How many `placeholder` nodes does it have, how
# many users does `m1` have, and where does the constant 10 appear?
#
# <details><summary>Solution</summary>
#
# ```python
# def g(m1, m2):
#     return 10 * torch.matmul(m1, m2) + m1.sum()
#
# print(fx.symbolic_trace(g).graph)
# ```
#
# Two placeholders, `m1` and `m2`. `m1` has `num_users=2`: it feeds the `matmul` and the
# `sum`. The 10 is not a node: it sits in the arguments of the multiplication,
# `mul(args = (10, %matmul))`.
#
# </details>
#
# **Task 2.** Count the parameters of `mnist_mlp()` in one line of PyTorch and compare with the
# number you computed from the shapes on the graph's edges (exercise 1 of the chapter).
#
# <details><summary>Solution</summary>
#
# ```python
# print(sum(p.numel() for p in mnist_mlp().parameters()))  # 407050
# ```
#
# $512 \cdot 784 + 512 + 10 \cdot 512 + 10 = 407\,050$: the two weight matrices and the two
# bias vectors, the only parameter tensors of the graph.
#
# </details>
#
# **Task 3.** Make `m2` require gradients too and print the autograd graph of `product` again
# with `show_autograd_graph`. What changes, and why?
#
# <details><summary>Solution</summary>
#
# ```python
# m2g = torch.tensor([[2.0], [2.0]], requires_grad=True)
# show_autograd_graph((10 * torch.matmul(m1, m2g)).grad_fn)
# ```
#
# A second `AccumulateGrad` appears under the matrix product: autograd records a path back to
# every leaf that asks for a gradient, and to no other. The constant 10 never gets one.
#
# </details>
