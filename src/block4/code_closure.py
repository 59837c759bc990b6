"""What a piece of code uses, by name, read from the syntax tree.

The unit of code is a `Unit`: one top-level name of a module (a function, a class with
its methods, a constant), the module's other top-level statements (``TOP_LEVEL``: they run
when it is imported), or the whole module (``WHOLE``). `ModuleSymbols` lists the units
of one module and what its names are bound to by imports; `references` reads the names
a unit's code uses and resolves each to the unit that defines it:

* a module-level name of the same module (``helper(...)``, ``SCALE``);
* ``from block4.x import y`` (followed through re-exports), ``import block4.x as m`` and
  ``m.attr`` / ``block4.x.attr`` chains, at the top of the module or inside the function;
* decorators, default values, base classes and the methods of a class are part of the
  definition, so what they use is found too.

Whatever cannot be resolved this way falls back to the **whole module** it may come from, so
an edit there is still noticed: a module used as a value (``getattr(m, name)``), a name that a
star import may provide, ``globals()``/``vars()``/``eval``/``exec``/``__import__``, a
``"block4.x"`` string (``importlib.import_module``), a name a module does not define at its
top level.

Nothing here imports the code it reads.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = [
    "TOP_LEVEL",
    "WHOLE",
    "ModuleSymbols",
    "Unit",
    "code_signature",
    "imported_names",
    "load_time",
    "module_symbols",
    "references",
]

#: The name of the unit made of a module's top-level statements other than definitions.
TOP_LEVEL = "<top level>"

#: The name of the unit that stands for a whole module (the fallback).
WHOLE = "*"

# Calls that reach names dynamically: the unit depends on its whole module.
_DYNAMIC = frozenset({"globals", "vars", "locals", "eval", "exec", "__import__"})


class Unit(NamedTuple):
    """A piece of code: ``name`` of ``module`` (or `TOP_LEVEL`, `WHOLE`). A named tuple:
    the closure walks hash and compare units by the thousand."""

    module: str
    name: str

    def __str__(self) -> str:
        return f"{self.module}:{self.name}"


@dataclass(frozen=True)
class _Binding:
    """What an imported name refers to: a module (``attr`` None) or a name in a module."""

    module: str
    attr: str | None = None


@dataclass
class ModuleSymbols:
    """The top-level names of one module and the imports that bind names in it.

    Attributes:
        module: the dotted name.
        is_package: whether it is a package's ``__init__``.
        definitions: each top-level name with the statements that assign or define it.
        top_level: the other top-level statements (imports excluded).
        imports: names bound by top-level imports of ``package`` modules.
        star_imports: modules imported with ``from m import *``.
    """

    module: str
    is_package: bool = False
    definitions: dict[str, list[ast.stmt]] = field(default_factory=dict)
    top_level: list[ast.stmt] = field(default_factory=list)
    imports: dict[str, _Binding] = field(default_factory=dict)
    star_imports: list[str] = field(default_factory=list)
    external: set[str] = field(default_factory=set)  # names bound to modules outside package


def _bound_names(target: ast.AST) -> Iterable[str]:
    for node in ast.walk(target):
        if isinstance(node, ast.Name):
            yield node.id


def _from_base(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The module a ``from ... import`` statement of ``module`` imports from, made absolute."""
    if not node.level:
        return node.module or ""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    parts = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
    return ".".join(parts + ([node.module] if node.module else []))


def _import_bindings(
    node: ast.Import | ast.ImportFrom, module: str, is_package: bool, package: str
) -> tuple[dict[str, _Binding], list[str], set[str]]:
    """The names an import statement binds (package modules only), its star imports, and the
    names it binds to modules outside the package."""
    bound: dict[str, _Binding] = {}
    external: set[str] = set()
    stars: list[str] = []
    if isinstance(node, ast.Import):
        for alias in node.names:
            inside = alias.name == package or alias.name.startswith(package + ".")
            name = alias.asname or alias.name.split(".")[0]
            if not inside:
                external.add(name)
            elif alias.asname:
                bound[name] = _Binding(alias.name)
            else:
                bound[name] = _Binding(alias.name.split(".")[0])
        return bound, stars, external
    base = _from_base(node, module, is_package)
    inside = base == package or base.startswith(package + ".")
    for alias in node.names:
        if alias.name == "*":
            if inside:
                stars.append(base)
            continue
        name = alias.asname or alias.name
        if inside:
            bound[name] = _Binding(base, alias.name)
        else:
            external.add(name)
    return bound, stars, external


