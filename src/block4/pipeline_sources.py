"""The figure pipeline's view of the source code: where it lives, what a figure depends on.

Everything here reads files and syntax trees only (:mod:`ast`); nothing imports a figure
module, torch or Lightning, so listing and checking figures stays fast.

* :class:`Project`: where the package and the generated figures of a checkout live.
* :func:`discover`: every ``@figure`` of ``block4/figures/*.py``, read from the source (the
  single source of truth about which figures exist).
* :func:`code_signature`: the canonical text of a piece of code (docstrings, comments and
  layout left out), the unit every fingerprint is built from.
* :class:`Sources`: reads, parses and hashes the package's files once per process and
  resolves what a module depends on.

:mod:`block4.pipeline` builds the fingerprints and the manifest on top of this.
"""

from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from block4.figures.registry import FigureMark, figure_mark_of

__all__ = [
    "PACKAGE",
    "STYLE_MODULE",
    "FigureInfo",
    "PipelineError",
    "Project",
    "Sources",
    "code_signature",
    "discover",
]

#: The package whose sources fingerprints cover.
PACKAGE = "block4"

#: The plot style every figure is drawn and rendered with: part of every figure's
#: dependencies (the pipeline applies it around each figure and for the dark variant).
STYLE_MODULE = "block4.style"


class PipelineError(Exception):
    """A problem the user must fix (bad figure declaration, bad input, bad return value)."""


@dataclass(frozen=True)
class Project:
    """Where the sources and the generated figures of a checkout live.

    Args:
        root: the repository root (holding ``src/`` and ``docs/``).
        src: the directory containing the ``block4`` package (default ``root/src``).
        out_dir: where figures and ``manifest.json`` go (default ``root/docs/figures``).
    """

    root: Path
    src: Path = None  # type: ignore[assignment]
    out_dir: Path = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        root = Path(self.root).resolve()
        object.__setattr__(self, "root", root)
        object.__setattr__(self, "src", Path(self.src or root / "src").resolve())
        object.__setattr__(self, "out_dir", Path(self.out_dir or root / "docs" / "figures"))

    @property
    def package_dir(self) -> Path:
        return self.src / PACKAGE

    @property
    def figures_dir(self) -> Path:
        return self.package_dir / "figures"

    @property
    def manifest_path(self) -> Path:
        return self.out_dir / "manifest.json"

    @property
    def lock_path(self) -> Path:
        return self.out_dir / ".manifest.lock"

    def relative(self, path: Path) -> str:
        """``path`` relative to the repository root, in POSIX form (for messages and links)."""
        path = Path(path).resolve()
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return path.as_posix()


@dataclass(frozen=True)
class FigureInfo:
    """A figure as declared in the source: ``@figure(name, chapter=..., params=...)``.

    Attributes:
        name: the figure's name (its files are ``<name>.svg`` and ``<name>.dark.svg``).
        chapter: the chapter page it belongs to.
        params: the literal keyword arguments passed to the function.
        module: the dotted module name, e.g. ``block4.figures.activations``.
        function: the function's name in that module.
        path: the module's file.
        line: the line of the ``def``.
        group: ``group=`` of the decorator: figures sharing work, made in one process by
            ``--jobs N`` (None: the figure stands alone).
    """

    name: str
    chapter: str
    params: dict[str, Any]
    module: str
    function: str
    path: Path
    line: int
    group: str | None = None


class _Mark(str):
    """A structural token of :func:`code_signature` (never confused with a string constant)."""


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


