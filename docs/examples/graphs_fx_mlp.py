"""Capture the graph of the chapter's MLP with torch.fx, at the layer level and op by op.

Run it to see the graphs; ``python docs/examples/graphs_fx_mlp.py --write`` refreshes
``graphs_fx_mlp.txt``, the printout shown in the chapter (a test checks that it matches).
"""

from __future__ import annotations

import io
import sys
from contextlib import redirect_stdout
from pathlib import Path

import torch
from torch import fx

from block4.figures.computational_graphs import capture_op_level, mnist_mlp


def main() -> None:
    # --8<-- [start:trace]
    model = mnist_mlp()
    captured = fx.symbolic_trace(model)  # calls forward once with placeholders, records each call
    print(captured.graph)
    # --8<-- [end:trace]
    print("--- op level ---")
    # --8<-- [start:ops]
    ops = capture_op_level(model, torch.zeros(1, 28, 28))  # trace inside the layers, run once
    for node in ops.graph.nodes:
        shape = "x".join(str(d) for d in node.meta["tensor_meta"].shape)
        print(f"{node.op:<14} {node.name:<11} {shape}")
    # --8<-- [end:ops]


OUTPUT = Path(__file__).with_suffix(".txt")


def printout() -> str:
    """What :func:`main` prints, wrapped in snippet sections, with the torch version."""
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        main()
    layer_level, op_level = buffer.getvalue().split("--- op level ---\n")
    version = torch.__version__.split("+")[0]
    return (
        f"torch {version}\n"
        f"--8<-- [start:trace]\n{layer_level.rstrip()}\n--8<-- [end:trace]\n"
        f"--8<-- [start:ops]\n{op_level.rstrip()}\n--8<-- [end:ops]\n"
    )


if __name__ == "__main__":
    if "--write" in sys.argv:
        OUTPUT.write_text(printout())
    else:
        main()
