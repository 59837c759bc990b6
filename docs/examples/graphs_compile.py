"""torch.compile captures the same graph on the first call: PyTorch's counterpart of @tf.function.

A compiler *backend* receives the captured ``torch.fx`` graph. This one only prints it and
then runs it unchanged, so no C++ compiler is needed and it works on any machine.
"""

from __future__ import annotations

import torch

from block4.figures.computational_graphs import mnist_mlp


# --8<-- [start:compile]
def show_graph(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]):
    """A torch.compile backend: print the captured graph, run it unchanged."""
    print(f"captured {len(gm.graph.nodes)} nodes:")
    for node in gm.graph.nodes:
        if node.op == "call_function" or node.op == "call_method":
            print("   ", node.op, getattr(node.target, "__name__", node.target))
    return gm.forward  # a real backend (Inductor) returns optimised code


model = mnist_mlp().eval()
compiled = torch.compile(model, backend=show_graph)
images = torch.rand(64, 28, 28)
probabilities = compiled(images)  # first call: capture the graph, then run it
probabilities = compiled(images)  # later calls reuse the graph: no output
# --8<-- [end:compile]

if __name__ == "__main__":
    print(tuple(probabilities.shape), float(probabilities.detach().sum(dim=1).mean()))