class Sources:
    """Reads, hashes and parses the package's source files once per process."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self._bytes: dict[Path, bytes] = {}
        self._trees: dict[Path, ast.Module] = {}
        self._digests: dict[Path, str] = {}
        self._deps: dict[str, tuple[str, ...]] = {}
        self._direct: dict[str, tuple[set[str], set[Path]]] = {}
        self._data_files: dict[str, list[Path]] | None = None

    def read(self, path: Path) -> bytes:
        if path not in self._bytes:
            self._bytes[path] = path.read_bytes()
        return self._bytes[path]

    def digest(self, path: Path) -> str:
        """sha256 of what the file *does*: Python sources are hashed as their syntax tree
        without docstrings (comments, docstrings, blank lines and formatting do not count);
        any other file by its bytes. Computed once per file and process."""
        if path not in self._digests:
            if path.suffix == ".py":
                signature = code_signature(self.tree(path)).encode()
            else:
                signature = self.read(path)
            self._digests[path] = hashlib.sha256(signature).hexdigest()
        return self._digests[path]

    def tree(self, path: Path) -> ast.Module:
        if path not in self._trees:
            try:
                self._trees[path] = ast.parse(self.read(path), filename=str(path))
            except SyntaxError as err:
                raise PipelineError(
                    f"{self.project.relative(path)}:{err.lineno}: cannot parse ({err.msg})"
                ) from None
        return self._trees[path]

    def module_file(self, module: str) -> Path | None:
        """The file of ``module`` (``block4.x.y``) under ``src``, or None."""
        parts = module.split(".")
        if not parts or parts[0] != PACKAGE or not all(p.isidentifier() for p in parts):
            return None
        base = self.project.src.joinpath(*parts)
        if base.with_suffix(".py").is_file():
            return base.with_suffix(".py")
        if (base / "__init__.py").is_file():
            return base / "__init__.py"
        return None

    def data_files(self) -> dict[str, list[Path]]:
        """Non-Python files of the package by base name (data a module may load)."""
        if self._data_files is None:
            found: dict[str, list[Path]] = {}
            for path in sorted(self.project.package_dir.rglob("*")):
                if (
                    path.is_file()
                    and path.suffix not in (".py", ".pyc")
                    and "__pycache__" not in path.parts
                ):
                    found.setdefault(path.name, []).append(path)
            self._data_files = found
        return self._data_files

    def direct_dependencies(self, module: str) -> tuple[set[str], set[Path]]:
        """Modules ``module`` imports (anywhere in it) and data files it names."""
        if module not in self._direct:
            self._direct[module] = self._scan(module)
        return self._direct[module]

    def _scan(self, module: str) -> tuple[set[str], set[Path]]:
        path = self.module_file(module)
        if path is None:
            return set(), set()
        is_package = path.name == "__init__.py"
        package = module if is_package else module.rpartition(".")[0]
        candidates: set[str] = set()
        data: set[Path] = set()
        data_files = self.data_files()
        for node in ast.walk(self.tree(path)):
            if isinstance(node, ast.Import):
                candidates.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base_parts = package.split(".")
                    if node.level > 1:
                        base_parts = base_parts[: -(node.level - 1)]
                    base = ".".join(base_parts)
                    if node.module:
                        base = f"{base}.{node.module}" if base else node.module
                else:
                    base = node.module or ""
                candidates.add(base)
                candidates.update(f"{base}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                value = node.value
                if value.startswith(PACKAGE + ".") and " " not in value:
                    candidates.add(value)
                name = value.rsplit("/", 1)[-1]
                if name in data_files and "\n" not in value:
                    data.update(data_files[name])
        modules: set[str] = set()
        for candidate in candidates:
            parts = candidate.split(".")
            # Importing a.b.c runs a/__init__, a/b/__init__ and a/b/c.
            for i in range(1, len(parts) + 1):
                prefix = ".".join(parts[:i])
                if self.module_file(prefix) is not None:
                    modules.add(prefix)
        modules.discard(module)
        return modules, data

    def closure(self, module: str) -> tuple[str, ...]:
        """Every source file (relative to ``src``) that ``module`` depends on, sorted."""
        if module in self._deps:
            return self._deps[module]
        seen_modules: set[str] = set()
        files: set[Path] = set()
        todo = [module]
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        while todo:
            current = todo.pop()
            if current in seen_modules:
                continue
            seen_modules.add(current)
            path = self.module_file(current)
            if path is None:
                continue
            files.add(path)
            imported, data = self.direct_dependencies(current)
            files.update(data)
            todo.extend(sorted(imported - seen_modules))
        style = self.module_file(STYLE_MODULE)
        if style is not None:
            files.add(style)
        result = tuple(sorted(p.relative_to(self.project.src).as_posix() for p in files))
        self._deps[module] = result
        return result


def _literal(node: ast.AST, what: str, where: str) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise PipelineError(
            f"{where}: {what} of @figure must be a literal (a string, number, or a "
            "list/dict of literals) so the pipeline can read it without importing the module"
        ) from None


def _is_figure_decorator(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    return (isinstance(func, ast.Name) and func.id == "figure") or (
        isinstance(func, ast.Attribute) and func.attr == "figure"
    )


def _read_mark(dec: ast.Call, where: str) -> FigureMark:
    """The arguments of one ``@figure(...)`` read from the source and checked."""
    kwargs = {kw.arg: kw.value for kw in dec.keywords if kw.arg}
    if dec.args:
        name = _literal(dec.args[0], "the name", where)
    elif "name" in kwargs:
        name = _literal(kwargs["name"], "the name", where)
    else:
        raise PipelineError(f"{where}: @figure needs a name as first argument")
    if "chapter" not in kwargs:
        raise PipelineError(f"{where}: @figure({name!r}) needs chapter=...")
    values = {
        key: _literal(kwargs[key], key, where)
        for key in ("chapter", "params", "group")
        if key in kwargs
    }
    try:
        return figure_mark_of(name, **values)
    except ValueError as err:
        raise PipelineError(f"{where}: {err}") from None


def discover(project: Project, *, sources: Sources | None = None) -> dict[str, FigureInfo]:
    """Find every ``@figure`` in ``block4/figures/*.py`` by reading the source.

    Returns:
        The figures by name, sorted by module and line.

    Raises:
        PipelineError: a decorator with non-literal arguments, a bad or duplicate name, or a
            module that does not parse.
    """
    sources = sources or Sources(project)
    found: dict[str, FigureInfo] = {}
    if not project.figures_dir.is_dir():
        return found
    for path in sorted(project.figures_dir.glob("*.py")):
        module = f"{PACKAGE}.figures.{path.stem}" if path.stem != "__init__" else ""
        if not module:
            continue
        tree = sources.tree(path)
        top_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for dec in node.decorator_list:
                if not _is_figure_decorator(dec):
                    continue
                assert isinstance(dec, ast.Call)
                where = f"{project.relative(path)}:{dec.lineno}"
                if id(node) not in top_level:
                    raise PipelineError(
                        f"{where}: @figure must decorate a function at the top level of the "
                        "module (the pipeline imports it by name)"
                    )
                mark = _read_mark(dec, where)
                name = mark.name
                if name in found:
                    other = found[name]
                    raise PipelineError(
                        f"figure {name!r} is defined twice: "
                        f"{project.relative(other.path)}:{other.line} and {where}"
                    )
                found[name] = FigureInfo(
                    name=name,
                    chapter=mark.chapter,
                    params=mark.params,
                    module=module,
                    function=node.name,
                    path=path,
                    line=node.lineno,
                    group=mark.group,
                )
    return found
