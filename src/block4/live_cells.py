"""What the live cells of the course pages run, in the reader's browser (Pyodide) or here.

A live cell is a code box on a page with a Run button. The page's script loads Python
(Pyodide's core, served by the site), writes ``block4/autograd.py``, ``block4/graph_drawing.py``
and this file into Python's file system and calls [`run_cell`][block4.live_cells.run_cell] with
the reader's code; the sigmoid-gate explorer calls [`gate`][block4.live_cells.gate]. Only the
standard library and those two modules are imported, so CPython runs the same functions in the
tests.
"""

from __future__ import annotations

import contextlib
import io
import json
import linecache
import math
import traceback
from typing import Any

from block4.autograd import Value, draw_svg, trace

__all__ = ["run_cell", "gate", "CELL_NAME"]

#: The file name the reader's code gets in tracebacks.
CELL_NAME = "<live cell>"


def run_cell(code: str) -> str:
    """Run ``code`` and describe its result as JSON for the page.

    The result has ``output`` (everything printed), ``error`` (the traceback of an exception,
    showing only the reader's code, or ``null``), and, when the code left a ``Value`` in a
    variable, ``nodes`` (label, operation, value and gradient of every node behind the last
    such value that no other one uses, in topological order) and ``svg`` (its graph). Values
    without a label are named after their variable, so ``q = x + y`` shows as ``q``.
    """
    namespace: dict[str, Any] = {"__name__": "__main__"}
    # tracebacks quote the reader's lines from here
    linecache.cache[CELL_NAME] = (len(code), None, code.splitlines(True), CELL_NAME)
    output = io.StringIO()
    error = None
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        try:
            exec(compile(code, CELL_NAME, "exec"), namespace)  # the reader's own code
        except BaseException as exc:  # noqa: BLE001 - everything is reported to the reader
            error = _user_traceback(exc)
    result: dict[str, Any] = {"output": output.getvalue(), "error": error, "nodes": [], "svg": ""}
    root = _output_value(namespace)
    if root is not None:
        nodes, _ = trace(root)
        reached = any(n._reached for n in nodes)
        result["nodes"] = [_describe(n, reached) for n in nodes]
        result["svg"] = draw_svg(root, fmt="{:.4g}")
    return json.dumps(result)


def gate(x: float, incoming: float = 1.0, kind: str = "sigmoid") -> str:
    """One gate, computed by the engine: ``out = sigmoid(x)`` (or ``relu(x)``), then
    ``out.backward(incoming)``. Returns JSON with ``x``, ``out``, ``local`` (the local
    gradient d out / d x), ``incoming``, ``passed`` (``x.grad``, the gradient passed back) and
    ``svg`` (the gate's graph with values and gradients).
    """
    if kind not in ("sigmoid", "relu"):
        raise ValueError(f"gate kind must be 'sigmoid' or 'relu', got {kind!r}")
    xv = Value(x, "x")
    out = xv.sigmoid() if kind == "sigmoid" else xv.relu()
    out.label = "out"
    out.backward()  # gradient 1 in: x.grad is the local gradient
    local = xv.grad
    out.zero_grad()
    out.backward(incoming)  # the incoming gradient in: x.grad is what the gate passes back
    return json.dumps(
        {
            "x": xv.data,
            "out": out.data,
            "local": local,
            "incoming": float(incoming),
            "passed": xv.grad,
            "svg": draw_svg(out, fmt="{:.3g}"),
        }
    )


def _output_value(namespace: dict[str, Any]) -> Value | None:
    """The last ``Value`` assigned that no other ``Value`` in the namespace depends on;
    unlabelled values in the namespace are labelled with their variable names."""
    values = [(name, v) for name, v in namespace.items() if isinstance(v, Value)]
    for name, v in values:
        if not v.label and not name.startswith("_"):
            v.label = name
    used: set[int] = set()
    for _, v in values:
        used.update(id(n) for n in trace(v)[0] if n is not v)
    outputs = [v for _, v in values if id(v) not in used]
    return outputs[-1] if outputs else None


def _describe(node: Value, reached: bool) -> dict[str, Any]:
    return {
        "label": node.label,
        "op": node.op,
        "data": _number(node.data),
        "grad": _number(node.grad) if reached else None,
    }


def _number(x: float) -> float | str:
    return x if math.isfinite(x) else str(x)  # JSON has no inf or nan


def _user_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` from the reader's code on (this module's frames left out)."""
    frames = traceback.extract_tb(exc.__traceback__)
    first = next((i for i, f in enumerate(frames) if f.filename == CELL_NAME), len(frames))
    lines = ["Traceback (most recent call last):\n"]
    lines += traceback.format_list(frames[first:])
    lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines)
