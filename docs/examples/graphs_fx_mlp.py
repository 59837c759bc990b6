"""Capture the graph of the chapter's MLP with torch.fx, at the layer level and op by op.

Run it to see the graphs; ``python docs/examples/graphs_fx_mlp.py --write`` also refreshes
``graphs_fx_mlp.txt``, the printout shown in the chapter (a test checks that it is current).
"""

from __future__ import annotations

import io
import runpy
import sys
from contextlib import redirect_stdout
from pathlib import Path

import torch
from torch import fx

from block4.figures.computational_graphs import capture_op_level, mnist_mlp

# --8<-- [start:trace]
model = mnist_mlp()
captured = fx.symbolic_trace(model)  # runs forward once on placeholders
print(captured.graph)
# --8<-- [end:trace]

print("--- op level ---")

# --8<-- [start:ops]
ops = capture_op_level(model, torch.zeros(1, 28, 28))  # trace inside the layers
for node in ops.graph.nodes:
    shape = "x".join(str(d) for d in node.meta["tensor_meta"].shape)
    print(f"{node.op:<14} {node.name:<11} {shape}")
# --8<-- [end:ops]


def snippet_file(printed: str) -> str:
    """The printout as the chapter includes it: two snippet sections and the torch version."""
    layer_level, op_level = printed.split("--- op level ---\n")
    version = torch.__version__.split("+")[0]
    return (
        f"torch {version}\n"
        f"--8<-- [start:trace]\n{layer_level.rstrip()}\n--8<-- [end:trace]\n"
        f"--8<-- [start:ops]\n{op_level.rstrip()}\n--8<-- [end:ops]\n"
    )


OUTPUT = Path(__file__).with_suffix(".txt")

if __name__ == "__main__" and "--write" in sys.argv:
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        runpy.run_path(__file__, run_name="graphs_fx_mlp")
    OUTPUT.write_text(snippet_file(buffer.getvalue()))