def module_symbols(
    module: str, tree: ast.Module, *, is_package: bool, package: str
) -> ModuleSymbols:
    """Index the top level of ``module`` (its parsed ``tree``)."""
    symbols = ModuleSymbols(module, is_package)
    body = tree.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the module's docstring is not code
    for stmt in body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            bound, stars, external = _import_bindings(stmt, module, is_package, package)
            symbols.imports.update(bound)
            symbols.star_imports += stars
            symbols.external |= external
            for name in bound:
                symbols.external.discard(name)
            continue
        names: list[str] = []
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names = [stmt.name]
        elif isinstance(stmt, ast.Assign):
            names = [n for t in stmt.targets for n in _bound_names(t)]
        elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign)):
            names = list(_bound_names(stmt.target))
        elif isinstance(stmt, ast.TypeAlias if hasattr(ast, "TypeAlias") else ()):
            names = list(_bound_names(stmt.name))
        if names:
            for name in names:
                symbols.definitions.setdefault(name, []).append(stmt)
        else:
            # if/try/with/for blocks and bare expressions run at import: they are top-level
            # code, and a name they bind resolves to that code.
            symbols.top_level.append(stmt)
            for node in ast.walk(stmt):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    symbols.definitions.setdefault(node.name, []).append(stmt)
                elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                    symbols.definitions.setdefault(node.id, []).append(stmt)
    return symbols


def _chains(nodes: Iterable[ast.AST]) -> tuple[list[tuple[str, ...]], list[str], bool]:
    """Name chains (``a.b.c`` -> ``("a", "b", "c")``; a bare name is a chain of one), the
    string constants, and whether a dynamic name lookup (``globals()`` ...) occurs."""
    chains: list[tuple[str, ...]] = []
    strings: list[str] = []
    dynamic = False
    stack = list(nodes)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Attribute):
            attrs: list[str] = []
            inner: ast.AST = node
            while isinstance(inner, ast.Attribute):
                attrs.append(inner.attr)
                inner = inner.value
            if isinstance(inner, ast.Name):
                chains.append((inner.id, *reversed(attrs)))
                continue
            stack.append(inner)
            continue
        if isinstance(node, ast.Name):
            chains.append((node.id,))
            dynamic = dynamic or node.id in _DYNAMIC
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            strings.append(node.value)
        stack.extend(ast.iter_child_nodes(node))
    return chains, strings, dynamic


@dataclass
class _Resolver:
    """Resolves names to units, given the symbols of any package module."""

    symbols_of: Callable[[str], ModuleSymbols | None]
    package: str

    def in_module(self, module: str, attrs: tuple[str, ...], depth: int = 0) -> set[Unit]:
        """The unit ``module.attrs[0]...`` refers to (submodules followed)."""
        if not attrs:
            return {Unit(module, WHOLE)}
        sub = f"{module}.{attrs[0]}"
        if self.symbols_of(sub) is not None:
            return self.in_module(sub, attrs[1:], depth)
        return self.symbol(module, attrs[0], attrs[1:], depth)

    def symbol(self, module: str, name: str, rest: tuple[str, ...], depth: int) -> set[Unit]:
        symbols = self.symbols_of(module)
        if symbols is None or depth > 20:
            return set()
        found: set[Unit] = set()
        if name in symbols.definitions:
            found.add(Unit(module, name))
        if name in symbols.imports:
            found |= self.binding(symbols.imports[name], rest, depth + 1)
        if not found and name not in symbols.external:
            found.add(Unit(module, WHOLE))  # not defined statically: the whole module
        return found

    def binding(self, binding: _Binding, rest: tuple[str, ...], depth: int) -> set[Unit]:
        if binding.attr is None:
            return self.in_module(binding.module, rest, depth)
        sub = f"{binding.module}.{binding.attr}"
        if self.symbols_of(sub) is not None:
            return self.in_module(sub, rest, depth)
        return self.symbol(binding.module, binding.attr, rest, depth)

    def module_named(self, text: str) -> Unit | None:
        """The whole module a ``"block4.x.y"`` string names (its longest module prefix)."""
        parts = text.split(".")
        if len(parts) < 2 or parts[0] != self.package or not all(p.isidentifier() for p in parts):
            return None
        for end in range(len(parts), 0, -1):
            module = ".".join(parts[:end])
            if self.symbols_of(module) is not None:
                return Unit(module, WHOLE)
        return None


