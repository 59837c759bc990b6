"""Property tests: random expression graphs give the same values and gradients as torch.autograd.

A random *program* is a few inputs and a list of instructions; each instruction applies one
operation to earlier registers (picked at random, so registers are reused and the expression
is a graph, not a tree). The program runs once on `block4.autograd.Value` and once on
float64 tensors; every register's value and every gradient must agree to 1e-9.

Instructions whose input lies outside the operation's domain (``log`` of a non-positive
number, a division by almost zero, ...) are skipped in both runs, so no example is rejected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from block4.autograd import Value, maximum

TOL = 1e-9
LIMIT = 1e6  # keep every intermediate value in a range where float64 comparisons are meaningful

UNARY = ["neg", "exp", "log", "tanh", "sigmoid", "relu", "pow"]
BINARY = ["add", "sub", "mul", "div", "max"]
WITH_CONSTANT = ["radd", "rsub", "rmul", "rdiv", "add_c", "mul_c", "div_c", "max_c"]
OPS = UNARY + BINARY + WITH_CONSTANT
EXPONENTS = [2, 3, -1, -2, 0.5, 1.5, -0.5, 2.0]

floats = st.floats(min_value=-3.0, max_value=3.0, allow_nan=False, allow_infinity=False)
constants = st.sampled_from([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0]) | floats


@dataclass(frozen=True)
class Instruction:
    op: str
    a: int  # operand positions, taken modulo the number of registers so far
    b: int
    constant: float
    exponent: float


instructions = st.builds(
    Instruction,
    op=st.sampled_from(OPS),
    a=st.integers(0, 10_000),
    b=st.integers(0, 10_000),
    constant=constants,
    exponent=st.sampled_from(EXPONENTS),
)


def allowed(ins: Instruction, a: float, b: float) -> bool:
    """Whether the instruction's inputs lie inside its domain (the same test for both runs)."""
    if ins.op == "log":
        return a > 1e-3
    if ins.op == "exp":
        return a < 10.0
    if ins.op == "div":
        return abs(b) > 1e-3
    if ins.op == "rdiv":
        return abs(a) > 1e-3
    if ins.op == "div_c":
        return abs(ins.constant) > 1e-3
    if ins.op == "pow":
        if ins.exponent < 0 and abs(a) < 1e-2:
            return False
        if not float(ins.exponent).is_integer() and a < 1e-2:
            return False
    return True


def apply(ins: Instruction, a, b, *, torch_mode: bool):
    c, n = ins.constant, ins.exponent
    if ins.op in ("neg",):
        return -a
    if ins.op in ("exp", "log", "tanh", "sigmoid", "relu"):
        return getattr(torch, ins.op)(a) if torch_mode else getattr(a, ins.op)()
    if ins.op == "pow":
        return a**n
    if ins.op == "add":
        return a + b
    if ins.op == "sub":
        return a - b
    if ins.op == "mul":
        return a * b
    if ins.op == "div":
        return a / b
    if ins.op == "max":
        return torch.maximum(a, b) if torch_mode else a.max(b)
    if ins.op == "radd":
        return c + a
    if ins.op == "rsub":
        return c - a
    if ins.op == "rmul":
        return c * a
    if ins.op == "rdiv":
        return c / a
    if ins.op == "add_c":
        return a + c
    if ins.op == "mul_c":
        return a * c
    if ins.op == "div_c":
        return a / c
    if ins.op == "max_c":
        return (
            torch.maximum(a, torch.tensor(c, dtype=torch.float64)) if torch_mode else maximum(a, c)
        )
    raise AssertionError(ins.op)


def operands(ins: Instruction, registers: list, recent: int | None) -> tuple[int, int]:
    k = len(registers)
    if recent is None:
        return ins.a % k, ins.b % k
    window = min(k, recent)  # deep programs: operands among the last few registers
    return k - 1 - ins.a % window, k - 1 - ins.b % window


def run_ours(inputs: list[float], program: list[Instruction], recent: int | None = None):
    registers = [Value(x, f"x{i}") for i, x in enumerate(inputs)]
    used: list[tuple[Instruction, int, int]] = []
    for ins in program:
        i, j = operands(ins, registers, recent)
        a, b = registers[i], registers[j]
        if not allowed(ins, a.data, b.data):
            continue
        out = apply(ins, a, b, torch_mode=False)
        if not math.isfinite(out.data) or abs(out.data) > LIMIT:
            continue
        registers.append(out)
        used.append((ins, i, j))
    return registers, used


def run_torch(inputs: list[float], used: list[tuple[Instruction, int, int]]):
    registers = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in inputs]
    for ins, i, j in used:
        out = apply(ins, registers[i], registers[j], torch_mode=True)
        out.retain_grad()
        registers.append(out)
    return registers


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=TOL, abs_tol=TOL)


def check_program(inputs: list[float], program: list[Instruction], recent: int | None = None):
    ours, used = run_ours(inputs, program, recent)
    theirs = run_torch(inputs, used)
    root, root_t = ours[-1], theirs[-1]
    for v, t in zip(ours, theirs, strict=True):
        assert close(v.data, float(t.detach())), (v, t)
    root.backward()
    root_t.backward()
    for v, t in zip(ours, theirs, strict=True):
        reached = t.grad is not None
        grad_t = float(t.grad) if reached else 0.0
        assert close(v.grad, grad_t), (v, grad_t, used)
    return ours, theirs


@settings(max_examples=200, deadline=None)
@given(
    inputs=st.lists(floats, min_size=1, max_size=4),
    program=st.lists(instructions, min_size=1, max_size=14),
)
def test_random_graphs_match_torch_autograd(inputs, program) -> None:
    check_program(inputs, program)


@settings(max_examples=25, deadline=None)
@given(
    inputs=st.lists(floats, min_size=1, max_size=2),
    program=st.lists(instructions, min_size=100, max_size=300),
)
def test_deep_random_chains_match_torch_autograd(inputs, program) -> None:
    check_program(inputs, program, recent=2)


@settings(max_examples=60, deadline=None)
@given(
    inputs=st.lists(floats, min_size=1, max_size=3),
    program=st.lists(instructions, min_size=1, max_size=10),
)
def test_second_backward_doubles_leaf_gradients_only(inputs, program) -> None:
    ours, used = run_ours(inputs, program)
    root = ours[-1]
    root.backward()
    first = [v.grad for v in ours]
    root.backward()
    n = len(inputs)
    for i, (v, g) in enumerate(zip(ours, first, strict=True)):
        expected = 2 * g if i < n or v is root and v.is_leaf else g
        assert close(v.grad, expected)
    # the leaves agree with two backward passes in PyTorch
    theirs = run_torch(inputs, used)
    theirs[-1].backward(retain_graph=True)
    theirs[-1].backward()
    for v, t in zip(ours[:n], theirs[:n], strict=True):
        assert close(v.grad, 0.0 if t.grad is None else float(t.grad))