def references(
    unit: Unit,
    nodes: list[ast.AST],
    symbols_of: Callable[[str], ModuleSymbols | None],
    *,
    package: str,
) -> tuple[set[Unit], list[str]]:
    """The units the code ``nodes`` of ``unit`` uses directly, and its string constants.

    Args:
        unit: where the code lives (its module resolves the names).
        nodes: the statements of the unit.
        symbols_of: the `ModuleSymbols` of a package module (None: no such module).
        package: the top-level package whose modules count (``"block4"``).
    """
    own = symbols_of(unit.module)
    assert own is not None
    resolve = _Resolver(symbols_of, package)
    local: dict[str, _Binding] = {}
    local_external: set[str] = set()
    found: set[Unit] = set()
    for stmt in nodes:
        for node in ast.walk(stmt):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                bound, stars, external = _import_bindings(
                    node, unit.module, own.is_package, package
                )
                local.update(bound)
                local_external |= external
                found |= {Unit(m, WHOLE) for m in stars}
    chains, strings, dynamic = _chains(nodes)
    if dynamic:
        found.add(Unit(unit.module, WHOLE))
    for chain in chains:
        name, rest = chain[0], chain[1:]
        if name in local:
            found |= resolve.binding(local[name], rest, 0)
            continue
        if name in local_external:
            continue
        hit = False
        if name in own.definitions:
            found.add(Unit(unit.module, name))
            hit = True
        if name in own.imports:
            found |= resolve.binding(own.imports[name], rest, 0)
            hit = True
        if not hit and own.star_imports and name not in own.external:
            found |= {Unit(m, WHOLE) for m in own.star_imports}
    for text in strings:
        named = resolve.module_named(text)
        if named is not None:
            found.add(named)
    found.discard(unit)
    return found, strings


class _Mark(str):
    """A structural token of `code_signature` (never confused with a string constant)."""


def code_signature(tree: ast.Module) -> str:
    """A canonical text of a module's code: its AST without docstrings and positions.

    Editing a comment, a docstring or the layout of a module leaves its signature (and so
    every figure that depends on it) unchanged; changing any statement or value changes it.
    A body that is only a docstring counts as ``pass``. The tree is not modified.
    """
    docstrings: dict[int, bool] = {}  # id of a docstring statement -> it is the whole body
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0] if node.body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                docstrings[id(first)] = len(node.body) == 1
    parts: list[str] = []
    stack: list[object] = [tree]
    while stack:  # an explicit stack: deep expressions do not hit the recursion limit
        item = stack.pop()
        if isinstance(item, _Mark):
            parts.append(item)
        elif isinstance(item, ast.AST):
            if id(item) in docstrings:
                if docstrings[id(item)]:
                    parts.append("Pass")
                continue
            parts.append(type(item).__name__)
            for name, value in reversed(list(ast.iter_fields(item))):
                stack.extend((value, _Mark(f".{name}")))
        elif isinstance(item, list):
            parts.append("[")
            stack.append(_Mark("]"))
            stack.extend(reversed(item))
        else:
            parts.append(repr(item))
    return "\x00".join(parts)


def load_time(body: Iterable[ast.stmt]) -> Iterable[ast.stmt]:
    """The statements of ``body`` that run when a module loads, nested ones included: not
    function bodies, not the body of ``if TYPE_CHECKING:`` (any other condition counts both
    ways); class bodies, both ways of ``if``, ``try``, ``with``, ``match`` and loops do."""
    for stmt in body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        yield stmt
        skipped = stmt.body if isinstance(stmt, ast.If) and _is_type_checking(stmt.test) else []
        for child in ast.iter_child_nodes(stmt):
            if isinstance(child, ast.stmt) and not any(child is s for s in skipped):
                yield from load_time([child])
            elif isinstance(child, (ast.excepthandler, ast.match_case)):
                yield from load_time(child.body)


def _is_type_checking(test: ast.expr) -> bool:
    """``TYPE_CHECKING`` or ``typing.TYPE_CHECKING`` (true only for type checkers)."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_names(nodes: Iterable[ast.AST], module: str, is_package: bool) -> list[str]:
    """The dotted names the import statements among ``nodes`` (of ``module``) name:
    ``import a.b`` gives ``a.b``, ``from a import b`` gives ``a.b`` (``b`` may be a module
    or a name in ``a``); relative imports are resolved."""
    names: list[str] = []
    for node in nodes:
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            base = _from_base(node, module, is_package)
            names += [f"{base}.{a.name}" if a.name != "*" else base for a in node.names]
    return names
